"""The logged-in FTP/FTPS session: listing, stat, download, delete (``FtpConnector`` opens it).

* Listing: ``MLSD`` where the server has it; otherwise ``LIST`` (Unix and Windows/IIS styles) or
  ``NLST``, with ``SIZE`` and ``MDTM`` per file for exact sizes and UTC times. Which one works is
  remembered for the session.
* A transfer that breaks off leaves the control connection in an unknown state: the connection is
  dropped (``NetworkError``) and the next call logs in again, instead of hanging on a stale reply.
"""

from __future__ import annotations

import ftplib
import logging
import re
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from reportsync.config import SourceConfig
from reportsync.errors import NetworkError, RemoteError
from reportsync.fsutil import printable
from reportsync.transports.base import ByteSink, ProgressCallback, RemoteFile, Transport
from reportsync.transports.ftp.client import (
    Client,
    DataTimeout,
    LocalWriteError,
    reply_code,
    sendable,
    unsendable,
)
from reportsync.transports.ftp.listing import ListEntry, parse_ftp_time, parse_list, parse_mlsd_line
from reportsync.transports.ftp.translate import ErrorMap

log = logging.getLogger(__name__)

BLOCKSIZE = 256 * 1024
"""Bytes asked of the data socket per read during a download."""

UNSUPPORTED_REPLY_CODES = frozenset({"500", "502", "504"})
"""Replies meaning "this server does not implement that command"."""

QUIT_TIMEOUT = 5.0

Reopen = Callable[[bool | None], Client]
"""Logs in again (the connection steps once more) with what EPSV taught; returns the client."""


