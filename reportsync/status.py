"""`reportsync status` and `reportsync verify`: what the ledger and the archive say, no network.

status: per source, the last run and the last success, the archive, pending failures, the
retention notices (at risk, lost, stale) computed by the same planner retention uses, and the
provider's window day by day. verify: every archived report and kept encrypted copy re-hashed
against the ledger.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from reportsync.config import Config, RetentionPolicy
from reportsync.errors import ExitCode, UsageError
from reportsync.fsutil import printable, sha256_file
from reportsync.ledger import Ledger, VersionIndex, VersionState
from reportsync.retention import Notice, acting_before, plan
from reportsync.vocab import DeletionTarget, NoticeKind, Stage

MAX_WINDOW_DAYS = 366  # the strip of a provider that keeps files longer shows its last year


@dataclass(frozen=True)
class DayTally:
    """One delivery day of the provider's window: the file versions with that delivery date
    (their remote modification time, local calendar day) and what became of them."""

    date: date
    delivered: int = 0
    archived: int = 0
    failing: int = 0  # not archived: an open failure (a bad download, a decryption error ...)
    at_risk: int = 0  # not archived, and the purge takes it within retention.warn_days
    lost: int = 0  # never archived and gone from the server


@dataclass(frozen=True)
class DeliveryWindow:
    """The provider's window, oldest day first: the first day is the next the purge takes."""

    purge_days: int  # retention.days: how long the provider keeps a file
    warn_days: int  # retention.warn_days: the first this many days are purged soon
    days: tuple[DayTally, ...]


@dataclass(frozen=True)
class SourceStatus:
    name: str
    last_run: dict[str, object] | None
    archived: int
    failures: list[dict[str, object]]
    notices: list[Notice]
    purged: int  # versions that vanished from the server without reportsync deleting them
    last_success: float | None = None  # when the last fetch of this source that exited 0 ended
    in_archive: int = 0  # archived reports still in output_dir (archive_days deletes old ones)
    window: DeliveryWindow | None = None

    def of_kind(self, kind: str) -> list[Notice]:
        return [notice for notice in self.notices if notice.kind == kind]

    @property
    def healthy(self) -> bool:
        last_failed = self.last_run is not None and self.last_run.get("exit_code") not in (0, None)
        return not (self.failures or self.notices or last_failed)


@dataclass(frozen=True)
class StatusReport:
    """``status``: each source's health from the ledger, and what ``--ack`` acknowledged."""

    sources: tuple[SourceStatus, ...]
    acknowledged: int = 0

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if all(source.healthy for source in self.sources) else ExitCode.PARTIAL


def status(config: Config, ledger: Ledger, names: tuple[str, ...] = (), *,
           acknowledge: tuple[str, ...] = (), now: float | None = None) -> StatusReport:
    moment = now if now is not None else time.time()
    sources = config.select(names)
    acknowledged = 0
    for name in acknowledge:
        marked = sum(ledger.acknowledge_lost(source.name, name) for source in sources)
        if not marked:
            refused = [source.name for source in sources
                       if any(failure["name"] in (name, printable(name))
                              and failure["stage"] == Stage.NAME
                              for failure in ledger.open_failures(source.name))]
            if refused:
                raise UsageError(
                    f"{name} is a name refused as unsafe on {', '.join(refused)}: it was never "
                    "fetched, so there is no file version to acknowledge",
                    remedy="Ask the provider to rename or remove the file; the refusal is "
                    "reported on every run until then.")
            raise UsageError(f"no file named {name!r} in the ledger of "
                             f"{', '.join(source.name for source in sources)}",
                             remedy="Use the name exactly as `reportsync status` shows it.")
        acknowledged += marked
    healths: list[SourceStatus] = []
    for source in sources:
        # every version compactly, in full only those that can act (the archived ones too
        # young to lose a copy are only counted): status after a fetch of 50,000 files, which
        # the metrics file asks for, is not a second read of them all
        index = ledger.version_index(source.name)
        versions = ledger.acting_versions(source.name, index, archived_before=acting_before(
            config.retention, moment, server_asked=False))
        retention_plan = plan(source, config.retention, versions, None, moment, settled=index)
        archived, in_archive, purged = ledger.archive_counts(source.name)
        success = ledger.last_source_run(source.name, succeeded=True)
        healths.append(SourceStatus(
            name=source.name,
            last_run=ledger.last_source_run(source.name),
            archived=archived,
            failures=ledger.open_failures(source.name),
            notices=retention_plan.notices,
            purged=purged,
            last_success=_timestamp(success["finished_at"]) if success else None,
            in_archive=in_archive,
            window=delivery_window(versions, retention_plan.notices, config.retention, moment,
                                   settled=index),
        ))
    return StatusReport(sources=tuple(healths), acknowledged=acknowledged)


