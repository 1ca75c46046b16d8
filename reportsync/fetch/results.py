"""What a fetch returns: per file, per source, per run. The renderer reads these names."""

from __future__ import annotations

from dataclasses import dataclass, field

from reportsync.errors import ExitCode, ReportsyncError, most_severe
from reportsync.expiry import CredentialExpiry
from reportsync.lock import LockHolder
from reportsync.retention import DeletionOutcome, Notice
from reportsync.runguard import all_held
from reportsync.transports import RemoteFile
from reportsync.vocab import Action, NoticeKind


@dataclass
class FileOutcome:
    name: str
    size: int
    mtime: int
    action: Action
    local_path: str | None = None
    output_path: str | None = None
    transferred: int = 0
    decrypted: bool = False
    error: ReportsyncError | None = None

    @classmethod
    def of(cls, remote: RemoteFile, action: Action, *, name: str | None = None,
           local_path: str | None = None, output_path: str | None = None, transferred: int = 0,
           decrypted: bool = False, error: ReportsyncError | None = None) -> FileOutcome:
        """The outcome for this version of a remote file (``name``: shown instead of its own)."""
        shown, size, mtime = remote.version
        return cls(shown if name is None else name, size, mtime, action, local_path=local_path,
                   output_path=output_path, transferred=transferred, decrypted=decrypted,
                   error=error)


@dataclass(frozen=True)
class AtRisk:
    name: str
    days_left: float


@dataclass
class SourceResult:
    name: str
    protocol: str
    listed: int = 0
    matched: int = 0
    files: list[FileOutcome] = field(default_factory=list)
    error: ReportsyncError | None = None
    notices: list[Notice] = field(default_factory=list)  # at-risk, lost, stale, withheld
    deletions: list[DeletionOutcome] = field(default_factory=list)
    held_back: int = 0  # deletions over the per-run cap, left for later runs
    deletion_cap: int = 0  # files that could lose copies this run (retention.max_deletions)
    # skipped: another run (a host sharing the ledger) holds the source's lock; who it is
    holder: LockHolder | None = None

    @property
    def skipped_held(self) -> bool:
        return self.holder is not None

    @property
    def at_risk(self) -> list[AtRisk]:
        return [AtRisk(notice.name, notice.days) for notice in self.notices
                if notice.kind == NoticeKind.AT_RISK]

    @property
    def lost(self) -> list[Notice]:
        return [notice for notice in self.notices if notice.kind == NoticeKind.LOST]

    @property
    def deletions_withheld(self) -> Notice | None:
        """Why no deletion was done this run (the whole folder looks expired), or None."""
        return next((notice for notice in self.notices
                     if notice.kind == NoticeKind.DELETIONS_WITHHELD), None)

    @property
    def stale_days(self) -> float | None:
        """Days since the newest file when the feed is stale (inf: never any), else None."""
        stale = [notice.days for notice in self.notices if notice.kind == NoticeKind.STALE]
        return stale[0] if stale else None

    def count(self, action: str) -> int:
        return sum(1 for outcome in self.files if outcome.action == action)

    @property
    def failed(self) -> list[FileOutcome]:
        return [outcome for outcome in self.files
                if outcome.action in (Action.FAILED, Action.REFUSED)]

    @property
    def bytes_transferred(self) -> int:
        return sum(outcome.transferred for outcome in self.files)

    @property
    def refused_deletions(self) -> list[DeletionOutcome]:
        """Deletions the safety check stopped: an archived report is missing or altered."""
        return [outcome for outcome in self.deletions if outcome.refused]

    @property
    def exit_code(self) -> ExitCode:
        if self.error is not None:
            return self.error.exit_code
        return ExitCode.PARTIAL if self.failed or self.refused_deletions else ExitCode.OK


@dataclass
class FetchResult:
    sources: list[SourceResult]
    dry_run: bool
    run_id: int | None = None
    seconds: float = 0.0
    # the PGP key reports are encrypted to, SSH certificates: ended, or ending within 30 days
    expiring: list[CredentialExpiry] = field(default_factory=list)

    @property
    def exit_code(self) -> ExitCode:
        # sources skipped because another host holds them do not by themselves make it non-zero;
        # a run that could process none of its sources is a run that found the lock held
        if all_held(source.holder for source in self.sources):
            return ExitCode.LOCKED
        return most_severe(source.exit_code for source in self.sources)

    def counts(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for source in self.sources:
            for outcome in source.files:
                action = str(outcome.action)
                totals[action] = totals.get(action, 0) + 1
        return totals
