"""Transports: one interface (``base.Transport``), one factory, three protocols."""

from __future__ import annotations

from reportsync.config import SourceConfig
from reportsync.transports.base import RemoteFile, Transport

__all__ = ["RemoteFile", "Transport", "open_transport"]


def open_transport(source: SourceConfig) -> Transport:
    """Connect and log in to ``source``, positioned at its ``remote_dir``.

    Raises NetworkError, AuthenticationError, HostKeyError, TlsError, RemoteError or ConfigError.
    """
    if source.protocol == "sftp":
        from reportsync.transports.sftp import open_sftp

        return open_sftp(source)
    from reportsync.transports.ftp import open_ftp

    return open_ftp(source)
