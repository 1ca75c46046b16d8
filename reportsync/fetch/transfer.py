"""The download step: one remote file version into ``download_dir``, resumable, checked, durable.

The bytes go to a version-named ``.part`` beside the target, are fsynced, hashed and renamed into
place. The server is asked for the file's size and mtime before and after the transfer; a file
that changed meanwhile raises RemoteChangedError and its bytes are discarded. Nothing that might
be a mix of versions, or more than the listing said, is ever left behind to be resumed from.
Retries (and resuming after a cut connection) are the transport's: ``RetryingTransport``.

``download_batch`` takes many files at once over ``Transport.download_many`` (SFTP keeps up to
32 small files in flight on one connection), fsyncs their parts together (``barrier``), renames
them into place and fsyncs the folder once; whatever a batch does not settle cleanly (a cut
connection, a refusal, a short transfer) is left to ``download``, the one-file path above, which
retries and resumes from the part exactly as it always did.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reportsync.config import SourceConfig
from reportsync.errors import RemoteChangedError, ReportsyncError, StorageError, TransferError
from reportsync.fetch.barrier import Barrier
from reportsync.fetch.options import Reporter
from reportsync.fsutil import (
    contained_path,
    crash_point,
    open_private_new,
    open_private_resumable,
    place_file,
    printable,
    regular_file_info,
    remove_quietly,
    remove_stale_temps,
    sha256_file,
    storage_error,
    sync_data,
    temp_name,
)
from reportsync.transports import RemoteFile
from reportsync.transports.base import Download
from reportsync.transports.retry import RetryingTransport, incomplete_transfer
from reportsync.units import SYNC_EVERY

log = logging.getLogger(__name__)

_BEHIND_BLOCKS = 32
"""Blocks written and not yet hashed by a big part's helper thread, at most (255 KiB each over
SFTP: 8 MiB)."""


@dataclass(frozen=True)
class Downloaded:
    path: Path  # the encrypted copy under its real name in download_dir
    sha256: str
    transferred: int  # bytes that came over the network this run (0: adopted or complete)


@dataclass(frozen=True)
class Partial:
    """A file of a batch that ``download`` must finish alone: the batch got ``received`` bytes
    of it into its part (the one-file path resumes from them), in one failed attempt."""

    received: int


@dataclass(frozen=True)
class _Transferred:
    written: int  # bytes this transfer received
    sha256: str | None  # the part's, when every byte of it was hashed on the way in


BatchResult = Downloaded | ReportsyncError | OSError | Partial | None
"""One file of a batch: placed (not yet recorded), its error, or not settled by the batch
(None or ``Partial``): ``download`` takes it on its own."""


def download(source: SourceConfig, remote: RemoteFile, transport: RetryingTransport,
             reporter: Reporter, *, attempts_made: int = 0) -> Downloaded:
    """Fetch one file into ``download_dir`` and give it its real name (not yet recorded).
    ``attempts_made``: transfers of it that failed already this run (in a batch): they count
    against the source's retries."""
    folder = source.download_dir
    adopted = _adopt_existing(contained_path(folder, remote.name), remote)
    if adopted is not None:  # a killed run renamed it into place but did not record it
        return adopted
    part = folder / part_name(remote)
    transferred = _transfer(source, remote, part, transport, reporter, attempts_made)
    try:
        sha256 = transferred.sha256 or sha256_file(part)
        os.utime(part, (remote.mtime, remote.mtime))
        final = place_file(part, folder, remote.name, sha256)
    except OSError as exc:
        raise storage_error(exc, folder / remote.name) from None
    crash_point("after-download-rename")
    log.info("source %s: downloaded %s (%d bytes)", source.name, printable(remote.name),
             remote.size)
    return Downloaded(final, sha256, transferred.written)


def part_name(remote: RemoteFile) -> str:
    """The resumable download's temp name: it depends on the version, so a changed file never
    continues from another version's bytes."""
    return temp_name("\0".join(str(part) for part in remote.version), "part")


