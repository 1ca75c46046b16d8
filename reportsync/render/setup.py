"""``init`` and ``schedule`` (the first steps) for people; their JSON is their fields."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reportsync.render.base import Rendered

if TYPE_CHECKING:  # schedule imports pwd (POSIX): only the schedule command loads it
    from reportsync.init import InitResult
    from reportsync.schedule import Schedule


def init_text(result: InitResult) -> Rendered:
    title = f" for {result.provider_title}" if result.provider_title else ""
    lines = [f"wrote {result.path}{title}"]
    if not result.username_given:
        lines.append(f"next: set the username (and check every active key) in "
                     f"[sources.{result.source}]")
    lines.append("then run: reportsync doctor")
    return Rendered(stdout=lines)


def schedule_text(schedule: Schedule) -> Rendered:
    """The schedule asked for is the output (printed even with ``-q``, like export-public);
    with ``--out-dir``, which files were written. Notes go to stderr."""
    if schedule.written:
        return Rendered(stdout=[f"wrote {path}" for path in schedule.written],
                        stderr=list(schedule.warnings))
    return Rendered(document=schedule.text(), stderr=list(schedule.warnings))
