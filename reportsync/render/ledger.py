"""``retention``, ``status`` and ``verify`` (the commands that read the ledger) for people, and
the JSON views of their per-source results."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from reportsync.fsutil import printable
from reportsync.render.base import Rendered, error_lines
from reportsync.render.envelope import to_json
from reportsync.render.fetch import deletion_lines, held_back_line, notice_line
from reportsync.retention import RetentionResult, SourceRetention
from reportsync.status import SourceStatus, StatusReport, VerifyReport


def retention_text(result: RetentionResult) -> Rendered:
    rendered = Rendered()
    for source in result.sources:
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


def status_text(report: StatusReport) -> Rendered:
    rendered = Rendered()
    if report.acknowledged:
        rendered.stdout.append(f"acknowledged {report.acknowledged} file version(s): no longer "
                               "reported as lost or failing")
    for source in report.sources:
        run = source.last_run
        last = ("no fetch recorded yet" if run is None else
                f"last fetch {_when(run.get('finished_at'))}, exit {run.get('exit_code')}")
        health = "OK" if source.healthy else "NEEDS ATTENTION"
        rendered.stdout.append(f"{source.name}: {health}: {last}; {source.archived} archived; "
                               f"{len(source.failures)} failing; {len(source.of_kind('at-risk'))} "
                               f"at risk; {len(source.of_kind('lost'))} lost; "
                               f"{source.purged} purged by the provider")
        # what needs a person goes to stderr, so `-q status` in cron still mails it
        if run is not None and run.get("error"):
            rendered.stderr.append(f"{source.name}: last error: {run['error']}")
        for failure in source.failures:
            rendered.stderr.append(f"{source.name}: failing: "
                                   f"{printable(str(failure['name']), quote=False)} "
                                   f"({failure['stage']}, "
                                   f"{failure['attempts']} attempt(s)): {failure['reason']}")
        rendered.stderr.extend(notice_line(notice) for notice in source.notices)
    return rendered


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
    }
