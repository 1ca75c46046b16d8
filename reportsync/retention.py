"""The 100-day horizon: what is at risk, what is lost, what may be deleted.

``plan`` is pure: ledger snapshot + listing + policy + now → warnings and candidate deletions, each
with its reason. ``apply`` is the only code that deletes, and it re-checks, right before every
deletion, that the report's archived copy exists, is a regular file (never a symlink) and still
matches the ledger's hash. Two caps per run and source stop a mass deletion after a clock jump or
a bug, never ordinary expiry: at most ``max_deletions`` files, and none at all while the newest
listed file is itself older than ``days`` (the whole folder looks expired).
"""

from __future__ import annotations

import logging
import math
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from reportsync.config import Config, RetentionPolicy, SourceConfig
from reportsync.errors import ExitCode, ReportsyncError, most_severe
from reportsync.fsutil import sha256_file
from reportsync.ledger import Ledger, LockHolder, VersionIndex, VersionState, open_ledger
from reportsync.listing import select as select_listing
from reportsync.runguard import all_held, run_lock, source_turn
from reportsync.transports import RemoteFile, Transport, open_transport
from reportsync.transports.retry import RetryingTransport, RetryPolicy
from reportsync.units import DAY
from reportsync.vocab import Command, DeletionTarget, LocalEncryptedPolicy, NoticeKind, RemotePolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Notice:
    kind: NoticeKind
    source: str
    name: str  # file name; for "stale" and "deletions-withheld", empty
    days: float  # at-risk: days left before purge; lost: age in days; stale: days since newest;
    # deletions-withheld: age of the newest listed file
    reason: str


@dataclass(frozen=True)
class Deletion:
    source: str
    target: DeletionTarget
    file_id: int
    name: str  # the remote name
    path: str  # local path, or the remote name
    reason: str
    archive_path: str  # the archived report that must exist and match before deleting
    archive_sha256: str


@dataclass
class RetentionPlan:
    source: str
    notices: list[Notice] = field(default_factory=list)
    deletions: list[Deletion] = field(default_factory=list)  # within the cap
    held_back: list[Deletion] = field(default_factory=list)  # over the cap: not done this run
    withheld: list[Deletion] = field(default_factory=list)  # the folder looks expired: none done
    cap: int = 0  # files (not copies) whose copies may be deleted this run

    def of_kind(self, kind: NoticeKind) -> list[Notice]:
        return [notice for notice in self.notices if notice.kind == kind]


ALREADY_GONE = "already gone"  # the detail of a deletion whose target someone removed before us


@dataclass(frozen=True)
class DeletionOutcome:
    deletion: Deletion
    done: bool
    detail: str  # what happened, or why it was refused

    @property
    def refused(self) -> bool:
        """Not done, and not because the target was gone already: the safety check stopped it,
        or the deletion failed. Either makes the source's exit code 1."""
        return not self.done and self.detail != ALREADY_GONE