def kept_copy_intact(path: Path, size: int) -> bool:
    """Whether the encrypted copy an earlier run kept is still there, whole: a regular file (a
    symlink planted in its place is not "the local copy") of the version's size."""
    info = regular_file_info(path)
    return info is not None and info.st_size == size


def remove_leftovers(source: SourceConfig, candidates: list[RemoteFile]) -> None:
    """Temp files a killed run left behind (we hold the run lock, so none is in use): every
    ``.rs-*.tmp`` (a half-written plaintext or copy), and every ``.rs-*.part`` that no version in
    this listing can resume (its version is gone from the server)."""
    # one listing of the folder for both kinds; the part names are made only if a temp is there
    removed = remove_stale_temps(source.download_dir, "part", "tmp",
                                 keep=lambda: {part_name(remote) for remote in candidates})
    if source.output_dir != source.download_dir and source.output_dir.is_dir():
        removed += remove_stale_temps(source.output_dir, "tmp")
    if removed:
        log.info("source %s: removed %d temp file(s) left by an interrupted run", source.name,
                 len(removed))


def _adopt_existing(path: Path, remote: RemoteFile) -> Downloaded | None:
    info = regular_file_info(path)  # never a symlink: it could point at any file of this user
    if info is None:
        return None
    if info.st_size == remote.size and int(info.st_mtime) == int(remote.mtime):
        return Downloaded(path, sha256_file(path), 0)
    return None


class _TooLong(TransferError):
    """The server sent more bytes than its listing said."""


class _BoundedSink:
    """The download's destination: takes at most ``limit`` bytes; one more is an error at once,
    so a lying server can neither fill the disk nor append past the listed size."""

    def __init__(self, handle: _PartWriter, limit: int, size: int,
                 target: Path) -> None:
        self._handle = handle
        self._limit = limit
        self._size = size
        self._target = target
        self.received = 0
        self.failed = False  # the local write failed (the error went to the transport)
        self.too_long = False  # the server sent more than the listing said

    def write(self, data: bytes, /) -> int:
        if self.received + len(data) > self._limit:
            self.too_long = True
            raise _TooLong(f"the server sent more than the {self._size} bytes its listing said")
        try:
            self._handle.write(data)
        except OSError as exc:  # disk full, say: named here, where the local path is known
            self.failed = True
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


def _transfer(source: SourceConfig, remote: RemoteFile, part: Path, transport: RetryingTransport,
              reporter: Reporter, attempts_made: int = 0) -> _Transferred:
    """Append the missing bytes to ``part`` (resuming), fsync, and check the byte count.

    The server is asked for the file's size (and mtime) before the transfer, even when the part
    is already complete, and again after it: a file that changed raises RemoteChangedError and
    its bytes are discarded. Returns the bytes transferred, and the part's SHA-256 when it was
    hashed on the way in (it began empty).
    """
    offset = _part_length(part, remote)
    before = transport.stat(remote.name)
    if _changed(remote, before, mtime_comparable=transport.stat_mtime_matches_listing):
        assert before is not None
        remove_quietly(part)  # bytes of a version that is no longer there
        raise _remote_changed(remote, before, "after it was listed")
    reporter.file_started(source.name, remote.name, remote.size, offset)
    written = 0
    downloading = offset < remote.size or remote.size == 0
    cut_short: TransferError | None = None  # too many bytes, or too few after every retry
    sha256: str | None = None
    try:
        try:
            descriptor = open_private_resumable(part)
        except OSError as exc:
            raise storage_error(exc, part) from None
        writer = _PartWriter(descriptor, hashing=offset == 0)
        try:
            os.lseek(descriptor, offset, os.SEEK_SET)
            if downloading:
                sink = _BoundedSink(writer, remote.size - offset, remote.size,
                                    part.parent / remote.name)
                try:
                    written = transport.download(
                        remote.name, sink, offset=offset, expected_size=remote.size,
                        progress=lambda n: reporter.advance(source.name, remote.name, n),
                        attempts_made=attempts_made,
                    )
                except TransferError as error:
                    cut_short = error
                written = max(written, sink.received)
            writer.finish()
            os.fsync(descriptor)
            received = os.fstat(descriptor).st_size
            if writer.digest is not None and received == written:
                sha256 = writer.digest.hexdigest()  # every byte of the part went through it
        except OSError as exc:
            raise storage_error(exc, part) from None
        finally:
            with contextlib.suppress(OSError):
                writer.finish()  # the helper thread of a big part never outlives its transfer
            os.close(descriptor)
    except StorageError:
        remove_quietly(part)  # disk full or unwritable: nothing half-written is kept
        raise
    finally:
        reporter.file_finished(source.name, remote.name)
    if isinstance(cut_short, _TooLong):
        remove_quietly(part)  # first, so a failing check below cannot leave it to be resumed
        now = transport.stat(remote.name)
        if _changed(remote, now, mtime_comparable=transport.stat_mtime_matches_listing):
            assert now is not None
            raise _remote_changed(remote, now, "during the download")
        raise cut_short
    if downloading:
        after = transport.stat(remote.name)  # the same clock as ``before``: any change shows
        if after is not None and (after.size != remote.size or (
                before is not None and int(after.mtime) != int(before.mtime))):
            remove_quietly(part)  # a mix of versions: never resumed from
            raise _remote_changed(remote, after, "during the download")
    if cut_short is not None:
        raise cut_short  # short: the part is kept, the next run resumes from it
    if received != remote.size:
        raise incomplete_transfer(received, remote.size)
    return _Transferred(written, sha256)


