"""SFTP requests paramiko has no public call for: the listing with raw names, and downloads
through a bounded window of READ requests (docs/fetch.md, "SFTP reads and memory")."""

from __future__ import annotations

import struct
from collections import deque
from typing import Any, Protocol, cast

import paramiko
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_CLOSE,
    CMD_DATA,
    CMD_FSTAT,
    CMD_HANDLE,
    CMD_NAME,
    CMD_OPEN,
    CMD_OPENDIR,
    CMD_READ,
    CMD_READDIR,
    CMD_STATUS,
    SFTP_FLAG_READ,
    int64,
)

FLAG_SIZE = paramiko.SFTPAttributes.FLAG_SIZE
FLAG_UIDGID = paramiko.SFTPAttributes.FLAG_UIDGID
FLAG_PERMISSIONS = paramiko.SFTPAttributes.FLAG_PERMISSIONS
FLAG_AMTIME = paramiko.SFTPAttributes.FLAG_AMTIME
FLAG_EXTENDED = paramiko.SFTPAttributes.FLAG_EXTENDED

READ_REQUEST_BYTES = 255 * 1024
"""Bytes asked for by one SFTP READ (OpenSSH's largest: 256 KiB less 1 KiB), and so the most
handed to ``destination`` per write (and per progress call): what arrived is written before a
later read can fail. A server that answers with less gets smaller requests from then on."""

MIN_READ_BYTES = 32 * 1024
"""Requests never shrink below this (the SFTP drafts ask every server to take 32 KiB reads), so
a short read at the end of a file that is still growing cannot make the rest crawl."""

READS_IN_FLIGHT = 16
"""READ requests outstanding at once unless the engine says otherwise (``SshSession.
reads_in_flight``). It bounds memory whatever the file size: at most this many replies (plus the
pieces of one short read) are ever held. See docs/fetch.md, "SFTP reads and memory"."""


def list_folder(sftp: paramiko.SFTPClient) -> list[tuple[str, paramiko.SFTPAttributes]]:
    """``listdir_attr(".")`` (the same OPENDIR/READDIR/CLOSE requests), except for the names.

    paramiko decodes every name of the listing as strict UTF-8, so one name in another encoding
    raised UnicodeDecodeError for the whole folder, and the source fetched nothing. Here each
    name is decoded with ``surrogateescape``: a name that is not UTF-8 keeps its bytes (as lone
    surrogates), fetch refuses that one name (fsutil.check_remote_name), and the rest are
    fetched. paramiko has no public call that returns the raw names, hence its internals
    (``_request``, ``_adjust_cwd``, ``SFTPAttributes._from_msg``), unchanged since paramiko 1.x.
    """
    client: Any = sftp  # the internals are not in paramiko's type stubs
    folder = client._adjust_cwd(".")
    kind, message = client._request(CMD_OPENDIR, folder)
    if kind != CMD_HANDLE:
        raise paramiko.SFTPError("Expected handle")
    handle = message.get_binary()
    entries: list[tuple[str, paramiko.SFTPAttributes]] = []
    while True:
        try:
            kind, message = client._request(CMD_READDIR, handle)
        except EOFError:  # the end of the folder
            break
        if kind != CMD_NAME:
            raise paramiko.SFTPError("Expected name response")
        entries += _name_entries(message.get_remainder())
    client._request(CMD_CLOSE, handle)
    return entries


_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_UID_GID = struct.Struct(">II")
_TIMES = struct.Struct(">II")


