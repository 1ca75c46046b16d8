"""The logged-in SFTP session: listing, stat, download, delete (``SftpConnector`` opens it),
over either engine's SSH connection (``session.SshSession``).

Every library exception is turned into a ``ReportsyncError`` here: the connection lost
(``NetworkError``, retryable) or the server's refusal (``RemoteError``).
"""

from __future__ import annotations

import errno
import logging
import stat
from collections.abc import Iterable, Iterator

import paramiko

from reportsync.config import SourceConfig
from reportsync.errors import NetworkError, RemoteError, ReportsyncError, StorageError
from reportsync.fsutil import printable
from reportsync.transports.base import (
    ByteSink,
    Download,
    Downloaded,
    ProgressCallback,
    RemoteFile,
    Transport,
)
from reportsync.transports.sftp.handshake import describe
from reportsync.transports.sftp.session import SshSession
from reportsync.transports.sftp.wire import (
    ReadWindow,
    close_later,
    list_folder,
    open_for_reading,
    wire_name,
)

log = logging.getLogger(__name__)

RESET_REMEDY = (
    "A single reset usually passes: the next attempt resumes from the bytes already received. "
    "If it keeps happening, something cuts the connection actively (the server's limits, a "
    "firewall or proxy on the way), which a longer timeout does not fix: tell the provider "
    "when it happened.")

_REMOTE_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR,
                  errno.EEXIST, errno.ENOTEMPTY}