def _timestamp(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def delivery_window(versions: Iterable[VersionState], notices: Iterable[Notice],
                    policy: RetentionPolicy, now: float, *,
                    settled: VersionIndex | None = None) -> DeliveryWindow:
    """The last ``retention.days`` delivery days (at most MAX_WINDOW_DAYS), oldest first, each
    with its versions' fates. At risk and lost are the retention plan's word (``notices``), not a
    second rule: a version counts as at risk or lost when the plan names it so. ``settled``:
    every version, compactly, when ``versions`` holds only the ones that can act (at least every
    one not archived: the archived rest are delivered and archived, nothing more)."""
    length = min(max(policy.days, 1), MAX_WINDOW_DAYS)
    today = datetime.fromtimestamp(now).date()
    first = today - timedelta(days=length - 1)
    named = {kind: {notice.name for notice in notices if notice.kind == kind}
             for kind in (NoticeKind.AT_RISK, NoticeKind.LOST)}
    tallies = {first + timedelta(days=offset): [0, 0, 0, 0, 0] for offset in range(length)}
    if settled is not None:
        shown = {version.version for version in versions}
        for key in settled.archived.keys() - shown:
            counts = tallies.get(min(datetime.fromtimestamp(key[2]).date(), today))
            if counts is not None:
                counts[0] += 1
                counts[1] += 1
    for version in versions:
        day = min(datetime.fromtimestamp(version.mtime).date(), today)  # a clock ahead: today
        counts = tallies.get(day)
        if counts is None:
            continue  # delivered before the window: purged from the server by now
        counts[0] += 1
        if version.archived:
            counts[1] += 1
        elif version.acknowledged:
            continue  # a person dealt with it (status --ack)
        elif version.name in named[NoticeKind.LOST]:
            counts[4] += 1
        elif version.failing:
            counts[2] += 1
        elif version.name in named[NoticeKind.AT_RISK]:
            counts[3] += 1
    return DeliveryWindow(
        purge_days=policy.days, warn_days=policy.warn_days,
        days=tuple(DayTally(day, *counts) for day, counts in tallies.items()))


@dataclass(frozen=True)
class VerifyProblem:
    source: str
    name: str
    copy: str  # "archive" | "encrypted"
    path: str
    problem: str  # "missing" | "altered" | "not a regular file"


@dataclass(frozen=True)
class VerifyReport:
    """``verify``: how many copies were hashed, and which are missing or altered."""

    checked: int = 0
    problems: tuple[VerifyProblem, ...] = ()

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.PARTIAL if self.problems else ExitCode.OK


def verify(config: Config, ledger: Ledger, names: tuple[str, ...] = ()) -> VerifyReport:
    """Every archived report and kept encrypted copy re-hashed against the ledger, after the
    ledger's own full check (a damaged ledger cannot vouch for any hash: LedgerDamagedError)."""
    ledger.require_intact(thorough=True)
    checked = 0
    problems: list[VerifyProblem] = []
    for source in config.select(names):
        for version in ledger.versions(source.name):
            copies = []
            if version.in_archive and version.output_path:
                copies.append(("archive", version.output_path, version.output_sha256))
            if (version.download_path and DeletionTarget.LOCAL_ENCRYPTED not in version.deleted
                    and version.download_path != version.output_path):
                copies.append(("encrypted", version.download_path, version.download_sha256))
            for copy, path, expected in copies:
                checked += 1
                problem = _check(Path(path), expected or "")
                if problem:
                    problems.append(VerifyProblem(source.name, version.name, copy, path, problem))
    return VerifyReport(checked=checked, problems=tuple(problems))


def _check(path: Path, expected: str) -> str | None:
    if path.is_symlink() or (path.exists() and not path.is_file()):
        return "not a regular file"
    try:
        actual = sha256_file(path)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    return None if actual == expected else "altered"
