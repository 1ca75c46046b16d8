"""Result objects → text for people, JSON for machines. No I/O: the CLI writes what this returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from reportsync.errors import ReportsyncError
from reportsync.fetch import FetchResult, FileOutcome, SourceResult


@dataclass
class Rendered:
    """What to print: ``stdout`` lines (the result), ``stderr`` lines (warnings and errors)."""

    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)


def human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"  # pragma: no cover


def error_lines(error: ReportsyncError, prefix: str = "error") -> list[str]:
    lines = [f"{prefix}: {error.describe()}"]
    if error.remedy:
        lines.append(f"  what to do: {error.remedy}")
    return lines


def fetch_text(result: FetchResult) -> Rendered:
    rendered = Rendered()
    for source in result.sources:
        rendered.stdout.append(_source_summary(source, result.dry_run))
        if result.dry_run:
            for outcome in source.files:
                if outcome.action == "would-fetch":
                    rendered.stdout.append(f"  would fetch {outcome.name} ({human_bytes(outcome.size)})")
        for outcome in source.failed:
            if outcome.error is not None:
                rendered.stderr.extend(error_lines(outcome.error, prefix="failed"))
        if source.error is not None:
            rendered.stderr.extend(error_lines(source.error))
            rendered.stderr.append(f"  then run: reportsync doctor --source {source.name}")
        for risk in source.at_risk:
            rendered.stderr.append(
                f"warning: source {source.name!r}: {risk.name} is not archived and the provider "
                f"purges it in {max(risk.days_left, 0):.0f} days"
            )
        if source.stale_days is not None:
            since = ("no file has ever arrived" if math.isinf(source.stale_days)
                     else f"the newest file is {source.stale_days:.0f} days old")
            rendered.stderr.append(f"warning: source {source.name!r}: feed looks stale: {since}")
    return rendered


def _source_summary(source: SourceResult, dry_run: bool) -> str:
    if source.error is not None and not source.files:
        return f"{source.name}: FAILED ({type(source.error).__name__})"
    if dry_run:
        return (f"{source.name}: {source.count('would-fetch')} to fetch, "
                f"{source.count('skipped')} already archived, {source.matched} matching of "
                f"{source.listed} listed (dry run: nothing written)")
    parts = [f"{source.count('archived')} archived"]
    if source.count("downloaded"):
        parts.append(f"{source.count('downloaded')} downloaded, not decrypted")
    parts.append(f"{source.count('skipped')} already archived")
    if source.failed:
        parts.append(f"{len(source.failed)} failed")
    transferred = f", {human_bytes(source.bytes_transferred)} transferred"
    return f"{source.name}: {', '.join(parts)}{transferred}"


def outcome_dict(outcome: FileOutcome) -> dict[str, Any]:
    return {
        "name": outcome.name,
        "size": outcome.size,
        "mtime": outcome.mtime,
        "action": outcome.action,
        "local_path": outcome.local_path,
        "output_path": outcome.output_path,
        "bytes_transferred": outcome.transferred,
        "decrypted": outcome.decrypted,
        "error": outcome.error.to_dict() if outcome.error else None,
    }


def fetch_json(result: FetchResult) -> dict[str, Any]:
    return {
        "command": "fetch",
        "exit_code": int(result.exit_code),
        "dry_run": result.dry_run,
        "run_id": result.run_id,
        "seconds": round(result.seconds, 3),
        "sources": [
            {
                "name": source.name,
                "protocol": source.protocol,
                "exit_code": int(source.exit_code),
                "listed": source.listed,
                "matched": source.matched,
                "counts": {action: source.count(action) for action in
                           ("archived", "downloaded", "skipped", "would-fetch", "failed", "refused")},
                "bytes_transferred": source.bytes_transferred,
                "error": source.error.to_dict() if source.error else None,
                "at_risk": [{"name": risk.name, "days_left": risk.days_left}
                            for risk in source.at_risk],
                "stale_days": (None if source.stale_days is None or math.isinf(source.stale_days)
                               else source.stale_days),
                "stale": source.stale_days is not None,
                "files": [outcome_dict(outcome) for outcome in source.files],
            }
            for source in result.sources
        ],
    }