class _PartWriter:
    """Writes straight to a part's descriptor, hashing as it goes when the part began empty.

    No buffered file object: a batch's small files arrive in one piece each, and every system
    call the buffered layer adds (fstat, isatty, lseek) hands the GIL to paramiko's packet thread
    and waits to get it back, which measured as a third of a batch worker's time.

    A big file (past ``SYNC_EVERY``) gets a helper thread that hashes what was written and
    flushes the part to disk every ``SYNC_EVERY`` bytes while the next ones arrive: one fsync of
    256 MiB at the end took 0.53 s here, as long as half the transfer. ``finish`` (always
    called) stops it and says whether a flush failed; at most ``_BEHIND_BLOCKS`` blocks wait for
    it, so memory stays flat."""

    def __init__(self, descriptor: int, *, hashing: bool) -> None:
        self.descriptor = descriptor
        self.digest = hashlib.sha256() if hashing else None
        self._written = 0
        self._behind: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None
        self._flush_error: OSError | None = None

    def write(self, data: bytes, /) -> int:
        view = memoryview(data)
        while view:
            view = view[os.write(self.descriptor, view):]
        self._written += len(data)
        if self._behind is not None:
            # a transport may hand a view of a buffer it reuses: the thread gets its own copy
            self._behind.put(data if type(data) is bytes else bytes(data))
        else:
            if self.digest is not None:
                self.digest.update(data)
            if self._written >= SYNC_EVERY:
                self._start_behind()
        return len(data)

    def finish(self) -> None:
        """Stop the helper thread (once its blocks are hashed); OSError if a flush failed."""
        if self._behind is None or self._thread is None:
            return
        self._behind.put(None)
        self._thread.join()
        self._behind = self._thread = None
        if self._flush_error is not None:
            raise self._flush_error

    def _start_behind(self) -> None:
        self._behind = queue.Queue(maxsize=_BEHIND_BLOCKS)
        self._thread = threading.Thread(target=self._hash_and_flush,
                                        args=(self._behind, self._written),
                                        name="part-flush", daemon=True)
        self._thread.start()

    def _hash_and_flush(self, blocks: queue.Queue[bytes | None], unflushed: int) -> None:
        # ``unflushed``: what was written before the thread began (none of it is on disk yet)
        while (block := blocks.get()) is not None:
            if self.digest is not None:
                self.digest.update(block)
            unflushed += len(block)
            if unflushed >= SYNC_EVERY and self._flush_error is None:
                try:
                    sync_data(self.descriptor)
                except OSError as exc:  # said by finish; the closing fsync meets it too
                    self._flush_error = exc
                unflushed = 0