def _name_entries(data: bytes) -> list[tuple[str, paramiko.SFTPAttributes]]:
    """The entries of one NAME reply (after its id): what ``SFTPAttributes._from_msg`` reads for
    each, read with ``struct`` from the bytes (paramiko's ``Message`` makes a Python call per
    field: most of the listing's time at 50,000 files). A reply cut short raises struct.error."""
    entries: list[tuple[str, paramiko.SFTPAttributes]] = []
    u32, u64 = _U32.unpack_from, _U64.unpack_from
    (count,), at = u32(data, 0), 4
    for _ in range(count):
        (length,) = u32(data, at)
        raw = data[at + 4:at + 4 + length]
        at += 4 + length
        (length,) = u32(data, at)  # the "longname" (ls -l text): not used, not decoded
        at += 4 + length
        attrs = paramiko.SFTPAttributes()
        (flags,), at = u32(data, at), at + 4
        attrs._flags = flags  # type: ignore[attr-defined]  # as _from_msg sets it
        if flags & FLAG_SIZE:
            (attrs.st_size,), at = u64(data, at), at + 8
        if flags & FLAG_UIDGID:
            (attrs.st_uid, attrs.st_gid), at = _UID_GID.unpack_from(data, at), at + 8
        if flags & FLAG_PERMISSIONS:
            (attrs.st_mode,), at = u32(data, at), at + 4
        if flags & FLAG_AMTIME:
            (attrs.st_atime, attrs.st_mtime), at = _TIMES.unpack_from(data, at), at + 8
        if flags & FLAG_EXTENDED:
            (pairs,), at = u32(data, at), at + 4
            extended: Any = attrs.attr  # bytes to bytes, as paramiko 3 reads them
            for _ in range(pairs):
                (length,) = u32(data, at)
                key = data[at + 4:at + 4 + length]
                at += 4 + length
                (length,) = u32(data, at)
                extended[key] = data[at + 4:at + 4 + length]
                at += 4 + length
        name = raw.decode("utf-8", "surrogateescape")
        if name not in (".", ".."):
            entries.append((name, attrs))
    if at > len(data):  # a string ran past the end (slices do not say so themselves)
        raise struct.error("NAME reply cut short")
    return entries


def wire_name(name: str) -> bytes:
    """The bytes the server sent for ``name`` (the reverse of ``list_folder``'s decoding)."""
    return name.encode("utf-8", "surrogateescape")


class SftpRequests(Protocol):
    """The request machinery of ``paramiko.SFTPClient`` that its type stubs leave out."""

    def _async_request(self, fileobj: object, t: int, *args: object) -> int: ...
    def _read_response(self, waitfor: int | None = None) -> tuple[int | None, object]: ...
    def _convert_status(self, msg: paramiko.Message) -> None: ...
    def _adjust_cwd(self, path: str | bytes) -> bytes: ...


def requests(sftp: paramiko.SFTPClient) -> SftpRequests:
    return cast(SftpRequests, sftp)


NO_REPLY_WANTED: Any = type(None)
"""paramiko's mark for a request whose reply is read and dropped (no one waits for it)."""


def open_for_reading(sftp: paramiko.SFTPClient, name: str) -> bytes:
    """OPEN ``name`` for reading: its handle (``SFTPClient.open`` without the file object, whose
    reads and CLOSE are not the ones used here)."""
    client: Any = sftp
    kind, msg = client._request(CMD_OPEN, client._adjust_cwd(name), SFTP_FLAG_READ,
                                paramiko.SFTPAttributes())
    if kind != CMD_HANDLE:
        raise paramiko.SFTPError("Expected handle")
    return cast(bytes, msg.get_binary())


def close_later(sftp: paramiko.SFTPClient, handle: bytes) -> None:
    """CLOSE ``handle`` without waiting: the reply is read and dropped by whichever later call
    reads the next packets (the server answers in order). A refused CLOSE of a file only read
    from changes nothing: its bytes are ours already."""
    requests(sftp)._async_request(NO_REPLY_WANTED, CMD_CLOSE, handle)


def attributes(msg: paramiko.Message) -> paramiko.SFTPAttributes:
    """The file attributes of an ATTRS reply."""
    parse: Any = paramiko.SFTPAttributes
    return cast(paramiko.SFTPAttributes, parse._from_msg(msg))