def plan(
    source: SourceConfig,
    policy: RetentionPolicy,
    versions: list[VersionState],
    listing: list[RemoteFile] | None,
    now: float,
    *,
    settled: VersionIndex | None = None,
) -> RetentionPlan:
    """What to warn about and what may be deleted.

    ``listing``: the source's files on the server now, as ``listing.select`` takes them. A listed
    file the ledger has not seen yet (a dry run, or ``retention`` before the first fetch) counts as
    a file not fetched yet, so it is at risk when it is old. None: the server was not asked
    (``status``): "gone" comes from the ledger alone and no remote deletion is planned.

    ``settled``: every version of the source, compactly, when ``versions`` holds only those that
    can act (``Ledger.acting_versions`` with ``acting_before``'s bound): every version not
    archived, and the archived ones old enough to lose a copy. The archived rest matter only as
    names that replace an older version, as the newest delivery, and as known to the ledger.
    """
    result = RetentionPlan(source=source.name)
    if listing is not None:
        versions = versions + _unseen(source, versions, listing, settled)
    archived_names = {version.name for version in versions if version.archived}
    if settled is not None:
        archived_names |= settled.archived_names()
    deletable_after = _deletable_after(policy, server_asked=listing is not None)
    # asked only for the few versions that are not archived, or old enough (a set of 50,000
    # listed versions is not made for the nightly case of none)
    listed: set[tuple[str, int, int]] | None = None

    for version in versions:
        age = (now - version.mtime) / DAY
        if version.archived and not age > deletable_after:
            continue  # a younger archived file cannot lose any copy: not asked
        if listing is None:
            is_listed = version.gone_at is None
        else:
            if listed is None:
                listed = {remote.version for remote in listing}
            is_listed = version.version in listed
        if not version.archived:
            if version.acknowledged:
                continue  # a person dealt with it (status --ack): fetch leaves it alone too
            if version.name in archived_names and not is_listed:
                continue  # an older version replaced by one we have: not a loss
            if version.has_local_copy and not version.failing:
                continue  # downloaded (--no-decrypt): the purge cannot take it; fetch archives it
            if version.has_local_copy:
                # it failed, but its encrypted copy is kept: at risk while the server still has
                # it (a re-delivery may fix it), never "lost"; status reports it as failing
                if is_listed and policy.days - policy.warn_days < age <= policy.days:
                    left = round(policy.days - age, 1)
                    result.notices.append(Notice(
                        NoticeKind.AT_RISK, source.name, version.name, left,
                        f"failing, encrypted copy kept; the provider purges it in "
                        f"{max(left, 0):.0f} days"))
                continue
            if age > policy.days or not is_listed:
                why = ("it was never archived and is past the provider's "
                       f"{policy.days}-day purge" if age > policy.days else
                       "it was never archived and is no longer on the server")
                result.notices.append(Notice(NoticeKind.LOST, source.name, version.name,
                                             round(age, 1), why))
            elif age > policy.days - policy.warn_days:
                left = round(policy.days - age, 1)
                result.notices.append(Notice(
                    NoticeKind.AT_RISK, source.name, version.name, left,
                    f"not archived yet; the provider purges it in {max(left, 0):.0f} days"))
            continue
        result.deletions.extend(_deletions_for(source, policy, version, age, is_listed,
                                               listing is not None))

    if source.expect_every_days > 0:
        newest = max((version.mtime for version in versions), default=None)
        settled_newest = settled.newest_mtime if settled is not None else None
        if settled_newest is not None and (newest is None or settled_newest > newest):
            newest = settled_newest
        quiet_days = math.inf if newest is None else (now - newest) / DAY
        if quiet_days > source.expect_every_days:
            shown = "no file has ever arrived" if math.isinf(quiet_days) else \
                f"the newest file is {quiet_days:.0f} days old"
            result.notices.append(Notice(NoticeKind.STALE, source.name, "", quiet_days,
                                         f"feed looks stale: {shown} (expect_every_days = "
                                         f"{source.expect_every_days})"))

    if listing and result.deletions:
        # The safety cap against a wrong clock: ordinary expiry always leaves a newer file on the
        # server, so a folder whose newest file looks expired says the clock (or the feed) is wrong
        newest_age = (now - max(remote.mtime for remote in listing)) / DAY
        if newest_age > policy.days:
            result.withheld, result.deletions = result.deletions, []
            result.notices.append(Notice(
                NoticeKind.DELETIONS_WITHHELD, source.name, "", round(newest_age, 1),
                f"no deletions this run: the newest file on the server is {newest_age:.0f} days "
                f"old, older than retention.days = {policy.days}, so the whole folder looks "
                "expired (a wrong clock on this machine, or a feed that stopped delivering); "
                f"{len(result.withheld)} deletion(s) wait until a newer file arrives. Check the "
                "clock (`date`) and the provider's deliveries"))
            return result

    result.cap = max(0, policy.max_deletions)
    allowed: set[int] = set()  # the cap counts files; one file may lose several copies
    within, held_back = [], []
    for deletion in result.deletions:
        if deletion.file_id in allowed or len(allowed) < result.cap:
            allowed.add(deletion.file_id)
            within.append(deletion)
        else:
            held_back.append(deletion)
    result.deletions, result.held_back = within, held_back
    return result


def _unseen(source: SourceConfig, versions: list[VersionState], listing: list[RemoteFile],
            settled: VersionIndex | None) -> list[VersionState]:
    """Listed versions the ledger does not know yet, as versions never fetched (``file_id`` -1:
    nothing is ever deleted of them, they are only warned about)."""
    known = {version.version for version in versions}
    recorded = settled.ids if settled is not None else {}
    return [VersionState(file_id=-1, source=source.name, name=remote.name, size=remote.size,
                         mtime=int(remote.mtime), gone_at=None, lost_acked_at=None,
                         download_path=None, download_sha256=None, output_path=None,
                         output_sha256=None, deleted=frozenset())
            for remote in listing if remote.version not in known
            and remote.version not in recorded]


def acting_before(policy: RetentionPolicy, now: float, *, server_asked: bool) -> float:
    """The mtime before which an archived version can lose a copy under ``policy`` (-inf: none
    can, inf: any can): ``plan`` with ``settled`` needs in ``versions`` every archived version
    older than this (``Ledger.acting_versions``), and nothing younger."""
    return now - _deletable_after(policy, server_asked=server_asked) * DAY


