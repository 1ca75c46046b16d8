"""SSH keys and certificates: generate a login key, describe a key or an OpenSSH certificate.

Everything here works with ``cryptography`` alone (no ``ssh-keygen`` needed), and describes keys
the way ``ssh-keygen -l`` does: ``2048 SHA256:<base64> comment (RSA)``. Core module: it never
prints; failures are ``ReportsyncError`` subclasses (``UsageError`` for bad arguments,
``StorageError`` for failed writes, ``ConfigError`` for files that cannot be read or understood).

Passphrases are only ever handed to ``cryptography``: never written, logged or put in a message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import ClassVar

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa

from reportsync.errors import ConfigError, ExitCode, UsageError
from reportsync.expiry import SSH_CERTIFICATE, CredentialExpiry
from reportsync.fsutil import IS_POSIX, ensure_private_dir, fsync_dir, remove_quietly, storage_error

KEY_TYPES = ("rsa", "ed25519")
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 4096
DEFAULT_RSA_BITS = 2048
RSA_PUBLIC_EXPONENT = 65537
PUBLIC_FILE_MODE = 0o644

FOREVER = 2**64 - 1
"""``valid_before`` of a certificate that never expires (``ssh-keygen -V always:forever``)."""

_LAST_DATETIME = 253402300799  # 9999-12-31 23:59:59 UTC: later timestamps count as "forever"

STATUS_VALID = "valid"
STATUS_EXPIRED = "expired"
STATUS_NOT_YET_VALID = "not yet valid"

_OPENSSH_PRIVATE_BEGIN = b"-----BEGIN OPENSSH PRIVATE KEY-----"
_OPENSSH_PRIVATE_END = b"-----END OPENSSH PRIVATE KEY-----"
_OPENSSH_MAGIC = b"openssh-key-v1\x00"
_PEM_PRIVATE = re.compile(rb"-----BEGIN ((?:RSA |EC |DSA |ENCRYPTED )?PRIVATE KEY)-----")

# The names ``ssh-keygen -l`` shows in parentheses, by the key's algorithm name.
_DISPLAY_NAMES = {
    "ssh-rsa": "RSA",
    "ssh-dss": "DSA",
    "ssh-ed25519": "ED25519",
    "ecdsa-sha2-nistp256": "ECDSA",
    "ecdsa-sha2-nistp384": "ECDSA",
    "ecdsa-sha2-nistp521": "ECDSA",
    "sk-ssh-ed25519@openssh.com": "ED25519-SK",
    "sk-ecdsa-sha2-nistp256@openssh.com": "ECDSA-SK",
}

# How many wire fields follow the algorithm name in an unencrypted OpenSSH private section,
# before the comment (every field, mpints included, is a length-prefixed string).
_PRIVATE_FIELDS = {
    "ssh-rsa": 6,  # n e d iqmp p q
    "ssh-dss": 5,  # p q g y x
    "ssh-ed25519": 2,  # public, private+public
    "ecdsa-sha2-nistp256": 3,  # curve name, public point, private scalar
    "ecdsa-sha2-nistp384": 3,
    "ecdsa-sha2-nistp521": 3,
}

_CERT_SUFFIX = "-cert-v01@openssh.com"

_SshPublicKey = (
    rsa.RSAPublicKey | ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | dsa.DSAPublicKey
)


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SshKeyInfo:
    """A private key file or a public key line, as ``ssh-keygen -l`` describes it."""

    path: Path
    key_type: str  # "RSA", "ED25519", "ECDSA", "DSA", "ED25519-SK", "ECDSA-SK"
    bits: int
    fingerprint: str  # "SHA256:<base64, no padding>"
    comment: str
    encrypted: bool  # a private key protected by a passphrase (always False for a public key)
    algorithm: str = ""  # the SSH name: "ssh-rsa", "ssh-ed25519", "ecdsa-sha2-nistp256", ...
    is_private: bool = False  # the file holds the private key (False: a public key line)
    public_key: str = ""  # "<algorithm> <base64>": the .pub line without its comment

    def describe(self) -> str:
        """``2048 SHA256:... comment (RSA)``: the line ``ssh-keygen -l -f PATH`` prints."""
        return f"{self.bits} {self.fingerprint} {self.comment or 'no comment'} ({self.key_type})"

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": "private key" if self.is_private else "public key",
            "path": str(self.path),
            "key_type": self.key_type,
            "algorithm": self.algorithm,
            "bits": self.bits,
            "fingerprint": self.fingerprint,
            "comment": self.comment,
            "encrypted": self.encrypted,
            "public_key": self.public_key,
        }


@dataclass(frozen=True)
class SshCertificateInfo:
    """An OpenSSH certificate (``*-cert.pub``), as ``ssh-keygen -L`` describes it.

    ``valid_to`` and ``days_left`` are None for a certificate valid forever; ``days_left`` is
    whole days (rounded down) until ``valid_to``, negative once expired. ``status`` and
    ``days_left`` are computed for the ``now`` given to ``inspect_ssh_file``.
    """

    path: Path
    algorithm: str  # "ssh-rsa-cert-v01@openssh.com", ...
    key_id: str
    serial: int
    cert_type: str  # "user" | "host"
    principals: tuple[str, ...]  # empty: any principal
    valid_from: datetime  # UTC
    valid_to: datetime | None  # UTC; None: forever
    days_left: int | None
    status: str  # "valid" | "expired" | "not yet valid"
    ca_key_type: str  # "ED25519", "RSA", ...
    ca_fingerprint: str  # SHA256 of the signing CA's public key, as `ssh-keygen -l -f ca.pub`
    key_type: str  # the certified key: "RSA", "ED25519", "ECDSA"
    bits: int
    fingerprint: str  # the certified key's fingerprint (what `ssh-keygen -l` shows for the cert)
    critical_options: tuple[tuple[str, str], ...]  # ("force-command", "/bin/true"), ...
    extensions: tuple[tuple[str, str], ...]  # ("permit-pty", ""), ...
    signature_valid: bool  # the CA signature over the certificate verifies
    comment: str = ""

    def describe(self) -> str:
        """``2048 SHA256:... comment (RSA-CERT)``: the line ``ssh-keygen -l -f PATH`` prints."""
        return (f"{self.bits} {self.fingerprint} {self.comment or 'no comment'} "
                f"({self.key_type}-CERT)")

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": "certificate",
            "path": str(self.path),
            "algorithm": self.algorithm,
            "key_id": self.key_id,
            "serial": self.serial,
            "cert_type": self.cert_type,
            "principals": list(self.principals),
            "valid_from": self.valid_from.isoformat(),
            "valid_to": self.valid_to.isoformat() if self.valid_to is not None else None,
            "valid_forever": self.valid_to is None,
            "days_left": self.days_left,
            "status": self.status,
            "ca_key_type": self.ca_key_type,
            "ca_fingerprint": self.ca_fingerprint,
            "key_type": self.key_type,
            "bits": self.bits,
            "fingerprint": self.fingerprint,
            "critical_options": dict(self.critical_options),
            "extensions": dict(self.extensions),
            "signature_valid": self.signature_valid,
            "comment": self.comment,
        }


@dataclass(frozen=True)
class GeneratedSshKey:
    """``keys ssh generate``: the new private key (its public half is ``PATH.pub``)."""

    key: SshKeyInfo

    exit_code: ClassVar[ExitCode] = ExitCode.OK


@dataclass(frozen=True)
class ShownSshFile:
    """``keys ssh show``: a key or a certificate, described."""

    info: SshKeyInfo | SshCertificateInfo

    exit_code: ClassVar[ExitCode] = ExitCode.OK


# --- fingerprints -----------------------------------------------------------------------------


def fingerprint(public_key_blob: bytes) -> str:
    """``SHA256:<base64, no padding>`` of a public key blob: exactly what ``ssh-keygen -l`` prints."""
    digest = hashlib.sha256(public_key_blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def _public_blob(key: _SshPublicKey) -> tuple[str, bytes]:
    """The algorithm name and wire blob of a public key (as in its .pub line)."""
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    algorithm, encoded = line.split(b" ")[:2]
    return algorithm.decode("ascii"), base64.b64decode(encoded)


def _bits(key: _SshPublicKey) -> int:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return 256
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.curve.key_size
    return key.key_size


def _display_name(algorithm: str, key: _SshPublicKey) -> str:
    known = _DISPLAY_NAMES.get(algorithm.removesuffix(_CERT_SUFFIX))
    if known:
        return known
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ED25519"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ECDSA"
    return "DSA"


def _ssh_public_key(key: object) -> _SshPublicKey | None:
    if isinstance(key, rsa.RSAPublicKey | ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
                  | dsa.DSAPublicKey):
        return key
    return None


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
    algorithm, blob = _public_blob(public_key)
    public_line = f"{algorithm} {base64.b64encode(blob).decode('ascii')}"
    public_text = f"{public_line} {comment}\n" if comment else f"{public_line}\n"

    folder = path.parent
    if not folder.exists():
        ensure_private_dir(folder)
    _write_pair(path, private_bytes, public_path, public_text.encode("utf-8"))
    return SshKeyInfo(
        path=path,
        key_type=_display_name(algorithm, public_key),
        bits=_bits(public_key),
        fingerprint=fingerprint(blob),
        comment=comment,
        encrypted=passphrase is not None,
        algorithm=algorithm,
        is_private=True,
        public_key=public_line,
    )


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


# --- inspecting -------------------------------------------------------------------------------


def _problem(path: Path, text: str, remedy: str | None = None) -> ConfigError:
    return ConfigError([text], path=str(path), remedy=remedy or (
        "Give the path of an OpenSSH private key, a public key (*.pub) or a certificate "
        "(*-cert.pub)."))


class _Reader:
    """SSH wire format: uint32 lengths, length-prefixed strings."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def uint32(self) -> int:
        if self.offset + 4 > len(self.data):
            raise ValueError("truncated")
        value = int.from_bytes(self.data[self.offset:self.offset + 4], "big")
        self.offset += 4
        return value

    def string(self) -> bytes:
        length = self.uint32()
        if self.offset + length > len(self.data):
            raise ValueError("truncated")
        value = self.data[self.offset:self.offset + length]
        self.offset += length
        return value


