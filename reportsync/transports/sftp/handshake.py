"""The SSH conversation up to the host key: what the server says first, and the key exchange.

Each failure is raised as a ``StepFailure``: the finding it stands for (an FTP server on the
port, a server that is not SSH, one that hung up, no common algorithm ...) decided here, from the
exception types and the connection's state, never from the text of a message.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass

import paramiko
from paramiko.ssh_exception import IncompatiblePeer

from reportsync.config import SourceConfig
from reportsync.errors import NetworkError, RemoteError
from reportsync.transports.base import StepFailure
from reportsync.transports.findings import StepFinding
from reportsync.transports.sftp.session import open_channel_sftp
from reportsync.transports.sftp.stream import SftpClient

log = logging.getLogger(__name__)

BANNER_PEEK_LIMIT = 10.0
"""Longest wait for the server to speak first before the handshake (SSH servers do at once)."""
BANNER_PEEK_SHARE = 0.5
"""The part of ``timeout`` the look at the first words may take: the rest is the handshake's,
so a server that never speaks costs ``timeout`` in all, not the look's wait and then the
handshake's whole timeout again."""


@dataclass(frozen=True)
class FirstWords:
    """What the server said before the handshake: ``line``, its first line when that is not an
    SSH banner (the protocol allows lines before it, so that alone is not fatal yet); ``silent``:
    nothing at all arrived while reportsync looked."""

    line: str | None = None
    silent: bool = False


# AES-GCM is an AEAD cipher: no separate MAC pass, and paramiko's fastest by far (the default
# aes128-ctr + hmac-sha2-256 pair costs about half the throughput). Servers without it still get
# paramiko's usual order.
_FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def prefer_fast_ciphers(transport: paramiko.Transport) -> None:
    options = transport.get_security_options()
    available = list(options.ciphers)
    fast = [name for name in _FAST_CIPHERS if name in available]
    if fast:
        options.ciphers = fast + [name for name in available if name not in fast]


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def close_quietly(transport: paramiko.Transport | None, sock: socket.socket | None) -> None:
    try:
        if transport is not None:
            transport.close()
        elif sock is not None:
            sock.close()
    except Exception as exc:
        log.debug("closing connection: %s", exc)


def check_banner(source: SourceConfig, sock: socket.socket) -> FirstWords:
    """Look (without consuming) at what the server says first: an FTP server is named as such.
    Waits at most ``BANNER_PEEK_SHARE`` of the source's timeout (and ``BANNER_PEEK_LIMIT``)."""
    where = f"{source.host}:{source.port}"
    try:
        sock.settimeout(min(source.timeout * BANNER_PEEK_SHARE, BANNER_PEEK_LIMIT))
        first = sock.recv(256, socket.MSG_PEEK)
    except TimeoutError:
        log.debug("%s sent nothing first; trying the SSH handshake anyway", where)
        return FirstWords(silent=True)
    except OSError as exc:
        raise StepFailure(StepFinding.BANNER_LOST, NetworkError(
            f"connection to {where} lost before the SSH banner: {exc.strerror or exc}",
            source=source.name)) from None
    finally:
        sock.settimeout(source.timeout)
    if not first:
        raise StepFailure(StepFinding.BANNER_CLOSED, NetworkError(
            f"{where} closed the connection before sending an SSH banner (the server may be "
            "overloaded or refuse this address)",
            source=source.name,
        ))
    if first.startswith(b"SSH-") or b"\nSSH-" in first:
        return FirstWords()
    line = first.split(b"\n", 1)[0].strip().decode("ascii", "replace")[:80]
    if line.startswith("220"):
        raise StepFailure(StepFinding.BANNER_FTP_SERVER, NetworkError(
            f"{where} is not an SSH server: it is an FTP server (it greeted with {line!r})",
            remedy="Use the provider's SFTP port, or set protocol = \"ftp\" for this port.",
            source=source.name,
        ))
    log.debug("%s sent %r before any SSH banner", where, line)
    return FirstWords(line=line)