def _deletable_after(policy: RetentionPolicy, *, server_asked: bool) -> float:
    """The age in days an archived file must pass before ``_deletions_for`` can find anything
    to delete of it (-inf: any age; inf: nothing is ever deleted). A bound, not the decision:
    it only spares the call for the files that are too young (nearly all of them, nightly)."""
    ages = []
    if policy.local_encrypted == LocalEncryptedPolicy.EXPIRE:
        ages.append(float(policy.days))
    if server_asked and policy.remote == RemotePolicy.DELETE_AFTER_FETCH:
        ages.append(-math.inf)
    elif server_asked and policy.remote == RemotePolicy.DELETE_EXPIRED:
        ages.append(float(policy.days))
    if policy.archive_days > 0:
        ages.append(float(policy.archive_days))
    return min(ages, default=math.inf)


def _deletions_for(source: SourceConfig, policy: RetentionPolicy, version: VersionState,
                   age: float, is_listed: bool, server_asked: bool) -> list[Deletion]:
    assert version.output_path is not None and version.output_sha256 is not None
    found: list[Deletion] = []
    if DeletionTarget.ARCHIVE in version.deleted:
        return found  # without the archived report nothing can prove a deletion safe

    def candidate(target: DeletionTarget, path: str, reason: str) -> None:
        found.append(Deletion(source=source.name, target=target, file_id=version.file_id,
                              name=version.name, path=path, reason=reason,
                              archive_path=version.output_path or "",
                              archive_sha256=version.output_sha256 or ""))

    archive_expires = policy.archive_days > 0 and age > policy.archive_days
    if (policy.local_encrypted == LocalEncryptedPolicy.EXPIRE and version.download_path
            and DeletionTarget.LOCAL_ENCRYPTED not in version.deleted and age > policy.days
            and version.download_path != version.output_path):
        candidate(DeletionTarget.LOCAL_ENCRYPTED, version.download_path,
                  f"encrypted copy older than {policy.days} days; its report is archived")
    if server_asked and is_listed and DeletionTarget.REMOTE not in version.deleted:
        if policy.remote == RemotePolicy.DELETE_AFTER_FETCH:
            candidate(DeletionTarget.REMOTE, version.name, "archived (remote = delete-after-fetch)")
        elif policy.remote == RemotePolicy.DELETE_EXPIRED and age > policy.days:
            candidate(DeletionTarget.REMOTE, version.name,
                      f"older than {policy.days} days and archived (remote = delete-expired)")
    if archive_expires and DeletionTarget.ARCHIVE not in version.deleted:
        candidate(DeletionTarget.ARCHIVE, version.output_path or "",
                  f"archived report older than archive_days = {policy.archive_days}")
    return found


def apply(
    retention_plan: RetentionPlan,
    ledger: Ledger,
    run_id: int | None,
    transport: Transport | None,
) -> list[DeletionOutcome]:
    """Carry out the planned deletions, each only after its safety check passes."""
    outcomes = []
    for deletion in retention_plan.deletions:
        refusal = _unsafe(deletion)
        if refusal is not None:
            log.warning("source %s: not deleting %s: %s", deletion.source, deletion.path, refusal)
            outcomes.append(DeletionOutcome(deletion, False, refusal))
            continue
        try:
            if deletion.target == DeletionTarget.REMOTE:
                if transport is None:
                    outcomes.append(DeletionOutcome(deletion, False, "not connected to the server"))
                    continue
                transport.delete(deletion.name)
            else:
                Path(deletion.path).unlink()
        except FileNotFoundError:
            outcomes.append(DeletionOutcome(deletion, False, ALREADY_GONE))
            continue
        except (OSError, ReportsyncError) as exc:
            detail = exc.message if isinstance(exc, ReportsyncError) else str(exc)
            outcomes.append(DeletionOutcome(deletion, False, f"could not delete: {detail}"))
            continue
        ledger.record_deletion(deletion.file_id, run_id, deletion.target, deletion.path,
                               deletion.reason)
        log.info("source %s: deleted %s %s (%s)", deletion.source, deletion.target, deletion.path,
                 deletion.reason)
        outcomes.append(DeletionOutcome(deletion, True, deletion.reason))
    return outcomes


def _unsafe(deletion: Deletion) -> str | None:
    """Why this deletion must not happen now, or None. The archived report is the proof that the
    statement survives the deletion (for the archive target: that we delete what we archived)."""
    archive = Path(deletion.archive_path)
    try:
        info = archive.lstat()
    except OSError:
        return f"its archived report {archive} is missing"
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISREG(info.st_mode):
        return f"its archived report {archive} is not a regular file (symlinks are never followed)"
    if sha256_file(archive) != deletion.archive_sha256:
        return f"its archived report {archive} no longer matches the ledger's hash"
    if deletion.target == DeletionTarget.LOCAL_ENCRYPTED:
        try:
            target = Path(deletion.path).lstat()
        except OSError:
            return None  # already gone; apply reports it
        if stat.S_ISLNK(target.st_mode) or not stat.S_ISREG(target.st_mode):
            return f"{deletion.path} is not a regular file (symlinks are never followed)"
    return None


