"""The archive step: a downloaded report into ``output_dir``, decrypted if it is PGP, durable.

The plaintext (or the copy of a file that is not PGP) is written to a private temp file beside
its target, fsynced and renamed into place; the caller fsyncs the folder once per batch and
records the batch afterwards (docs/fetch.md, "Batches and power loss"). gpg is started only
when a file needs decrypting (``LazyGpg``); the decryptions go through one ``DecryptionPool``
per source (``PooledDecryption``), so downloads go on while gpg works.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from reportsync.config import Settings, SourceConfig
from reportsync.errors import KeyProblemError, ReportsyncError
from reportsync.fsutil import (
    contained_path,
    ensure_private_dir,
    open_private_new,
    place_file,
    printable,
    remove_quietly,
    storage_error,
    temp_name,
)
from reportsync.pgp import Decrypted, DecryptionPool, Gpg, needs_decryption, plaintext_name
from reportsync.transports import RemoteFile
from reportsync.units import HASH_CHUNK

log = logging.getLogger(__name__)

POOL_WORKERS = 2  # gpg-agents decrypting at once: one per core of the 2-core machine measured


@dataclass(frozen=True)
class Archived:
    path: Path  # the report under its real name in output_dir
    size: int
    sha256: str
    decrypted: bool
    signer: str | None = None  # a decrypted report's signing key, if it was signed
    signature: str | None = None  # how it was signed (good, unsigned, ...); None: not PGP


class Archiving:
    """One report on its way into ``output_dir``: its plaintext (or copy) is being written to
    ``temp``; ``finish_archive`` gives it its real name."""

    def __init__(self, source: SourceConfig, remote: RemoteFile, file_id: int, local: Path,
                 name: str, temp: Path, *, decrypt: bool, copied: str | None = None) -> None:
        self.source = source
        self.remote = remote
        self.file_id = file_id
        self.local = local
        self.name = name  # the report's name in output_dir (before any .vN)
        self.temp = temp
        self.decrypt = decrypt  # a PGP message: ``PooledDecryption.start`` hands it to gpg
        self.decrypted: Future[Decrypted] | None = None  # that decryption, once handed in
        self.copied = copied  # not PGP: the copy's sha256 (its bytes not yet fsynced)

    @property
    def needs_sync(self) -> bool:
        """A copy: its bytes must be fsynced before it is renamed (a plaintext is already)."""
        return not self.decrypt

    def discard(self) -> None:
        remove_quietly(self.temp)


def start_archive(source: SourceConfig, remote: RemoteFile, file_id: int, local: Path
                  ) -> Archiving:
    """Begin placing the report in ``output_dir``: a PGP message is to be handed to the pool
    (``PooledDecryption.start``), anything else is copied (not yet fsynced);
    ``finish_archive`` waits for it and renames it into place."""
    folder = source.output_dir
    ensure_private_dir(folder, f"sources.{source.name}.output_dir")
    decrypt = needs_decryption(local, remote.name, decrypt=source.decrypt,
                               require_signer=source.require_signature)
    name = plaintext_name(remote.name) if decrypt else remote.name
    contained_path(folder, name)
    temp = folder / temp_name(f"{remote.name}\0{file_id}", "tmp")  # beside its final name
    remove_quietly(temp)
    if decrypt:
        return Archiving(source, remote, file_id, local, name, temp, decrypt=True)
    try:
        sha256 = _copy_private(local, temp, sync=False)
    except OSError as exc:
        remove_quietly(temp)
        raise storage_error(exc, folder / name) from None
    return Archiving(source, remote, file_id, local, name, temp, decrypt=False, copied=sha256)


def finish_archive(work: Archiving, decryption: PooledDecryption) -> Archived:
    """Wait for the plaintext, and rename it into place (the folder is not fsynced: the caller
    does that once for the batch, before the ledger records any of it). A copy's bytes must
    have been fsynced by then (``Archiving.needs_sync``)."""
    folder = work.source.output_dir
    try:
        signature: str | None = None  # not a PGP message: no signature to speak of
        signer: str | None = None
        if work.decrypt:
            assert work.decrypted is not None, "PooledDecryption.start was not called"
            decrypted = decryption.result(work.decrypted)
            signature, signer = decrypted.signature, decrypted.signer
            sha256 = decrypted.sha256 or _finish_plaintext(work.temp)
            size = decrypted.size
        else:
            assert work.copied is not None
            sha256 = work.copied
            size = work.local.stat().st_size
        final = place_file(work.temp, folder, work.name, sha256, sync_folder=False)
    except OSError as exc:
        raise storage_error(exc, folder / work.name) from None
    finally:
        work.discard()  # unless it was renamed away
    log.info("source %s: archived %s as %s", work.source.name, printable(work.remote.name),
             printable(final.name))
    return Archived(final, size, sha256, work.decrypt, signer, signature)


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


def _copy_private(source_path: Path, temp: Path, *, sync: bool = True) -> str:
    digest = hashlib.sha256()
    descriptor = open_private_new(temp)
    with os.fdopen(descriptor, "wb") as out, source_path.open("rb") as src:
        while chunk := src.read(HASH_CHUNK):
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        if sync:
            os.fsync(out.fileno())
    return digest.hexdigest()


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

    def get(self) -> CheckedGpg:
        with self._lock:
            if self._error is not None:
                raise self._error.copy()  # each file's error names that file
            if self._gpg is None:
                try:
                    gpg = Gpg.from_settings(self._settings, self._environ)
                    gpg.require_working_passphrase()
                    self._gpg = gpg
                except ReportsyncError as error:
                    problem = error if isinstance(error, KeyProblemError) else \
                        KeyProblemError(error.message, remedy=error.remedy)
                    self._error = problem.copy()  # kept without this file's context
                    raise problem from None
            return CheckedGpg(self._gpg)

    def fail(self, error: KeyProblemError) -> None:
        with self._lock:
            self._error = error.copy()  # before the file that met it adds its own context


class CheckedGpg:
    """The run's gpg, after its passphrase check."""

    def __init__(self, gpg: Gpg) -> None:
        self._gpg = gpg

    @property
    def gpg(self) -> Gpg:
        """The GnuPG home itself, for reading its keys and for the decryption pool (which
        reports a key problem back: ``PooledDecryption.result``)."""
        return self._gpg