def _silent(source: SourceConfig) -> StepFailure:
    """A server that accepted the TCP connection and never sent its SSH identification: an
    sshd at its limit of unauthenticated connections (MaxStartups), a load balancer or proxy
    whose server behind it is down, a firewall that holds the connection."""
    where = f"{source.host}:{source.port}"
    return StepFailure(StepFinding.BANNER_SILENT, NetworkError(
        f"{where} accepted the connection but never spoke SSH (no identification line within "
        f"{source.timeout:g}s)",
        remedy="Check `port`: it must be the provider's SFTP port. If it is, the server (or "
        "something in front of it) is stuck or overloaded: try again later, and tell the "
        "provider if it persists.",
        source=source.name,
    ))


def _not_ssh(source: SourceConfig, greeting: str, detail: str) -> StepFailure:
    where = f"{source.host}:{source.port}"
    return StepFailure(StepFinding.BANNER_NOT_SSH, NetworkError(
        f"{where} is not an SSH server (it greeted with {greeting!r}; {detail})",
        remedy="Check `port`: it must be the provider's SFTP port.",
        source=source.name,
    ))


def _spoke_ssh(transport: paramiko.Transport) -> bool:
    """Whether the server's identification line (``SSH-2.0-software``) arrived and parsed:
    paramiko keeps it only then."""
    version = str(transport.remote_version or "")
    return len(version.split(" ", 1)[0].split("-", 2)) == 3


def handshake(source: SourceConfig, transport: paramiko.Transport, first: FirstWords,
              started: float) -> None:
    """The SSH version exchange and key exchange. ``started``: when the look at the first
    words began (``time.monotonic``): a server still silent gets only what is left of
    ``timeout`` to send its identification line."""
    where = f"{source.host}:{source.port}"
    greeting = first.line
    if first.silent:
        # paramiko sends its own identification first: a server that waits for the client's
        # may still answer, within what is left of the timeout
        transport.banner_timeout = max(source.timeout - (time.monotonic() - started), 0.5)
    try:
        transport.start_client(timeout=source.timeout)
    except IncompatiblePeer as exc:
        error = NetworkError(f"cannot agree on SSH algorithms with {where}: {exc}",
                             remedy="The server only offers algorithms paramiko no longer "
                             "accepts; ask the provider.", source=source.name)
        error.retryable = False
        raise StepFailure(StepFinding.BANNER_ALGORITHMS, error) from None
    except paramiko.SSHException as exc:
        if greeting is not None:
            raise _not_ssh(source, greeting, describe(exc)) from None
        if not _spoke_ssh(transport):
            if first.silent:
                raise _silent(source) from None
            raise StepFailure(StepFinding.BANNER_NO_GREETING, NetworkError(
                f"{where} did not complete the SSH greeting: {describe(exc)}",
                remedy="Check `port`: it must be the provider's SFTP port.",
                source=source.name)) from None
        raise StepFailure(StepFinding.BANNER_HANDSHAKE_FAILED, NetworkError(
            f"SSH handshake with {where} failed: {describe(exc)}", source=source.name,
        )) from None
    except (EOFError, OSError) as exc:
        raise StepFailure(StepFinding.BANNER_LOST, NetworkError(
            f"connection to {where} lost during the SSH handshake: {describe(exc)}",
            source=source.name)) from None
    if not transport.is_active() or not transport.initial_kex_done:
        # start_client returns (without raising) when its timeout runs out.
        detail = f"no SSH handshake within {source.timeout:g}s"
        if greeting is not None:
            raise _not_ssh(source, greeting, detail)
        if first.silent and not _spoke_ssh(transport):
            raise _silent(source)
        raise StepFailure(StepFinding.BANNER_HANDSHAKE_TIMEOUT, NetworkError(
            f"SSH handshake with {where}: {detail}", source=source.name))


def open_sftp_session(source: SourceConfig, transport: paramiko.Transport) -> SftpClient:
    try:
        sftp = open_channel_sftp(transport, source.timeout)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        if transport.is_active():
            raise StepFailure(StepFinding.REMOTE_FOLDER_NO_SFTP, RemoteError(
                f"{source.host} did not start its SFTP service ({describe(exc)})",
                remedy="The account may not be allowed SFTP; ask the provider.",
                source=source.name,
            )) from None
        raise StepFailure(StepFinding.REMOTE_FOLDER_LOST, NetworkError(
            f"connection lost opening the SFTP session: {describe(exc)}",
            source=source.name)) from None
    if sftp is None:
        raise StepFailure(StepFinding.REMOTE_FOLDER_LOST, NetworkError(
            "could not open an SFTP channel", source=source.name))
    return sftp
