"""Several FTP files in flight: one control connection ("lane") per file, all driven by one thread.

FTP carries one transfer per control connection, and a small file costs round trips, not bytes:
its stat (MLST, or SIZE and MDTM), EPSV, the data connection, RETR and its 150, the data, the
226, the stat again. ``FtpTransport.download_many`` therefore keeps up to ``LANES`` files in
flight over as many logged-in control connections, as ``lftp mirror -P4`` does. The lanes run in
the calling thread: each file is a generator that yields the socket it waits on, and a selector
resumes whichever is ready. Threads would not do: a thread whose reply has arrived needs the GIL
back, and while another thread runs Python it waits up to the interpreter's switch interval
(5 ms) for it, many times per file; that is why ``--jobs 4`` did not help (docs/performance.md,
"FTP small files, round 2").

What each file goes through is exactly ``Transport.download_checked``'s, over the same plans the
blocking calls run (``FtpTransport.stat_plan``, ``Client.passive_plan``): the stat before (a file
that is not the listed version is not transferred), the bytes from the offset on, the stat after
(a change meanwhile ends in ``RemoteChangedError``). The data connection goes to the control
connection's peer, never to an address the server names. Replies and failures are ftplib's
exceptions, translated by the same ``ErrorMap.guard``: a refusal is the file's error and the
others go on; a ``NetworkError`` or a failure of a destination (disk full, more bytes than
listed) starts no further file, lets the files in flight on the other lanes end (each is checked
as always: a file changed meanwhile is seen) and is raised after them; the file it cut did not
end (its bytes stay for a resume). A lane whose connection may be out of step (anything but a
reply) is closed.
"""

from __future__ import annotations

import errno
import ftplib
import logging
import os
import selectors
import socket
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reportsync.errors import NetworkError, ReportsyncError
from reportsync.fsutil import printable
from reportsync.transports.base import (
    CountingSink,
    Download,
    Downloaded,
    RemoteFile,
    changed_during,
    remote_changed,
    version_changed,
)
from reportsync.transports.ftp.client import (
    Client,
    DataChannelError,
    DataReset,
    DataTimeout,
    Writer,
    run_plan,
    sendable,
    unsendable,
)

if TYPE_CHECKING:
    from reportsync.transports.ftp.transport import FtpTransport

log = logging.getLogger(__name__)

LANES = 4
"""Files in flight at once (control connections of one transport), as ``lftp mirror -P4``."""

BLOCKSIZE = 256 * 1024
"""Bytes asked of a data socket per read."""

MAXLINE = 8192
"""A reply line longer than this is a protocol error (ftplib's limit)."""

CONNECTING = frozenset({errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN,
                        getattr(errno, "WSAEWOULDBLOCK", errno.EWOULDBLOCK)})
"""What a non-blocking ``connect_ex`` says while the connection is being made."""

@dataclass(frozen=True)
class Wait:
    """What a lane waits for: ``sock`` readable (or writable), within the source's timeout;
    ``expired`` makes the exception thrown in when the time is up."""

    sock: socket.socket
    writable: bool
    expired: Callable[[], BaseException]


def _reply_timeout() -> BaseException:
    return TimeoutError("timed out")


def _data_timeout() -> BaseException:
    return DataTimeout()


