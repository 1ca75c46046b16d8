"""The SSH connection an SFTP session runs over, whichever engine made it.

The seam between the two SSH engines: paramiko in-process (``ParamikoSession``), and OpenSSH's
``ssh -s sftp`` as a child doing the key exchange, host key check, login and crypto
(``openssh.OpenSshSession``; ``engine.choose_engine`` picks one per source). Above this line
everything is shared: paramiko's SFTP protocol code (``stream.SftpClient``), the reads
(``wire.py``), the transport.
"""

from __future__ import annotations

import abc
import logging

import paramiko

from reportsync.transports.network import ResetWatchingSocket
from reportsync.transports.sftp.stream import ChannelStream, SftpClient
from reportsync.vocab import SshEngine

log = logging.getLogger(__name__)


class SshSession(abc.ABC):
    """A logged-in SSH connection with an SFTP session on it."""

    engine: SshEngine
    reads_in_flight: int
    """READ requests one download keeps outstanding (``wire.ReadWindow``)."""

    @abc.abstractmethod
    def is_active(self) -> bool:
        """Whether the connection is still up (else a failure is the connection's, not the
        server's refusal)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the connection; never raises."""

    @abc.abstractmethod
    def describe(self) -> str:
        """The engine and the SSH software at both ends, for a log line or doctor."""

    def ended_by(self) -> BaseException | None:
        """What ended the connection, once it ended and the engine knows (a
        ``ConnectionResetError``: a TCP reset); None while it is up, or when nobody knows."""
        return None


class ParamikoSession(SshSession):
    engine = SshEngine.PARAMIKO
    reads_in_flight = 16
    """Enough to keep paramiko's 2 MiB channel window full (more could not arrive sooner; larger
    windows measured slower, issue 13)."""

    def __init__(self, transport: paramiko.Transport) -> None:
        self.transport = transport

    def is_active(self) -> bool:
        return bool(self.transport.is_active())

    def close(self) -> None:
        try:
            self.transport.close()
        except Exception as exc:  # close never raises
            log.debug("closing connection: %s", exc)

    def describe(self) -> str:
        return f"paramiko {paramiko.__version__} to {self.transport.remote_version}"

    def ended_by(self) -> BaseException | None:
        # paramiko's transport thread keeps the error it died of (set before it wakes the
        # channels' waiters, who see only "closed" or a timeout); read, not get_exception(),
        # which clears it
        ended = self.transport.saved_exception
        sock = getattr(self.transport, "sock", None)
        if isinstance(sock, ResetWatchingSocket) and sock.reset is not None:
            # a reset met by a send (another thread's) is an EOFError to paramiko: the socket
            # knows better
            return sock.reset
        return ended if isinstance(ended, BaseException) else None


def open_channel_sftp(transport: paramiko.Transport, timeout: float) -> SftpClient | None:
    """``SFTPClient.from_transport``, over a stream that sends requests in batches; None if the
    server would not open a session channel."""
    channel = transport.open_session(timeout=timeout)
    if channel is None:
        return None
    channel.settimeout(timeout)
    channel.invoke_subsystem("sftp")
    return SftpClient(ChannelStream(channel))
