"""ftplib, made to behave: EPSV then PASV, data always to the control peer, TLS session reuse
on protected data connections, and an SSH server on the port named at once instead of waited on.

Plain FTP uses ``Client`` (ftplib's ``FTP``: no TLS context is made, which costs a CA store load
per connection); FTPS uses ``TlsClient`` (ftplib's ``FTP_TLS``), the same client with ``AUTH
TLS`` and ``PROT P``.
"""

from __future__ import annotations

import ftplib
import logging
import socket
import ssl
from collections.abc import Callable, Generator
from typing import Any, TypeVar

from reportsync.errors import RemoteError
from reportsync.fsutil import printable
from reportsync.transports.base import ByteSink, ProgressCallback

log = logging.getLogger(__name__)

Question = TypeVar("Question")
Answer = TypeVar("Answer")
Result = TypeVar("Result")
Waiting = TypeVar("Waiting")


def run_plan(plan: Generator[Question, Answer, Result],
             ask: Callable[[Question], Generator[Waiting, None, Answer]],
             ) -> Generator[Waiting, None, Result]:
    """Run a plan of questions (a generator that yields each question and is sent its answer):
    each question is asked with ``ask``, whose waits are passed on (the lanes' ``Wait``s,
    ``lanes.py``); an ftplib error ``ask`` raises is thrown into the plan, which may handle it."""
    try:
        question = next(plan)
        while True:
            try:
                answer = yield from ask(question)
            except ftplib.Error as exc:
                question = plan.throw(exc)
            else:
                question = plan.send(answer)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def drive(plan: Generator[Question, Answer, Result], ask: Callable[[Question], Answer]) -> Result:
    """``run_plan`` with a blocking ``ask``: nothing is waited for in between."""
    def at_once(question: Question) -> Generator[None, None, Answer]:
        return ask(question)
        yield  # a generator that never waits: ``ask`` has answered when it returns

    try:
        next(run_plan(plan, at_once))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    raise AssertionError("a blocking ask waited")  # at_once never yields


class DataChannelError(Exception):
    """Opening the data connection failed (the classic firewall / NAT / antivirus case)."""

    def __init__(self, host: str, port: int, cause: OSError) -> None:
        super().__init__(f"{host}:{port}: {cause}")
        self.host = host
        self.port = port
        self.cause = cause


class DataTimeout(TimeoutError):
    """The data connection stalled mid-transfer."""


class DataReset(ConnectionResetError):
    """The data connection was reset (a TCP RST) mid-transfer, after ``received`` bytes: cut
    actively by the server or something on the way, which is not a stall."""

    def __init__(self, received: int) -> None:
        super().__init__(f"the data connection was reset after {received} bytes")
        self.received = received