class Lane:
    """One logged-in control connection, spoken to without blocking."""

    def __init__(self, client: Client) -> None:
        self.client = client
        sock = client.sock
        assert sock is not None
        self.sock: socket.socket = sock
        self.buffer = b""  # what arrived of the next reply
        self.action = ""  # what the lane is doing, for an error's words
        self.closed = False

    # -- the control connection ---------------------------------------------------------------

    def _send(self, line: str) -> Generator[Wait, None, None]:
        view = memoryview(f"{line}\r\n".encode(self.client.encoding))
        while view:
            try:
                view = view[self.sock.send(view):]
            except BlockingIOError:
                yield Wait(self.sock, True, _reply_timeout)

    def _reply(self) -> Generator[Wait, None, str]:
        """The next whole reply, its lines joined as ftplib joins them; raises as ftplib's
        ``getresp`` does (4xx ``error_temp``, 5xx ``error_perm``, no code ``error_proto``)."""
        while True:
            reply = self._take_reply()
            if reply is not None:
                break
            yield Wait(self.sock, False, _reply_timeout)
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                continue
            if not data:
                raise EOFError
            self.buffer += data
        first = reply[:1]
        if first in ("1", "2", "3"):
            return reply
        if first == "4":
            raise ftplib.error_temp(reply)
        if first == "5":
            raise ftplib.error_perm(reply)
        raise ftplib.error_proto(reply)

    def _take_reply(self) -> str | None:
        buffer, start, lines, code = self.buffer, 0, [], ""
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                if len(buffer) - start > MAXLINE:
                    raise ftplib.error_proto(f"got more than {MAXLINE} bytes")
                return None
            line = buffer[start:end].rstrip(b"\r").decode(self.client.encoding, "replace")
            start = end + 1
            if not code:
                if not line[:3].isdigit():  # as Client.getmultiline: never wait on SSH-2.0
                    raise ftplib.error_proto(line)
                code = line[:3]
                lines.append(line)
                if line[3:4] != "-":
                    break
            else:
                lines.append(line)
                if line[:3] == code and line[3:4] != "-":
                    break
        self.buffer = buffer[start:]
        return "\n".join(lines)

    def command(self, line: str) -> Generator[Wait, None, str]:
        yield from self._send(line)
        return (yield from self._reply())

    # -- what a file needs --------------------------------------------------------------------

    def stat(self, transport: FtpTransport, name: str
             ) -> Generator[Wait, None, tuple[RemoteFile | None, str]]:
        """``FtpTransport.stat`` on this lane, and the command its mtime came from (``MLST``,
        or ``MDTM`` wherever MDTM was asked)."""
        clock = "MLST"

        def ask(question: tuple[str, str, str]) -> Generator[Wait, None, str | None]:
            nonlocal clock
            if question[0] == "MDTM":
                clock = "MDTM"
            return (yield from self.ask(transport, question))

        now = yield from run_plan(transport.stat_plan(name), ask)
        return now, clock

    def ask(self, transport: FtpTransport, question: tuple[str, str, str]
            ) -> Generator[Wait, None, str | None]:
        """``FtpTransport._ask`` on this lane: the reply with the code expected, or None."""
        command, argument, expect = question
        if not transport.askable(command, argument):
            return None
        self.action = f"{command} of {printable(argument)}"
        try:
            reply = yield from self.command(f"{command} {argument}")
        except ftplib.error_perm as exc:  # refused: no answer
            transport.refused(command, exc)
            return None
        return reply if reply[:3] == expect else None

    def retrieve(self, name: str, offset: int, writer: Writer) -> Generator[Wait, None, None]:
        """``RETR name`` from ``offset`` on, into ``writer``; raises on a bad ending (as
        ``FtpTransport._retrieve``)."""
        self.action = f"downloading {printable(name)}"
        host, port = yield from run_plan(self.client.passive_plan(), self.command)
        conn = yield from self._open_data(host, port)
        try:
            if offset:
                yield from self.command(f"REST {offset}")
            reply = yield from self.command(f"RETR {name}")
            if reply[0] == "2":  # some servers send a 200 before the 150
                reply = yield from self._reply()
            if reply[0] != "1":
                raise ftplib.error_reply(reply)
            received = 0
            while True:
                yield Wait(conn, False, _data_timeout)
                try:
                    data = conn.recv(BLOCKSIZE)
                except BlockingIOError:
                    continue
                except ConnectionResetError as exc:
                    raise DataReset(received) from exc
                if not data:
                    break
                received += len(data)
                writer.write(data)
        finally:
            conn.close()
        reply = yield from self._reply()
        if reply[:1] != "2":
            raise ftplib.error_reply(reply)

    def _open_data(self, host: str, port: int) -> Generator[Wait, None, socket.socket]:
        conn = socket.socket(self.client.af, socket.SOCK_STREAM)
        try:
            conn.setblocking(False)
            code = conn.connect_ex((host, port))
            if code in CONNECTING:
                yield Wait(conn, True, lambda: DataChannelError(host, port,
                                                                TimeoutError("timed out")))
                code = conn.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, os.strerror(code))  # ConnectionRefusedError and the like
        except OSError as exc:
            conn.close()
            raise DataChannelError(host, port, exc) from exc
        except BaseException:
            conn.close()
            raise
        return conn


