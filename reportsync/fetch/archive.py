"""The archive step: a downloaded report into ``output_dir``, decrypted if it is PGP, durable.

The plaintext (or the copy of a file that is not PGP) is written to a private temp file beside
its target, fsynced and renamed into place; the caller records it afterwards. gpg is started
only when a file needs decrypting (``LazyGpg``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from reportsync.config import Settings, SourceConfig
from reportsync.errors import KeyProblemError, ReportsyncError
from reportsync.fsutil import (
    contained_path,
    crash_point,
    ensure_private_dir,
    fsync_dir,
    open_private_new,
    place_file,
    printable,
    private_temp,
    remove_quietly,
    storage_error,
)
from reportsync.pgp import Decrypted, Gpg, needs_decryption, plaintext_name
from reportsync.transports import RemoteFile
from reportsync.units import HASH_CHUNK

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Archived:
    path: Path  # the report under its real name in output_dir
    size: int
    sha256: str
    decrypted: bool
    signer: str | None = None  # a decrypted report's signing key, if it was signed
    signature: str | None = None  # how it was signed (good, unsigned, ...); None: not PGP


def archive(source: SourceConfig, remote: RemoteFile, file_id: int, local: Path,
            decryptor: LazyGpg) -> Archived:
    """Place the report in ``output_dir`` (not yet recorded)."""
    folder = source.output_dir
    ensure_private_dir(folder, f"sources.{source.name}.output_dir")
    decrypt = needs_decryption(local, remote.name, decrypt=source.decrypt,
                               require_signer=source.require_signature)
    name = plaintext_name(remote.name) if decrypt else remote.name
    contained_path(folder, name)
    signature: str | None = None  # not a PGP message: no signature to speak of
    signer: str | None = None
    with private_temp(folder, f"{remote.name}\0{file_id}") as temp:
        remove_quietly(temp)
        try:
            if decrypt:
                gpg = decryptor.get()
                decrypted = gpg.decrypt(local, temp, require_signer=source.require_signature)
                signature, signer = decrypted.signature, decrypted.signer
                sha256 = decrypted.sha256 or _finish_plaintext(temp)
            else:
                sha256 = _copy_private(local, temp)
            final = place_file(temp, folder, name, sha256)
        except OSError as exc:
            raise storage_error(exc, folder / name) from None
    crash_point("after-rename")
    log.info("source %s: archived %s as %s", source.name, printable(remote.name),
             printable(final.name))
    return Archived(final, final.stat().st_size, sha256, decrypt, signer, signature)


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
            return CheckedGpg(self._gpg, self)

    def fail(self, error: KeyProblemError) -> None:
        with self._lock:
            self._error = error.copy()  # before the file that met it adds its own context


class CheckedGpg:
    """The run's gpg, after its passphrase check; a key problem it meets fails the rest fast."""

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
