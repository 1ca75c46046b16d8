"""FTP and FTPS (explicit ``AUTH TLS``) transport on ftplib.

What real servers need, and what this package therefore does:

* Passive mode by default, ``EPSV`` first with a fall-back to ``PASV``. The data connection always
  goes to the control connection's peer address; the address a ``PASV`` reply names is only logged
  (a differing one is the classic NAT misconfiguration), never connected to (``client.py``).
* FTPS verifies the server certificate and host name, protects the data channel (``PROT P``) and
  resumes the control connection's TLS session on every data connection (vsftpd and FileZilla
  Server refuse data connections that do not).
* Listing: ``MLSD`` where the server has it; otherwise ``LIST`` (Unix and Windows/IIS styles) or
  ``NLST``, with ``SIZE`` and ``MDTM`` per file (``listing.py`` parses, ``transport.py`` asks).
* A transfer that breaks off leaves the control connection in an unknown state: the connection is
  dropped (``NetworkError``) and the next call logs in again, through the same steps
  (``steps.py``), instead of hanging on a stale reply.

The password is never logged and never part of a message (``translate.py`` removes it from every
reply it quotes); ftplib's debug output (which would print it) stays off.
"""

from __future__ import annotations

from reportsync.config import SourceConfig
from reportsync.transports.base import Transport, connect
from reportsync.transports.ftp.client import Client
from reportsync.transports.ftp.listing import (
    ListEntry,
    parse_ftp_time,
    parse_list,
    parse_list_line,
    parse_mlsd_line,
    parse_unix_list_line,
    parse_windows_list_line,
)
from reportsync.transports.ftp.steps import FtpConnector
from reportsync.transports.ftp.transport import FtpTransport

__all__ = [
    "Client", "FtpConnector", "FtpTransport", "ListEntry", "open_ftp", "parse_ftp_time",
    "parse_list", "parse_list_line", "parse_mlsd_line", "parse_unix_list_line",
    "parse_windows_list_line",
]


def open_ftp(source: SourceConfig) -> Transport:
    """Connect and log in to an ftp/ftps source, positioned at its ``remote_dir``."""
    return connect(FtpConnector(source))
