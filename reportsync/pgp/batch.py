"""One ``gpg --decrypt-files`` run over files in a private folder, each judged by its own block.

Where the plaintext goes: gpg names each output after its input (``p0000007.gpg`` →
``p0000007``) in the input's folder. So every input is a link, under a name of ours, inside a
private folder reportsync created (``fsutil.private_temp_folder``: 0700, random name, inside the
report's output folder, so the final rename is atomic). Before gpg starts, reportsync creates
every output file itself (0600, exclusively, never through a symlink: whatever was at that name
is removed first, a link itself and never its target), and gpg is told ``--yes`` so it writes
into that file rather than refusing it; files gpg makes itself are 0600 too (umask 077). gpg
never chooses a name in a folder anybody else can write to, and never follows a planted link.

What is trusted: ``verdict.judge``, exactly as for ``Gpg.decrypt``, on the file's own
``FILE_START … FILE_DONE`` block of status lines and gpg's words. One thing a block cannot show
is the exit code the file alone would have got (gpg has one for the whole run). So:

- the run exited 0: every file's exit code is 0;
- otherwise, a file whose verdict is the same with exit code 0 and with the run's is settled
  (it fails on its status alone, or only its signature failed, which judge accepts whatever the
  code); a file whose verdict depends on the code is run again, in a run without the files
  that failed (``again``);
- gpg never got to the file, or was killed while on it: ``again`` (gpg itself stops in the
  middle of a file only because of that file, e.g. at a BAD signature: that file is judged by
  the lines it got, which are what it alone gets);
- gpg's words name the file's output (``error writing to 'p0000007'``, ``error closing …``:
  gpg could not write it, e.g. the disk is full): the file is decrypted alone by
  ``Gpg.decrypt`` (``alone``), whose own writes see the real error (StorageError, nothing kept);
- a run of ``again`` files that settles none of them sends them all ``alone``. So every file
  ends with the verdict a lone ``Gpg.decrypt`` gives it.

While gpg runs, the worker thread watches the file gpg is writing: past the plaintext cap gpg is
killed and that file fails as a compression bomb (the rest of the run is ``again``; the cap is
checked again on every finished file, so a file is refused exactly when its plaintext is larger
than the cap, whatever the timing). Each finished output is hashed and fsynced as soon as gpg
reports it done, while gpg goes on with the next file. For one big file (``behind``) the watcher
hashes the growing file behind gpg and flushes it to disk (``fdatasync``) every
``units.SYNC_EVERY`` bytes, so no byte of plaintext passes through a pipe and little is left
to flush at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from reportsync.errors import ReportsyncError
from reportsync.fsutil import (
    crash_point,
    open_private_new,
    remove_quietly,
    storage_error,
    sync_data,
)
from reportsync.pgp.gpg import Gpg, note_signature
from reportsync.pgp.verdict import Decrypted, plaintext_too_large
from reportsync.units import HASH_CHUNK, SYNC_EVERY

log = logging.getLogger(__name__)

WATCH_INTERVAL = 0.02  # seconds between looks at the file gpg is writing
_BEHIND_STEP = 8 * 1024 * 1024  # hashed per look, so the cap is looked at in between
_STATUS = "[GNUPG:] "
_FILE_START = f"{_STATUS}FILE_START "
_FILE_DONE = f"{_STATUS}FILE_DONE"


@dataclass(eq=False)
class Job:
    """One file handed to a pool: decrypt ``encrypted`` into ``output`` (a temp name of the
    caller's, as for ``Gpg.decrypt``)."""

    encrypted: Path
    output: Path
    require_signer: str
    size: int  # of the ciphertext
    future: Future[Decrypted] = field(default_factory=Future)


Verdict = Decrypted | ReportsyncError


@dataclass
class RunOutcome:
    settled: list[tuple[Job, Verdict]] = field(default_factory=list)
    again: list[Job] = field(default_factory=list)  # into another run (see the module's words)
    alone: list[Job] = field(default_factory=list)  # to Gpg.decrypt, one by one
    started: bool = False  # gpg began at least one file
    returncode: int | None = None  # gpg's exit code (None: no gpg ran)

    @property
    def broken(self) -> bool:
        """gpg failed before it began any file: this home cannot decrypt at all."""
        return self.returncode not in (None, 0) and not self.started


class _Slot:
    """One file of a run: its input link and its output in the private folder."""

    def __init__(self, job: Job, folder: Path, stem: str) -> None:
        self.job = job
        self.stem = stem
        self.input = folder / f"{stem}.gpg"
        self.output = folder / stem
        self.lines: list[str] = []
        self.done = False  # gpg wrote FILE_DONE
        self.descriptor = -1
        self.digest = hashlib.sha256()
        self.hashed = 0
        self.synced = 0
        self.too_large = False
        self.error: OSError | None = None  # reading or flushing the output failed
        self.kept = False  # renamed to the job's output

    def prepare(self) -> None:
        remove_quietly(self.input)  # unlink never follows a link
        _link(self.job.encrypted, self.input)
        remove_quietly(self.output)
        self.descriptor = open_private_new(self.output, readable=True)

    def size(self) -> int:
        return os.fstat(self.descriptor).st_size

    def hash_to(self, end: int) -> None:
        while self.hashed < end:
            chunk = os.pread(self.descriptor, min(HASH_CHUNK, end - self.hashed), self.hashed)
            if not chunk:
                raise OSError(f"{self.output} shrank while it was read")
            self.digest.update(chunk)
            self.hashed += len(chunk)

    def finish(self, limit: int) -> None:
        """gpg is done with the file: hash the rest and make it durable (fsync)."""
        try:
            size = self.size()
            if size > limit:
                self.too_large = True
                return
            self.hash_to(size)
            os.fsync(self.descriptor)
        except OSError as exc:
            self.error = exc
        crash_point("decrypting")

    def close(self) -> None:
        if self.descriptor >= 0:
            with contextlib.suppress(OSError):
                os.close(self.descriptor)
            self.descriptor = -1
        remove_quietly(self.input)
        if not self.kept:
            remove_quietly(self.output)


def _link(encrypted: Path, name: Path) -> None:
    """``name`` reads as ``encrypted``: a hard link (the same file, whatever later happens to
    the path), or a symbolic link where hard links are refused (another file system)."""
    try:
        os.link(encrypted, name)
    except OSError:
        os.symlink(encrypted.absolute(), name)


class _Run:
    """What the stderr reader learns while gpg runs: each file's block, which file is being
    written, and which are done; ``news`` is set whenever any of that changes."""

    def __init__(self, slots: dict[str, _Slot]) -> None:
        self.by_input = slots
        self.current: _Slot | None = None
        self.finished: deque[_Slot] = deque()
        self.started = False
        self.ended = False  # gpg closed its stderr: it is exiting
        self.news = threading.Event()

    def read(self, stream: IO[bytes]) -> None:
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line.startswith(_FILE_START):
                    fields = line.split(" ", 3)
                    self.current = self.by_input.get(fields[3]) if len(fields) == 4 else None
                    self.started = True
                    self.news.set()
                slot = self.current
                if slot is None:
                    continue  # before the first file, or of no file of ours: nobody's verdict
                slot.lines.append(line)
                if line.rstrip() == _FILE_DONE:
                    slot.done = True
                    self.current = None
                    self.finished.append(slot)
                    self.news.set()
        finally:
            self.ended = True
            self.news.set()


def _stems(counter: Iterator[int], count: int) -> list[str]:
    return [f"p{next(counter):07d}" for _ in range(count)]


def decrypt_files(gpg: Gpg, folder: Path, jobs: Sequence[Job], counter: Iterator[int], *,
                  limit: int, behind: bool = False) -> RunOutcome:
    """One ``gpg --decrypt-files`` run of ``jobs`` with ``gpg``'s home, in the private
    ``folder``; every job ends up settled, ``again`` or ``alone`` (see the module's words).
    ``counter`` numbers the names in ``folder`` (shared by every run there)."""
    outcome = RunOutcome()
    slots: dict[str, _Slot] = {}
    try:
        for job, stem in zip(jobs, _stems(counter, len(jobs)), strict=True):
            slot = _Slot(job, folder, stem)
            try:
                slot.prepare()
            except OSError:
                slot.close()
                outcome.alone.append(job)  # cannot be linked or created here: Gpg.decrypt says why
                continue
            slots[slot.input.name] = slot
        if slots:
            started = time.monotonic()
            returncode = _watch(gpg, folder, slots, limit, behind, outcome)
            _judge_all(gpg, list(slots.values()), returncode, limit, outcome)
            log.debug("gpg --decrypt-files of %d file(s) in %s: exit %s after %.3fs; %d settled, "
                      "%d again, %d alone", len(slots), gpg.home, returncode,
                      time.monotonic() - started, len(outcome.settled), len(outcome.again),
                      len(outcome.alone))
    finally:
        for slot in slots.values():
            slot.close()
    return outcome


def _watch(gpg: Gpg, folder: Path, slots: dict[str, _Slot], limit: int, behind: bool,
           outcome: RunOutcome) -> int:
    """Run gpg over the slots; meanwhile finish each file it reports done, and stop it when the
    file it writes passes the cap. Returns its exit code."""
    run = _Run(slots)
    child = gpg.start_decrypt_files(list(slots), folder)
    assert child.stderr is not None
    reader = threading.Thread(target=run.read, args=(child.stderr,), name="gpg-status",
                              daemon=True)
    reader.start()
    try:
        busy = False
        while not run.ended:
            if not busy:
                run.news.wait(WATCH_INTERVAL)
            run.news.clear()
            busy = False
            if run.finished:
                run.finished.popleft().finish(limit)
                busy = True
            slot = run.current
            if slot is None or slot.descriptor < 0:
                continue
            try:
                size = slot.size()
                if size > limit:
                    slot.too_large = True
                    child.kill()
                elif behind and size > slot.hashed:
                    slot.hash_to(min(size, slot.hashed + _BEHIND_STEP))
                    if slot.hashed - slot.synced >= SYNC_EVERY:
                        sync_data(slot.descriptor)
                        slot.synced = slot.hashed
                    busy = True
            except OSError as exc:
                slot.error = exc
    finally:
        if not run.ended and child.poll() is None:
            child.kill()  # interrupted (an exception in this thread): gpg must not go on
        child.wait()
        reader.join()
        child.stderr.close()
    while run.finished:
        run.finished.popleft().finish(limit)
    outcome.started = run.started
    outcome.returncode = child.returncode
    return child.returncode


def _judge_all(gpg: Gpg, slots: list[_Slot], returncode: int, limit: int,
               outcome: RunOutcome) -> None:
    # gpg itself ends a run in the middle of a file only because of that file (a BAD signature
    # in batch mode makes it exit at once): that file's lines are what it alone would give.
    # Killed (by us at the cap, or by a signal), the file it was on tells nothing.
    stopped = returncode < 0 or any(slot.too_large for slot in slots)
    for slot in slots:
        job = slot.job
        if slot.too_large:
            outcome.settled.append((job, plaintext_too_large(limit)))
        elif not slot.done and (not slot.lines or stopped):
            outcome.again.append(job)  # never begun, or cut short by a kill: not gpg's verdict
        elif slot.error is not None:
            outcome.settled.append((job, storage_error(slot.error, job.output)))
        elif _gpg_named_output(slot):
            outcome.alone.append(job)
        else:
            verdict = _verdict(gpg, slot, 0)
            if returncode != 0 and not _same(verdict, _verdict(gpg, slot, returncode)):
                outcome.again.append(job)
                continue
            if isinstance(verdict, Decrypted):
                note_signature(job.encrypted.name, verdict.signature, verdict.signer)
                verdict = _keep(slot, verdict)
            outcome.settled.append((job, verdict))


def _verdict(gpg: Gpg, slot: _Slot, returncode: int) -> Verdict:
    job = slot.job
    try:
        signature, signer = gpg.judged("\n".join(slot.lines), returncode, job.require_signer)
    except ReportsyncError as error:
        return error
    return Decrypted(path=job.output, size=slot.hashed, signature=signature, signer=signer,
                     sha256=slot.digest.hexdigest())


def _same(one: Verdict, other: Verdict) -> bool:
    if isinstance(one, ReportsyncError) and isinstance(other, ReportsyncError):
        return (type(one), one.message, one.remedy) == (type(other), other.message, other.remedy)
    return one == other


def _gpg_named_output(slot: _Slot) -> bool:
    """gpg's words about this file name its output: it could not create, write, flush or close
    it (its status lines say nothing of that; a decryption that went well never names it)."""
    pattern = re.compile(rf"(?<![\w.-]){re.escape(slot.stem)}(?![\w.-])")
    return any(pattern.search(line) for line in slot.lines if not line.startswith(_STATUS))


def _keep(slot: _Slot, decrypted: Decrypted) -> Verdict:
    """Give the durable plaintext the job's name (a rename in one file system: atomic)."""
    target = slot.job.output
    try:
        if not os.path.samestat(os.lstat(slot.output), os.fstat(slot.descriptor)):
            raise OSError(f"{slot.output} was replaced while gpg wrote it")
        os.replace(slot.output, target)
    except OSError as exc:
        return storage_error(exc, target)
    slot.kept = True
    return decrypted
