"""Transports: one interface (``base.Transport``), one factory, three protocols.

``connector_for`` is the one place that picks a protocol's code (imported only when used: an
FTP-only config never loads paramiko); ``open_transport`` runs its connection steps, as fetch and
retention need; doctor runs the same steps one by one (``base.Connector``).
"""

from __future__ import annotations

from collections.abc import Callable

from reportsync.config import SourceConfig
from reportsync.transports.base import Connector, RemoteFile, Transport, connect, prepared

__all__ = ["Connector", "RemoteFile", "Transport", "connector_for", "open_transport",
           "start_connecting"]


def connector_for(source: SourceConfig) -> Connector:
    """The connection steps of ``source``'s protocol, not started yet."""
    if source.protocol == "sftp":
        from reportsync.transports.sftp import SftpConnector

        return SftpConnector(source)
    from reportsync.transports.ftp import FtpConnector

    return FtpConnector(source)


def open_transport(source: SourceConfig) -> Transport:
    """Connect and log in to ``source``, positioned at its ``remote_dir``.

    Raises NetworkError, AuthenticationError, HostKeyError, TlsError, RemoteError or ConfigError.
    """
    return connect(connector_for(source))


def start_connecting(source: SourceConfig) -> Callable[[], Transport]:
    """``open_transport`` in two halves: what needs no network now (loading the protocol's code,
    reading the key and known_hosts), the connection and login when the function returned is
    called (``transports/head_start.py`` runs that half on a thread)."""
    return prepared(connector_for(source))
