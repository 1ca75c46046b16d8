"""The first two steps of every protocol: resolve the host, then open a TCP connection to it.

Both are bounded by the source's ``timeout``: the lookup runs in a thread that is given up on
(``getaddrinfo`` itself has no timeout), and every address the lookup gave is tried within one
``timeout`` together, not each with its own.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from reportsync.config import SourceConfig
from reportsync.errors import NetworkError
from reportsync.transports.base import Check, StepFailure, StepResult, shown_names
from reportsync.transports.findings import StepFinding

log = logging.getLogger(__name__)


class Dialer:
    """Resolves ``source.host`` (the DNS step), then connects (the TCP step); the connected
    socket is handed to the protocol's next step with ``take_socket``."""

    def __init__(self, source: SourceConfig, port_hint: str) -> None:
        self.source = source
        self.port_hint = port_hint  # what `port` should be, e.g. "the FTP control port (usually 21)"
        self.where = f"{source.host}:{source.port}"
        self.addresses: list[tuple[Any, ...]] = []  # getaddrinfo's answers
        self.peer_ip: str | None = None
        self._sock: socket.socket | None = None

    def _doctor(self) -> str:
        return f"Run `reportsync doctor --source {self.source.name}`."

    def dns(self) -> StepResult:
        host, timeout = self.source.host, self.source.timeout
        answer: dict[str, Any] = {}

        def resolve() -> None:
            try:
                answer["infos"] = socket.getaddrinfo(host, self.source.port,
                                                     type=socket.SOCK_STREAM)
            except OSError as exc:
                answer["error"] = exc

        worker = threading.Thread(target=resolve, name="reportsync-dns", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            return StepFailure(StepFinding.DNS_TIMEOUT, NetworkError(
                f"the DNS lookup of {host!r} got no answer within {timeout:g}s",
                remedy="This machine's DNS server does not answer: check the network settings "
                f"(try `nslookup {host}`). {self._doctor()}", source=self.source.name,
            )).result(Check.DNS)
        error = answer.get("error")
        if error is not None:
            reason = getattr(error, "strerror", None) or str(error)
            return StepFailure(StepFinding.DNS_UNRESOLVED, NetworkError(
                f"cannot resolve host {host!r}: {reason}",
                remedy=f"Check `host` in [sources.{self.source.name}] for typos, and that DNS "
                f"works on this machine (try `nslookup {host}`). {self._doctor()}",
                source=self.source.name,
            )).result(Check.DNS)
        self.addresses = list(answer.get("infos", []))
        addresses = list(dict.fromkeys(str(info[4][0]) for info in self.addresses))
        if addresses == [host]:
            return StepResult.passed(Check.DNS, StepFinding.DNS_OK, f"{host} is an IP address")
        return StepResult.passed(Check.DNS, StepFinding.DNS_OK,
                                 f"{host} resolves to {shown_names(addresses)}")

    def tcp(self) -> StepResult:
        source = self.source
        try:
            sock = self._connect()
        except ConnectionRefusedError:
            return StepFailure(StepFinding.TCP_REFUSED, NetworkError(
                f"connection to {self.where} refused: nothing listens on port {source.port}, or "
                "a firewall rejects it",
                remedy=f"Check `port` in [sources.{source.name}]: it must be {self.port_hint}; "
                f"check that the server is up. {self._doctor()}", source=source.name,
            )).result(Check.TCP)
        except TimeoutError:
            return StepFailure(StepFinding.TCP_TIMEOUT, NetworkError(
                f"connection to {self.where} timed out after {source.timeout:g}s: no answer at "
                "all",
                remedy="A firewall (yours or the network's) drops the traffic, or host/port are "
                f"wrong: allow outgoing TCP connections to {source.host} port {source.port}, "
                f"and check `port` ({self.port_hint}). {self._doctor()}", source=source.name,
            )).result(Check.TCP)
        except OSError as exc:
            return StepFailure(StepFinding.TCP_FAILED, NetworkError(
                f"cannot connect to {self.where}: {exc.strerror or exc}",
                remedy="Check this machine's network connection and routing to the server. "
                f"{self._doctor()}", source=source.name,
            )).result(Check.TCP)
        self._sock = sock
        self.peer_ip = str(sock.getpeername()[0])
        return StepResult.passed(Check.TCP, StepFinding.TCP_OK,
                                 f"TCP connection to {self.where} ({self.peer_ip}) opened")

    def _connect(self) -> socket.socket:
        """A TCP connection to the addresses the DNS step found, all within one ``timeout``."""
        deadline = time.monotonic() + self.source.timeout
        failure: OSError = TimeoutError("no address to connect to")
        for _family, _kind, _proto, _, address in self.addresses:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out")
            try:
                sock = socket.create_connection(address[:2], timeout=remaining)
            except OSError as exc:
                failure = exc
                continue
            sock.settimeout(self.source.timeout)
            return ResetWatchingSocket.adopt(sock)
        raise failure

    def take_socket(self) -> socket.socket:
        """The connected socket, now the caller's to close."""
        sock, self._sock = self._sock, None
        if sock is None:
            raise NetworkError("not connected", source=self.source.name)
        return sock

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError as exc:
                log.debug("closing the socket: %s", exc)


class ResetWatchingSocket(socket.socket):
    """A TCP socket that remembers a reset met by any send or receive on it (``reset``).

    The kernel reports a TCP reset once, to whichever call meets it first. A protocol library
    that sends from one thread and reads from another (paramiko) may then see it only as the
    end of the stream (paramiko turns a failed send into ``EOFError``), and a reset would read
    as a clean close or a timeout. The transport asks this socket instead."""

    reset: ConnectionResetError | None = None

    @classmethod
    def adopt(cls, sock: socket.socket) -> ResetWatchingSocket:
        """This class around ``sock``'s connection (the same file descriptor and timeout)."""
        timeout = sock.gettimeout()
        watching = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        watching.settimeout(timeout)
        return watching

    def send(self, data: Any, flags: int = 0) -> int:
        try:
            return super().send(data, flags)
        except ConnectionResetError as exc:
            self.reset = exc
            raise

    def sendall(self, data: Any, flags: int = 0) -> None:
        try:
            super().sendall(data, flags)
        except ConnectionResetError as exc:
            self.reset = exc
            raise

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        try:
            return super().recv(bufsize, flags)
        except ConnectionResetError as exc:
            self.reset = exc
            raise

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        try:  # what a makefile() reader (ftplib's) calls
            return super().recv_into(buffer, nbytes, flags)
        except ConnectionResetError as exc:
            self.reset = exc
            raise