class _Flight:
    """One file on a lane."""

    def __init__(self, transport: FtpTransport, lane: Lane, item: Download) -> None:
        self.lane = lane
        self.item = item
        self.sink = CountingSink(item.destination)
        self.steps = _file(transport, lane, item, self.sink)
        self.wait: Wait | None = None
        self.deadline = 0.0


def _file(transport: FtpTransport, lane: Lane, item: Download, sink: CountingSink
          ) -> Generator[Wait, None, Downloaded]:
    """``Transport.download_checked`` for one file, on ``lane``."""
    listed = item.remote
    name = listed.name
    clock = transport.listed_clock(listed)
    before: RemoteFile | None = listed  # the listing was this session's stat on that clock
    if clock is None:
        before, clock = yield from lane.stat(transport, name)
        if version_changed(listed, before,
                           mtime_comparable=transport.stat_mtime_matches_listing):
            assert before is not None
            return Downloaded(item, 0, remote_changed(listed, before, "after it was listed"))
        when = "during the download"
    else:
        when = "since it was listed"
    if item.offset < listed.size or listed.size == 0:
        if not sendable(name):
            raise unsendable(name, "downloading")
        yield from lane.retrieve(name, item.offset, Writer(sink, item.progress))
        after, after_clock = yield from lane.stat(transport, name)
        if after_clock != clock or (after is not None and not after.mtime):
            before = None  # times on two clocks (or none) say nothing: the size still does
        if changed_during(listed, before, after):
            assert after is not None
            return Downloaded(item, sink.written, remote_changed(listed, after, when))
    return Downloaded(item, sink.written)


@dataclass(frozen=True)
class Stop:
    """What ends a batch: a NetworkError, or (``local``) a failure of a destination."""

    error: ReportsyncError
    local: bool


def _worse(first: Stop | None, then: Stop | None) -> Stop | None:
    """The stop to raise: the first, unless a destination's failure came after a network one
    (a local problem ends the source whatever the network did)."""
    if first is None or (then is not None and then.local and not first.local):
        return then
    return first


def _in_step(error: ReportsyncError) -> bool:
    """Whether the connection is in a known state after ``error``: a reply (ftplib's
    error_perm, error_temp, error_reply) or a refusal before anything was sent."""
    cause = error.__cause__
    return cause is None or isinstance(cause, ftplib.error_perm | ftplib.error_temp
                                       | ftplib.error_reply)


