"""The result contract: every command's core returns one frozen result that carries its exit code.

``cli.py`` hands that result to ``reportsync.render``, which turns it into text for people or into
the one versioned JSON envelope (``render.envelope``). A result is plain data: a frozen dataclass
whose fields are its JSON shape (or that says its shape in ``to_dict()``), never a printer.

A new command adds its result in three steps: a frozen dataclass here or in its core module, with
an ``exit_code`` (a property, or ``exit_code = OK`` as a ``ClassVar`` for commands that either
succeed or raise); a text function in ``render`` (``Result -> Rendered``); and in ``cli.py``
``return app.finish(result, render.its_text)``. Its ``--json`` document then is
``{"version": 1, "command": ..., "exit_code": ..., "result": <the fields>}``, with no code of its
own; docs/commands.md shows an example that ``tests/test_docs.py`` checks against a real run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from reportsync.errors import ExitCode, ReportsyncError

if TYPE_CHECKING:  # doctor imports paramiko: only the doctor command loads it
    from reportsync.doctor import DoctorReport


class CommandResult(Protocol):
    """What every command's core returns: anything with the exit code the process ends with."""

    @property
    def exit_code(self) -> ExitCode: ...


def exit_code_of(result: CommandResult | None, error: ReportsyncError | None) -> ExitCode:
    """The exit code of a run that either returned ``result`` or stopped with ``error``."""
    if error is not None:
        return error.exit_code
    assert result is not None, "a run returns a result or stops with an error"
    return result.exit_code


@dataclass(frozen=True)
class DoctorRun:
    """``doctor``: the report, and the support bundle if one was asked for (its failure does not
    hide the findings: they are still shown, and the run exits with the bundle's code)."""

    report: DoctorReport
    bundle: Path | None = None
    bundle_error: ReportsyncError | None = None

    @property
    def exit_code(self) -> ExitCode:
        if self.bundle_error is not None:
            return self.bundle_error.exit_code
        return self.report.exit_code
