"""fetch's result for people and its JSON view; the notices and deletions that fetch and
``retention`` both report are worded here once."""

from __future__ import annotations

import math
from typing import Any

from reportsync.fetch.results import FetchResult, FileOutcome, SourceResult
from reportsync.fsutil import printable
from reportsync.lock import LockHolder
from reportsync.render.base import Rendered, error_lines
from reportsync.render.envelope import to_json
from reportsync.retention import DeletionOutcome, Notice
from reportsync.units import human_bytes


def fetch_text(result: FetchResult) -> Rendered:
    rendered = Rendered()
    for source in result.sources:
        if source.holder is not None:
            rendered.stdout.append(held_summary(source.name))
            rendered.stderr.append(held_line(source.name, source.holder))
            continue
        rendered.stdout.append(_source_summary(source, result.dry_run))
        if result.dry_run:
            for outcome in source.files:
                if outcome.action == "would-fetch":
                    rendered.stdout.append(f"  would fetch {printable(outcome.name, quote=False)} "
                                           f"({human_bytes(outcome.size)})")
        for outcome in source.failed:
            if outcome.error is not None:
                rendered.stderr.extend(error_lines(outcome.error, prefix="failed"))
        if source.error is not None:
            rendered.stderr.extend(error_lines(source.error, source=source.name))
        for risk in source.at_risk:
            rendered.stderr.append(
                f"warning: source {source.name!r}: {printable(risk.name, quote=False)} is not "
                f"archived and the provider purges it in {max(risk.days_left, 0):.0f} days"
            )
        for notice in source.lost:
            rendered.stderr.append(notice_line(notice))
        rendered.stdout.extend(deletion_lines([o for o in source.deletions if o.done]))
        rendered.stderr.extend(f"warning: source {source.name!r}:{line}"
                               for line in deletion_lines(source.refused_deletions))
        if source.held_back:
            rendered.stderr.append(held_back_line(source.name, source.held_back,
                                                  source.deletion_cap))
        if source.deletions_withheld is not None:
            rendered.stderr.append(notice_line(source.deletions_withheld))
        if source.stale_days is not None:
            since = ("no file has ever arrived" if math.isinf(source.stale_days)
                     else f"the newest file is {source.stale_days:.0f} days old")
            rendered.stderr.append(f"warning: source {source.name!r}: feed looks stale: {since}")
    for expiry in result.expiring:
        rendered.stderr.append(f"warning: {expiry.finding}")
        rendered.stderr.append(f"  what to do: {expiry.remedy}")
    return rendered


def _source_summary(source: SourceResult, dry_run: bool) -> str:
    if source.error is not None and not source.files and not source.skipped:
        return f"{source.name}: FAILED ({type(source.error).__name__})"
    if dry_run:
        acknowledged = (f"{source.count('acknowledged')} acknowledged, "
                        if source.count("acknowledged") else "")
        return (f"{source.name}: {source.count('would-fetch')} to fetch, "
                f"{source.count('skipped')} already archived, {acknowledged}{source.matched} "
                f"matching of {source.listed} listed (dry run: nothing written)")
    parts = [f"{source.count('archived')} archived"]
    if source.count("downloaded"):
        parts.append(f"{source.count('downloaded')} downloaded, not decrypted")
    parts.append(f"{source.count('skipped')} already archived")
    if source.count("acknowledged"):
        parts.append(f"{source.count('acknowledged')} acknowledged failure(s), not retried")
    if source.failed:
        parts.append(f"{len(source.failed)} failed")
    if source.count("pending"):
        parts.append(f"{source.count('pending')} left for the next run")
    transferred = f", {human_bytes(source.bytes_transferred)} transferred"
    return f"{source.name}: {', '.join(parts)}{transferred}"


def held_summary(source: str) -> str:
    return f"{source}: skipped: another run holds its lock"


