"""The plan of one source's fetch: what the listing and the ledger say must be done, as data.

Pure: a listing, the ledger's versions and the options go in; outcomes decided without any work
(refused, skipped, acknowledged; in a dry run, would-fetch) and the jobs for the executor come
out. The skipped files (archived before: nearly every file of a nightly run) are plain tuples,
not outcomes (``results.SkippedFile``). Nothing here touches the network or the ledger; the one
question about local files (is the kept encrypted copy of a version gone from the server still
intact?) is asked through the ``copy_intact`` function the caller passes in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from reportsync.config import SourceConfig
from reportsync.fetch.results import FileOutcome, SkippedFile, in_order
from reportsync.fsutil import printable
from reportsync.ledger import PendingHook, VersionState
from reportsync.listing import select
from reportsync.transports import RemoteFile
from reportsync.transports.base import VersionKey
from reportsync.vocab import Action

CopyIntact = Callable[[Path, int], bool]
"""Whether the file at this path is still the kept copy of a version of this size."""


@dataclass(frozen=True)
class Job:
    """One file version for the executor: download it (unless its kept copy serves), then
    archive it (unless the run is ``--no-decrypt``), recording each step."""

    remote: RemoteFile
    file_id: int
    kept_copy: Path | None = None  # the encrypted copy an earlier run downloaded, if any


@dataclass(frozen=True)
class HookJob:
    """An archived report whose ``on_new_report`` hook is to run now: newly archived (due), or
    failed before (runs again until it succeeds or the file is acknowledged)."""

    file_id: int
    version: VersionKey
    output_path: Path
    sha256: str
    retry: bool  # it ran and failed before

    @property
    def name(self) -> str:
        return self.version[0]


@dataclass
class SourcePlan:
    outcomes: list[FileOutcome] = field(default_factory=list)  # decided without any work
    skipped: list[SkippedFile] = field(default_factory=list)  # archived before, in name order
    jobs: list[Job] = field(default_factory=list)
    refused: int = 0  # outcomes[:refused] are the refused names, the rest in the listing's order

    def in_order(self) -> list[FileOutcome]:
        """Every outcome of the plan, in the order a run reports them: the refused names, then
        the listing's files by name, the skipped ones among them."""
        return [*self.outcomes[:self.refused],
                *in_order(self.outcomes[self.refused:], self.skipped)]


def select_files(source: SourceConfig, listing: list[RemoteFile]
                 ) -> tuple[list[RemoteFile], list[FileOutcome]]:
    """The listed files this source takes, and outcomes for the matching names refused as
    unsafe (shown escaped)."""
    candidates, refused = select(source, listing)
    return candidates, [FileOutcome.of(remote, Action.REFUSED, name=printable(remote.name),
                                       error=error) for remote, error in refused]


def settled_action(record: VersionState | None) -> Action | None:
    """The action of a version fetch does not try (again), or None: ``skipped`` when it is
    archived, ``acknowledged`` when a person acknowledged its failure (``status --ack``)."""
    if record is None:
        return None
    if record.archived:
        return Action.SKIPPED
    return Action.ACKNOWLEDGED if record.acknowledged else None


def plan_source(
    candidates: list[RemoteFile],
    refused: list[FileOutcome],
    versions: Mapping[VersionKey, VersionState],
    *,
    archived: Mapping[VersionKey, str] | None = None,
    decrypt: bool,
    dry_run: bool,
    copy_intact: CopyIntact,
) -> SourcePlan:
    """Outcomes in the order a run reports them (refused, then the listing's order), the skipped
    files and the jobs.

    ``versions``: the ledger's versions a run can act on, by version (``acting_versions``: at
    least every one not archived); in a real run every candidate not archived is among them
    (the listing is recorded before planning), in a dry run the new ones are not. ``archived``:
    the report paths of the archived versions (``VersionIndex.archived``), which ``versions``
    need not hold.
    """
    plan = SourcePlan(outcomes=list(refused), refused=len(refused))
    archived = archived if archived is not None else {}
    skipped = plan.skipped
    for remote in candidates:
        key = remote.version
        output_path = archived.get(key)
        record = versions.get(key) if output_path is None else None
        if record is not None:
            output_path = record.output_path
        if output_path is not None:
            # archived: settled_action's SKIPPED, spelled out for the one case of nearly every
            # file of a nightly run (50,000 of them in a big folder)
            skipped.append((*key, output_path))
            continue
        action = settled_action(record)
        if action is not None:
            assert record is not None
            plan.outcomes.append(FileOutcome.of(
                remote, action, output_path=record.output_path,
                local_path=record.download_path if action == Action.ACKNOWLEDGED else None))
        elif dry_run:
            plan.outcomes.append(FileOutcome.of(remote, Action.WOULD_FETCH))
        else:
            assert record is not None, "the listing is recorded before a real run is planned"
            plan.jobs.append(Job(remote, record.file_id, _kept_copy(record)))
    if decrypt and not dry_run:
        plan.jobs += _unlisted_retries(candidates, versions, copy_intact)
    return plan


def _kept_copy(record: VersionState) -> Path | None:
    return Path(record.download_path) if record.download_path is not None else None


def _unlisted_retries(candidates: list[RemoteFile], versions: Mapping[VersionKey, VersionState],
                      copy_intact: CopyIntact) -> list[Job]:
    """Files downloaded but not archived (failed to decrypt, or fetched with --no-decrypt) that
    are gone from the server: their kept encrypted copy is archived now, without a transfer.
    An acknowledged failure is not retried, not even from its kept copy."""
    unarchived = [(key, version) for key, version in versions.items()
                  if version.output_path is None]  # nearly always few: the listing is not keyed
    if not unarchived:
        return []
    listed = {remote.version for remote in candidates}
    jobs = []
    for key, version in unarchived:
        if (key in listed or version.acknowledged
                or not version.has_local_copy or version.download_path is None):
            continue
        copy = Path(version.download_path)
        if copy_intact(copy, version.size):
            jobs.append(Job(RemoteFile(version.name, version.size, float(version.mtime)),
                            version.file_id, copy))
    return jobs


def plan_hooks(pending: list[PendingHook]) -> list[HookJob]:
    """The hooks to run, in the order their reports were archived: every report whose hook has
    not succeeded, except those a person acknowledged (``status --ack``: not retried) and those
    retention took out of the archive since (``archive_days``: nothing left to hand off)."""
    return [HookJob(hook.file_id, hook.version, Path(hook.output_path), hook.output_sha256,
                    retry=hook.attempts > 0)
            for hook in pending if not hook.acknowledged and hook.in_archive]
