"""The fetch use-case: list → plan → download → verify → decrypt → record, per source.

Read ``run`` and ``_fetch_source`` first: they are the whole run in two screens. Everything a
source can fail with is a ``ReportsyncError``; a failure of one file is recorded and the others go
on; a failure of the source (cannot connect, host key, disk full) ends that source only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar

from reportsync import pgpkeys, retention
from reportsync.config import Config, Settings, SourceConfig
from reportsync.errors import (
    ExitCode,
    InternalError,
    KeyProblemError,
    RemoteChangedError,
    ReportsyncError,
    StorageError,
    TransferError,
    most_severe,
)
from reportsync.expiry import CredentialExpiry
from reportsync.fsutil import (
    contained_path,
    crash_point,
    ensure_private_dir,
    fsync_dir,
    open_private_new,
    open_private_resumable,
    place_file,
    printable,
    private_temp,
    regular_file_info,
    remove_quietly,
    remove_stale_temps,
    sha256_file,
    storage_error,
    temp_name,
)
from reportsync.ledger import Ledger, VersionState
from reportsync.listing import select as listing_select
from reportsync.lock import RunLock
from reportsync.pgp import Decrypted, Gpg, needs_decryption, plaintext_name
from reportsync.retention import DeletionOutcome, Notice
from reportsync.sshkeys import SshCertificateInfo, certificate_expiry, inspect_ssh_file
from reportsync.transports import RemoteFile, Transport, open_transport
from reportsync.units import HASH_CHUNK, MAX_BACKOFF
from reportsync.vocab import Action, Command, NoticeKind, ProtocolName, Stage

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class FetchOptions:
    sources: tuple[str, ...] = ()
    dry_run: bool = False
    decrypt: bool = True  # False: --no-decrypt, download only
    jobs: int = 1
    backoff_base: float = 1.0  # seconds before the first retry; doubled each time
    now: float | None = None  # for "at risk" ages; None = the clock


class Reporter(Protocol):
    """Progress events, so the CLI can draw a bar while the core never prints."""

    def file_started(self, source: str, name: str, total: int, already: int) -> None: ...
    def advance(self, source: str, name: str, nbytes: int) -> None: ...
    def file_finished(self, source: str, name: str) -> None: ...


class SilentReporter:
    def file_started(self, source: str, name: str, total: int, already: int) -> None:
        pass

    def advance(self, source: str, name: str, nbytes: int) -> None:
        pass

    def file_finished(self, source: str, name: str) -> None:
        pass


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
        return next((notice for notice in self.notices if notice.kind == NoticeKind.DELETIONS_WITHHELD),
                    None)

    @property
    def stale_days(self) -> float | None:
        """Days since the newest file when the feed is stale (inf: never any), else None."""
        stale = [notice.days for notice in self.notices if notice.kind == NoticeKind.STALE]
        return stale[0] if stale else None

    def count(self, action: str) -> int:
        return sum(1 for outcome in self.files if outcome.action == action)

    @property
    def failed(self) -> list[FileOutcome]:
        return [outcome for outcome in self.files if outcome.action in (Action.FAILED, Action.REFUSED)]

    @property
    def bytes_transferred(self) -> int:
        return sum(outcome.transferred for outcome in self.files)

    @property
    def refused_deletions(self) -> list[DeletionOutcome]:
        """Deletions the safety check stopped: an archived report is missing or altered."""
        return [outcome for outcome in self.deletions
                if not outcome.done and outcome.detail != "already gone"]

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
        return most_severe(source.exit_code for source in self.sources)

    def counts(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for source in self.sources:
            for outcome in source.files:
                totals[outcome.action] = totals.get(outcome.action, 0) + 1
        return totals


def run(config: Config, options: FetchOptions, reporter: Reporter | None = None) -> FetchResult:
    """One ``reportsync fetch``: lock, ledger, every selected source, the run recorded."""
    sources = config.select(options.sources)
    started = time.monotonic()
    reporter = reporter or SilentReporter()
    with RunLock(config.settings.state_dir, Command.FETCH), Ledger.in_state_dir(
        config.settings.state_dir, create=not options.dry_run
    ) as ledger:
        run_id = None if options.dry_run else ledger.start_run(Command.FETCH, os.getpid())
        decryptor = LazyGpg(config.settings, config.environ)
        expiring = _expiring_credentials(config, sources, decryptor, options)
        results = [
            _fetch_source(source, config, ledger, run_id, decryptor, options, reporter)
            for source in sources
        ]
        result = FetchResult(sources=results, dry_run=options.dry_run, run_id=run_id,
                             seconds=time.monotonic() - started, expiring=expiring)
        if run_id is not None:
            for source_result in results:
                counts = {action.value: source_result.count(action) for action in Action
                          if action is not Action.WOULD_FETCH}
                error = source_result.error.describe() if source_result.error else None
                ledger.record_source_run(run_id, source_result.name, Command.FETCH,
                                         int(source_result.exit_code), counts, error)
            ledger.finish_run(run_id, int(result.exit_code), result.counts())
    return result


def _expiring_credentials(config: Config, sources: list[SourceConfig], decryptor: LazyGpg,
                          options: FetchOptions) -> list[CredentialExpiry]:
    """The decryption key and the SSH certificates that end within 30 days (or have ended), so a
    nightly run warns before deliveries or logins start failing. Local and cheap: one
    ``gpg --list-secret-keys`` (only when this run may decrypt; not in a dry run, as gpg may
    update its trust database) and a read of each certificate. Whatever cannot be read here is
    left to the step that needs it, which reports it."""
    now = options.now if options.now is not None else time.time()
    found: list[CredentialExpiry] = []
    home = config.settings.gnupg_home
    may_decrypt = options.decrypt and not options.dry_run and any(s.decrypt for s in sources)
    if may_decrypt and home.is_dir():
        try:
            keys = decryptor.get().gpg.decryption_keys(now)
        except ReportsyncError as error:  # gpg missing, say: decrypting says so, with remedy
            log.debug("key expiry not checked: %s", error.message)
        else:
            key_expiry = pgpkeys.decryption_key_expiry(keys, home, now)
            if key_expiry is not None and key_expiry.soon:
                found.append(key_expiry)
    for source in sources:
        if source.protocol != ProtocolName.SFTP or source.certificate_file is None:
            continue
        try:
            info = inspect_ssh_file(source.certificate_file,
                                    now=datetime.fromtimestamp(now, tz=timezone.utc))
        except ReportsyncError as error:  # the login names the certificate problem
            log.debug("source %s: certificate not checked: %s", source.name, error.message)
            continue
        if isinstance(info, SshCertificateInfo):
            certificate = certificate_expiry(info, source.name)
            if certificate is not None and certificate.soon:
                found.append(certificate)
    for expiry in found:
        log.warning("%s", expiry.finding)
    return found


def _fetch_source(
    source: SourceConfig,
    config: Config,
    ledger: Ledger,
    run_id: int | None,
    decryptor: LazyGpg,
    options: FetchOptions,
    reporter: Reporter,
) -> SourceResult:
    result = SourceResult(name=source.name, protocol=source.protocol)
    retry = Retrier(source, options.backoff_base)
    try:
        with retry.call(lambda: open_transport(source), "connect") as transport:
            listing = retry.call_plain(transport.list_files, "list")
            result.listed = len(listing)
            candidates, refused = _select(source, listing)
            result.files.extend(refused)
            result.matched = len(candidates)
            if not options.dry_run:
                for outcome in refused:
                    assert run_id is not None
                    ledger.record_failure(source.name, outcome.name, None, run_id, Stage.NAME,
                                          outcome.error.message if outcome.error else "refused")
            if options.dry_run:
                records = ledger.versions_by_key(source.name)
                result.files.extend(_dry_run_plan(candidates, records))
            else:
                assert run_id is not None
                ensure_private_dir(source.download_dir, f"sources.{source.name}.download_dir")
                _remove_leftovers(source, candidates)
                ids = ledger.see_files(source.name, [(f.name, f.size, int(f.mtime))
                                                     for f in candidates])
                records = ledger.versions_by_key(source.name)
                work = [_FileJob(remote, ids[(remote.name, remote.size, int(remote.mtime))],
                                 records.get((remote.name, remote.size, int(remote.mtime))))
                        for remote in candidates]
                if options.decrypt:
                    work += _unlisted_retries(candidates, records)
                # what is archived already, or acknowledged as failed (status --ack), needs no
                # worker, no connection, no queue: it is not tried again
                settled = [job for job in work if _settled(job.record) is not None]
                result.files.extend(_settled_outcome(job.remote, job.record) for job in settled)
                work = [job for job in work if _settled(job.record) is None]
                context = _RunContext(source, ledger, run_id, decryptor, options, reporter, retry)
                outcomes, source_error = _process_all(context, work, transport)
                result.files.extend(outcomes)
                result.error = source_error
            _apply_retention(result, source, config, ledger, run_id, candidates, options)
    except ReportsyncError as error:
        result.error = error.with_context(source=source.name)
    except OSError as exc:  # a local write outside the per-file steps
        result.error = storage_error(exc, source.download_dir).with_context(source=source.name)
    for outcome in result.failed:
        if outcome.error is not None:
            outcome.error.with_context(source=source.name, path=outcome.name)
    return result


def _settled(record: VersionState | None) -> Action | None:
    """The action of a version fetch does not try (again), or None: "skipped" when it is
    archived, "acknowledged" when a person acknowledged its failure (``status --ack``)."""
    if record is None:
        return None
    if record.archived:
        return Action.SKIPPED
    return Action.ACKNOWLEDGED if record.acknowledged else None


def _settled_outcome(remote: RemoteFile, record: VersionState | None) -> FileOutcome:
    action = _settled(record)
    assert record is not None and action is not None
    return FileOutcome(remote.name, remote.size, int(remote.mtime), action,
                       local_path=record.download_path if action == Action.ACKNOWLEDGED else None,
                       output_path=record.output_path)


def _unlisted_retries(candidates: list[RemoteFile],
                      records: dict[tuple[str, int, int], VersionState]) -> list[_FileJob]:
    """Files downloaded but not archived (failed to decrypt, or fetched with --no-decrypt) that
    are gone from the server: their kept encrypted copy is archived now, without a transfer.
    An acknowledged failure is not retried, not even from its kept copy."""
    listed = {(remote.name, remote.size, int(remote.mtime)) for remote in candidates}
    jobs = []
    for key, version in records.items():
        if (key in listed or version.archived or version.acknowledged
                or not version.has_local_copy or version.download_path is None):
            continue
        remote = RemoteFile(version.name, version.size, float(version.mtime))
        if _local_copy_matches(Path(version.download_path), remote):
            jobs.append(_FileJob(remote, version.file_id, version))
    return jobs


def _select(source: SourceConfig, listing: list[RemoteFile]) -> tuple[list[RemoteFile],
                                                                     list[FileOutcome]]:
    """Files matching include/exclude, and outcomes for the names refused as unsafe."""
    candidates, refused = listing_select(source, listing)
    return candidates, [FileOutcome(printable(remote.name), remote.size, int(remote.mtime),
                                    Action.REFUSED, error=error) for remote, error in refused]


def _part_name(remote: RemoteFile) -> str:
    """The resumable download's temp name: it depends on the version, so a changed file never
    continues from another version's bytes."""
    return temp_name(f"{remote.name}\0{remote.size}\0{int(remote.mtime)}", "part")


