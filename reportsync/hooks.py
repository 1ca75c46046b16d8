"""The hand-off of one archived report to the next step: a source's ``on_new_report`` hook.

The hook is an argv from the config, never a shell command line: ``{path}``, ``{source}``,
``{remote_name}`` and ``{sha256}`` are replaced inside its items, so a report's name (chosen by
the server) can never become part of a command. It gets the same values in ``REPORTSYNC_PATH``,
``REPORTSYNC_SOURCE``, ``REPORTSYNC_REMOTE_NAME`` and ``REPORTSYNC_SHA256`` on top of the
allowlisted child environment (``process.child_environment``: none of reportsync's secrets),
an empty stdin, the report's folder as its working folder, and ``hook_timeout`` seconds, after
which its whole process group is stopped (a loader that started a child of its own included).
Its output goes to a private temporary file, not a pipe (a grandchild holding a pipe open could
keep the run waiting), and its last lines to the log. Nothing here prints or touches the ledger:
``fetch/handoff.py`` decides which reports' hooks run and records what became of them.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reportsync import process
from reportsync.fsutil import printable

log = logging.getLogger(__name__)

PLACEHOLDERS = ("path", "source", "remote_name", "sha256")
ENV_PREFIX = "REPORTSYNC_"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
OUTPUT_TAIL_BYTES = 8192  # of the hook's output, what is read back for the log
OUTPUT_TAIL_LINES = 10
REASON_LINE_LIMIT = 200  # characters of the hook's last output line in a failure's reason


def argv_problem(argv: tuple[str, ...]) -> str | None:
    """The config's check of ``on_new_report``: the problem, or None (an empty list: no hook).
    A ``{name}`` that is not a placeholder is refused (a typo would pass a literal ``{pth}``);
    braces around anything else (JSON, ``${VAR}``) are left alone."""
    if not argv:
        return None
    if not argv[0].strip():
        return "its first item (the program to run) is empty"
    unknown = sorted({name for item in argv for name in _PLACEHOLDER.findall(item)}
                     - set(PLACEHOLDERS))
    if unknown:
        known = " ".join(f"{{{name}}}" for name in PLACEHOLDERS)
        return f"has an unknown placeholder {{{unknown[0]}}} (known: {known})"
    return None


@dataclass(frozen=True)
class NewReport:
    """A report archived by fetch, as its hook sees it."""

    source: str
    remote_name: str
    path: Path  # the archived (decrypted) report in output_dir
    sha256: str  # of that file

    def values(self) -> dict[str, str]:
        return {"path": str(self.path), "source": self.source, "remote_name": self.remote_name,
                "sha256": self.sha256}

    def environment(self) -> dict[str, str]:
        """``REPORTSYNC_PATH`` and the rest: the placeholders' values, for a hook that prefers
        variables to arguments."""
        return {ENV_PREFIX + name.upper(): value for name, value in self.values().items()}


def hook_argv(argv: Sequence[str], report: NewReport) -> list[str]:
    """``argv`` with every placeholder replaced by the report's value (anywhere in an item)."""
    values = report.values()
    return [_PLACEHOLDER.sub(lambda match: values.get(match.group(1), match.group(0)), item)
            for item in argv]


@dataclass(frozen=True)
class HookResult:
    """One run of a hook: ``exit_code`` None when it ran past its timeout or did not start."""

    exit_code: int | None
    seconds: float
    problem: str | None = None  # why it failed, in words; None: it succeeded
    output: tuple[str, ...] = ()  # its last output lines

    @property
    def ok(self) -> bool:
        return self.problem is None


def run_hook(argv: Sequence[str], report: NewReport, *, timeout: float,
             environ: Mapping[str, str] | None = None, hidden: Iterable[str] = ()) -> HookResult:
    """Run the hook for ``report``; never raises for what the hook does (it is the result)."""
    command = hook_argv(argv, report)
    env = process.child_environment(hidden, environ=environ, extra=report.environment())
    what = f"the on_new_report hook {printable(command[0])}"
    with tempfile.TemporaryFile(prefix=".rs-hook-") as output:
        try:
            ran = process.run_in_own_group(command, env=env, timeout=timeout, output=output,
                                           cwd=report.path.parent)
        except process.ChildError as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            return HookResult(None, 0.0, f"{what} could not be started: {reason}")
        lines = _tail(output)
    if ran.timed_out:
        problem: str | None = (f"{what} ran past hook_timeout ({timeout:g} s) and was stopped "
                               "with every process it started")
    elif ran.returncode != 0:
        problem = f"{what} exited with code {ran.returncode}" if (ran.returncode or 0) > 0 \
            else f"{what} was ended by signal {-(ran.returncode or 0)}"
    else:
        problem = None
    if problem is not None and lines:
        last = lines[-1]
        problem += ": " + (last if len(last) <= REASON_LINE_LIMIT
                           else last[:REASON_LINE_LIMIT - 3] + "...")
    return HookResult(ran.returncode, ran.seconds, problem, tuple(lines))


def _tail(output: process.BinaryFile) -> list[str]:
    """The last lines the hook wrote (printable: a control character cannot reach a log)."""
    size = output.seek(0, 2)
    output.seek(max(0, size - OUTPUT_TAIL_BYTES))
    text = output.read().decode("utf-8", "replace")
    if size > OUTPUT_TAIL_BYTES:
        text = text.partition("\n")[2]  # the first line read may be cut
    lines = [printable(line.rstrip("\r"), quote=False) for line in text.split("\n")]
    return [line for line in lines if line.strip()][-OUTPUT_TAIL_LINES:]
