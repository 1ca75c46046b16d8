"""The executor: runs a source's jobs as a pipeline (transfer → decrypt → record) and emits their
outcomes.

Up to ``jobs`` transfer workers, each over its own connection (the first reuses the listing's),
take the jobs in batches (up to ``BATCH_FILES``; a fair share of what is left, so every worker
gets some): a batch is downloaded together (``transfer.download_batch``: ``download_many``,
which SFTP pipelines), its parts fsynced together, renamed into place, their folder fsynced
once, and recorded in one ledger transaction. Its reports then go to the archive stage: their
decryptions into the source's ``DecryptionPool`` in one hand-over (``gpg --decrypt-files``
batches, one gpg-agent per pool worker), and the worker goes on with the next batch while gpg
works. One archive thread takes the reports as they are ready, in groups of up to
``ARCHIVE_GROUP``: renames them into place, fsyncs their folder once and records the group in
one transaction. Why a killed run or a power loss never leaves a recorded file that is not
there: docs/fetch.md, "Batches and power loss".

A failure of one file is recorded and the others go on; what ends the source (a local write
error, the server unreachable after every retry) stops the workers, and the jobs nobody took
are reported ``pending``; after a local write error (exit 7) the reports already downloaded are
not placed either (their downloads are recorded: the next run archives them from those copies),
while a server gone for good lets them be archived. A key problem (exit 6) is a source error
too, but the downloads go on.
A worker whose connection the server refuses as one too many (``TooManyConnectionsError``,
issue 14) while other workers run retires, and gives back the jobs it held: the run goes on
with fewer connections.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from reportsync.config import SourceConfig
from reportsync.errors import (
    InternalError,
    KeyProblemError,
    RemoteChangedError,
    ReportsyncError,
    StorageError,
    TooManyConnectionsError,
)
from reportsync.fetch.archive import (
    Archived,
    Archiving,
    LazyGpg,
    PooledDecryption,
    finish_archive,
    start_archive,
)
from reportsync.fetch.barrier import Barrier
from reportsync.fetch.options import Reporter
from reportsync.fetch.plan import Job
from reportsync.fetch.record import Recorder
from reportsync.fetch.results import FileOutcome
from reportsync.fetch.transfer import (
    BatchResult,
    Downloaded,
    Partial,
    download,
    download_batch,
    kept_copy_intact,
)
from reportsync.fsutil import crash_point, printable, storage_error
from reportsync.transports.retry import RetryingTransport
from reportsync.vocab import Action, Stage

_Done = TypeVar("_Done")  # what a stage made of a job: its download, or its report

log = logging.getLogger(__name__)

BATCH_FILES = 32  # jobs a transfer worker takes at once: what SFTP's download_many keeps in flight
BATCH_BYTES = 16 * 1024 * 1024  # a batch stops growing past this many listed bytes: the small
# files beside a big one are recorded (and decrypted) without waiting for it
ARCHIVE_GROUP = 64  # reports placed and recorded in one transaction at most


@dataclass
class Execution:
    outcomes: list[FileOutcome] = field(default_factory=list)  # in the order of the jobs
    error: ReportsyncError | None = None  # what stopped the source, if anything


@dataclass(eq=False)
class _Item:
    """One job on its way through the stages."""

    index: int  # its place in the jobs: the outcomes keep that order
    job: Job
    outcome: FileOutcome
    local: Path | None = None  # the encrypted copy, once it is durable and recorded
    archiving: Archiving | None = None


class Executor:
    def __init__(self, source: SourceConfig, recorder: Recorder, decryptor: LazyGpg,
                 reporter: Reporter, *, archive: bool, jobs: int,
                 connect: Callable[[], RetryingTransport]) -> None:
        self._source = source
        self._recorder = recorder
        self._decryptor = decryptor
        self._reporter = reporter
        self._archive = archive  # False: --no-decrypt, download only
        self._jobs = jobs
        self._connect = connect  # a worker's own connection (opened when its worker starts)
        self._abort = threading.Event()  # no further transfer starts
        self._local_stop = threading.Event()  # a local write failed: no further report is placed
        self._guard = threading.Lock()
        self._pending: deque[tuple[int, Job]] = deque()
        self._done: list[tuple[int, FileOutcome]] = []
        self._stops: list[ReportsyncError] = []
        self._live = 0  # transfer workers still running
        self._archives: queue.Queue[_Item | None] = queue.Queue()

    def run(self, work: list[Job], first: RetryingTransport) -> Execution:
        """Every job, over up to ``jobs`` connections; the first worker uses ``first``."""
        self._pending = deque(enumerate(work))
        transfers = sum(1 for job in work if self._kept_copy(job) is None)
        workers = max(1, min(self._jobs, transfers or 1))
        self._live = workers
        decryption = PooledDecryption(self._decryptor)
        with Barrier() as barrier:
            archiver = threading.Thread(target=self._archive_stage, args=(decryption, barrier),
                                        name=f"archive-{self._source.name}", daemon=True)
            archiver.start()
            try:
                threads = [threading.Thread(
                    target=self._worker, args=(first if number == 0 else self._connect(), first,
                                               decryption, barrier),
                    name=f"fetch-{self._source.name}-{number}", daemon=True)
                    for number in range(workers)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
            finally:
                self._archives.put(None)  # no more reports: the archive stage ends when done
                archiver.join()
                decryption.close()
        while self._pending:  # the source stopped early: say which files it never tried
            index, job = self._pending.popleft()
            self._done.append((index, FileOutcome.of(job.remote, Action.PENDING)))
        self._done.sort(key=lambda item: item[0])
        return Execution([outcome for _, outcome in self._done],
                         self._stops[0] if self._stops else None)

    # --- the transfer workers ------------------------------------------------------------------

    def _worker(self, transport: RetryingTransport, first: RetryingTransport,
                decryption: PooledDecryption, barrier: Barrier) -> None:
        retired = False  # counted off by ``_retire`` already
        try:
            if transport is not first and not self._connected(transport):
                retired = True
                return
            while not self._abort.is_set():
                batch = self._take()
                if not batch:
                    break
                if not self._transfer(batch, transport, decryption, barrier):
                    retired = True
                    return
        finally:
            if not retired:
                with self._guard:
                    self._live -= 1
            if transport is not first:
                transport.close()

    def _connected(self, transport: RetryingTransport) -> bool:
        """Open a further worker's connection before it takes any job; False: the server allows
        no more sessions and the worker retired (any other error: its first job meets it)."""
        try:
            transport.connect(retry_refused=False)
        except TooManyConnectionsError as error:
            if self._retire():
                log.info("source %s: the server refused one more session (%s): going on with "
                         "fewer connections", self._source.name, error.message)
                return False
        except ReportsyncError:
            pass
        return True

    def _retire(self) -> bool:
        """Count this worker off if it is not the last one: then it may stop while the others
        go on."""
        with self._guard:
            if self._live > 1:
                self._live -= 1
                return True
            return False

    def _take(self) -> list[_Item]:
        with self._guard:
            share = min(BATCH_FILES, math.ceil(len(self._pending) / max(1, self._live)))
            batch: list[_Item] = []
            listed = 0
            while self._pending and len(batch) < share and listed < BATCH_BYTES:
                index, job = self._pending.popleft()
                batch.append(_Item(index, job, FileOutcome.of(job.remote, Action.DOWNLOADED)))
                listed += job.remote.size
            return batch

    def _give_back(self, items: list[_Item]) -> None:
        with self._guard:
            self._pending.extendleft((item.index, item.job) for item in reversed(items))

    def _kept_copy(self, job: Job) -> Path | None:
        """The encrypted copy an earlier run kept, if it is still intact: no transfer needed."""
        if job.kept_copy is not None and kept_copy_intact(job.kept_copy, job.remote.size):
            return job.kept_copy
        return None

    def _transfer(self, batch: list[_Item], transport: RetryingTransport,
                  decryption: PooledDecryption, barrier: Barrier) -> bool:
        """Download a batch, record it, hand its reports on; False: the worker retired."""
        fetching: list[_Item] = []
        for item in batch:
            kept = self._kept_copy(item.job)
            if kept is None:
                fetching.append(item)
            else:
                item.local = kept
                item.outcome.local_path = str(kept)
        results: list[BatchResult] = [None] * len(fetching)
        if fetching:
            try:
                results = download_batch(self._source, [item.job.remote for item in fetching],
                                         transport, self._reporter, barrier)
            except Exception as exc:  # a defect: the one-file path takes every file of the batch
                log.exception("source %s: batch download failed: %s", self._source.name, exc)
        retired: list[_Item] = []
        durable: list[tuple[_Item, Downloaded]] = []
        for item, batched in zip(fetching, results, strict=True):
            result: Downloaded | BaseException | None = None
            if not isinstance(batched, Partial):
                result = batched
            if retired:
                retired.append(item)  # given back with the others
                continue
            if result is None and self._abort.is_set():
                self._give_back([item])  # the source stopped: pending
                continue
            if result is None:  # the one-file path, with its retries and resume
                try:
                    result = download(self._source, item.job.remote, transport, self._reporter,
                                      attempts_made=int(isinstance(batched, Partial)))
                    if isinstance(batched, Partial):  # the bytes the batch got count too
                        result = replace(result, transferred=result.transferred + batched.received)
                except TooManyConnectionsError as error:
                    if self._retire():
                        retired.append(item)
                        continue
                    result = error
                except Exception as exc:
                    result = exc
            if isinstance(result, Downloaded):
                durable.append((item, result))
            elif result is not None:
                self._settle(item, Stage.DOWNLOAD, result, transport)
        self._give_back(retired)
        self._record_downloads(durable, transport)
        ready = [item for item in batch if item.local is not None]
        if not self._archive:
            for item in ready:
                self._finish(item)
        elif ready:
            self._start_archives(ready, decryption)
        return not retired

    def _record_downloads(self, durable: list[tuple[_Item, Downloaded]],
                          transport: RetryingTransport) -> None:
        for item, done in self._recorded(durable, self._recorder.downloaded_many,
                                         Stage.DOWNLOAD, transport):
            item.local = done.path
            item.outcome.local_path, item.outcome.transferred = str(done.path), done.transferred

    # --- the archive stage ---------------------------------------------------------------------

    def _start_archives(self, items: list[_Item], decryption: PooledDecryption) -> None:
        started: list[_Item] = []
        for item in items:
            assert item.local is not None
            if self._local_stop.is_set():  # downloaded and recorded; archived by the next run
                self._give_back([item])
                continue
            try:
                item.archiving = start_archive(self._source, item.job.remote, item.job.file_id,
                                               item.local)
            except Exception as exc:
                self._settle(item, Stage.ARCHIVE, exc, None)
                continue
            started.append(item)
        try:
            decryption.start([item.archiving for item in started if item.archiving])
        except Exception as exc:  # the key cannot be used: none of them is decrypted
            for item in started:
                if item.archiving is not None and item.archiving.decrypt:
                    item.archiving.discard()
                    self._settle(item, Stage.ARCHIVE, exc, None)
            started = [item for item in started
                       if item.archiving is not None and not item.archiving.decrypt]
        for item in started:
            self._archives.put(item)

    def _archive_stage(self, decryption: PooledDecryption, barrier: Barrier) -> None:
        """Place and record the reports as their plaintexts are ready, a group at a time."""
        ending = False
        while not ending:
            item = self._archives.get()
            if item is None:
                return
            if item.archiving is not None and item.archiving.decrypted is not None:
                futures.wait([item.archiving.decrypted])  # meanwhile more reports come in
            group = [item]
            while len(group) < ARCHIVE_GROUP:
                try:
                    more = self._archives.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    ending = True
                    break
                group.append(more)
            try:
                self._finish_group(group, decryption, barrier)
            except Exception as exc:  # a defect must cost these files, not the whole run
                log.exception("source %s: archiving failed", self._source.name)
                for member in group:
                    if member.outcome.action is Action.DOWNLOADED:
                        self._settle(member, Stage.ARCHIVE, exc, None)

    def _finish_group(self, group: list[_Item], decryption: PooledDecryption,
                      barrier: Barrier) -> None:
        works = [item.archiving for item in group if item.archiving is not None]
        unsynced = barrier.sync_files(work.temp for work in works if work.needs_sync)
        placed: list[tuple[_Item, Archived]] = []
        for item in group:
            work = item.archiving
            assert work is not None
            if self._local_stop.is_set():  # not placed: the next run archives it
                if work.decrypted is not None:
                    futures.wait([work.decrypted])  # gpg is done with the temp
                work.discard()
                self._give_back([item])
                continue
            try:
                if work.temp in unsynced:
                    raise unsynced[work.temp]
                placed.append((item, finish_archive(work, decryption)))
            except Exception as exc:
                work.discard()
                self._settle(item, Stage.ARCHIVE, exc, None)
        if not placed:
            return
        try:
            barrier.sync_folders(archived.path.parent for _, archived in placed)
        except OSError as exc:  # placed, but the names may not survive a power loss: unrecorded
            for item, archived in placed:
                self._settle(item, Stage.ARCHIVE, storage_error(exc, archived.path), None)
            return
        crash_point("after-rename")
        for item, archived in self._recorded(placed, self._recorder.archived_many,
                                             Stage.ARCHIVE, None):
            outcome = item.outcome
            outcome.output_path, outcome.decrypted = str(archived.path), archived.decrypted
            outcome.action = Action.ARCHIVED
            self._finish(item)

    # --- outcomes ------------------------------------------------------------------------------

    def _finish(self, item: _Item) -> None:
        with self._guard:
            self._done.append((item.index, item.outcome))

    def _recorded(self, done: list[tuple[_Item, _Done]],
                  record: Callable[[list[tuple[Job, _Done]]], Sequence[BaseException | None]],
                  stage: Stage, transport: RetryingTransport | None
                  ) -> list[tuple[_Item, _Done]]:
        """``done`` recorded in one group commit (``record``: a ``Recorder`` ``*_many``); the
        ones recorded are returned, the others settled at ``stage`` with their error, or all of
        them with the commit's own when it failed (then none of them is recorded)."""
        try:
            errors = record([(item.job, value) for item, value in done])
        except Exception as exc:
            for item, _ in done:
                self._settle(item, stage, exc, transport)
            return []
        recorded = []
        for (item, value), error in zip(done, errors, strict=True):
            if error is None:
                recorded.append((item, value))
            else:
                self._settle(item, stage, error, transport)
        return recorded

    def _settle(self, item: _Item, stage: Stage, exc: BaseException,
                transport: RetryingTransport | None) -> None:
        """The outcome of a job that met ``exc`` at ``stage``, recorded; what concerns the whole
        source is kept as its error (and stops the workers unless it is a key problem)."""
        source, job = self._source, item.job
        remote = job.remote
        outcome = item.outcome
        if isinstance(exc, ReportsyncError):  # a batch's error is met by each of its files:
            exc = exc.copy()  # each gets its own, so each names its own file
        try:
            if isinstance(exc, RemoteChangedError):
                # not a failure: the provider was still writing or replaced the file; the next
                # listing shows the new version and the next run fetches it
                exc.with_context(source=source.name, path=remote.name)
                log.warning("source %s: %s: %s", source.name, printable(remote.name),
                            exc.message)
                outcome.action, outcome.error = Action.PENDING, exc
            elif isinstance(exc, OSError):  # a local read or write outside the wrapped steps
                failure = storage_error(exc, source.download_dir / remote.name)
                self._recorder.failed(job, stage, failure.message)
                outcome = self._stop(job, failure, abort=True, transferred=outcome.transferred)
            elif isinstance(exc, ReportsyncError):
                if isinstance(exc, (StorageError, KeyProblemError)) or (
                        transport is not None and transport.down is not None):
                    self._recorder.failed(job, stage, exc.message)
                    outcome = self._stop(job, exc, abort=not isinstance(exc, KeyProblemError),
                                         transferred=outcome.transferred)
                else:
                    exc.with_context(source=source.name, path=remote.name)
                    attempts = self._recorder.failed(job, stage, exc.message)
                    log.warning("source %s: %s failed (attempt %d): %s", source.name,
                                printable(remote.name), attempts, exc.message)
                    outcome.action, outcome.error = Action.FAILED, exc
            else:
                raise exc
        except StorageError as unrecorded:  # the ledger could not record the failure (its disk
            # full, say): nothing more can be recorded, so the source stops here
            outcome = self._stop(job, unrecorded, abort=True, transferred=outcome.transferred)
        except Exception as bug:  # a defect must cost one file, not the whole run
            log.error("source %s: unexpected error on %s", source.name, printable(remote.name),
                      exc_info=bug)
            outcome = FileOutcome.of(remote, Action.FAILED, error=InternalError(
                f"unexpected {type(bug).__name__}: {bug}"))
        item.outcome = outcome
        self._finish(item)

    def _stop(self, job: Job, error: ReportsyncError, *, abort: bool,
              transferred: int = 0) -> FileOutcome:
        """The job's outcome under an error that ends the source; ``transferred``: the file's
        bytes that came over before it stopped (they count in the run's total)."""
        with self._guard:  # the source's own copy: the file's error gets the file's name
            self._stops.append(error.copy())
        if abort:
            self._abort.set()
        if isinstance(error, StorageError):  # the files already here are not placed either
            self._local_stop.set()
        return FileOutcome.of(job.remote, Action.FAILED, error=error, transferred=transferred)