def _remove_leftovers(source: SourceConfig, candidates: list[RemoteFile]) -> None:
    """Temp files a killed run left behind (we hold the run lock, so none is in use): every
    ``.rs-*.tmp`` (a half-written plaintext or copy), and every ``.rs-*.part`` that no version in
    this listing can resume (its version is gone from the server)."""
    keep = frozenset(_part_name(remote) for remote in candidates)
    removed = remove_stale_temps(source.download_dir, "part", keep)
    removed += remove_stale_temps(source.download_dir, "tmp")
    if source.output_dir.is_dir():
        removed += remove_stale_temps(source.output_dir, "tmp")
    if removed:
        log.info("source %s: removed %d temp file(s) left by an interrupted run", source.name,
                 len(removed))


def _dry_run_plan(candidates: list[RemoteFile],
                  records: dict[tuple[str, int, int], VersionState]) -> list[FileOutcome]:
    outcomes = []
    for remote in candidates:
        record = records.get((remote.name, remote.size, int(remote.mtime)))
        if _settled(record) is not None:
            outcomes.append(_settled_outcome(remote, record))
        else:
            outcomes.append(FileOutcome(remote.name, remote.size, int(remote.mtime),
                                        Action.WOULD_FETCH))
    return outcomes


# --- the per-file pipeline -----------------------------------------------------------------------