@dataclass(frozen=True)
class _OpenSshPrivate:
    cipher: str
    public_blob: bytes
    comment: str | None  # None: encrypted, or a key type whose fields we do not walk


def _parse_openssh_private(data: bytes) -> _OpenSshPrivate:
    """The unencrypted header of an ``openssh-key-v1`` file (and the comment, if not encrypted)."""
    start = data.index(_OPENSSH_PRIVATE_BEGIN) + len(_OPENSSH_PRIVATE_BEGIN)
    end = data.index(_OPENSSH_PRIVATE_END, start)
    raw = base64.b64decode(b"".join(data[start:end].split()), validate=True)
    if not raw.startswith(_OPENSSH_MAGIC):
        raise ValueError("bad magic")
    reader = _Reader(raw[len(_OPENSSH_MAGIC):])
    cipher = reader.string().decode("ascii")
    reader.string()  # kdf name
    reader.string()  # kdf options
    if reader.uint32() != 1:
        raise ValueError("not exactly one key")
    public_blob = reader.string()
    section = reader.string()
    comment: str | None = None
    if cipher == "none":
        private = _Reader(section)
        if private.uint32() != private.uint32():
            raise ValueError("check bytes differ")
        algorithm = private.string().decode("ascii")
        fields = _PRIVATE_FIELDS.get(algorithm)
        if fields is not None:
            for _ in range(fields):
                private.string()
            comment = private.string().decode("utf-8", "replace")
    return _OpenSshPrivate(cipher=cipher, public_blob=public_blob, comment=comment)


