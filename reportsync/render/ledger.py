"""``retention``, ``status`` and ``verify`` (the commands that read the ledger) for people, and
the JSON views of their per-source results."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from reportsync.fsutil import printable
from reportsync.render.base import Rendered, error_lines
from reportsync.render.envelope import to_json
from reportsync.render.fetch import (
    deletion_lines,
    held_back_line,
    held_line,
    held_summary,
    holder_view,
    notice_line,
)
from reportsync.retention import RetentionResult, SourceRetention
from reportsync.status import DayTally, DeliveryWindow, SourceStatus, StatusReport, VerifyReport

if TYPE_CHECKING:  # annotations only: the migration is the `ledger migrate` command's alone
    from reportsync.ledger.migrate import LedgerMigration

# The strip's marks, one a day: (Unicode, plain ASCII for a terminal that is not UTF-8)
ARCHIVED_MARK = ("\u2588", "#")  # full block
PROBLEM_MARK = ("\u2717", "!")  # ballot x: a file failing, at risk or lost
WAITING_MARK = ("\u2592", "+")  # medium shade: delivered, not archived yet, nothing wrong yet
NOTHING_MARK = ("\u00b7", ".")  # middle dot
STRIP_ROW_DAYS = 50  # two rows for the usual 100 days: fits 80 columns with the day groups
STRIP_GROUP_DAYS = 10


def retention_text(result: RetentionResult) -> Rendered:
    rendered = Rendered()
    for source in result.sources:
        if source.holder is not None:
            rendered.stdout.append(held_summary(source.name))
            rendered.stderr.append(held_line(source.name, source.holder))
            continue
        if source.error is not None:
            rendered.stdout.append(f"{source.name}: FAILED ({type(source.error).__name__})")
            rendered.stderr.extend(error_lines(source.error, source=source.name))
            continue
        if result.dry_run:
            rendered.stdout.append(f"{source.name}: {len(source.planned)} deletion(s) planned "
                                   "(dry run: nothing changed)")
            rendered.stdout.extend(f"  would delete {d.target.replace('_', ' ')} {d.path}: "
                                   f"{d.reason}" for d in source.planned)
        else:
            done = sum(outcome.done for outcome in source.outcomes)
            rendered.stdout.append(f"{source.name}: {done} deleted, "
                                   f"{len(source.outcomes) - done} kept")
            rendered.stdout.extend(deletion_lines(source.outcomes))
        if source.held_back:
            rendered.stderr.append(held_back_line(source.name, source.held_back, source.cap))
        rendered.stderr.extend(notice_line(notice) for notice in source.notices)
    return rendered


def _when(timestamp: object) -> str:
    if not isinstance(timestamp, (int, float)):
        return "never"
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def status_text(report: StatusReport, *, strip: bool = False, unicode: bool = True) -> Rendered:
    """``strip``: each source's delivery window as a strip of days (on a terminal); ``unicode``
    False: its marks in plain ASCII."""
    rendered = Rendered()
    if report.acknowledged:
        rendered.stdout.append(f"acknowledged {report.acknowledged} file version(s): no longer "
                               "reported as lost or failing")
    for source in report.sources:
        run = source.last_run
        last = ("no fetch recorded yet" if run is None else
                f"last fetch {_when(run.get('finished_at'))}, exit {run.get('exit_code')}")
        health = "OK" if source.healthy else "NEEDS ATTENTION"
        if run is not None and run.get("exit_code") not in (0, None):
            last += f" (last success: {_when(source.last_success)})"
        rendered.stdout.append(f"{source.name}: {health}: {last}; {source.archived} archived; "
                               f"{len(source.failures)} failing; {len(source.of_kind('at-risk'))} "
                               f"at risk; {len(source.of_kind('lost'))} lost; "
                               f"{source.purged} purged by the provider")
        if strip and source.window is not None:
            rendered.stdout.extend(strip_lines(source.window, unicode=unicode))
        # what needs a person goes to stderr, so `-q status` in cron still mails it
        if run is not None and run.get("error"):
            rendered.stderr.append(f"{source.name}: last error: {run['error']}")
        for failure in source.failures:
            rendered.stderr.append(f"{source.name}: failing: "
                                   f"{printable(str(failure['name']), quote=False)} "
                                   f"({failure['stage']}, "
                                   f"{failure['attempts']} attempt(s)): {failure['reason']}")
        rendered.stderr.extend(notice_line(notice) for notice in source.notices)
    if strip and any(source.window is not None for source in report.sources):
        rendered.stdout.append(strip_legend(unicode=unicode))
    return rendered


def _mark(day: DayTally, unicode: bool) -> str:
    marks = (PROBLEM_MARK if day.failing or day.at_risk or day.lost else
             ARCHIVED_MARK if day.archived else WAITING_MARK if day.delivered else NOTHING_MARK)
    return marks[0 if unicode else 1]


def strip_lines(window: DeliveryWindow, *, unicode: bool = True) -> list[str]:
    """The window as rows of days, oldest first, in groups of ten, each row led by its first
    day; under the first row, the days the purge takes within ``warn_days``; then the legend."""
    days = window.days
    if not days:
        return []
    lines = [f"  deliveries of the last {len(days)} days, oldest first (the provider purges "
             f"after {window.purge_days} days, from the left):"]
    for start in range(0, len(days), STRIP_ROW_DAYS):
        row = days[start:start + STRIP_ROW_DAYS]
        groups = [row[i:i + STRIP_GROUP_DAYS] for i in range(0, len(row), STRIP_GROUP_DAYS)]
        lines.append(f"  {row[0].date:%m-%d} "
                     + " ".join("".join(_mark(day, unicode) for day in group)
                                for group in groups))
        if start == 0 and window.purge_days > 0 and window.warn_days > 0 and \
                len(days) >= window.purge_days:
            # the window is the provider's whole horizon: its left edge is the purge
            soon = min(window.warn_days, len(row))
            marker = "".join("^" if i < soon else " " for i in range(len(row)))
            marker = " ".join(marker[i:i + STRIP_GROUP_DAYS]
                              for i in range(0, len(marker), STRIP_GROUP_DAYS)).rstrip()
            lines.append(f"        {marker} purged within {window.warn_days} days")
    return lines


def strip_legend(*, unicode: bool = True) -> str:
    index = 0 if unicode else 1
    return (f"{ARCHIVED_MARK[index]} archived  {PROBLEM_MARK[index]} a file failing, at risk or "
            f"lost  {WAITING_MARK[index]} delivered, not archived yet  {NOTHING_MARK[index]} "
            "nothing delivered")


def verify_text(report: VerifyReport) -> Rendered:
    rendered = Rendered(stdout=[f"checked {report.checked} file(s) against the ledger: "
                                f"{len(report.problems)} problem(s)"])
    for problem in report.problems:
        rendered.stderr.append(f"{problem.problem.upper()}: source {problem.source!r}: "
                               f"{problem.copy} copy of {printable(problem.name, quote=False)}: "
                               f"{printable(problem.path, quote=False)}")
    if report.problems:
        rendered.stderr.append("  what to do: restore these files from your backups; the ledger "
                               "keeps their sha256 to check the restored copies against")
    return rendered


# The views: what of a source's result JSON shows (the other results are their fields).


@to_json.register
def _source_retention(source: SourceRetention) -> dict[str, Any]:
    return {
        "name": source.name, "exit_code": int(source.exit_code), "cap": source.cap,
        "planned": [{"target": d.target, "name": d.name, "path": d.path, "reason": d.reason}
                    for d in source.planned],
        "deletions": to_json(source.outcomes),
        "held_back": source.held_back, "withheld": source.withheld,
        "notices": to_json(source.notices),
        "error": to_json(source.error),
        "holder": holder_view(source.holder),
    }


@to_json.register
def _source_status(source: SourceStatus) -> dict[str, Any]:
    return {
        "name": source.name, "healthy": source.healthy, "last_run": to_json(source.last_run),
        "archived": source.archived, "failures": to_json(source.failures),
        "at_risk": to_json(source.of_kind("at-risk")),
        "lost": to_json(source.of_kind("lost")),
        "stale": to_json(source.of_kind("stale")),
        "purged_by_provider": source.purged,
        "last_success": source.last_success,
        "in_archive": source.in_archive,
        "window": to_json(source.window),
    }


def ledger_migrate_text(result: LedgerMigration) -> Rendered:
    how = " (--force: merged with what was there)" if result.forced else ""
    rendered = Rendered(stdout=[
        f"copied the ledger {result.ledger} into {result.target}{how}: "
        f"{len(result.sources)} source(s): {', '.join(result.sources) or 'none'}"])
    rendered.stdout.extend(f"  {table.table}: {table.copied} copied, {table.already_there} "
                           "already there" for table in result.tables)
    rendered.stdout.append(f'next: set ledger_url = "{result.target}" in [settings] on every '
                           "host (the password from ledger_password_env, ledger_password_file "
                           "or ~/.pgpass); the SQLite file is no longer used then")
    return rendered
