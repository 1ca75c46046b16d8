"""A transport to a remote folder held in memory, with faults to inject on demand.

It keeps the transport contract (``tests/test_transport_contract.py`` runs against it as against
the real servers), so fetch and retention can be tested in milliseconds; the integration tests
keep the real sshd and FTP servers. Faults are what a real server does only sometimes: a
connection cut after some bytes, a file the provider changes while it is fetched, a server that
sends more than it listed, connections refused for a while, a login refused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from reportsync.errors import NetworkError, RemoteError, ReportsyncError
from reportsync.fsutil import printable
from reportsync.transports.base import ByteSink, ProgressCallback, RemoteFile, Transport
from reportsync.units import KiB

CHUNK = 32 * KiB


@dataclass
class MemoryFile:
    data: bytes
    mtime: float
    served: bytes | None = None  # what a download sends instead of ``data``: a lying server


@dataclass
class Faults:
    """What goes wrong, set by a test before or during a run."""

    cut_after: int | None = None  # a connection is lost after sending this many file bytes
    cut_connections: set[int] | None = None  # which connections (1 = the first) are cut; None: all
    refuse_connects: int = 0  # this many connection attempts fail (a server restarting), then not
    connect_error: ReportsyncError | None = None  # every connection attempt fails with this
    on_request: Callable[[str], None] | None = None  # runs as each request arrives ("list",
    # "stat NAME", "download NAME@OFFSET", "delete NAME"): the provider rewrites a file just then,
    # or the server goes away (``drop_connections``)


@dataclass
class MemoryServer:
    """The remote folder every connection opened to it sees, and what was asked of it."""

    files: dict[str, MemoryFile] = field(default_factory=dict)
    folders: set[str] = field(default_factory=set)  # subfolders: never listed as files
    faults: Faults = field(default_factory=Faults)
    stat_mtime_matches_listing: bool = True
    connections: int = 0  # connections opened so far
    connect_attempts: int = 0  # connections asked for, opened or not
    operations: list[str] = field(default_factory=list)  # "list", "stat NAME", "download NAME@0"...

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._open: list[MemoryTransport] = []

    def put(self, name: str, data: bytes, mtime: float | None = None) -> None:
        self.files[name] = MemoryFile(data, time.time() if mtime is None else mtime)

    def connect(self, source_name: str = "memory") -> MemoryTransport:
        with self._lock:
            self.connect_attempts += 1
            faults = self.faults
            if faults.connect_error is not None:
                raise faults.connect_error
            if faults.refuse_connects > 0:
                faults.refuse_connects -= 1
                raise NetworkError("cannot connect to the memory server: connection refused")
            self.connections += 1
            number = self.connections
        cut = faults.cut_after if (faults.cut_connections is None
                                   or number in faults.cut_connections) else None
        transport = MemoryTransport(self, source_name, cut_after=cut)
        with self._lock:
            self._open.append(transport)
        return transport

    def drop_connections(self) -> None:
        """Every open connection is lost now (the server went away), also mid-download."""
        with self._lock:
            for transport in self._open:
                transport.lose()

    def record(self, operation: str) -> None:
        with self._lock:
            self.operations.append(operation)


class MemoryTransport(Transport):
    def __init__(self, server: MemoryServer, source_name: str, *, cut_after: int | None) -> None:
        self._server = server
        self.source_name = source_name
        self.stat_mtime_matches_listing = server.stat_mtime_matches_listing
        self._budget = cut_after  # file bytes this connection still carries before it is lost
        self._lost = False
        self._closed = False

    def lose(self) -> None:
        self._lost = True

    def _usable(self) -> None:
        if self._closed:
            raise NetworkError("the memory connection is closed")
        if self._lost:
            raise NetworkError("the memory connection was lost")

    def _request(self, operation: str) -> None:
        self._usable()
        self._server.record(operation)
        if self._server.faults.on_request is not None:
            self._server.faults.on_request(operation)
            self._usable()

    def _file(self, name: str, doing: str) -> MemoryFile:
        found = self._server.files.get(name)
        if found is None:
            raise RemoteError(f"cannot {doing} {printable(name)}: no such file", path=name)
        return found

    def list_files(self) -> list[RemoteFile]:
        self._request("list")
        return [RemoteFile(name, len(item.data), item.mtime)
                for name, item in list(self._server.files.items())]

    def stat(self, name: str) -> RemoteFile | None:
        self._request(f"stat {name}")
        item = self._file(name, "look at")
        return RemoteFile(name, len(item.data), item.mtime)

    def download(
        self,
        name: str,
        destination: ByteSink,
        *,
        offset: int = 0,
        progress: ProgressCallback | None = None,
    ) -> int:
        self._request(f"download {name}@{offset}")
        item = self._file(name, "open")
        data = item.served if item.served is not None else item.data
        written = 0
        for start in range(offset, len(data), CHUNK):
            if self._lost:
                break
            chunk = data[start:start + CHUNK]
            if self._budget is not None and len(chunk) >= self._budget:
                chunk, self._lost = chunk[:self._budget], True
            if chunk:
                destination.write(chunk)
                written += len(chunk)
                if self._budget is not None:
                    self._budget -= len(chunk)
                if progress is not None:
                    progress(len(chunk))
        if self._lost:
            raise NetworkError(f"connection lost while downloading {printable(name)}", path=name)
        return written

    def delete(self, name: str) -> None:
        self._request(f"delete {name}")
        self._file(name, "delete")
        del self._server.files[name]

    def close(self) -> None:
        self._closed = True