class PooledDecryption:
    """The decryptions of one source's fetch, through one ``DecryptionPool`` (started with the
    first report that needs decrypting: ``gpg --decrypt-files`` batches, one gpg-agent per
    pool worker). Each report gets the verdict ``Gpg.decrypt`` would give it; a key problem
    fails the reports still queued with the same error and is remembered by ``LazyGpg``, so
    later ones fail fast without asking gpg again."""

    def __init__(self, decryptor: LazyGpg, workers: int = POOL_WORKERS) -> None:
        self._decryptor = decryptor
        self._workers = workers
        self._pool: DecryptionPool | None = None
        self._lock = threading.Lock()

    def start(self, works: Sequence[Archiving]) -> None:
        """Hand these reports' decryptions to the pool together (so a gpg run can take them
        all); raises KeyProblemError at once when the key cannot be used."""
        wanted = [work for work in works if work.decrypt]
        if not wanted:
            return
        gpg = self._decryptor.get()
        with self._lock:
            if self._pool is None:
                self._pool = DecryptionPool(gpg.gpg, self._workers)
            pool = self._pool
        futures = pool.submit_many([(work.local, work.temp, work.source.require_signature)
                                    for work in wanted])
        for work, future in zip(wanted, futures, strict=True):
            work.decrypted = future

    def result(self, future: Future[Decrypted]) -> Decrypted:
        try:
            return future.result()
        except KeyProblemError as error:
            self._decryptor.fail(error)
            with self._lock:
                pool = self._pool
            if pool is not None:
                pool.fail_pending(error)
            raise

    def close(self) -> None:
        """Wait for every decryption handed in; stop the pool's extra agents."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
