"""What a fetch returns: per file, per source, per run. The renderer reads these names."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter

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


SkippedFile = tuple[str, int, int, str]
"""A listed file an earlier run archived (action ``skipped``): its name, size, mtime and report
path. A plain tuple, not a ``FileOutcome``: a nightly run over a big folder has 50,000 of them
and needs only their number; ``--json`` shows each (``in_order``)."""


def skipped_outcome(skipped: SkippedFile) -> FileOutcome:
    name, size, mtime, output_path = skipped
    return FileOutcome(name, size, mtime, Action.SKIPPED, output_path=output_path)


def in_order(listed: Sequence[FileOutcome], skipped: Sequence[SkippedFile]) -> list[FileOutcome]:
    """The outcomes of a listing's files in the listing's (name) order: ``listed`` (the other
    outcomes decided from the listing, in name order) with the ``skipped`` ones among them."""
    if not skipped:
        return list(listed)
    return list(heapq.merge(listed, map(skipped_outcome, skipped), key=attrgetter("name")))


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
    files: list[FileOutcome] = field(default_factory=list)  # every outcome but ``skipped``
    skipped: list[SkippedFile] = field(default_factory=list)  # files archived before
    # files[refused:listed_end]: the outcomes decided from the listing, in name order (the
    # skipped ones belong among them, ``outcomes``); before them the refused names
    refused: int = 0
    listed_end: int = 0
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
        found = sum(1 for outcome in self.files if outcome.action == action)
        return found + len(self.skipped) if action == Action.SKIPPED else found

    @property
    def outcomes(self) -> list[FileOutcome]:
        """Every file's outcome, in the order a run reports them: refused names, then the
        listed files by name (the skipped ones among them), then what the executor did."""
        if not self.skipped:
            return list(self.files)
        start, end = self.refused, self.listed_end
        return [*self.files[:start], *in_order(self.files[start:end], self.skipped),
                *self.files[end:]]

    def take_skipped(self, version: tuple[str, int, int]) -> FileOutcome | None:
        """The skipped file of this version as an outcome of its own in ``files`` (for a change
        of its action), or None when it is not among the skipped."""
        for position, skipped in enumerate(self.skipped):
            if skipped[:3] == version:
                del self.skipped[position]
                outcome = skipped_outcome(skipped)
                self.files.append(outcome)
                return outcome
        return None

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
            if source.skipped:
                action = str(Action.SKIPPED)
                totals[action] = totals.get(action, 0) + len(source.skipped)
        return totals
