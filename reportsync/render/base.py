"""What every renderer shares: the lines to print, an error's lines (sizes for people: units)."""

from __future__ import annotations

from dataclasses import dataclass, field

from reportsync.errors import ReportsyncError

DOCTOR = "`reportsync doctor`"


@dataclass
class Rendered:
    """What to print for one result.

    ``stdout``: the result for people (not with ``-q``, not with ``--json``); ``stderr``:
    warnings and errors (always, also with ``-q`` and ``--json``: cron mails them); ``document``:
    the output the person asked for (a crontab, an armored key), printed even with ``-q``.
    """

    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    document: str | None = None


def error_lines(error: ReportsyncError, prefix: str = "error", *, source: str | None = None
                ) -> list[str]:
    """The error and what to do, once. With ``source`` (a source that stopped as a whole) the
    advice to run doctor names that source: the remedy's own mention of doctor is made
    specific, or, if the remedy has none, one line says it (never both)."""
    lines = [f"{prefix}: {error.describe()}"]
    remedy = error.remedy
    hint = None
    if source is not None:
        if DOCTOR in remedy:
            remedy = remedy.replace(DOCTOR, f"`reportsync doctor --source {source}`")
        elif "reportsync doctor" not in remedy:  # it names no doctor run, or already this one
            hint = f"  then run: reportsync doctor --source {source}"
    if remedy:
        lines.append(f"  what to do: {remedy}")
    if hint is not None:
        lines.append(hint)
    return lines