def run_lanes(transport: FtpTransport, items: list[Download]) -> Iterator[Downloaded]:
    """``download_many`` over up to ``LANES`` control connections of ``transport``."""
    timeout = transport.source.timeout
    lanes = _awake(transport, [Lane(client) for client in
                               transport.lane_clients(min(LANES, len(items)))])
    pending = deque(items)
    idle = deque(lanes)
    flying: dict[Lane, _Flight] = {}
    stop: Stop | None = None  # no new file; raised once the files in flight ended
    selector = selectors.DefaultSelector()
    try:
        for lane in lanes:
            lane.sock.setblocking(False)
        while True:
            ended: list[Downloaded] = []
            while idle and pending and stop is None:
                lane = idle.popleft()
                flight = _Flight(transport, lane, pending.popleft())
                flying[lane] = flight
                stop = _worse(stop, _advance(transport, flight, None, selector, flying, idle,
                                             ended, timeout))
            yield from ended
            if not flying:
                break
            ended = []
            now = time.monotonic()
            wait_for = max(0.0, min(flight.deadline for flight in flying.values()) - now)
            ready = {key.data for key, _ in selector.select(wait_for)}
            now = time.monotonic()
            for flight in list(flying.values()):
                if flight in ready or flight.deadline <= now:
                    assert flight.wait is not None
                    expired = None if flight in ready else flight.wait.expired()
                    stop = _worse(stop, _advance(transport, flight, expired, selector, flying,
                                                 idle, ended, timeout))
            yield from ended
        if stop is not None:
            raise stop.error
        if pending:  # every lane was closed on the way: what is left did not end
            raise NetworkError("the FTP connections were lost", source=transport.source_name)
    finally:
        for flight in flying.values():  # cut off mid-file (an exception, or the caller left)
            flight.steps.close()  # its data connection closed now, not when collected
            flight.lane.closed = True
            transport.lane_done(flight.lane.client, usable=False)
        for lane in lanes:
            if lane.closed:
                continue
            usable = lane in idle and not lane.buffer  # a reply nobody asked for: out of step
            if usable:
                lane.sock.settimeout(timeout)
            transport.lane_done(lane.client, usable=usable)
        selector.close()


def _awake(transport: FtpTransport, lanes: list[Lane]) -> list[Lane]:
    """The lanes to use: a further connection with something to read before anything was asked
    (the server closed it while it was idle between batches, or said so with a 421) is closed
    instead of failing the batch on its first command."""
    spares = lanes[1:]
    if not spares:
        return lanes
    with selectors.DefaultSelector() as selector:
        for lane in spares:
            selector.register(lane.sock, selectors.EVENT_READ, lane)
        gone = {key.data for key, _ in selector.select(0)}
    for lane in gone:
        log.debug("source %s: a further FTP connection was closed while idle",
                  transport.source_name)
        transport.lane_done(lane.client, usable=False)
    return [lane for lane in lanes if lane not in gone]


def _events(wait: Wait) -> int:
    return selectors.EVENT_WRITE if wait.writable else selectors.EVENT_READ


def _advance(transport: FtpTransport, flight: _Flight, expired: BaseException | None,
             selector: selectors.BaseSelector, flying: dict[Lane, _Flight], idle: deque[Lane],
             ended: list[Downloaded], timeout: float) -> Stop | None:
    """Resume ``flight`` (with ``expired`` thrown in when its wait timed out). What ends the
    batch is returned (a NetworkError, a failure of the destination: raised once the files in
    flight on the other lanes ended); an exception that is no ReportsyncError passes through."""
    lane = flight.lane
    result: Downloaded | None = None
    failure: ReportsyncError | None = None
    try:
        wait = flight.steps.throw(expired) if expired is not None else flight.steps.send(None)
    except StopIteration as done:
        result = done.value
    except BaseException as exc:
        name = flight.item.remote.name
        failure = transport.failure(exc, lane.action or f"downloading {printable(name)}", name)
        if failure is None:
            raise  # not a failure of the transfer: through as it is
    if result is None and failure is None:
        if flight.wait is None or flight.wait.sock is not wait.sock:
            if flight.wait is not None:
                selector.unregister(flight.wait.sock)
            selector.register(wait.sock, _events(wait), flight)
        elif flight.wait.writable is not wait.writable:
            selector.modify(wait.sock, _events(wait), flight)
        flight.wait = wait
        flight.deadline = time.monotonic() + timeout
        return None
    if flight.wait is not None:
        selector.unregister(flight.wait.sock)
        flight.wait = None
    del flying[lane]
    lane.action = ""
    if failure is not None and (flight.sink.failed is not None or not _in_step(failure)):
        transport.lane_done(lane.client, usable=False)  # it may be out of step: closed
        lane.closed = True
    else:
        idle.append(lane)
    if failure is None:
        assert result is not None
        ended.append(result)
        return None
    if flight.sink.failed is not None or isinstance(failure, NetworkError):
        return Stop(failure, local=flight.sink.failed is not None)
    ended.append(Downloaded(flight.item, flight.sink.written, failure))
    return None

