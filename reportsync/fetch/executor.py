"""The executor: runs a source's jobs (download → archive → record) and emits their outcomes.

Up to ``jobs`` workers, each over its own connection (the first reuses the listing's). A failure
of one file is recorded and the others go on; what ends the source (a local write error, the
server unreachable after every retry) stops the workers, and the jobs nobody took are reported
``pending``. A key problem (exit 6) is a source error too, but the downloads go on.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from reportsync.config import SourceConfig
from reportsync.errors import (
    InternalError,
    KeyProblemError,
    RemoteChangedError,
    ReportsyncError,
    StorageError,
)
from reportsync.fetch.archive import LazyGpg, archive
from reportsync.fetch.options import Reporter
from reportsync.fetch.plan import Job
from reportsync.fetch.record import Recorder
from reportsync.fetch.results import FileOutcome
from reportsync.fetch.transfer import download, kept_copy_intact
from reportsync.fsutil import printable, storage_error
from reportsync.transports.retry import RetryingTransport
from reportsync.vocab import Action, Stage

log = logging.getLogger(__name__)


@dataclass
class Execution:
    outcomes: list[FileOutcome] = field(default_factory=list)  # in the order of the jobs
    error: ReportsyncError | None = None  # what stopped the source, if anything


class _SourceStop(Exception):
    """A job met an error that concerns the whole source; ``abort``: no further job starts."""

    def __init__(self, error: ReportsyncError, *, abort: bool, transferred: int = 0) -> None:
        super().__init__(error.message)
        self.error = error
        self.abort = abort
        self.transferred = transferred  # the file's bytes that came over before it stopped


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
        self._connect = connect  # a worker's own connection (opened when first used)
        self._abort = threading.Event()

    def run(self, work: list[Job], first: RetryingTransport) -> Execution:
        """Every job, over up to ``jobs`` connections; the first worker uses ``first``."""
        pending: queue.Queue[tuple[int, Job]] = queue.Queue()
        for index, job in enumerate(work):
            pending.put((index, job))
        done: list[tuple[int, FileOutcome]] = []
        stops: list[ReportsyncError] = []
        guard = threading.Lock()
        transfers = sum(1 for job in work if self._kept_copy(job) is None)
        workers = max(1, min(self._jobs, transfers or 1))

        def worker(transport: RetryingTransport) -> None:
            try:
                while not self._abort.is_set():
                    try:
                        index, job = pending.get_nowait()
                    except queue.Empty:
                        return
                    try:
                        outcome = self._fetch_file(job, transport)
                    except _SourceStop as stop:
                        outcome = FileOutcome.of(job.remote, Action.FAILED, error=stop.error,
                                                 transferred=stop.transferred)
                        with guard:  # the source's own copy: the file's gets the file's name
                            stops.append(stop.error.copy())
                        if stop.abort:
                            self._abort.set()
                    except StorageError as unrecorded:  # the ledger could not record (its disk
                        # full, say): nothing more can be recorded, so the source stops here
                        outcome = FileOutcome.of(job.remote, Action.FAILED, error=unrecorded)
                        with guard:
                            stops.append(unrecorded)
                        self._abort.set()
                    except Exception as bug:  # a defect must cost one file, not the whole run
                        log.exception("source %s: unexpected error on %s", self._source.name,
                                      printable(job.remote.name))
                        outcome = FileOutcome.of(job.remote, Action.FAILED, error=InternalError(
                            f"unexpected {type(bug).__name__}: {bug}"))
                    with guard:
                        done.append((index, outcome))
            finally:
                if transport is not first:
                    transport.close()

        threads = [threading.Thread(target=worker, args=(first if number == 0 else self._connect(),),
                                    name=f"fetch-{self._source.name}-{number}", daemon=True)
                   for number in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        while True:  # the source stopped early: say which files it never tried (next run will)
            try:
                index, job = pending.get_nowait()
            except queue.Empty:
                break
            done.append((index, FileOutcome.of(job.remote, Action.PENDING)))
        done.sort(key=lambda item: item[0])
        return Execution([outcome for _, outcome in done], stops[0] if stops else None)

    def _kept_copy(self, job: Job) -> Path | None:
        """The encrypted copy an earlier run kept, if it is still intact: no transfer needed."""
        if job.kept_copy is not None and kept_copy_intact(job.kept_copy, job.remote.size):
            return job.kept_copy
        return None

    def _fetch_file(self, job: Job, transport: RetryingTransport) -> FileOutcome:
        """One job's steps, each recorded; raises _SourceStop for what ends the source."""
        source, remote = self._source, job.remote
        outcome = FileOutcome.of(remote, Action.DOWNLOADED)
        stage = Stage.DOWNLOAD
        try:
            local = self._kept_copy(job)
            if local is None:
                downloaded = download(source, remote, transport, self._reporter)
                self._recorder.downloaded(job, downloaded)
                local, outcome.transferred = downloaded.path, downloaded.transferred
            outcome.local_path = str(local)
            if not self._archive:
                return outcome
            stage = Stage.ARCHIVE
            archived = archive(source, remote, job.file_id, local, self._decryptor)
            self._recorder.archived(job, archived)
            outcome.output_path, outcome.decrypted = str(archived.path), archived.decrypted
            outcome.action = Action.ARCHIVED
            return outcome
        except RemoteChangedError as error:
            # not a failure: the provider was still writing or replaced the file; the next
            # listing shows the new version and the next run fetches it
            error.with_context(source=source.name, path=remote.name)
            log.warning("source %s: %s: %s", source.name, printable(remote.name), error.message)
            outcome.action, outcome.error = Action.PENDING, error
            return outcome
        except OSError as exc:  # a local read or write outside the wrapped steps
            local_failure = storage_error(exc, source.download_dir / remote.name)
            self._recorder.failed(job, stage, local_failure.message)
            raise _SourceStop(local_failure, abort=True,
                              transferred=outcome.transferred) from None
        except ReportsyncError as error:
            if isinstance(error, (StorageError, KeyProblemError)) or transport.down is not None:
                self._recorder.failed(job, stage, error.message)
                raise _SourceStop(error, abort=not isinstance(error, KeyProblemError),
                                  transferred=outcome.transferred) from None
            error.with_context(source=source.name, path=remote.name)
            attempts = self._recorder.failed(job, stage, error.message)
            log.warning("source %s: %s failed (attempt %d): %s", source.name,
                        printable(remote.name), attempts, error.message)
            outcome.action, outcome.error = Action.FAILED, error
            return outcome