class _Slot:
    """One file of a batch on its way into its part."""

    def __init__(self, position: int, remote: RemoteFile, part: Path, offset: int,
                 target: Path, descriptor: int | None = None) -> None:
        self.position = position
        self.remote = remote
        self.part = part
        self.offset = offset
        self.descriptor = open_private_resumable(part) if descriptor is None else descriptor
        try:
            if offset:
                os.lseek(self.descriptor, offset, os.SEEK_SET)
        except OSError:
            os.close(self.descriptor)
            raise
        self.writer = _PartWriter(self.descriptor, hashing=offset == 0)
        self.sink = _BoundedSink(self.writer, remote.size - offset, remote.size, target)
        self.whole = False  # every listed byte arrived, and the version was the listed one

    def sha256(self) -> str:
        """The whole part's SHA-256: hashed on the way in, or read again after a resume."""
        self.writer.finish()
        if self.writer.digest is not None:
            return self.writer.digest.hexdigest()
        return sha256_file(self.part)

    def close(self) -> OSError | None:
        if self.descriptor < 0:
            return None
        descriptor, self.descriptor = self.descriptor, -1
        unflushed: OSError | None = None
        try:
            self.writer.finish()
        except OSError as exc:
            unflushed = exc
        try:
            os.close(descriptor)
        except OSError as exc:
            return unflushed or exc
        if unflushed is not None:
            # after a failed flush the part's bytes cannot be trusted (a later fsync may well
            # succeed over pages the kernel dropped): the one-file path starts it again
            remove_quietly(self.part)
        return unflushed


def download_batch(source: SourceConfig, remotes: Sequence[RemoteFile],
                   transport: RetryingTransport, reporter: Reporter,
                   barrier: Barrier) -> list[BatchResult]:
    """Download these files together; each one placed under its real name (not yet recorded,
    the folder fsynced once), or its error, or None where ``download`` must take it alone
    (``resume``: it goes on from the bytes the batch got).

    Raises nothing a file causes: a connection that cannot be had leaves every file None (the
    one-file path meets the same error and says what it means for the source)."""
    folder = source.download_dir
    results: list[BatchResult] = [None] * len(remotes)
    slots: list[_Slot] = []
    try:
        for position, remote in enumerate(remotes):
            try:
                target = contained_path(folder, remote.name)
                adopted = _adopt_existing(target, remote)
                if adopted is not None:  # a killed run renamed it into place, did not record it
                    results[position] = adopted
                    continue
                if remote.size == 0:
                    continue  # nothing to transfer: the one-file path asks for its version
                part = folder / part_name(remote)
                try:
                    # the usual case, a file never fetched before: one call creates its part
                    # (O_EXCL: nothing was there, not even a planted link) instead of a look
                    # at the part, a second at a link, a third and an fstat in the resumable
                    # open; each system call is a GIL hand-off among the batch's threads
                    slots.append(_Slot(position, remote, part, 0, target,
                                       open_private_new(part)))
                    continue
                except FileExistsError:
                    pass  # a part to resume (or something planted there): looked at closely
                offset = _part_length(part, remote)
                if offset >= remote.size:
                    continue  # nothing to transfer: the one-file path asks for its version
                slots.append(_Slot(position, remote, part, offset, target))
            except (ReportsyncError, OSError):
                continue  # the one-file path meets it again and says what it means
        if slots:
            # no connection: every file None, the one-file path meets the same error
            with contextlib.suppress(ReportsyncError):
                _transfer_batch(source, slots, transport, reporter, results)
    finally:
        for slot in slots:
            if slot.close() is not None:
                slot.whole = False  # not written as it should be: the one-file path again
    whole = [slot for slot in slots if slot.whole]
    failed = barrier.sync_files(slot.part for slot in whole)
    placed: list[_Slot] = []
    for slot in whole:
        remote = slot.remote
        if slot.part in failed:
            remove_quietly(slot.part)
            results[slot.position] = storage_error(failed[slot.part], folder / remote.name)
            continue
        try:
            sha256 = slot.sha256()
            os.utime(slot.part, (remote.mtime, remote.mtime))
            final = place_file(slot.part, folder, remote.name, sha256, sync_folder=False)
        except OSError as exc:
            results[slot.position] = storage_error(exc, folder / remote.name)
            continue
        except ReportsyncError as error:
            results[slot.position] = error
            continue
        results[slot.position] = Downloaded(final, sha256, slot.sink.received)
        placed.append(slot)
        log.info("source %s: downloaded %s (%d bytes)", source.name, printable(remote.name),
                 remote.size)
    for slot in slots:
        if results[slot.position] is None and slot.sink.received:
            results[slot.position] = Partial(slot.sink.received)
    if placed:
        try:
            barrier.sync_folders([folder])
        except OSError as exc:  # renamed, but the names may not survive a power loss: unrecorded
            for slot in placed:
                results[slot.position] = storage_error(exc, folder)
        crash_point("after-download-rename")
    return results