def _load_blob(path: Path, blob: bytes) -> tuple[str, _SshPublicKey]:
    """The algorithm name and key object of a public key blob."""
    try:
        algorithm = _Reader(blob).string().decode("ascii")
        line = f"{algorithm} {base64.b64encode(blob).decode('ascii')}".encode("ascii")
        loaded = serialization.load_ssh_public_key(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _problem(path, f"the public key inside the file is damaged ({exc})") from None
    except UnsupportedAlgorithm as exc:
        raise _problem(path, f"unsupported SSH key type ({exc})") from None
    key = _ssh_public_key(loaded)
    if key is None:
        raise _problem(path, f"unsupported SSH key type {type(loaded).__name__}")
    return algorithm, key


def _companion_comment(path: Path, blob: bytes) -> str | None:
    """The comment of ``path.pub`` when it holds the same public key (ssh-keygen reads it first)."""
    try:
        text = path.with_name(path.name + ".pub").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    for line in text.splitlines():
        fields = line.strip().split(maxsplit=2)
        if len(fields) < 2 or fields[0].startswith("#"):
            continue
        try:
            if base64.b64decode(fields[1], validate=True) != blob:
                return None
        except (binascii.Error, ValueError):
            return None
        return fields[2].strip() if len(fields) == 3 else ""
    return None


def _key_info(path: Path, algorithm: str, blob: bytes, key: _SshPublicKey, *, comment: str,
              encrypted: bool, is_private: bool) -> SshKeyInfo:
    return SshKeyInfo(
        path=path,
        key_type=_display_name(algorithm, key),
        bits=_bits(key),
        fingerprint=fingerprint(blob),
        comment=comment,
        encrypted=encrypted,
        algorithm=algorithm,
        is_private=is_private,
        public_key=f"{algorithm} {base64.b64encode(blob).decode('ascii')}",
    )


def _wrong_passphrase(path: Path) -> ConfigError:
    return _problem(path, "cannot decrypt the private key: wrong passphrase",
                    remedy="Check the passphrase the key was encrypted with.")


def _inspect_openssh_private(path: Path, data: bytes, passphrase: str | None) -> SshKeyInfo:
    try:
        parsed = _parse_openssh_private(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _problem(path, f"a damaged OpenSSH private key ({exc})") from None
    algorithm, key = _load_blob(path, parsed.public_blob)
    encrypted = parsed.cipher != "none"
    if encrypted and passphrase is not None:
        try:
            serialization.load_ssh_private_key(data, passphrase.encode("utf-8"))
        except ValueError:
            raise _wrong_passphrase(path) from None
        except UnsupportedAlgorithm as exc:
            raise _problem(path, f"cannot decrypt the private key ({exc})") from None
    elif not encrypted and algorithm in _PRIVATE_FIELDS:
        try:
            serialization.load_ssh_private_key(data, None)
        except (ValueError, TypeError) as exc:
            raise _problem(path, f"a damaged OpenSSH private key ({exc})") from None
        except UnsupportedAlgorithm:
            pass  # the public half above still describes it
    comment = _companion_comment(path, parsed.public_blob)
    if comment is None:
        comment = parsed.comment or ""
    return _key_info(path, algorithm, parsed.public_blob, key, comment=comment,
                     encrypted=encrypted, is_private=True)


def _inspect_pem_private(path: Path, data: bytes, passphrase: str | None) -> SshKeyInfo:
    """A PEM private key (``BEGIN RSA PRIVATE KEY`` and friends): older ssh-keygen's format."""
    header = _PEM_PRIVATE.search(data)
    encrypted = bool(header and header.group(1) == b"ENCRYPTED PRIVATE KEY") or (
        b"Proc-Type: 4,ENCRYPTED" in data)
    password = passphrase.encode("utf-8") if passphrase is not None and encrypted else None
    try:
        private = serialization.load_pem_private_key(data, password)
    except TypeError:
        # Encrypted and no passphrase: a PEM key has no public half outside the encryption.
        public = _companion_public_key(path)
        if public is not None:
            return _key_info_from(public, path, encrypted=True)
        raise _problem(path, "the private key is encrypted (PEM format, no .pub file beside it): "
                       "its type and fingerprint need the passphrase",
                       remedy="Give the passphrase to see the key's type and fingerprint.") from None
    except ValueError:
        if encrypted:
            raise _wrong_passphrase(path) from None
        raise _problem(path, "a damaged PEM private key") from None
    except UnsupportedAlgorithm as exc:
        raise _problem(path, f"unsupported private key ({exc})") from None
    key = _ssh_public_key(private.public_key())
    if key is None:
        raise _problem(path, f"not an SSH key type: {type(private).__name__}")
    algorithm, blob = _public_blob(key)
    comment = _companion_comment(path, blob) or ""
    return _key_info(path, algorithm, blob, key, comment=comment, encrypted=encrypted,
                     is_private=True)


def _key_info_from(public: SshKeyInfo, path: Path, *, encrypted: bool) -> SshKeyInfo:
    return SshKeyInfo(path=path, key_type=public.key_type, bits=public.bits,
                      fingerprint=public.fingerprint, comment=public.comment, encrypted=encrypted,
                      algorithm=public.algorithm, is_private=True, public_key=public.public_key)


def _first_line(text: str) -> str | None:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return stripped
    return None


def _companion_public_key(path: Path) -> SshKeyInfo | None:
    """``path.pub`` described, or None when it is missing or not a plain public key."""
    public_path = path.with_name(path.name + ".pub")
    try:
        text = public_path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    found = _inspect_public_text(public_path, text, quiet=True, now=None)
    return found if isinstance(found, SshKeyInfo) else None


def _inspect_public_text(path: Path, text: str, *, quiet: bool, now: datetime | None
                         ) -> SshKeyInfo | SshCertificateInfo | None:
    """A ``<algorithm> <base64> [comment]`` file: a public key or a certificate.

    ``quiet``: None instead of an error (looking at an optional companion file).
    """
    line = _first_line(text)
    fields = line.split(maxsplit=2) if line else []
    if len(fields) < 2:
        if quiet:
            return None
        raise _problem(path, "not an SSH key or certificate (no \"<type> <base64>\" line)")
    algorithm, encoded = fields[0], fields[1]
    comment = fields[2].strip() if len(fields) == 3 else ""
    try:
        blob = base64.b64decode(encoded, validate=True)
        identity = serialization.load_ssh_public_identity(f"{algorithm} {encoded}".encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        if quiet:
            return None
        raise _problem(path, "not an SSH key or certificate (the \"<type> <base64>\" line does not "
                       "decode)") from None
    except UnsupportedAlgorithm as exc:
        if quiet:
            return None
        raise _problem(path, f"unsupported SSH key type {algorithm!r} ({exc})") from None
    if isinstance(identity, serialization.SSHCertificate):
        return _certificate_info(path, algorithm, identity, comment, now)
    key = _ssh_public_key(identity)
    if key is None:
        if quiet:
            return None
        raise _problem(path, f"unsupported SSH key type {algorithm!r}")
    return _key_info(path, algorithm, blob, key, comment=comment, encrypted=False,
                     is_private=False)


def _utc(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc)


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _certificate_info(path: Path, algorithm: str, certificate: serialization.SSHCertificate,
                      comment: str, now: datetime | None) -> SshCertificateInfo:
    if now is None:
        now = datetime.now(timezone.utc)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    certified = _ssh_public_key(certificate.public_key())
    ca_key = _ssh_public_key(certificate.signature_key())
    if certified is None or ca_key is None:
        raise _problem(path, f"unsupported certificate key type {algorithm!r}")
    certified_algorithm, certified_blob = _public_blob(certified)
    ca_algorithm, ca_blob = _public_blob(ca_key)

    valid_from = _utc(min(certificate.valid_after, _LAST_DATETIME))
    valid_to = (None if certificate.valid_before > _LAST_DATETIME
                else _utc(certificate.valid_before))
    if now < valid_from:
        status = STATUS_NOT_YET_VALID
    elif valid_to is not None and now >= valid_to:
        status = STATUS_EXPIRED
    else:
        status = STATUS_VALID
    days_left = (None if valid_to is None
                 else math.floor((valid_to - now) / timedelta(days=1)))
    try:
        certificate.verify_cert_signature()
        signature_valid = True
    except (InvalidSignature, UnsupportedAlgorithm, ValueError):
        signature_valid = False
    cert_type = "user" if certificate.type == serialization.SSHCertificateType.USER else "host"
    return SshCertificateInfo(
        path=path,
        algorithm=algorithm,
        key_id=_text(certificate.key_id),
        serial=certificate.serial,
        cert_type=cert_type,
        principals=tuple(_text(name) for name in certificate.valid_principals),
        valid_from=valid_from,
        valid_to=valid_to,
        days_left=days_left,
        status=status,
        ca_key_type=_display_name(ca_algorithm, ca_key),
        ca_fingerprint=fingerprint(ca_blob),
        key_type=_display_name(certified_algorithm, certified),
        bits=_bits(certified),
        fingerprint=fingerprint(certified_blob),
        critical_options=tuple(sorted((_text(name), _text(value))
                                      for name, value in certificate.critical_options.items())),
        extensions=tuple(sorted((_text(name), _text(value))
                                for name, value in certificate.extensions.items())),
        signature_valid=signature_valid,
        comment=comment,
    )


def certificate_expiry(info: SshCertificateInfo, source: str | None = None
                       ) -> CredentialExpiry | None:
    """When the certificate ends (None: valid forever), for the ``now`` ``info`` was made for;
    its ``soon`` says whether doctor and fetch must warn."""
    if info.valid_to is None or info.days_left is None:
        return None
    until = f"{info.valid_to:%Y-%m-%d %H:%M} UTC"
    if info.days_left >= 0:
        finding = (f"the SSH certificate {info.path} expires on {until}, in {info.days_left} days; "
                   "after that the server refuses the login")
    else:
        finding = (f"the SSH certificate {info.path} expired on {until} ({-info.days_left} days "
                   "ago): the server refuses the login")
    if source is not None:
        finding = f"source {source!r}: {finding}"
    return CredentialExpiry(
        kind=SSH_CERTIFICATE, subject=str(info.path), expires_at=info.valid_to.timestamp(),
        days_left=info.days_left, finding=finding, source=source,
        remedy=f"Ask your provider (the certificate authority) for a renewed certificate for "
        f"the same key and save it as {info.path}.")


def inspect_ssh_file(path: Path, passphrase: str | None = None, *,
                     now: datetime | None = None) -> SshKeyInfo | SshCertificateInfo:
    """Describe an OpenSSH private key, a public key line file or an OpenSSH certificate.

    The kind is told by the content, not the name. An encrypted OpenSSH private key is described
    without its passphrase (its public half is stored unencrypted); with one, the passphrase is
    checked and a wrong one is a ConfigError. The comment comes from ``path.pub`` when that holds
    the same key (as ``ssh-keygen -l`` does), else from the private key itself. A certificate's
    status and days left are computed for ``now`` (default: the current time; naive = UTC).
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise _problem(path, "a folder, not a key file")
        data = path.read_bytes()
    except OSError as exc:
        raise _problem(path, f"cannot read the file: {exc.strerror or exc}",
                       remedy="Check the path and its permissions.") from None
    if _OPENSSH_PRIVATE_BEGIN in data:
        return _inspect_openssh_private(path, data, passphrase)
    if _PEM_PRIVATE.search(data):
        return _inspect_pem_private(path, data, passphrase)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _problem(path, "not an SSH key or certificate (binary content)") from None
    result = _inspect_public_text(path, text, quiet=False, now=now)
    assert result is not None  # quiet=False raises instead of returning None
    return result

