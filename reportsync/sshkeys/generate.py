"""Generate an OpenSSH login key pair (PATH 0600 and PATH.pub) with ``cryptography`` alone."""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from reportsync.errors import UsageError
from reportsync.fsutil import IS_POSIX, ensure_private_dir, fsync_dir, remove_quietly, storage_error
from reportsync.sshkeys.model import (
    DEFAULT_RSA_BITS,
    KEY_TYPES,
    MAX_RSA_BITS,
    MIN_RSA_BITS,
    PUBLIC_FILE_MODE,
    RSA_PUBLIC_EXPONENT,
    SshKeyInfo,
    key_info,
    public_blob,
)

# --- generating -------------------------------------------------------------------------------


def generate_ssh_key(
    path: Path,
    *,
    key_type: str = "rsa",
    bits: int = DEFAULT_RSA_BITS,
    passphrase: str | None = None,
    comment: str = "",
    force: bool = False,
) -> SshKeyInfo:
    """Write a new key pair: ``path`` (OpenSSH private key, 0600) and ``path.pub`` (0644).

    RSA keys have ``bits`` in [2048, 4096]; ed25519 ignores ``bits``. With a ``passphrase`` the
    private key is encrypted (bcrypt KDF, aes256-ctr). Both files are written atomically (a temp
    file in the same folder, fsync, rename); a missing parent folder is created 0700. Existing
    files are refused unless ``force``.
    """
    path = Path(path)
    kind = key_type.strip().lower() if isinstance(key_type, str) else ""
    if kind not in KEY_TYPES:
        raise UsageError(f"unsupported SSH key type {key_type!r}: choose one of "
                         f"{', '.join(KEY_TYPES)}", remedy="Use --type rsa or --type ed25519.")
    if kind == "rsa" and (isinstance(bits, bool) or not isinstance(bits, int)
                          or not MIN_RSA_BITS <= bits <= MAX_RSA_BITS):
        raise UsageError(f"RSA keys need {MIN_RSA_BITS} to {MAX_RSA_BITS} bits, not {bits!r}",
                         remedy="Use --bits 2048, 3072 or 4096.")
    if any(ord(char) < 32 or ord(char) == 127 for char in comment):
        raise UsageError("the key comment must be one line without control characters",
                         remedy="Pass a plain --comment such as user@host.")
    if passphrase is not None and passphrase == "":
        raise UsageError("the passphrase is empty",
                         remedy="Give a non-empty passphrase, or none for an unencrypted key.")
    if not path.name:
        raise UsageError(f"not a file name: {str(path)!r}")
    public_path = path.with_name(path.name + ".pub")
    if not force:
        for target in (path, public_path):
            if target.exists() or target.is_symlink():
                raise UsageError(f"{target} already exists; refusing to overwrite it",
                                 path=str(target),
                                 remedy="Choose another --out, or pass --force to replace the key "
                                 "(anything that logs in with the old key then stops working).")

    private_key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if kind == "rsa":
        private_key = rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT, key_size=bits)
    else:
        private_key = ed25519.Ed25519PrivateKey.generate()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode("utf-8"))
        if passphrase is not None else serialization.NoEncryption()
    )
    private_bytes = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption)
    public_key = private_key.public_key()
    algorithm, blob = public_blob(public_key)
    public_line = f"{algorithm} {base64.b64encode(blob).decode('ascii')}"
    public_text = f"{public_line} {comment}\n" if comment else f"{public_line}\n"

    folder = path.parent
    if not folder.exists():
        ensure_private_dir(folder)
    _write_pair(path, private_bytes, public_path, public_text.encode("utf-8"))
    return key_info(path, algorithm, blob, public_key, comment=comment,
                    encrypted=passphrase is not None, is_private=True)


def _write_temp(folder: Path, data: bytes, mode: int) -> Path:
    """A hidden temp file in ``folder`` holding ``data``, fsynced, with ``mode``."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=".rs-", suffix=".tmp")  # created 0600
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if IS_POSIX:
                os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
    except BaseException:
        remove_quietly(temp)
        raise
    return temp


def _write_pair(private_path: Path, private_bytes: bytes, public_path: Path,
                public_bytes: bytes) -> None:
    """Both files completely written beside their targets before either is renamed into place."""
    folder = private_path.parent
    temps: list[Path] = []
    target = private_path
    try:
        temps.append(_write_temp(folder, private_bytes, 0o600))
        target = public_path
        temps.append(_write_temp(folder, public_bytes, PUBLIC_FILE_MODE))
        target = private_path
        os.replace(temps[0], private_path)
        target = public_path
        os.replace(temps[1], public_path)
        fsync_dir(folder)
    except OSError as exc:
        raise storage_error(exc, target) from None
    finally:
        for temp in temps:
            remove_quietly(temp)