class FtpTransport(Transport):
    """A logged-in FTP/FTPS session positioned at the source's ``remote_dir``."""

    stat_mtime_matches_listing = False

    def __init__(self, source: SourceConfig, client: Client, errors: ErrorMap,
                 reopen: Reopen) -> None:
        self.source = source
        self.source_name = source.name
        self._client: Client | None = client
        self._closed = False
        self._errors = errors
        self._guard = errors.guard
        self._reopen = reopen
        self._mlsd: bool | None = None  # None: not tried yet
        self._use_epsv: bool | None = client.use_epsv
        self.data_command: str | None = None  # "EPSV", "PASV" or "PORT", once a transfer ran
        self.pasv_named_host: str | None = None  # the address a PASV reply named, if one did

    # -- connection ---------------------------------------------------------------------------

    def _connected(self) -> Client:
        if self._client is not None:
            return self._client
        if self._closed:
            raise NetworkError("the FTP connection was closed", source=self.source_name)
        log.info("source %s: reconnecting after an interrupted transfer", self.source_name)
        self._client = self._reopen(self._use_epsv)
        return self._client

    def _abandon(self) -> None:
        """Drop a control connection whose state is unknown; the next call logs in again."""
        client = self._client
        self._client = None
        if client is not None:
            self._remember(client)
            with suppress(OSError):
                client.close()

    def _remember(self, client: Client) -> None:
        self._use_epsv = client.use_epsv
        self.data_command = client.data_command or self.data_command
        self.pasv_named_host = client.pasv_named_host or self.pasv_named_host

    # -- one operation --------------------------------------------------------------------------

    @contextmanager
    def _session(self, action: str, path: str | None = None, *, phase: str = "session",
                 ) -> Iterator[Client]:
        """A connected client for one operation; drop the connection if it may be out of step.

        ftplib's replies (error_perm, error_temp, error_reply) leave the control connection in a
        known state; anything else (timeouts, lost sockets, an interrupted transfer, a local write
        failure mid-transfer) may leave a reply pending, so the connection is abandoned.
        """
        client = self._connected()
        with self._guard(action, path, phase=phase):
            try:
                yield client
            except (ftplib.error_perm, ftplib.error_temp, ftplib.error_reply):
                self._remember(client)
                raise
            except BaseException:
                self._abandon()
                raise
            self._remember(client)

    def _retrieve(self, client: Client, command: str, sink: Callable[[bytes], None],
                  rest: int | None = None) -> None:
        """Run a data-channel command, feeding what arrives to ``sink``; raise on a bad ending."""
        conn, _ = client.ntransfercmd(command, rest)
        with conn:
            while True:
                try:
                    data = conn.recv(BLOCKSIZE)
                except TimeoutError as exc:
                    raise DataTimeout() from exc
                if not data:
                    break
                sink(data)
            if isinstance(conn, ssl.SSLSocket):
                try:
                    conn.unwrap()
                except (ssl.SSLError, OSError) as exc:
                    log.debug("TLS shutdown of the data connection: %s", exc)
        client.voidresp()

    def _lines(self, client: Client, command: str) -> list[str]:
        chunks: list[bytes] = []
        self._retrieve(client, command, chunks.append)
        # surrogateescape, not "replace": a name that is not UTF-8 keeps its bytes (as lone
        # surrogates), so fetch refuses exactly that name instead of asking for a mangled one
        text = b"".join(chunks).decode(client.encoding, errors="surrogateescape")
        return [line.rstrip("\r") for line in text.split("\n") if line.strip("\r")]

    # -- Transport ------------------------------------------------------------------------------

    def list_files(self) -> list[RemoteFile]:
        action = f"listing {self.source.remote_dir!r}"
        if self._mlsd is not False:
            try:
                with self._session(action) as client:
                    lines = self._lines(client, "MLSD")
            except RemoteError as exc:
                if not isinstance(exc.__cause__, ftplib.error_perm) or \
                        reply_code(exc.__cause__) not in UNSUPPORTED_REPLY_CODES:
                    raise
                log.debug("source %s: no MLSD (%s); listing with LIST", self.source_name,
                          exc.__cause__)
                self._mlsd = False
            else:
                self._mlsd = True
                entries = [entry for entry in map(parse_mlsd_line, lines) if entry is not None]
                return self._complete(entries)

        with self._session(action) as client:
            lines = self._lines(client, "LIST")
        parsed = parse_list(lines)
        if parsed is not None:
            return self._complete(parsed, authoritative_size=False)
        log.debug("source %s: LIST output not understood; listing with NLST",
                  self.source_name)
        return self._list_nlst()

    def _list_nlst(self) -> list[RemoteFile]:
        action = f"listing {self.source.remote_dir!r}"
        try:
            with self._session(action) as client:
                names = self._lines(client, "NLST")
        except (RemoteError, NetworkError) as exc:
            # An empty folder: some servers answer NLST with 450/550 "No files found".
            cause = exc.__cause__
            if isinstance(cause, ftplib.error_perm | ftplib.error_temp) and \
                    reply_code(cause) in ("450", "550") and re.search(r"no files|not found|empty",
                                                                       str(cause), re.I):
                return []
            raise
        result: list[RemoteFile] = []
        for raw in names:
            # Names are taken as the server sends them (only a leading "./" is dropped): a name
            # with a path in it is refused by fetch and reported, never silently shortened.
            name = raw[2:] if raw.startswith("./") else raw
            if name in ("", ".", ".."):
                continue
            if not sendable(name):  # cannot be asked about: listed so fetch refuses it by name
                result.append(RemoteFile(name=name, size=0, mtime=0.0))
                continue
            size = self._size(name)
            if size is None:  # SIZE fails on folders
                continue
            mtime = self._mdtm(name)
            if mtime is None:
                log.warning("source %s: the server gives no time for %s; changes of the same "
                            "size cannot be seen", self.source_name, printable(name))
                mtime = 0.0
            result.append(RemoteFile(name=name, size=size, mtime=mtime))
        return result

    def _complete(self, entries: list[ListEntry], *, authoritative_size: bool = True,
                  ) -> list[RemoteFile]:
        """RemoteFiles for the regular files; SIZE/MDTM where the listing is vague or silent."""
        result: list[RemoteFile] = []
        for entry in entries:
            if entry.kind != "file":
                continue
            size = entry.size if authoritative_size else None
            if size is None:
                size = self._size(entry.name)
                if size is None:
                    size = entry.size
            if size is None:
                log.warning("source %s: no size for %s; skipped", self.source_name,
                            printable(entry.name))
                continue
            mtime = entry.mtime if authoritative_size else None
            if mtime is None:
                mtime = self._mdtm(entry.name)  # MDTM is exact, LIST has minutes at best
                if mtime is None:
                    mtime = entry.mtime
            if mtime is None:
                mtime = 0.0
            result.append(RemoteFile(name=entry.name, size=size, mtime=mtime))
        return result

    def _size(self, name: str) -> int | None:
        if not sendable(name):
            return None
        try:
            with self._session(f"SIZE of {printable(name)}", name) as client:
                reply = client.sendcmd(f"SIZE {name}")
        except RemoteError:
            return None
        if reply[:3] != "213" or not reply[3:].strip().isdigit():
            return None
        return int(reply[3:].strip())

    def _mdtm(self, name: str) -> float | None:
        if not sendable(name):
            return None
        try:
            with self._session(f"MDTM of {printable(name)}", name) as client:
                reply = client.sendcmd(f"MDTM {name}")
        except RemoteError:
            return None
        if reply[:3] != "213":
            return None
        return parse_ftp_time(reply[3:])

    def stat(self, name: str) -> RemoteFile | None:
        size = self._size(name)
        if size is None:
            return None
        mtime = self._mdtm(name)
        return RemoteFile(name=name, size=size, mtime=mtime if mtime is not None else 0.0)

    def download(
        self,
        name: str,
        destination: ByteSink,
        *,
        offset: int = 0,
        progress: ProgressCallback | None = None,
    ) -> int:
        written = 0

        def sink(chunk: bytes) -> None:
            nonlocal written
            try:
                destination.write(chunk)
            except OSError as exc:
                raise LocalWriteError(exc) from exc
            written += len(chunk)
            if progress is not None:
                progress(len(chunk))

        if not sendable(name):
            raise unsendable(name, "downloading").with_context(source=self.source_name, path=name)
        with self._session(f"downloading {printable(name)}", name) as client:
            self._retrieve(client, f"RETR {name}", sink, rest=offset or None)
        return written

    def delete(self, name: str) -> None:
        if not sendable(name):
            raise unsendable(name, "deleting").with_context(source=self.source_name, path=name)
        with self._session(f"deleting {printable(name)}", name) as client:
            client.delete(name)
        log.debug("source %s: deleted %s on the server", self.source_name, printable(name))

    def close(self) -> None:
        self._closed = True
        client = self._client
        self._client = None
        if client is None:
            return
        self._remember(client)
        try:
            if client.sock is not None:
                client.sock.settimeout(min(QUIT_TIMEOUT, self.source.timeout))
            client.quit()
        except Exception as exc:  # QUIT is a courtesy; the socket is closed either way
            log.debug("source %s: QUIT failed: %s", self.source_name, exc)
        finally:
            with suppress(Exception):  # close() never raises past here
                client.close()
