"""SSH keys and certificates: generate a login key, describe a key or an OpenSSH certificate.

Everything here works with ``cryptography`` alone (no ``ssh-keygen`` needed), and describes keys
the way ``ssh-keygen -l`` does: ``2048 SHA256:<base64> comment (RSA)``. Core package: it never
prints; failures are ``ReportsyncError`` subclasses (``UsageError`` for bad arguments,
``StorageError`` for failed writes, ``ConfigError`` for files that cannot be read or understood).
Passphrases are only ever handed to ``cryptography``: never written, logged or put in a message.

``model`` holds the constants, result types and fingerprints; ``generate`` writes a new key
pair; ``inspect`` reads keys, public key lines and certificates.
"""

from reportsync.sshkeys.generate import generate_ssh_key
from reportsync.sshkeys.inspect import certificate_expiry, inspect_ssh_file
from reportsync.sshkeys.model import (
    DEFAULT_RSA_BITS,
    FOREVER,
    KEY_TYPES,
    MAX_RSA_BITS,
    MIN_RSA_BITS,
    STATUS_EXPIRED,
    STATUS_NOT_YET_VALID,
    STATUS_VALID,
    GeneratedSshKey,
    ShownSshFile,
    SshCertificateInfo,
    SshKeyInfo,
    fingerprint,
)

__all__ = [
    "DEFAULT_RSA_BITS", "FOREVER", "KEY_TYPES", "MAX_RSA_BITS", "MIN_RSA_BITS", "STATUS_EXPIRED",
    "STATUS_NOT_YET_VALID", "STATUS_VALID", "GeneratedSshKey", "ShownSshFile",
    "SshCertificateInfo", "SshKeyInfo", "certificate_expiry", "fingerprint", "generate_ssh_key",
    "inspect_ssh_file",
]
