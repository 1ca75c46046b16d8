"""The metrics file: Prometheus text format, for node_exporter's textfile collector.

Rewritten after every fetch (also a failed one; never after a dry run or a run that found the
lock held), atomically: a scrape sees the previous file or the new one, never a part. Every
configured source gets its series, so a ``--source`` run does not make the others vanish; what
the ledger keeps (last run, last success, exit code, archive, failures, at risk) comes from it —
the same numbers ``reportsync status`` shows — and what only a run knows (duration, bytes) from
this run, for the sources it fetched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reportsync.errors import ReportsyncError
from reportsync.expiry import CredentialExpiry
from reportsync.fsutil import write_atomically
from reportsync.notify.delivery import Delivery
from reportsync.notify.events import RunOutcome
from reportsync.status import SourceStatus

METRICS_MODE = 0o644  # node_exporter runs as its own user; the file holds no secret
PREFIX = "reportsync_"

GAUGES: dict[str, str] = {
    "last_run_timestamp_seconds": "When the source's last fetch ended (Unix time).",
    "last_success_timestamp_seconds": "When the source's last fetch that exited 0 ended (Unix "
                                      "time; 0: never).",
    "last_run_exit_code": "Exit code of the source's last fetch (0 success, 1 files failed, "
                          "2-7 see docs/commands.md).",
    "last_run_duration_seconds": "Wall time of the last fetch run that fetched the source.",
    "last_run_archived_files": "Reports the source's last fetch archived.",
    "last_run_transferred_bytes": "Bytes the source's last fetch downloaded.",
    "archived_reports": "Archived reports of the source in its output_dir now.",
    "failing_files": "Files of the source with an open failure (as reportsync status counts "
                     "them).",
    "at_risk_files": "Files of the source not archived that the provider purges within "
                     "retention.warn_days.",
    "key_expiry_timestamp_seconds": "When the PGP decryption key or a source's SSH certificate "
                                    "ends (Unix time).",
}


@dataclass
class Gauge:
    name: str  # without the prefix
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float | None, **labels: str) -> None:
        if value is not None:
            self.samples.append((labels, value))


def collect(outcome: RunOutcome, configured: Sequence[str], duration: float,
            statuses: Mapping[str, SourceStatus] | None,
            expiries: Sequence[CredentialExpiry]) -> list[Gauge]:
    """The gauges after ``outcome``, for every source in ``configured``. ``statuses``: each
    source's status read from the ledger after the run (None: the ledger could not be read)."""
    gauges = {name: Gauge(name) for name in GAUGES}
    fetched = {source.name: source for source in outcome.result.sources} \
        if outcome.result is not None else {}
    for name in configured:
        status = statuses.get(name) if statuses is not None else None
        last_run = status.last_run if status is not None else None
        in_run = name in outcome.sources
        if in_run and outcome.error is not None:  # stopped before anything was recorded
            finished: float | None = outcome.finished_at
            exit_code: float | None = int(outcome.error.exit_code)
            archived: float | None = 0
        elif last_run is not None:
            finished = _number(last_run.get("finished_at"))
            exit_code = _number(last_run.get("exit_code"))
            counts = last_run.get("counts")
            archived = _number(counts.get("archived", 0)) if isinstance(counts, dict) else None
        else:
            finished = exit_code = archived = None
        source_result = fetched.get(name)
        if source_result is not None:  # this run's own numbers, whatever the ledger holds
            exit_code = int(source_result.exit_code)
            archived = source_result.count("archived")
            finished = finished if finished is not None else outcome.finished_at
        gauges["last_run_timestamp_seconds"].add(finished, source=name)
        gauges["last_run_exit_code"].add(exit_code, source=name)
        gauges["last_run_archived_files"].add(archived, source=name)
        if in_run:
            gauges["last_run_duration_seconds"].add(duration, source=name)
            gauges["last_run_transferred_bytes"].add(
                source_result.bytes_transferred if source_result is not None else 0, source=name)
        if status is not None:
            gauges["last_success_timestamp_seconds"].add(status.last_success or 0, source=name)
            gauges["archived_reports"].add(status.in_archive, source=name)
            gauges["failing_files"].add(len(status.failures), source=name)
            gauges["at_risk_files"].add(len(status.of_kind("at-risk")), source=name)
    for expiry in expiries:
        labels = {"kind": expiry.kind}
        if expiry.source is not None:
            labels["source"] = expiry.source
        gauges["key_expiry_timestamp_seconds"].add(expiry.expires_at, **labels)
    return [gauge for gauge in gauges.values() if gauge.samples]


def _number(value: object) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def metrics_text(gauges: Sequence[Gauge]) -> str:
    """The Prometheus text exposition format (version 0.0.4): HELP, TYPE, then the samples."""
    lines: list[str] = []
    for gauge in gauges:
        name = PREFIX + gauge.name
        lines.append(f"# HELP {name} {GAUGES[gauge.name]}")
        lines.append(f"# TYPE {name} gauge")
        for labels, value in gauge.samples:
            label_text = ",".join(f'{key}="{_escaped(text)}"' for key, text in labels.items())
            lines.append(f"{name}{{{label_text}}} {_value(value)}")
    return "\n".join(lines) + "\n"


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _value(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value.is_integer()):
        return str(int(value))
    return repr(float(value)) if math.isfinite(value) else ("+Inf" if value > 0 else "-Inf")


def write_metrics(path: Path, text: str) -> Delivery:
    """Replace the file with ``text``; its folder must exist (node_exporter's, made by its
    package: reportsync does not create it, with a mode that would hide it from the reader)."""
    target = f"metrics file {path}"
    if not path.parent.is_dir():
        return Delivery(target=target, ok=False, key="notify.metrics_file",
                        detail=f"its folder {path.parent} does not exist")
    try:
        write_atomically(path, text.encode("utf-8"), mode=METRICS_MODE)
    except ReportsyncError as error:
        return Delivery(target=target, ok=False, key="notify.metrics_file",
                        detail=error.message)
    return Delivery(target=target, ok=True, key="notify.metrics_file")