class ReadWindow:
    """The bytes of one open remote file from ``start`` to its end, read through a sliding window
    of at most ``window`` READ requests and handed out in file order.

    The end is the file's size, asked for (FSTAT on the handle) together with the first READ,
    so a small file takes one round trip after its OPEN and no READ asks past the end (a last
    round trip that would only say "end of file"); without an answer the reads go on until the
    server says end of file. ``size`` is what the server said (None: it did not).

    Used instead of paramiko's ``prefetch``: that one asks for the whole file at once from a
    background thread and, when its reader catches up with that thread, stops looking at the
    replies still coming, which then pile up unread in ``SFTPFile._prefetch_data`` (the whole
    file, in memory; docs/fetch.md, "SFTP reads and memory"). Here the downloading thread sends
    every request itself, so no thread outlives the download, and no reply is kept longer than it
    takes to hand it out.

    paramiko's ``SFTPClient`` delivers the reply to each of these requests to
    ``_async_response`` (it is registered as the request's file object) whenever any caller
    reads a packet; replies may come in any order, and the ones not yet due wait in
    ``_replies``, never more than the window.
    """

    def __init__(self, sftp: paramiko.SFTPClient, handle: bytes, start: int, *,
                 window: int = READS_IN_FLIGHT) -> None:
        self._sftp = requests(sftp)
        self._handle = handle
        self._window = window
        self._next = start  # where the next request starts
        self._end: int | None = None  # None: until the server says end of file
        self._pending: deque[tuple[int, int, int]] = deque()  # (request, offset, length), in order
        self._replies: dict[int, tuple[int, paramiko.Message]] = {}
        self._request_bytes = READ_REQUEST_BYTES
        self._finished = False
        self.size: int | None = None
        # FSTAT first, one READ beside it: both leave in one write (stream.py)
        self._size_request: int | None = self._sftp._async_request(self, CMD_FSTAT, handle)
        self._pending.append((self._send(start, self._request_bytes), start,
                              self._request_bytes))
        self._next += self._request_bytes

    def next_block(self) -> bytes:
        """The next bytes of the file (at most one request's worth), or b"" at its end.

        Raises what paramiko raises: ``OSError`` for a status the server sent instead of data,
        ``SSHException``/``EOFError``/``OSError``/``TimeoutError`` for a lost connection."""
        if self._size_request is not None:
            self._learn_size(self._size_request)
        self._fill()
        if not self._pending:
            return b""
        request, offset, length = self._pending.popleft()
        while request not in self._replies:
            self._sftp._read_response()  # one packet: a reply to one of ours, or to nobody's
        kind, msg = self._replies.pop(request)
        if kind == CMD_STATUS:
            try:
                self._sftp._convert_status(msg)  # EOFError at the end, OSError for a refusal
            except EOFError:
                self.abandon()
                return b""
            raise paramiko.SFTPError("the server answered a read with no data")
        if kind != CMD_DATA:
            raise paramiko.SFTPError(f"the server answered a read with message type {kind}")
        data = msg.get_binary()
        if not data:
            self.abandon()  # what paramiko's read takes for the end of the file
            return b""
        if len(data) > length:
            raise paramiko.SFTPError(f"the server sent {len(data)} bytes for a read of {length}")
        stop = offset + length if self._end is None else min(offset + length, self._end)
        if offset + len(data) < stop:
            # a short read (the protocol allows it; some servers cap the size of a read): the
            # rest is asked for at once, before anything later, in pieces of the size the server
            # gave, and later requests are that size too
            self._request_bytes = max(min(self._request_bytes, len(data)), MIN_READ_BYTES)
            self._ask_first(offset + len(data), stop)
        elif offset + len(data) < offset + length:
            self._drop_past(offset + len(data))  # the file ends here: nothing later is asked
        return data

    def abandon(self) -> None:
        """Read no further: replies still on their way are dropped as they arrive (closing the
        file waits for them, as the server answers in order)."""
        self._finished = True
        self._pending.clear()
        self._replies.clear()

    def _learn_size(self, request: int) -> None:
        while request not in self._replies:
            self._sftp._read_response()
        kind, msg = self._replies.pop(request)
        self._size_request = None
        if kind == CMD_ATTRS:
            size = attributes(msg).st_size
            if size is not None:
                self.size = int(size)
                self._end = max(self.size, self._pending[0][1] if self._pending else self._next)
                # a file at least as long as the start: stop at its end; one shorter than the
                # start of the download has nothing to give, and the READ on its way says so

    def _drop_past(self, end: int) -> None:
        """The server said the file ends at ``end``: requests beyond it are not waited for."""
        while self._pending and self._pending[-1][1] >= end:
            self._pending.pop()
        self._end = end if self._end is None else min(self._end, end)
        self._next = min(self._next, end)

    def _async_response(self, kind: int, msg: paramiko.Message, request: int) -> None:
        # called by paramiko's SFTPClient._read_response, in whichever call reads the packet
        if not self._finished or request == self._size_request:
            self._replies[request] = (kind, msg)

    def _fill(self) -> None:
        while (not self._finished and len(self._pending) < self._window
               and (self._end is None or self._next < self._end)):
            length = self._request_bytes
            if self._end is not None:
                length = min(length, self._end - self._next)
            self._pending.append((self._send(self._next, length), self._next, length))
            self._next += length

    def _ask_first(self, start: int, stop: int) -> None:
        pieces = [(offset, min(self._request_bytes, stop - offset))
                  for offset in range(start, stop, self._request_bytes)]
        for offset, length in reversed(pieces):
            self._pending.appendleft((self._send(offset, length), offset, length))

    def _send(self, offset: int, length: int) -> int:
        return self._sftp._async_request(self, CMD_READ, self._handle, int64(offset), length)
