"""What the ledger says of a file version, as the core reads it: plain frozen records, no SQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from reportsync.transports.base import VersionKey
from reportsync.vocab import DeletionTarget, HookState


@dataclass(frozen=True)
class VersionState:
    """One remote file version with its local copies and what retention already did to it."""

    file_id: int
    source: str
    name: str
    size: int
    mtime: int
    gone_at: float | None  # no longer listed by the server
    lost_acked_at: float | None
    download_path: str | None
    download_sha256: str | None
    output_path: str | None
    output_sha256: str | None
    deleted: frozenset[str]  # deletion targets already carried out: local_encrypted, archive, remote
    failing: bool = False  # an open failure is recorded for this file name

    def __post_init__(self) -> None:
        # made once (a run keys every version by it, more than once); not a field
        object.__setattr__(self, "_version", (self.name, self.size, self.mtime))

    @property
    def version(self) -> VersionKey:
        """This version's identity, as ``RemoteFile.version`` gives it for a listed file."""
        return self._version  # type: ignore[attr-defined, no-any-return]

    @property
    def archived(self) -> bool:
        return self.output_path is not None

    @property
    def acknowledged(self) -> bool:
        """A person acknowledged this version's failure or loss (``status --ack``): fetch does
        not retry it and it is no longer reported; a new version of the name is not covered."""
        return self.lost_acked_at is not None

    @property
    def in_archive(self) -> bool:
        """Its report is in ``output_dir`` now: archived, and not deleted since (archive_days)."""
        return self.output_path is not None and DeletionTarget.ARCHIVE not in self.deleted

    @property
    def has_local_copy(self) -> bool:
        """An encrypted copy was downloaded and not deleted: the purge cannot take it from us."""
        return self.download_path is not None and DeletionTarget.LOCAL_ENCRYPTED not in self.deleted


@dataclass
class VersionIndex:
    """Every version of one source, compactly: what a run needs of the many versions it does not
    act on (nearly all of them, nightly), without a ``VersionState`` each. ``Ledger.version_index``
    reads it, ``Ledger.see_listing`` records a listing against it and returns it as it is after;
    the versions a run can act on are read in full (``Ledger.acting_versions``).

    Plain dicts of plain tuples: at 50,000 files, a ``VersionState`` each was most of a no-op
    run's ledger time."""

    ids: dict[VersionKey, int] = field(default_factory=dict)  # every version's id, by its key
    gone: set[VersionKey] = field(default_factory=set)  # the versions with ``gone_at`` set
    archived: dict[VersionKey, str] = field(default_factory=dict)  # their report, if archived

    @property
    def newest_mtime(self) -> int | None:
        """The newest version's mtime (None: the ledger has none of this source)."""
        return max((key[2] for key in self.ids), default=None)

    def archived_names(self) -> set[str]:
        return {key[0] for key in self.archived}


@dataclass(frozen=True)
class PendingHook:
    """An archived report whose ``on_new_report`` hook has not succeeded yet (due or failed)."""

    file_id: int
    source: str
    name: str
    size: int
    mtime: int
    output_path: str
    output_sha256: str
    state: HookState
    attempts: int  # how often it ran (and failed)
    acknowledged: bool  # a person acknowledged the file's failure (status --ack)
    in_archive: bool  # its report is still in output_dir (retention's archive_days did not take it)

    @property
    def version(self) -> VersionKey:
        return (self.name, self.size, self.mtime)


def refreshed(versions: Sequence[VersionState], fresh: Sequence[VersionState]
              ) -> list[VersionState]:
    """``versions`` with the rows read again since (``Ledger.versions(source, names=...)``) in
    their place, by file id: the state after a run's writes without reading the whole source
    again. A fresh row ``versions`` lacks is added in name and mtime order."""
    by_id = {version.file_id: version for version in fresh}
    result = [by_id.pop(version.file_id, version) for version in versions]
    if by_id:
        result += by_id.values()
        result.sort(key=lambda version: (version.name, version.mtime))
    return result