@dataclass(frozen=True)
class _FileJob:
    remote: RemoteFile
    file_id: int
    record: VersionState | None


@dataclass
class _RunContext:
    source: SourceConfig
    ledger: Ledger
    run_id: int
    decryptor: LazyGpg
    options: FetchOptions
    reporter: Reporter
    retry: Retrier
    abort: threading.Event = field(default_factory=threading.Event)

    @property
    def archive_enabled(self) -> bool:
        return self.options.decrypt


def _process_all(
    context: _RunContext, work: list[_FileJob], first_transport: Transport
) -> tuple[list[FileOutcome], ReportsyncError | None]:
    """Run every job over up to ``jobs`` connections; the first reuses the listing's connection."""
    pending: queue.Queue[_FileJob] = queue.Queue()
    for job in work:
        pending.put(job)
    outcomes: list[FileOutcome] = []
    source_errors: list[ReportsyncError] = []
    guard = threading.Lock()
    needs_transfer = sum(1 for job in work if _needs_transfer(job))
    workers = max(1, min(context.options.jobs, needs_transfer or 1))

    def worker(transport: Transport | None) -> None:
        connection = _Connection(context, transport)
        try:
            while not context.abort.is_set():
                try:
                    job = pending.get_nowait()
                except queue.Empty:
                    return
                try:
                    outcome = _process_file(context, job, connection)
                except (StorageError, KeyProblemError, _SourceLevel) as error:
                    real = error.cause if isinstance(error, _SourceLevel) else error
                    outcome = FileOutcome(job.remote.name, job.remote.size,
                                          int(job.remote.mtime), Action.FAILED, error=real)
                    with guard:
                        source_errors.append(real)
                    if not isinstance(error, KeyProblemError):
                        context.abort.set()
                except Exception as bug:  # a defect must cost one file, not the whole run
                    log.exception("source %s: unexpected error on %s", context.source.name,
                                  printable(job.remote.name))
                    outcome = FileOutcome(job.remote.name, job.remote.size, int(job.remote.mtime),
                                          Action.FAILED, error=InternalError(
                                              f"unexpected {type(bug).__name__}: {bug}"))
                with guard:
                    outcomes.append(outcome)
        finally:
            connection.close(keep=transport)

    threads = [threading.Thread(target=worker, args=(first_transport if index == 0 else None,),
                                name=f"fetch-{context.source.name}-{index}", daemon=True)
               for index in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    while True:  # the source stopped early: say which files it never tried (next run will)
        try:
            job = pending.get_nowait()
        except queue.Empty:
            break
        outcomes.append(FileOutcome(job.remote.name, job.remote.size, int(job.remote.mtime),
                                    Action.PENDING))
    order = {job.remote.name: index for index, job in enumerate(work)}
    outcomes.sort(key=lambda outcome: order.get(outcome.name, len(order)))
    return outcomes, (source_errors[0] if source_errors else None)


class _SourceLevel(Exception):
    """Carries a network error that outlived every retry of reconnecting: the source is down."""

    def __init__(self, cause: ReportsyncError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _Connection:
    """A worker's own transport, reopened after a transient failure."""

    def __init__(self, context: _RunContext, transport: Transport | None) -> None:
        self._context = context
        self._transport = transport

    def get(self) -> Transport:
        if self._transport is None:
            try:
                self._transport = self._context.retry.call_plain(
                    lambda: open_transport(self._context.source), "reconnect")
            except ReportsyncError as error:
                raise _SourceLevel(error) from None
        return self._transport

    def drop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def close(self, keep: Transport | None) -> None:
        if self._transport is not None and self._transport is not keep:
            self._transport.close()


def _needs_transfer(job: _FileJob) -> bool:
    record = job.record
    if record is not None and record.archived:
        return False
    return not (record is not None and record.download_path is not None
                and _local_copy_matches(Path(record.download_path), job.remote))


def _local_copy_matches(path: Path, remote: RemoteFile) -> bool:
    info = regular_file_info(path)  # a symlink planted in its place is not "the local copy"
    return info is not None and info.st_size == remote.size


def _process_file(context: _RunContext, job: _FileJob, connection: _Connection) -> FileOutcome:
    remote = job.remote
    outcome = FileOutcome(remote.name, remote.size, int(remote.mtime), Action.SKIPPED)
    if job.record is not None and job.record.archived:
        outcome.output_path = job.record.output_path
        return outcome
    stage = Stage.DOWNLOAD
    try:
        if _needs_transfer(job):
            local, transferred = _download(context, job, connection)
            outcome.transferred = transferred
        else:
            assert job.record is not None and job.record.download_path is not None
            local = Path(job.record.download_path)
        outcome.local_path = str(local)
        outcome.action = Action.DOWNLOADED
        if not context.archive_enabled:
            return outcome
        stage = Stage.ARCHIVE
        archived_path, decrypted = _archive(context, job, local)
        outcome.output_path = str(archived_path)
        outcome.decrypted = decrypted
        outcome.action = Action.ARCHIVED
        return outcome
    except RemoteChangedError as error:
        # not a failure: the provider was still writing or replaced the file; the next listing
        # shows the new version and the next run fetches it
        error.with_context(source=context.source.name, path=remote.name)
        log.warning("source %s: %s: %s", context.source.name, printable(remote.name),
                    error.message)
        outcome.action = Action.PENDING
        outcome.error = error
        return outcome
    except (StorageError, KeyProblemError, _SourceLevel) as error:
        if not isinstance(error, _SourceLevel):
            context.ledger.record_failure(context.source.name, remote.name, job.file_id,
                                          context.run_id, stage, error.message)
        else:
            context.ledger.record_failure(context.source.name, remote.name, job.file_id,
                                          context.run_id, stage, error.cause.message)
        raise
    except OSError as exc:  # a local read or write outside the wrapped steps
        local_failure = storage_error(exc, context.source.download_dir / remote.name)
        context.ledger.record_failure(context.source.name, remote.name, job.file_id,
                                      context.run_id, stage, local_failure.message)
        raise local_failure from None
    except ReportsyncError as error:
        error.with_context(source=context.source.name, path=remote.name)
        attempts = context.ledger.record_failure(context.source.name, remote.name, job.file_id,
                                                 context.run_id, stage, error.message)
        log.warning("source %s: %s failed (attempt %d): %s", context.source.name,
                    printable(remote.name), attempts, error.message)
        outcome.action = Action.FAILED
        outcome.error = error
        return outcome


def _download(context: _RunContext, job: _FileJob, connection: _Connection) -> tuple[Path, int]:
    """Fetch one file into ``download_dir``; returns (final path, bytes transferred)."""
    source, remote = context.source, job.remote
    folder = source.download_dir
    adopted = _adopt_existing(contained_path(folder, remote.name), remote)
    if adopted is not None:  # a killed run renamed it into place but did not record it
        context.ledger.record_download(job.file_id, context.run_id, adopted[0], remote.size,
                                       adopted[1])
        return adopted[0], 0
    part = folder / _part_name(remote)
    transferred = 0
    attempt = 0
    while True:
        attempt += 1
        try:
            transferred += _transfer(context, remote, part, connection)
            break
        except ReportsyncError as error:
            if error.retryable:
                connection.drop()  # a transfer cut short leaves the connection unusable
            if not error.retryable or attempt > source.retries:
                raise
            delay = context.retry.delay(attempt)
            log.info("source %s: %s: %s; retry %d of %d in %.1fs", source.name,
                     printable(remote.name), error.message, attempt, source.retries, delay)
            time.sleep(delay)
    try:
        sha256 = sha256_file(part)
        os.utime(part, (remote.mtime, remote.mtime))
        final = place_file(part, folder, remote.name, sha256)
    except OSError as exc:
        raise storage_error(exc, folder / remote.name) from None
    crash_point("after-download-rename")
    context.ledger.record_download(job.file_id, context.run_id, final, remote.size, sha256)
    log.info("source %s: downloaded %s (%d bytes)", source.name, printable(remote.name),
             remote.size)
    return final, transferred


def _adopt_existing(path: Path, remote: RemoteFile) -> tuple[Path, str] | None:
    info = regular_file_info(path)  # never a symlink: it could point at any file of this user
    if info is None:
        return None
    if info.st_size == remote.size and int(info.st_mtime) == int(remote.mtime):
        return path, sha256_file(path)
    return None


class _TooLong(TransferError):
    """The server sent more bytes than its listing said."""


class _BoundedSink:
    """The download's destination: takes at most ``limit`` bytes; one more is an error at once,
    so a lying server can neither fill the disk nor append past the listed size."""

    def __init__(self, handle: BinaryIO, limit: int, size: int, target: Path) -> None:
        self._handle = handle
        self._limit = limit
        self._size = size
        self._target = target
        self.received = 0

    def write(self, data: bytes, /) -> int:
        if self.received + len(data) > self._limit:
            raise _TooLong(f"the server sent more than the {self._size} bytes its listing said")
        try:
            self._handle.write(data)
        except OSError as exc:  # disk full, say: named here, where the local path is known
            raise storage_error(exc, self._target) from None
        self.received += len(data)
        crash_point("downloading")
        return len(data)


def _changed(remote: RemoteFile, now: RemoteFile | None, *, mtime_comparable: bool) -> bool:
    if now is None:
        return False
    if now.size != remote.size:
        return True
    return mtime_comparable and bool(now.mtime) and int(now.mtime) != int(remote.mtime)


def _remote_changed(remote: RemoteFile, now: RemoteFile, when: str) -> RemoteChangedError:
    return RemoteChangedError(
        f"the file changed on the server {when} (listed: {remote.size} bytes, mtime "
        f"{int(remote.mtime)}; now: {now.size} bytes, mtime {int(now.mtime)}): not kept this "
        "run, the next run fetches the new version",
    )


def _part_length(part: Path, remote: RemoteFile) -> int:
    """How much of ``part`` a resume may keep: all of it, unless it is longer than the remote
    file (then it is not this version's prefix and is discarded) or not a regular file."""
    info = regular_file_info(part)
    if info is None:
        if part.is_symlink():
            remove_quietly(part)  # a planted link: removed, never written through
        return 0
    if info.st_size > remote.size:
        remove_quietly(part)  # never append to a file longer than the remote
        return 0
    return info.st_size


def _transfer(context: _RunContext, remote: RemoteFile, part: Path,
              connection: _Connection) -> int:
    """Append the missing bytes to ``part`` (resuming), fsync, and check the byte count.

    The server is asked for the file's size (and mtime) before the transfer, even when the part
    is already complete, and again after it: a file that changed raises RemoteChangedError and
    its bytes are discarded. Nothing that might be a mix of versions, or more than the listing
    said, is ever left behind to be resumed from.
    """
    source = context.source
    offset = _part_length(part, remote)
    reporter = context.reporter
    transport = connection.get()
    before = transport.stat(remote.name)
    if _changed(remote, before, mtime_comparable=transport.stat_mtime_matches_listing):
        assert before is not None
        remove_quietly(part)  # bytes of a version that is no longer there
        raise _remote_changed(remote, before, "after it was listed")
    reporter.file_started(source.name, remote.name, remote.size, offset)
    written = 0
    downloading = offset < remote.size or remote.size == 0
    too_long: _TooLong | None = None
    try:
        try:
            descriptor = open_private_resumable(part)
        except OSError as exc:
            raise storage_error(exc, part) from None
        with os.fdopen(descriptor, "wb") as handle:
            try:
                handle.seek(offset)
                if downloading:
                    sink = _BoundedSink(handle, remote.size - offset, remote.size,
                                        part.parent / remote.name)
                    try:
                        written = transport.download(
                            remote.name, sink, offset=offset,
                            progress=lambda n: reporter.advance(source.name, remote.name, n),
                        )
                    except _TooLong as error:
                        too_long = error
                    written = max(written, sink.received)
                handle.flush()
                os.fsync(handle.fileno())
                received = os.fstat(handle.fileno()).st_size
            except OSError as exc:
                raise storage_error(exc, part) from None
    except StorageError:
        remove_quietly(part)  # disk full or unwritable: nothing half-written is kept
        raise
    finally:
        reporter.file_finished(source.name, remote.name)
    if too_long is not None:
        remove_quietly(part)  # first, so a failing check below cannot leave it to be resumed
        now = connection.get().stat(remote.name)
        if _changed(remote, now, mtime_comparable=transport.stat_mtime_matches_listing):
            assert now is not None
            raise _remote_changed(remote, now, "during the download")
        raise too_long
    if downloading:
        after = transport.stat(remote.name)  # the same clock as ``before``: any change shows
        if after is not None and (after.size != remote.size or (
                before is not None and int(after.mtime) != int(before.mtime))):
            remove_quietly(part)  # a mix of versions: never resumed from
            raise _remote_changed(remote, after, "during the download")
    if received != remote.size:
        raise TransferError(f"transfer incomplete: got {received} of {remote.size} bytes "
                            "(the server ended the transfer early)")
    return written


def _archive(context: _RunContext, job: _FileJob, local: Path) -> tuple[Path, bool]:
    """Place the report in ``output_dir``: decrypted if it is PGP, as delivered otherwise."""
    source, remote = context.source, job.remote
    folder = source.output_dir
    ensure_private_dir(folder, f"sources.{source.name}.output_dir")
    decrypt = needs_decryption(local, remote.name, decrypt=source.decrypt,
                               require_signer=source.require_signature)
    name = plaintext_name(remote.name) if decrypt else remote.name
    contained_path(folder, name)
    signature: str | None = None  # not a PGP message: no signature to speak of
    signer: str | None = None
    with private_temp(folder, f"{remote.name}\0{job.file_id}") as temp:
        remove_quietly(temp)
        try:
            if decrypt:
                gpg = context.decryptor.get()
                decrypted = gpg.decrypt(local, temp, require_signer=source.require_signature)
                signature, signer = decrypted.signature, decrypted.signer
                sha256 = decrypted.sha256 or _finish_plaintext(temp)
            else:
                sha256 = _copy_private(local, temp)
            final = place_file(temp, folder, name, sha256)
        except OSError as exc:
            raise storage_error(exc, folder / name) from None
    crash_point("after-rename")
    size = final.stat().st_size
    context.ledger.record_archived(job.file_id, context.run_id, final, size, sha256,
                                   decrypted=decrypt, signer=signer, signature=signature)
    log.info("source %s: archived %s as %s", source.name, printable(remote.name),
             printable(final.name))
    return final, decrypt


def _finish_plaintext(temp: Path) -> str:
    """Make the plaintext private and durable before it gets its real name."""
    if os.name == "posix":
        temp.chmod(0o600)
    digest = hashlib.sha256()
    with temp.open("rb+") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
        os.fsync(handle.fileno())
    return digest.hexdigest()


def _copy_private(source_path: Path, temp: Path) -> str:
    digest = hashlib.sha256()
    descriptor = open_private_new(temp)
    with os.fdopen(descriptor, "wb") as out, source_path.open("rb") as src:
        while chunk := src.read(HASH_CHUNK):
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    fsync_dir(temp.parent)
    return digest.hexdigest()


# --- retention after the transfers --------------------------------------------------------------


def _apply_retention(
    result: SourceResult,
    source: SourceConfig,
    config: Config,
    ledger: Ledger,
    run_id: int | None,
    candidates: list[RemoteFile],
    options: FetchOptions,
) -> None:
    """Warn about at-risk, lost and stale; delete what the policy allows (never in a dry run)."""
    now = options.now if options.now is not None else time.time()
    retention_plan = retention.plan(source, config.retention, ledger.versions(source.name),
                                    candidates, now)
    result.notices = retention_plan.notices
    if options.dry_run or result.error is not None:
        return  # a source that stopped early is not the moment to delete anything
    result.held_back = len(retention_plan.held_back)
    result.deletion_cap = retention_plan.cap
    if not any(deletion.target == retention.REMOTE for deletion in retention_plan.deletions):
        result.deletions = retention.apply(retention_plan, ledger, run_id, None)
        return
    # the listing's connection may have been dropped and replaced by a worker: use a fresh one
    with Retrier(source, options.backoff_base).call(lambda: open_transport(source),
                                                    "reconnect") as fresh:
        result.deletions = retention.apply(retention_plan, ledger, run_id, fresh)


# --- retries and the decryptor ---------------------------------------------------------------


class Retrier:
    """Transient errors are retried with exponential backoff; everything else fails at once."""

    def __init__(self, source: SourceConfig, backoff_base: float) -> None:
        self.source = source
        self.backoff_base = backoff_base

    def delay(self, attempt: int) -> float:
        return float(min(self.backoff_base * (2 ** (attempt - 1)), MAX_BACKOFF))

    def call_plain(self, action: Callable[[], T], what: str) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                return action()
            except ReportsyncError as error:
                if not error.retryable or attempt > self.source.retries:
                    raise
                delay = self.delay(attempt)
                log.info("source %s: %s failed: %s; retry %d of %d in %.1fs", self.source.name,
                         what, error.message, attempt, self.source.retries, delay)
                time.sleep(delay)

    @contextmanager
    def call(self, opener: Callable[[], Transport], what: str) -> Iterator[Transport]:
        transport = self.call_plain(opener, what)
        try:
            yield transport
        finally:
            transport.close()


class LazyGpg:
    """gpg is started only when a file needs decrypting; a key problem is remembered, so the
    remaining files fail fast with the same reason instead of asking gpg again.

    Before the first decryption of the run the configured passphrase is checked once
    (``Gpg.require_working_passphrase``): a wrong one fails the run's decryptions with exit 6
    before any report is handed to gpg, even while gpg-agent still caches the right one.
    """

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        self._settings = settings
        self._environ = environ  # the run's environment (the CLI's): gpg's children inherit from it
        self._gpg: Gpg | None = None
        self._error: ReportsyncError | None = None
        self._lock = threading.Lock()

    def get(self) -> _CheckedGpg:
        with self._lock:
            if self._error is not None:
                raise self._error
            if self._gpg is None:
                try:
                    gpg = Gpg.from_settings(self._settings, self._environ)
                    gpg.require_working_passphrase()
                    self._gpg = gpg
                except ReportsyncError as error:
                    self._error = error if isinstance(error, KeyProblemError) else \
                        KeyProblemError(error.message, remedy=error.remedy)
                    raise self._error from None
            return _CheckedGpg(self._gpg, self)

    def fail(self, error: KeyProblemError) -> None:
        with self._lock:
            self._error = error


class _CheckedGpg:
    def __init__(self, gpg: Gpg, owner: LazyGpg) -> None:
        self._gpg = gpg
        self._owner = owner

    @property
    def gpg(self) -> Gpg:
        """The GnuPG home itself, for reading its keys."""
        return self._gpg

    def decrypt(self, encrypted: Path, output: Path, *, require_signer: str = "") -> Decrypted:
        try:
            return self._gpg.decrypt(encrypted, output, require_signer=require_signer)
        except KeyProblemError as error:
            self._owner.fail(error)
            raise