def held_line(source: str, holder: LockHolder) -> str:
    """The stderr line of a source skipped because another run (on this host or another one
    sharing the ledger) holds its lock: who, so a person can find that run."""
    return (f"skipped: source {source!r}: another run holds its lock: {holder.describe()}; "
            "that run works on it, this one went on with the other sources")


def holder_view(holder: LockHolder | None) -> dict[str, Any] | None:
    """A lock holder in ``--json`` (null: the source was not skipped)."""
    if holder is None:
        return None
    return {"host": holder.host, "pid": holder.pid, "command": holder.command,
            "since": holder.since}


def notice_line(notice: Notice) -> str:
    name = printable(notice.name, quote=False)
    subject = f"source {notice.source!r}" + (f": {name}" if notice.name else "")
    if notice.kind == "lost":
        return (f"LOST: {subject}: {notice.reason}; after checking with the provider, "
                f"acknowledge it: reportsync status --source {notice.source} --ack "
                f"{printable(notice.name)}")
    if notice.kind == "at-risk":
        return f"warning: {subject}: {notice.reason}; run `reportsync fetch` now"
    return f"warning: {subject}: {notice.reason}"


def deletion_lines(outcomes: list[DeletionOutcome]) -> list[str]:
    lines = []
    for outcome in outcomes:
        deletion = outcome.deletion
        if outcome.done:
            lines.append(f"  deleted {deletion.target.replace('_', ' ')} "
                         f"{printable(deletion.path, quote=False)}: "
                         f"{deletion.reason}")
        else:
            lines.append(f"  kept {deletion.target.replace('_', ' ')} "
                         f"{printable(deletion.path, quote=False)}: "
                         f"{outcome.detail}")
    return lines


def held_back_line(source: str, count: int, cap: int) -> str:
    return (f"warning: source {source!r}: {count} more deletion(s) held back by the per-run cap "
            f"(retention.max_deletions = {cap} files); they follow in the next runs")


# The views below are the JSON shapes of fetch's results (a Notice or an AtRisk is simply its
# fields); docs/commands.md documents them.


@to_json.register
def _deletion_outcome(outcome: DeletionOutcome) -> dict[str, Any]:
    deletion = outcome.deletion
    return {"target": deletion.target, "name": deletion.name, "path": deletion.path,
            "reason": deletion.reason, "done": outcome.done, "detail": outcome.detail}


@to_json.register
def _outcome(outcome: FileOutcome) -> dict[str, Any]:
    return {
        "name": outcome.name,
        "size": outcome.size,
        "mtime": outcome.mtime,
        "action": outcome.action,
        "local_path": outcome.local_path,
        "output_path": outcome.output_path,
        "bytes_transferred": outcome.transferred,
        "decrypted": outcome.decrypted,
        "error": to_json(outcome.error),
    }


@to_json.register
def _fetch(result: FetchResult) -> dict[str, Any]:
    return {
        "dry_run": result.dry_run,
        "run_id": result.run_id,
        "seconds": round(result.seconds, 3),
        "expiring": to_json(result.expiring),
        "sources": [
            {
                "name": source.name,
                "protocol": source.protocol,
                "exit_code": int(source.exit_code),
                "listed": source.listed,
                "matched": source.matched,
                "counts": {action: source.count(action) for action in
                           ("archived", "downloaded", "skipped", "acknowledged", "would-fetch",
                            "failed", "refused", "pending")},
                "bytes_transferred": source.bytes_transferred,
                "error": to_json(source.error),
                "holder": holder_view(source.holder),
                "at_risk": to_json(source.at_risk),
                "stale_days": to_json(source.stale_days),
                "stale": source.stale_days is not None,
                "lost": to_json(source.lost),
                "deletions": to_json(source.deletions),
                "deletions_held_back": source.held_back,
                "deletions_withheld": to_json(source.deletions_withheld),
                "files": to_json(source.outcomes),
            }
            for source in result.sources
        ],
    }