class SftpTransport(Transport):
    """A logged-in SFTP session positioned at the source's ``remote_dir``."""

    stat_mtime_matches_listing = True

    def __init__(self, source: SourceConfig, session: SshSession,
                 sftp: paramiko.SFTPClient) -> None:
        self.source = source
        self.source_name = source.name
        self.session = session
        self._sftp = sftp

    # --- Transport ---

    def list_files(self) -> list[RemoteFile]:
        try:
            entries = list_folder(self._sftp)
        except Exception as exc:
            raise self.classify(exc, f"cannot list remote_dir {self.source.remote_dir!r}",
                              path=self.source.remote_dir) from None
        files: list[RemoteFile] = []
        for name, attrs in entries:
            if attrs.st_mode is not None and stat.S_ISLNK(attrs.st_mode):
                try:
                    attrs = self._sftp.stat(wire_name(name))
                except OSError as exc:
                    if not self.session.is_active() or isinstance(
                            exc, (TimeoutError, ConnectionError)):
                        raise self.classify(exc, f"cannot follow the link {printable(name)}",
                                          path=name) from None
                    log.debug("skipping %s: link target unreachable (%s)", printable(name), exc)
                    continue
                except Exception as exc:
                    raise self.classify(exc, f"cannot follow the link {printable(name)}",
                                      path=name) from None
            if attrs.st_mode is not None and not stat.S_ISREG(attrs.st_mode):
                log.debug("skipping %s: not a regular file", printable(name))
                continue
            if attrs.st_size is None:
                log.warning("source %s: skipping %s: the server did not report its size",
                            self.source_name, printable(name))
                continue
            mtime = float(attrs.st_mtime) if attrs.st_mtime is not None else 0.0
            files.append(RemoteFile(name=name, size=int(attrs.st_size), mtime=mtime))
        log.debug("source %s: %d files in %s", self.source_name, len(files),
                  self.source.remote_dir)
        return files

    def stat(self, name: str) -> RemoteFile | None:
        try:
            attrs = self._sftp.stat(name)
        except Exception as exc:
            raise self.classify(exc, f"cannot look at {printable(name)}", path=name) from None
        if attrs.st_size is None:
            return None
        mtime = float(attrs.st_mtime) if attrs.st_mtime is not None else 0.0
        return RemoteFile(name=name, size=int(attrs.st_size), mtime=mtime)

    def download(
        self,
        name: str,
        destination: ByteSink,
        *,
        offset: int = 0,
        progress: ProgressCallback | None = None,
    ) -> int:
        written = 0
        try:
            handle = open_for_reading(self._sftp, name)
        except Exception as exc:
            raise self.classify(exc, f"cannot open {name!r} for download", path=name) from None
        reads: ReadWindow | None = None
        try:
            try:
                reads = ReadWindow(self._sftp, handle, offset,
                                   window=self.session.reads_in_flight)
            except Exception as exc:
                raise self.classify(exc, f"cannot read {name!r}", path=name) from None
            while True:
                try:
                    data = reads.next_block()
                except Exception as exc:
                    raise self.classify(exc, f"download of {name!r} failed after {written} bytes",
                                        path=name) from None
                if not data:
                    break
                self._write(destination, data, name)
                written += len(data)
                if progress is not None:
                    progress(len(data))  # the caller's exceptions pass through unchanged
        finally:
            if reads is not None:
                reads.abandon()
            self._close_file(handle)
        log.debug("source %s: downloaded %r from offset %d: %d bytes", self.source_name, name,
                  offset, written)
        return written

    def download_many(self, downloads: Iterable[Download]) -> Iterator[Downloaded]:
        """Several small files in flight at once (``pipeline.py``), the others one by one."""
        from reportsync.transports.sftp.pipeline import Pipeline

        return Pipeline(self, self._sftp).run(downloads)

    def _write(self, destination: ByteSink, data: bytes, name: str) -> None:
        try:
            destination.write(data)
        except OSError as exc:
            raise StorageError(
                f"cannot write the download of {name!r}: {exc.strerror or exc}",
                source=self.source_name, path=name,
            ) from None

    def delete(self, name: str) -> None:
        try:
            self._sftp.remove(name)
        except Exception as exc:
            raise self.classify(exc, f"cannot delete {printable(name)}", path=name) from None
        log.debug("source %s: deleted %s", self.source_name, printable(name))

    def close(self) -> None:
        try:
            self._sftp.close()
        except Exception as exc:  # close never raises
            log.debug("closing SFTP session: %s", exc)
        self.session.close()

    # --- helpers ---

    def _close_file(self, handle: bytes) -> None:
        if not self.session.is_active():
            return  # the connection is gone, and the handle with it
        try:
            close_later(self._sftp, handle)
        except Exception as exc:
            log.debug("closing remote file: %s", exc)

    def classify(self, exc: BaseException, what: str, *, path: str | None = None
               ) -> ReportsyncError:
        """Classify a failure: the connection (retryable) or the server's refusal."""
        if isinstance(exc, ReportsyncError):
            return exc.with_context(source=self.source_name, path=path)
        if isinstance(exc, ConnectionResetError) or \
                isinstance(self.session.ended_by(), ConnectionResetError):
            # said as FTP says it (transports/ftp/translate.py): a reset is not a timeout
            return NetworkError(
                f"{what}: the connection to {self.source.host}:{self.source.port} was reset (a "
                "TCP reset: cut by the server or by something on the way, not a timeout)",
                remedy=RESET_REMEDY, source=self.source_name, path=path)
        lost = not self.session.is_active()
        if (not lost and isinstance(exc, OSError)
                and not isinstance(exc, (TimeoutError, ConnectionError))
                and (exc.errno in _REMOTE_ERRNOS or exc.errno is None)):
            return RemoteError(f"{what}: {_remote_reason(exc)}", source=self.source_name,
                               path=path)
        if not lost and isinstance(exc, paramiko.SFTPError):
            return RemoteError(f"{what}: {exc}", source=self.source_name, path=path)
        if not lost and isinstance(exc, UnicodeDecodeError):
            return RemoteError(f"{what}: the server sent a name that is not UTF-8",
                               source=self.source_name, path=path)
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {self.source.timeout:g}s"
        else:
            reason = f"connection lost ({describe(exc)})"
        return NetworkError(f"{what}: {reason}", source=self.source_name, path=path)


def _remote_reason(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "no such file or folder on the server"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied by the server"
    if exc.errno == errno.ENOTDIR:
        return "not a folder"
    return exc.strerror or str(exc) or type(exc).__name__