class LocalWriteError(Exception):
    """Writing a downloaded chunk failed locally (not a network problem)."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Writer:
    """A download's bytes into its destination: a local write failure is named as such
    (``LocalWriteError``, never a network error), and the progress callback told."""

    def __init__(self, destination: ByteSink, progress: ProgressCallback | None) -> None:
        self._destination = destination
        self._progress = progress
        self.written = 0

    def write(self, chunk: bytes) -> None:
        try:
            self._destination.write(chunk)
        except OSError as exc:
            raise LocalWriteError(exc) from exc
        self.written += len(chunk)
        if self._progress is not None:
            self._progress(len(chunk))


class Client(ftplib.FTP):
    """ftplib's FTP with the data connection set up our way: EPSV then PASV, always to the control
    peer, TLS session reuse on protected data connections (``TlsClient``).

    ``features`` are the server's ``FEAT`` keywords (upper case: ``MLST``, ``MDTM``, ``SIZE``...),
    or None when the server did not answer ``FEAT``: then nothing is known and everything is tried.
    """

    tls_context: ssl.SSLContext | None = None

    def __init__(self, timeout: float, **tls: Any) -> None:
        super().__init__(timeout=timeout, **tls)
        self.set_debuglevel(0)  # ftplib's debug output would print the password
        # Never connect where a PASV reply points (the FTP bounce / NAT problem); ftplib's default
        # is False already, this makes it independent of that default.
        self.trust_server_pasv_ipv4_address = False
        self.use_epsv: bool | None = None  # None: not tried yet in this session
        self.data_protected = False
        self.pasv_named_host: str | None = None
        self.data_command: str | None = None
        self.features: frozenset[str] | None = None

    def read_features(self) -> None:
        """Ask ``FEAT`` once (RFC 2389), so listing and stat use what the server has instead of
        finding out by failing (a refused ``MLSD`` costs a data connection on every listing)."""
        try:
            reply = self.sendcmd("FEAT")
        except (ftplib.error_perm, ftplib.error_temp, ftplib.error_reply):
            self.features = None  # FEAT itself is unknown to old servers: try everything
            return
        self.features = frozenset(
            line.split()[0].upper() for line in reply.splitlines()[1:-1] if line.strip())

    def offers(self, feature: str) -> bool | None:
        """Whether FEAT listed ``feature``; None when the server did not answer FEAT."""
        return None if self.features is None else feature in self.features

    def attach(self, sock: socket.socket, host: str, port: int) -> str:
        """ftplib's ``connect``, on a socket the TCP step has connected already: read the
        server's greeting. ``host`` is the configured name (TLS checks the certificate for it)."""
        self.host = host
        self.port = port
        self.sock = sock
        self.af = sock.family
        self.file = sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome

    def getmultiline(self) -> str:
        """ftplib's, except that a first line without a reply code is an error at once.

        ftplib reads ``SSH-2.0-...`` as the start of a multi-line reply with code "SSH" and waits
        for its end until the timeout; an SSH server on the port must be named as such instead.
        """
        line = self.getline()
        if not line[:3].isdigit():
            raise ftplib.error_proto(line)
        if line[3:4] == "-":
            code = line[:3]
            while True:
                next_line = self.getline()
                line = f"{line}\n{next_line}"
                if next_line[:3] == code and next_line[3:4] != "-":
                    break
        return line

    def _peer_host(self) -> str:
        if self.sock is None:
            raise EOFError("not connected")
        return str(self.sock.getpeername()[0])

    def makepasv(self) -> tuple[str, int]:
        """(host, port) of the server's passive data port; host is always the control peer."""
        return drive(self.passive_plan(), self.sendcmd)

    def passive_plan(self) -> Generator[str, str, tuple[str, int]]:
        """The commands that open a passive data port, EPSV then PASV (each ``yield`` gets the
        reply, or its ftplib error thrown in), and the data port: (host, port), where host is
        always the control connection's peer, never an address the server names. Both the
        blocking ``makepasv`` and the lanes (``lanes.py``) run this one plan."""
        peer_host = self._peer_host()
        if self.use_epsv is not False:
            try:
                reply = yield "EPSV"
            except ftplib.error_perm as exc:
                if self.af != socket.AF_INET:
                    raise  # PASV cannot express IPv6
                log.debug("EPSV refused (%s); using PASV", str(exc)[:80])
                self.use_epsv = False
            else:
                self.use_epsv = True
                self.data_command = "EPSV"
                _, port = ftplib.parse229(reply, (peer_host, 0))
                return peer_host, port
        reply = yield "PASV"
        named_host, port = ftplib.parse227(reply)
        self.data_command = "PASV"
        self.pasv_named_host = named_host
        if named_host != peer_host:
            log.debug(
                "PASV reply names %s but the control connection goes to %s (a NAT hint); "
                "connecting the data channel to %s", named_host, peer_host, peer_host,
            )
        return peer_host, port

    def control_session(self) -> ssl.SSLSession | None:
        return self.sock.session if isinstance(self.sock, ssl.SSLSocket) else None

    def ntransfercmd(self, cmd: str, rest: int | str | None = None) -> tuple[socket.socket, int | None]:
        if self.passiveserver:
            host, port = self.makepasv()
            try:
                conn = socket.create_connection((host, port), self.timeout,
                                                source_address=self.source_address)
            except OSError as exc:
                raise DataChannelError(host, port, exc) from exc
            try:
                if rest is not None:
                    self.sendcmd(f"REST {rest}")
                reply = self.sendcmd(cmd)
                if reply[0] == "2":  # some servers send a 200 before the 150
                    reply = self.getresp()
                if reply[0] != "1":
                    raise ftplib.error_reply(reply)
            except BaseException:
                conn.close()
                raise
            size = ftplib.parse150(reply) if reply[:3] == "150" else None
        else:
            self.data_command = "PORT"
            conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self.data_protected and self.tls_context is not None:
            peer = conn.getpeername()
            try:
                conn = self.tls_context.wrap_socket(
                    conn, server_hostname=self.host, session=self.control_session()
                )
            except OSError as exc:  # ssl.SSLError too: e.g. a server that insists on reuse
                conn.close()
                raise DataChannelError(str(peer[0]), int(peer[1]), exc) from exc
            except BaseException:
                conn.close()
                raise
            if isinstance(conn, ssl.SSLSocket):
                log.debug("data connection: %s, TLS session reused: %s", conn.version(),
                          conn.session_reused)
        return conn, size


class TlsClient(Client, ftplib.FTP_TLS):
    """The client of an ftps source: ``auth()`` (AUTH TLS) and ``prot_p()`` come from ftplib."""

    def __init__(self, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(timeout, context=context)
        self.tls_context = context


def reply_code(exc: BaseException) -> str:
    """The three-digit code of an ftplib reply error (ftplib keeps only the reply's text)."""
    return str(exc)[:3]


def is_ssh_greeting(exc: BaseException) -> bool:
    """Whether the server greeted like SSH (``SSH-2.0-...``): an SSH port, not an FTP one."""
    return isinstance(exc, ftplib.error_proto | ftplib.error_reply) and str(exc).startswith("SSH-")


def sendable(name: str) -> bool:
    """Whether ``name`` can go into an FTP command: a CR, LF or NUL would end the command early
    and smuggle the rest in as another one (ftplib raises ValueError for CR/LF), and bytes that
    were not UTF-8 in the listing cannot be encoded back (fetch refuses such names anyway)."""
    if any(char in name for char in "\r\n\0"):
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def unsendable(name: str, action: str) -> RemoteError:
    return RemoteError(f"{action}: the name {printable(name)} holds a line break, a NUL or bytes "
                       "that are not UTF-8 and cannot be sent in an FTP command")
