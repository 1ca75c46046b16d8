"""The one interface fetch, retention and doctor talk to, whatever the protocol.

A transport is opened for one source, already logged in and positioned at the source's
``remote_dir``. Names it hands out and takes are plain file names inside that folder. Library
exceptions never leave a transport: they are turned into ``ReportsyncError`` subclasses here, so
the retry policy and exit codes are decided in one place.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

ProgressCallback = Callable[[int], None]
"""Called with the number of bytes just written, after each chunk."""


class ByteSink(Protocol):
    """Where a download writes: a binary file, or fetch's hashing writer around one."""

    def write(self, data: bytes, /) -> int: ...


@dataclass(frozen=True)
class RemoteFile:
    """A regular file in the remote folder, as the listing describes it.

    ``mtime`` is seconds since the epoch, UTC. Servers differ in resolution (FTP MDTM and many SFTP
    servers give whole seconds), so fetch compares versions at whole-second precision.
    """

    name: str
    size: int
    mtime: float

    @property
    def version(self) -> tuple[int, int]:
        return (self.size, int(self.mtime))


class Transport(abc.ABC):
    """A logged-in connection to one source's remote folder."""

    source_name: str
    stat_mtime_matches_listing: bool = False
    """Whether ``stat``'s mtime is on the same clock as ``list_files``' (SFTP: one attribute;
    FTP: MDTM against MLSD/LIST, which some servers report in different time zones)."""

    @abc.abstractmethod
    def list_files(self) -> list[RemoteFile]:
        """Every regular file in the remote folder (not subfolders, not links to folders)."""

    @abc.abstractmethod
    def download(
        self,
        name: str,
        destination: ByteSink,
        *,
        offset: int = 0,
        progress: ProgressCallback | None = None,
    ) -> int:
        """Write the file's bytes from ``offset`` on to ``destination``; return how many were written.

        ``destination`` is already positioned at ``offset``. A connection lost part-way raises
        ``NetworkError`` after some bytes may have been written: the caller keeps them for a resume.
        """

    def stat(self, name: str) -> RemoteFile | None:
        """The file's current size and mtime, asked of the server now (not from the listing), or
        None if this server cannot say. Fetch compares it with the listing before and after a
        download, so a file that changes meanwhile is never archived as a mix of versions."""
        return None

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Remove the file from the server."""

    @abc.abstractmethod
    def close(self) -> None:
        """Log out and close the connection; never raises."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
