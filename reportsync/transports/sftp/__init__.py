"""SFTP over paramiko, with the host key checked before any credential is sent.

The connection is built step by step rather than with ``SSHClient`` so the order is ours
(``steps.py``): resolve → TCP connect → banner → key exchange → host key check →
authentication → SFTP → ``chdir``. Every library exception is turned into a ``ReportsyncError``
(see ``transports/base.py``).

Modules: ``known_hosts`` (the file and the host key check), ``credentials`` (key, certificate,
passphrase; the paramiko version check), ``handshake`` (banner and key exchange), ``auth`` (the
login and what explains a refusal), ``wire`` (the raw listing and the bounded read window),
``transport`` (the logged-in session), ``steps`` (the connector fetch and doctor run).
"""

from __future__ import annotations

import sys

if "paramiko" not in sys.modules and "invoke" not in sys.modules:
    # paramiko.config imports ``invoke`` (a task runner) only for ssh_config's "Match exec",
    # which reportsync never reads (it builds the connection itself): 40 % of paramiko's import
    # time on every SFTP run. paramiko takes a failed import as "not installed"; the block is
    # lifted right after, so a later ``import invoke`` works as ever.
    sys.modules["invoke"] = None  # type: ignore[assignment]
    try:
        import paramiko  # noqa: F401
    finally:
        del sys.modules["invoke"]

from reportsync.config import SourceConfig
from reportsync.transports.base import Transport, connect
from reportsync.transports.sftp.credentials import (
    check_secret_files,
    load_private_key,
    require_strict_kex_support,
)
from reportsync.transports.sftp.known_hosts import (
    KnownHostKey,
    fingerprint,
    host_key_name,
    load_known_hosts,
    verify_host_key,
)
from reportsync.transports.sftp.steps import SftpConnector
from reportsync.transports.sftp.transport import SftpTransport

__all__ = [
    "KnownHostKey", "SftpConnector", "SftpTransport", "check_secret_files", "fingerprint",
    "host_key_name", "load_known_hosts", "load_private_key", "open_sftp",
    "require_strict_kex_support", "verify_host_key",
]


def open_sftp(source: SourceConfig) -> Transport:
    """Connect and log in to ``source`` over SFTP, positioned at its ``remote_dir``."""
    return connect(SftpConnector(source))
