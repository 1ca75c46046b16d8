"""SSH keys and certificates: the constants, the result types and fingerprints."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa

from reportsync.errors import ExitCode

KEY_TYPES = ("rsa", "ed25519")
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 4096
DEFAULT_RSA_BITS = 2048
RSA_PUBLIC_EXPONENT = 65537
PUBLIC_FILE_MODE = 0o644

FOREVER = 2**64 - 1
"""``valid_before`` of a certificate that never expires (``ssh-keygen -V always:forever``)."""

LAST_DATETIME = 253402300799  # 9999-12-31 23:59:59 UTC: later timestamps count as "forever"

STATUS_VALID = "valid"
STATUS_EXPIRED = "expired"
STATUS_NOT_YET_VALID = "not yet valid"

OPENSSH_PRIVATE_BEGIN = b"-----BEGIN OPENSSH PRIVATE KEY-----"
OPENSSH_PRIVATE_END = b"-----END OPENSSH PRIVATE KEY-----"
OPENSSH_MAGIC = b"openssh-key-v1\x00"
PEM_PRIVATE = re.compile(rb"-----BEGIN ((?:RSA |EC |DSA |ENCRYPTED )?PRIVATE KEY)-----")

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
PRIVATE_FIELDS = {
    "ssh-rsa": 6,  # n e d iqmp p q
    "ssh-dss": 5,  # p q g y x
    "ssh-ed25519": 2,  # public, private+public
    "ecdsa-sha2-nistp256": 3,  # curve name, public point, private scalar
    "ecdsa-sha2-nistp384": 3,
    "ecdsa-sha2-nistp521": 3,
}

_CERT_SUFFIX = "-cert-v01@openssh.com"

SshPublicKey = (
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


def public_blob(key: SshPublicKey) -> tuple[str, bytes]:
    """The algorithm name and wire blob of a public key (as in its .pub line)."""
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    algorithm, encoded = line.split(b" ")[:2]
    return algorithm.decode("ascii"), base64.b64decode(encoded)


def key_bits(key: SshPublicKey) -> int:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return 256
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.curve.key_size
    return key.key_size


def display_name(algorithm: str, key: SshPublicKey) -> str:
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


def as_ssh_public_key(key: object) -> SshPublicKey | None:
    if isinstance(key, rsa.RSAPublicKey | ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
                  | dsa.DSAPublicKey):
        return key
    return None


def key_info(path: Path, algorithm: str, blob: bytes, key: SshPublicKey, *, comment: str,
             encrypted: bool, is_private: bool) -> SshKeyInfo:
    """What ``keys ssh show`` and ``keys ssh generate`` say of a key (one shape for both)."""
    return SshKeyInfo(
        path=path,
        key_type=display_name(algorithm, key),
        bits=key_bits(key),
        fingerprint=fingerprint(blob),
        comment=comment,
        encrypted=encrypted,
        algorithm=algorithm,
        is_private=is_private,
        public_key=f"{algorithm} {base64.b64encode(blob).decode('ascii')}",
    )
