"""``download_many`` over SFTP: many small files in flight on one connection.

One small file alone costs round trips, not bytes: fetch's ``stat``, then OPEN, FSTAT, READ,
CLOSE, and ``stat`` again, each waiting for the one before. Here each file takes two round trips
that overlap with those of up to ``FILES_IN_FLIGHT`` other files:

1. OPEN;
2. when its handle comes back: READ (the rest of the file, one request) and FSTAT on the handle,
   sent together (``stream.py`` sends queued requests in one write);
3. when both are answered: CLOSE, not waited for (``wire.close_later``).

**The version check** (``Transport.download_many``): the FSTAT is answered after the READ (an
SFTP server answers in order; one that does not is asked again once the READ is answered), so it
gives the size and mtime of the very file the bytes came from, after they were read. It must be
the listed version (``base.version_changed``): a file that is another version by then, or was
rewritten while it was read, ends in ``RemoteChangedError``; a file replaced (renamed over) after
the OPEN was read whole from the old version, which is the one listed. This is the guarantee of
``stat`` before and ``stat`` after, with one request instead of two round trips.

A file whose rest does not fit in one READ goes the way of the default (``download_checked``:
``stat``, ``download`` through its read window, ``stat``), after the small files before it ended.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import paramiko
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_DATA,
    CMD_FSTAT,
    CMD_HANDLE,
    CMD_OPEN,
    CMD_READ,
    CMD_STATUS,
    SFTP_FLAG_READ,
    int64,
)

from reportsync.errors import NetworkError, RemoteError, ReportsyncError
from reportsync.transports.base import (
    Download,
    Downloaded,
    RemoteFile,
    remote_changed,
    version_changed,
)
from reportsync.transports.sftp.wire import READ_REQUEST_BYTES, attributes, close_later, requests

if TYPE_CHECKING:
    from reportsync.transports.sftp.transport import SftpTransport

log = logging.getLogger(__name__)

FILES_IN_FLIGHT = 32
"""Files opened and not yet done at once. Enough to hide the round trip behind other files'
replies (measured: 16 and 64 are within noise of 32 on loopback); each holds one handle on the
server (OpenSSH allows 512 per session) and none of its bytes here longer than one write."""

SMALL_FILE_BYTES = READ_REQUEST_BYTES
"""A file whose rest is at most this long is read with one READ (a server that answers with less
is asked for the rest); a longer one gets its own read window."""


@dataclass(eq=False)
class _Flight:
    """One file on its way."""

    item: Download
    position: int  # where its next byte goes (offset + written)
    written: int = 0
    handle: bytes | None = None
    open_request: int | None = None
    read_request: int | None = None
    read_length: int = 0
    stat_request: int | None = None
    at_end: bool = False  # the server said end of file
    done: bool = False

    @property
    def name(self) -> str:
        return self.item.remote.name

    @property
    def wants_bytes(self) -> bool:
        return self.position < self.item.remote.size and not self.at_end


class Pipeline:
    """Runs one ``download_many`` call; registered as the owner of every request it sends, so
    paramiko's reader hands their replies to ``_async_response``."""

    def __init__(self, transport: SftpTransport, sftp: paramiko.SFTPClient) -> None:
        self._transport = transport
        self._raw = sftp
        self._sftp = requests(sftp)
        self._requests: dict[int, _Flight] = {}
        self._replies: deque[tuple[int, int, paramiko.Message]] = deque()
        self._flying: list[_Flight] = []
        self._finished = False

    def run(self, downloads: Iterable[Download]) -> Iterator[Downloaded]:
        upcoming = iter(downloads)
        following: Download | None = next(upcoming, None)
        try:
            while True:
                while following is not None and len(self._flying) < FILES_IN_FLIGHT:
                    if following.remote.size - following.offset > SMALL_FILE_BYTES:
                        if self._flying:
                            break  # the small files before it end first
                        yield self._transport.download_checked(following)
                    else:
                        refused = self._start(following)
                        if refused is not None:
                            yield refused
                    following = next(upcoming, None)
                if not self._flying:
                    if following is None:
                        return
                    continue
                self._read_reply()
                while self._replies:
                    ended = self._on_reply(*self._replies.popleft())
                    if ended is not None:
                        yield ended
        finally:
            self._finished = True
            for flight in self._flying:
                if flight.handle is not None:
                    self._close(flight)

    # --- requests ---

    def _start(self, item: Download) -> Downloaded | None:
        flight = _Flight(item, position=item.offset)
        try:
            path = self._sftp._adjust_cwd(flight.name)
            flight.open_request = self._send(flight, CMD_OPEN, path, SFTP_FLAG_READ,
                                             paramiko.SFTPAttributes())
        except Exception as exc:
            return self._fail(flight, self._transport.classify(
                exc, f"cannot open {flight.name!r} for download", path=flight.name))
        self._flying.append(flight)
        return None

    def _ask_rest(self, flight: _Flight) -> None:
        """The READ of what is still missing (if anything), and the FSTAT after it."""
        assert flight.handle is not None
        if flight.wants_bytes:
            flight.read_length = flight.item.remote.size - flight.position
            flight.read_request = self._send(flight, CMD_READ, flight.handle,
                                             int64(flight.position), flight.read_length)
        flight.stat_request = self._send(flight, CMD_FSTAT, flight.handle)

    def _send(self, flight: _Flight, kind: int, *args: object) -> int:
        request = self._sftp._async_request(self, kind, *args)
        self._requests[request] = flight
        return request

    def _close(self, flight: _Flight) -> None:
        handle, flight.handle = flight.handle, None
        if handle is not None and self._transport.session.is_active():
            try:
                close_later(self._raw, handle)
            except Exception as exc:
                log.debug("closing remote file: %s", exc)

    # --- replies ---

    def _async_response(self, kind: int, msg: paramiko.Message, request: int) -> None:
        # called by paramiko's SFTPClient._read_response, in whichever call reads the packet
        if not self._finished:
            self._replies.append((request, kind, msg))
        elif kind == CMD_HANDLE:  # a file opened after the batch ended: closed, not left open
            close_later(self._raw, msg.get_binary())

    def _read_reply(self) -> None:
        try:
            self._sftp._read_response()
        except Exception as exc:
            error = self._transport.classify(
                exc, f"downloading {len(self._flying)} file(s) failed")
            if not isinstance(error, NetworkError):  # the session cannot go on after this
                error = NetworkError(error.message, source=error.source)
            raise error from None

    def _on_reply(self, request: int, kind: int, msg: paramiko.Message) -> Downloaded | None:
        flight = self._requests.pop(request, None)
        if flight is None or flight.done:
            return None
        if request == flight.open_request:
            return self._opened(flight, kind, msg)
        if request == flight.read_request:
            return self._read(flight, kind, msg)
        if request == flight.stat_request:
            return self._stated(flight, kind, msg)
        return None  # an FSTAT overtaken by a short read's own: only the last one counts

    def _opened(self, flight: _Flight, kind: int, msg: paramiko.Message) -> Downloaded | None:
        flight.open_request = None
        if kind == CMD_HANDLE:
            flight.handle = msg.get_binary()
            self._ask_rest(flight)
            return None
        return self._fail(flight, self._refusal(
            flight, kind, msg, f"cannot open {flight.name!r} for download"))

    def _read(self, flight: _Flight, kind: int, msg: paramiko.Message) -> Downloaded | None:
        flight.read_request = None
        what = f"download of {flight.name!r} failed after {flight.written} bytes"
        if kind == CMD_DATA:
            data = msg.get_binary()
            if len(data) > flight.read_length:
                return self._fail(flight, RemoteError(
                    f"{what}: the server sent {len(data)} bytes for a read of "
                    f"{flight.read_length}", source=self._transport.source_name,
                    path=flight.name))
            if data:
                self._transport._write(flight.item.destination, data, flight.name)
                flight.written += len(data)
                flight.position += len(data)
                if flight.item.progress is not None:
                    flight.item.progress(len(data))  # the caller's exceptions pass through
            else:
                flight.at_end = True
        elif kind == CMD_STATUS and self._is_end(msg):
            flight.at_end = True
        else:
            return self._fail(flight, self._refusal(flight, kind, msg, what))
        if flight.wants_bytes:
            self._ask_rest(flight)  # a short read: the rest, and a new FSTAT after it
        elif flight.stat_request is None:
            # the FSTAT was answered before the READ: it must describe the file after the read
            assert flight.handle is not None
            flight.stat_request = self._send(flight, CMD_FSTAT, flight.handle)
        return None

    def _stated(self, flight: _Flight, kind: int, msg: paramiko.Message) -> Downloaded | None:
        flight.stat_request = None
        if flight.read_request is not None:
            return None  # answered before the READ: asked again once the READ is (``_read``)
        now: RemoteFile | None = None
        if kind == CMD_ATTRS:
            attrs = attributes(msg)
            if attrs.st_size is not None:
                mtime = float(attrs.st_mtime) if attrs.st_mtime is not None else 0.0
                now = RemoteFile(flight.name, int(attrs.st_size), mtime)
        # else the server cannot say (as ``stat`` returning None): no evidence of a change
        listed = flight.item.remote
        error = None
        if version_changed(listed, now, mtime_comparable=True):
            assert now is not None
            error = remote_changed(listed, now, "since it was listed")
        return self._end(flight, error)

    def _is_end(self, msg: paramiko.Message) -> bool:
        try:
            self._sftp._convert_status(msg)
        except EOFError:
            return True
        except OSError:
            return False
        return True  # "OK" instead of data: nothing more to read

    def _refusal(self, flight: _Flight, kind: int, msg: paramiko.Message, what: str
                 ) -> ReportsyncError:
        if kind == CMD_STATUS:
            try:
                self._sftp._convert_status(msg)
            except (EOFError, OSError) as exc:
                return self._transport.classify(exc, what, path=flight.name)
        return RemoteError(f"{what}: the server answered with message type {kind}",
                           source=self._transport.source_name, path=flight.name)

    def _fail(self, flight: _Flight, error: ReportsyncError) -> Downloaded:
        if isinstance(error, NetworkError):
            raise error
        return self._end(flight, error)

    def _end(self, flight: _Flight, error: ReportsyncError | None) -> Downloaded:
        flight.done = True
        if flight in self._flying:
            self._flying.remove(flight)
        self._close(flight)
        return Downloaded(flight.item, flight.written, error)