# --- `reportsync retention`: the policy on its own, with a fresh listing ------------------------


@dataclass
class SourceRetention:
    name: str
    notices: list[Notice] = field(default_factory=list)
    planned: list[Deletion] = field(default_factory=list)  # within the cap
    outcomes: list[DeletionOutcome] = field(default_factory=list)  # empty in a dry run
    held_back: int = 0  # over the cap: they follow in later runs
    withheld: int = 0  # none done: the whole folder looks expired (see the notice)
    cap: int = 0
    error: ReportsyncError | None = None
    # skipped: another run (a host sharing the ledger) holds the source's lock; who it is
    holder: LockHolder | None = None

    @property
    def exit_code(self) -> ExitCode:
        if self.error is not None:
            return self.error.exit_code
        refused = any(outcome.refused for outcome in self.outcomes)
        return ExitCode.PARTIAL if refused else ExitCode.OK


@dataclass(frozen=True)
class RetentionResult:
    """``retention``: each source's plan and what was done (``SourceRetention`` is filled in as
    the source is worked on; the result is made once, at the end)."""

    sources: list[SourceRetention]
    dry_run: bool

    @property
    def exit_code(self) -> ExitCode:
        if all_held(source.holder for source in self.sources):
            return ExitCode.LOCKED  # it could process none of its sources
        return most_severe(source.exit_code for source in self.sources)


def run_retention(config: Config, names: tuple[str, ...] = (), *, dry_run: bool = False,
                  now: float | None = None, backoff_base: float = 1.0,
                  connect: Callable[[SourceConfig], Transport] = open_transport
                  ) -> RetentionResult:
    """List each source once, record what vanished (purged by the provider), warn, and delete what
    the policy allows; a dry run lists and plans but changes nothing, not even the ledger (it
    does not create one either). The listing and the deletions are retried like fetch's
    (``RetryingTransport``); ``connect`` opens a source's transport (tests pass their own)."""
    sources = config.select(names)
    results = []
    with run_lock(config.settings, Command.RETENTION), open_ledger(
        config.settings, environ=config.environ, create=not dry_run
    ) as ledger:
        run_id = None if dry_run else ledger.start_run(Command.RETENTION, os.getpid())
        for source in sources:
            with source_turn(ledger, source.name, Command.RETENTION) as turn:
                if not turn.ours:  # held by another run, or the lock could not be asked for
                    results.append(SourceRetention(name=source.name, holder=turn.holder,
                                                   error=turn.error))
                    continue
                outcome = _source_retention(source, config, ledger, run_id, dry_run=dry_run,
                                            now=now, backoff_base=backoff_base, connect=connect)
            if run_id is not None:
                ledger.record_source_run(run_id, source.name, Command.RETENTION,
                                         int(outcome.exit_code),
                                         {"deleted": sum(o.done for o in outcome.outcomes)},
                                         outcome.error.describe() if outcome.error else None)
            results.append(outcome)
        result = RetentionResult(results, dry_run)
        if run_id is not None:
            ledger.finish_run(run_id, int(result.exit_code),
                              {"deleted": sum(o.done for s in results for o in s.outcomes)})
    return result


def _source_retention(source: SourceConfig, config: Config, ledger: Ledger, run_id: int | None, *,
                      dry_run: bool, now: float | None, backoff_base: float,
                      connect: Callable[[SourceConfig], Transport]) -> SourceRetention:
    outcome = SourceRetention(name=source.name)
    try:
        policy = RetryPolicy(source.retries, backoff_base)
        with RetryingTransport(partial(connect, source), policy, source.name) as transport:
            listing, _ = select_listing(source, transport.list_files())
            if not dry_run:
                ledger.see_files(source.name, [remote.version for remote in listing])
            retention_plan = plan(source, config.retention, ledger.versions(source.name),
                                  listing, now if now is not None else time.time())
            outcome.notices = retention_plan.notices
            outcome.planned = retention_plan.deletions
            outcome.held_back = len(retention_plan.held_back)
            outcome.withheld = len(retention_plan.withheld)
            outcome.cap = retention_plan.cap
            if not dry_run:
                outcome.outcomes = apply(retention_plan, ledger, run_id, transport)
    except ReportsyncError as error:
        outcome.error = error.with_context(source=source.name)
    return outcome
