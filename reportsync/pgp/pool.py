"""``DecryptionPool``: many reports decrypted by a few gpg processes, one gpg-agent per worker.

One gpg per report pays gpg's start-up every time, and one gpg-agent does every private-key
operation of its home one after the other. The pool queues the files handed to it (``submit``,
while downloads go on) and each worker takes what is queued, up to ``batch_files`` files with the
same output folder, into one ``gpg --decrypt-files`` run (``batch.decrypt_files``); when the
queue is short that is a run of one file. Worker 0 uses the GnuPG home itself; every further
worker a private copy of it with an agent of its own (``homes.agent_home``; why that is safe is
written there), removed with its agent when the pool closes. A file whose ciphertext is at least
``big_file`` bytes gets a run of its own, hashed and flushed behind gpg as it grows.

Every file gets the verdict a lone ``Gpg.decrypt`` would give it (same exception, same remedy):
see ``batch``. Where hard links, umask and ``os.pread`` are not to be had (Windows), the pool
has one worker that decrypts each file with ``Gpg.decrypt``.

Durability: each plaintext is fsynced before it is renamed to the caller's temp name; the pool
does not fsync the folder (the caller's final ``fsutil.place_file`` or one
``fsutil.fsync_dir`` per batch does, before the ledger records the report: docs/fetch.md).
"""

from __future__ import annotations

import itertools
import logging
import math
import shutil
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

from reportsync.errors import ReportsyncError, StorageError
from reportsync.fsutil import IS_POSIX, private_temp_folder
from reportsync.pgp.batch import Job, Verdict, decrypt_files
from reportsync.pgp.gpg import Gpg
from reportsync.pgp.homes import agent_home, discard_home
from reportsync.pgp.verdict import Decrypted

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 2
BATCH_FILES = 64  # files per gpg run at most: bounds a run's argv, and what a failed run re-runs
BIG_FILE = 8 * 1024 * 1024  # ciphertext bytes from which a file gets a gpg run of its own


@dataclass
class PoolStats:
    """What a pool did so far (for the benchmarks and tests; nothing depends on it)."""

    homes: int = 0  # GnuPG homes in use, one agent each (the real one and its copies)
    runs: int = 0  # gpg --decrypt-files runs
    batched: int = 0  # files handed to those runs (a file run again counts again)
    alone: int = 0  # files decrypted alone by Gpg.decrypt


class _Lane:
    """A worker's GnuPG home: the real one (worker 0) or a private copy with its own agent."""

    def __init__(self, gpg: Gpg, copy: Path | None) -> None:
        self.gpg = gpg
        self.copy = copy


