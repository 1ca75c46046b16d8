"""Describe a key or an OpenSSH certificate the way ``ssh-keygen -l`` / ``-L`` do."""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from reportsync.errors import ConfigError
from reportsync.expiry import SSH_CERTIFICATE, CredentialExpiry
from reportsync.sshkeys.model import (
    LAST_DATETIME,
    OPENSSH_MAGIC,
    OPENSSH_PRIVATE_BEGIN,
    OPENSSH_PRIVATE_END,
    PEM_PRIVATE,
    PRIVATE_FIELDS,
    STATUS_EXPIRED,
    STATUS_NOT_YET_VALID,
    STATUS_VALID,
    SshCertificateInfo,
    SshKeyInfo,
    SshPublicKey,
    as_ssh_public_key,
    display_name,
    fingerprint,
    key_bits,
    key_info,
    public_blob,
)

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
    start = data.index(OPENSSH_PRIVATE_BEGIN) + len(OPENSSH_PRIVATE_BEGIN)
    end = data.index(OPENSSH_PRIVATE_END, start)
    raw = base64.b64decode(b"".join(data[start:end].split()), validate=True)
    if not raw.startswith(OPENSSH_MAGIC):
        raise ValueError("bad magic")
    reader = _Reader(raw[len(OPENSSH_MAGIC):])
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
        fields = PRIVATE_FIELDS.get(algorithm)
        if fields is not None:
            for _ in range(fields):
                private.string()
            comment = private.string().decode("utf-8", "replace")
    return _OpenSshPrivate(cipher=cipher, public_blob=public_blob, comment=comment)


def _load_blob(path: Path, blob: bytes) -> tuple[str, SshPublicKey]:
    """The algorithm name and key object of a public key blob."""
    try:
        algorithm = _Reader(blob).string().decode("ascii")
        line = f"{algorithm} {base64.b64encode(blob).decode('ascii')}".encode("ascii")
        loaded = serialization.load_ssh_public_key(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _problem(path, f"the public key inside the file is damaged ({exc})") from None
    except UnsupportedAlgorithm as exc:
        raise _problem(path, f"unsupported SSH key type ({exc})") from None
    key = as_ssh_public_key(loaded)
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
    elif not encrypted and algorithm in PRIVATE_FIELDS:
        try:
            serialization.load_ssh_private_key(data, None)
        except (ValueError, TypeError) as exc:
            raise _problem(path, f"a damaged OpenSSH private key ({exc})") from None
        except UnsupportedAlgorithm:
            pass  # the public half above still describes it
    comment = _companion_comment(path, parsed.public_blob)
    if comment is None:
        comment = parsed.comment or ""
    return key_info(path, algorithm, parsed.public_blob, key, comment=comment,
                     encrypted=encrypted, is_private=True)


def _inspect_pem_private(path: Path, data: bytes, passphrase: str | None) -> SshKeyInfo:
    """A PEM private key (``BEGIN RSA PRIVATE KEY`` and friends): older ssh-keygen's format."""
    header = PEM_PRIVATE.search(data)
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
    key = as_ssh_public_key(private.public_key())
    if key is None:
        raise _problem(path, f"not an SSH key type: {type(private).__name__}")
    algorithm, blob = public_blob(key)
    comment = _companion_comment(path, blob) or ""
    return key_info(path, algorithm, blob, key, comment=comment, encrypted=encrypted,
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
    key = as_ssh_public_key(identity)
    if key is None:
        if quiet:
            return None
        raise _problem(path, f"unsupported SSH key type {algorithm!r}")
    return key_info(path, algorithm, blob, key, comment=comment, encrypted=False,
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
    certified = as_ssh_public_key(certificate.public_key())
    ca_key = as_ssh_public_key(certificate.signature_key())
    if certified is None or ca_key is None:
        raise _problem(path, f"unsupported certificate key type {algorithm!r}")
    certified_algorithm, certified_blob = public_blob(certified)
    ca_algorithm, ca_blob = public_blob(ca_key)

    valid_from = _utc(min(certificate.valid_after, LAST_DATETIME))
    valid_to = (None if certificate.valid_before > LAST_DATETIME
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
        ca_key_type=display_name(ca_algorithm, ca_key),
        ca_fingerprint=fingerprint(ca_blob),
        key_type=display_name(certified_algorithm, certified),
        bits=key_bits(certified),
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
    if OPENSSH_PRIVATE_BEGIN in data:
        return _inspect_openssh_private(path, data, passphrase)
    if PEM_PRIVATE.search(data):
        return _inspect_pem_private(path, data, passphrase)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _problem(path, "not an SSH key or certificate (binary content)") from None
    result = _inspect_public_text(path, text, quiet=False, now=now)
    assert result is not None  # quiet=False raises instead of returning None
    return result