def _transfer_batch(source: SourceConfig, slots: list[_Slot], transport: RetryingTransport,
                    reporter: Reporter, results: list[BatchResult]) -> None:
    """The slots' bytes over one ``download_many``; marks the ones that ended whole."""
    inner = transport.connect()  # the batch goes around the retries: a file cut short goes alone
    by_download: dict[int, _Slot] = {}
    downloads: list[Download] = []
    for slot in slots:
        remote = slot.remote
        reporter.file_started(source.name, remote.name, remote.size, slot.offset)
        item = Download(remote, slot.sink, slot.offset,
                        functools.partial(reporter.advance, source.name, remote.name))
        by_download[id(item)] = slot
        downloads.append(item)
    finished: set[int] = set()
    retried = source.retries > 0  # with no retries, an error the batch met is the file's own

    def fails(slot: _Slot, error: ReportsyncError) -> None:
        results[slot.position] = error.with_context(source=source.name, path=slot.remote.name)

    try:
        for ended in inner.download_many(downloads):
            slot = by_download[id(ended.download)]
            finished.add(slot.position)
            reporter.file_finished(source.name, slot.remote.name)
            error = ended.error
            if error is None:
                slot.whole = slot.offset + slot.sink.received == slot.remote.size
                if not slot.whole and not retried:
                    fails(slot, incomplete_transfer(slot.offset + slot.sink.received,
                                                    slot.remote.size))
            elif isinstance(error, RemoteChangedError):
                remove_quietly(slot.part)  # bytes of a version that is no longer there
                fails(slot, error)
            elif not error.retryable or not retried:
                fails(slot, error)  # what a retry cannot help: the part stays for the next run
    except StorageError as error:  # the disk refused a part: nothing half-written is kept
        transport.drop()  # the batch was abandoned half-way: the session is unusable
        for slot in slots:
            if not slot.whole and results[slot.position] is None:
                slot.close()
                remove_quietly(slot.part)
                if slot.sink.failed:
                    results[slot.position] = error
    except _TooLong as error:  # never asked again this run; unless the file changed meanwhile
        transport.drop()
        for slot in slots:
            if slot.sink.too_long:
                slot.close()
                remove_quietly(slot.part)
                try:
                    now = transport.stat(slot.remote.name)
                except ReportsyncError as stat_error:
                    fails(slot, stat_error)
                    continue
                if _changed(slot.remote, now,
                            mtime_comparable=transport.stat_mtime_matches_listing):
                    assert now is not None
                    fails(slot, _remote_changed(slot.remote, now, "during the download"))
                else:
                    fails(slot, error)
    except ReportsyncError as error:  # cut off: the one-file path (which retries) for the rest
        transport.drop()
        if error.retryable and not retried:  # the files it cut in the middle fail, as one alone
            for slot in slots:
                if slot.position not in finished and slot.sink.received:
                    fails(slot, error)
    finally:
        for slot in slots:
            if slot.position not in finished:
                reporter.file_finished(source.name, slot.remote.name)