class _Folder:
    """The private folder beside one output folder, and the numbers of the names in it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.counter: Iterator[int] = itertools.count()


class DecryptionPool:
    """Decrypt files in the background: ``submit`` returns a Future of ``Decrypted``.

    Use it as a context manager, or call ``close``, which waits for every submitted file and
    then removes the private folders and the copies of the GnuPG home (stopping their agents).
    A Future raises what ``Gpg.decrypt`` would raise for that file: DecryptionError,
    KeyProblemError (every file would fail: the caller stops handing files in) or StorageError.
    """

    def __init__(self, gpg: Gpg, workers: int = DEFAULT_WORKERS, *,
                 batch_files: int = BATCH_FILES, big_file: int = BIG_FILE) -> None:
        self.gpg = gpg
        self.batching = IS_POSIX
        self.workers = max(1, workers) if self.batching else 1
        self.batch_files = max(1, batch_files)
        self.big_file = big_file
        self._queue: deque[Job] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._folders: dict[Path, _Folder] = {}
        self._lanes: list[_Lane] = []
        self._lock = threading.Lock()
        self._stats = PoolStats()
        self._threads = [threading.Thread(target=self._work, args=(index,),
                                          name=f"decrypt-{index}", daemon=True)
                         for index in range(self.workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, encrypted: Path, output: Path, *, require_signer: str = "") -> Future[Decrypted]:
        """Queue ``encrypted`` for decryption into ``output`` (the caller's temp name beside the
        report's final name, as for ``Gpg.decrypt``): the Future's ``Decrypted.path`` is
        ``output``, its bytes fsynced. Removed again on any failure."""
        return self.submit_many([(encrypted, output, require_signer)])[0]

    def submit_many(self, files: Sequence[tuple[Path, Path, str]]) -> list[Future[Decrypted]]:
        """``submit`` for several files at once, ``(encrypted, output, require_signer)`` each:
        queued together, so a worker can take them into one run."""
        jobs = [Job(encrypted, output, require_signer, _size(encrypted))
                for encrypted, output, require_signer in files]
        with self._ready:
            if self._closed:
                raise RuntimeError("the decryption pool is closed")
            self._queue.extend(jobs)
            self._ready.notify_all()
        return [job.future for job in jobs]

    def fail_pending(self, error: ReportsyncError) -> int:
        """Fail every file still queued with ``error`` (a KeyProblemError: every file would
        fail the same way, so gpg is not asked again); the files already in a run end as they
        end. Returns how many were failed."""
        with self._ready:
            jobs, self._queue = list(self._queue), deque()
        for job in jobs:
            job.future.set_exception(error.copy())  # each file's error names that file
        return len(jobs)

    @property
    def stats(self) -> PoolStats:
        with self._lock:
            return replace(self._stats)

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        for thread in self._threads:
            thread.join()
        for folder in self._folders.values():
            shutil.rmtree(folder.path, ignore_errors=True)
        self._folders.clear()
        for lane in self._lanes:
            if lane.copy is not None:
                discard_home(self.gpg.binary, lane.copy, self.gpg.environ)
        self._lanes.clear()

    def __enter__(self) -> DecryptionPool:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # --- the workers ---------------------------------------------------------------------------

    def _take(self) -> list[Job] | None:
        """The next run's files (None: closed and nothing left). A big file alone; otherwise up
        to ``batch_files`` files of one output folder, and no more than a fair share of the
        queue, so the other workers get some too."""
        with self._ready:
            while not self._queue and not self._closed:
                self._ready.wait()
            if not self._queue:
                return None
            first = self._queue.popleft()
            if not self.batching or first.size >= self.big_file:
                return [first]
            share = min(self.batch_files, math.ceil((len(self._queue) + 1) / self.workers))
            taken, kept = [first], deque[Job]()
            while self._queue and len(taken) < share:
                job = self._queue.popleft()
                same_folder = job.output.parent == first.output.parent
                (taken if same_folder and job.size < self.big_file else kept).append(job)
            kept.extend(self._queue)
            self._queue = kept
            return taken

    def _work(self, index: int) -> None:
        lane: _Lane | None = None
        while (jobs := self._take()) is not None:
            try:
                if not self.batching:
                    self._alone(jobs)
                    continue
                if lane is None:
                    lane = self._lane(index)
                if lane is None:  # no copy of the home for this worker: give the files back
                    self._give_back(jobs)
                    return
                if not self._decrypt(lane, jobs) and lane.copy is not None:
                    log.warning("gpg does not decrypt with the copy %s of the GnuPG home; "
                                "decrypting with one gpg-agent fewer", lane.copy)
                    return  # its files went to Gpg.decrypt; the other workers go on
            except BaseException as exc:  # every Future gets an answer, whatever happened
                error = exc if isinstance(exc, ReportsyncError) else \
                    StorageError(f"decryption stopped: {exc}")
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(error)
                if not isinstance(exc, Exception):
                    raise

    def _give_back(self, jobs: list[Job]) -> None:
        with self._ready:
            self._queue.extendleft(reversed(jobs))
            self._ready.notify()

    def _lane(self, index: int) -> _Lane | None:
        """Worker 0: the real home (its absolute path: gpg runs in the private folder).
        Others: a private copy, or None where there can be none."""
        home = self.gpg.home.absolute()
        copy = agent_home(self.gpg.binary, home, self.gpg.environ) if index else None
        if index and copy is None:
            return None
        try:
            lane = _Lane(self.gpg.sibling(copy or home), copy)
        except ReportsyncError:
            if copy is None:
                raise
            discard_home(self.gpg.binary, copy, self.gpg.environ)
            return None
        with self._lock:
            self._lanes.append(lane)
            self._stats.homes += 1
        return lane

    def _folder(self, output_dir: Path) -> _Folder:
        with self._lock:
            folder = self._folders.get(output_dir)
            if folder is None:
                folder = self._folders[output_dir] = _Folder(private_temp_folder(output_dir))
            return folder

    def _decrypt(self, lane: _Lane, jobs: list[Job]) -> bool:
        """Runs until every file is settled: the files a run could not settle go into the next
        run, and once a run settles none of them, each goes to ``Gpg.decrypt`` alone (with the
        real home). False when gpg failed on this lane's home before it began any file."""
        try:
            folder = self._folder(jobs[0].output.parent)
        except StorageError:
            self._alone(jobs)  # Gpg.decrypt meets the same problem and names it, file by file
            return True
        pending, alone, works = jobs, [], True
        while pending:
            outcome = decrypt_files(lane.gpg, folder.path, pending, folder.counter,
                                    limit=self.gpg.max_plaintext_bytes,
                                    behind=len(pending) == 1)
            with self._lock:
                self._stats.runs += 1
                self._stats.batched += len(pending) - len(outcome.alone)
            for job, verdict in outcome.settled:
                _settle(job, verdict)
            alone += outcome.alone
            works = works and not outcome.broken
            if len(outcome.again) == len(pending):
                alone += outcome.again  # nothing settled: this is no longer a batch question
                break
            pending = outcome.again
        self._alone(alone)
        return works

    def _alone(self, jobs: list[Job]) -> None:
        with self._lock:
            self._stats.alone += len(jobs)
        for job in jobs:
            try:
                verdict: Verdict = self.gpg.decrypt(job.encrypted, job.output,
                                                    require_signer=job.require_signer)
            except ReportsyncError as error:
                verdict = error
            _settle(job, verdict)


def _size(encrypted: Path) -> int:
    try:
        return encrypted.stat().st_size
    except OSError:
        return 0  # Gpg.decrypt names the problem


def _settle(job: Job, verdict: Verdict) -> None:
    if isinstance(verdict, Decrypted):
        job.future.set_result(verdict)
    else:
        job.future.set_exception(verdict)
