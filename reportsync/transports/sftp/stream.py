"""The byte stream under the SFTP protocol, for both engines: a paramiko SSH channel, or the
stdin/stdout pipes of an OpenSSH ``ssh -s sftp`` child (``openssh.py``).

paramiko's ``SFTPClient`` speaks the protocol over either (``SftpClient`` below reads whole packets
from the stream). Two things are done here for speed, the same for both engines:

- **requests are sent in batches**: ``send`` only queues the bytes; they leave when the client
  must wait for a reply that has not arrived yet. A download sends FSTAT and READ together, the
  small files of ``download_many`` the requests that the replies already here call for: one
  write (one SSH packet, one wake-up of the other side) instead of one per request. Nothing
  waits for an answer to a request still queued: every wait flushes first.
- **replies are read in large pieces**: the pipe is read up to 256 KiB at a time (and on Linux
  its buffer is enlarged to 1 MiB), packets are cut from that buffer.

Every wait is bounded by the source's ``timeout``: ``TimeoutError`` (what paramiko's channel
raises too), which the transport reports as "no answer within Ns".
"""

from __future__ import annotations

import logging
import os
import select
import struct
from typing import Any, Protocol, cast

import paramiko

from reportsync.fsutil import enlarge_pipe

log = logging.getLogger(__name__)

PIPE_READ_BYTES = 256 * 1024
"""Bytes asked of the pipe at once: a whole READ reply (255 KiB and its header) in one call."""

PIPE_BUFFER_BYTES = 1024 * 1024
"""The pipe's buffer where the system lets us set it (Linux): ssh then writes about 4 replies
before it must wait for us, instead of a quarter of one (the default 64 KiB)."""

MAX_PACKET_BYTES = 1 << 24
"""A longer packet is garbage, not SFTP (paramiko's own bound: no server sends 16 MiB)."""


class SftpStream(Protocol):
    """What ``SftpClient`` needs of the stream it speaks SFTP over."""

    def send(self, data: bytes) -> int: ...
    def recv(self, size: int) -> bytes: ...
    def read_exact(self, size: int) -> bytes: ...
    def flush(self) -> None: ...
    def settimeout(self, timeout: float) -> None: ...
    def get_name(self) -> str: ...
    def close(self) -> None: ...


class ChannelStream:
    """A paramiko channel (the paramiko engine), with requests sent in batches."""

    def __init__(self, channel: paramiko.Channel) -> None:
        self.channel = channel
        self._queued: list[bytes] = []

    def send(self, data: bytes) -> int:
        self._queued.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        if self._queued:
            data = b"".join(self._queued)
            self._queued.clear()
            self.channel.sendall(data)

    def recv(self, size: int) -> bytes:
        self.flush()
        return self.channel.recv(size)

    def read_exact(self, size: int) -> bytes:
        parts: list[bytes] = []
        needed = size
        while needed:
            if not self.channel.recv_ready():
                self.flush()  # about to wait: what is queued must be on its way first
            data = self.channel.recv(needed)
            if not data:
                raise EOFError("the SSH channel closed")
            parts.append(data)
            needed -= len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def settimeout(self, timeout: float) -> None:
        self.channel.settimeout(timeout)

    def get_name(self) -> str:
        return self.channel.get_name()

    def close(self) -> None:
        self._queued.clear()
        self.channel.close()


class PipeStream:
    """The pipes of an ``ssh -s sftp`` child (the openssh engine; POSIX: it waits with
    ``select``, which Windows has for sockets only)."""

    def __init__(self, reading: int, writing: int, timeout: float) -> None:
        self._reading = reading  # the child's stdout
        self._writing = writing  # the child's stdin
        self._timeout = timeout
        self._queued: list[bytes] = []
        self._buffer = b""
        self._position = 0
        self.closed = False
        self.ended = False  # ssh closed its end: the session is over, whatever its exit
        enlarge_pipe(reading, PIPE_BUFFER_BYTES)
        os.set_blocking(writing, False)  # a write that cannot go on waits in select, bounded

    def send(self, data: bytes) -> int:
        self._queued.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        if not self._queued:
            return
        data = memoryview(b"".join(self._queued))
        self._queued.clear()
        while data:
            try:
                written = os.write(self._writing, data)
            except BlockingIOError:
                self._wait(write=True)
                continue
            except BrokenPipeError:
                self.ended = True
                raise EOFError("ssh closed its input") from None
            data = data[written:]

    def recv(self, size: int) -> bytes:
        if self._position == len(self._buffer):
            self._fill(size)
            if not self._buffer:
                return b""
        end = min(self._position + size, len(self._buffer))
        data = self._buffer[self._position:end]
        self._position = end
        return data

    def read_exact(self, size: int) -> bytes:
        available = len(self._buffer) - self._position
        if available >= size:
            start = self._position
            self._position += size
            return self._buffer[start:self._position]
        parts = [self._buffer[self._position:]] if available else []
        needed = size - available
        while needed:
            self._fill(needed)
            if not self._buffer:
                raise EOFError("ssh closed the SFTP session")
            taken = min(needed, len(self._buffer))
            parts.append(self._buffer if taken == len(self._buffer) else self._buffer[:taken])
            self._position = taken
            needed -= taken
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _fill(self, wanted: int) -> None:
        """Replace the (used up) buffer with what the pipe has now; b"" at its end."""
        self.flush()  # about to wait: what is queued must be on its way first
        self._wait(write=False)
        self._buffer = os.read(self._reading, max(wanted, PIPE_READ_BYTES))
        self._position = 0
        if not self._buffer:
            self.ended = True

    def _wait(self, *, write: bool) -> None:
        fd = self._writing if write else self._reading
        ready = select.select([], [fd], [], self._timeout) if write else \
            select.select([fd], [], [], self._timeout)
        if not any(ready):
            raise TimeoutError(f"no answer within {self._timeout:g}s")

    def settimeout(self, timeout: float) -> None:
        self._timeout = timeout

    def get_name(self) -> str:
        return "ssh"

    def close(self) -> None:
        self.closed = True
        self._queued.clear()


class SftpClient(paramiko.SFTPClient):
    """paramiko's SFTP client over an ``SftpStream``: each packet is read with two
    ``read_exact`` calls (paramiko's own reader concatenates ``recv`` pieces byte string by byte
    string, then copies the body once more)."""

    sock: Any

    def __init__(self, stream: SftpStream) -> None:
        super().__init__(cast(paramiko.Channel, stream))

    def _read_packet(self) -> tuple[int, bytes]:
        head = self.sock.read_exact(4)
        (size,) = struct.unpack(">I", head)
        if size == 0 or size >= MAX_PACKET_BYTES:
            raise paramiko.SFTPError("Garbage packet received")
        data = self.sock.read_exact(size)
        return data[0], data[1:]
