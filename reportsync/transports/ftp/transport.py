"""The logged-in FTP/FTPS session: listing, stat, download, delete (``FtpConnector`` opens it).

* Listing: ``MLSD`` where the server has it (its facts are exact: no question per file);
  otherwise ``LIST`` (Unix and Windows/IIS styles) with ``MDTM`` for the files whose exact time
  the caller's record does not give (``recall.py``), or ``NLST`` with ``SIZE`` and ``MDTM`` per
  file. What the server has is read from ``FEAT`` or found out once and remembered.
* ``stat`` is one ``MLST`` where the server has it, else ``SIZE`` and ``MDTM``.
* A transfer that breaks off leaves the control connection in an unknown state: the connection is
  dropped (``NetworkError``) and the next call logs in again, instead of hanging on a stale reply.
"""

from __future__ import annotations

import ftplib
import logging
import re
import ssl
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager, suppress

from reportsync.config import SourceConfig
from reportsync.errors import NetworkError, RemoteError, ReportsyncError, TooManyConnectionsError
from reportsync.fsutil import printable
from reportsync.transports.base import (
    ByteSink,
    Download,
    Downloaded,
    KnownVersions,
    ProgressCallback,
    RemoteFile,
    Transport,
)
from reportsync.transports.ftp.client import (
    Client,
    DataReset,
    DataTimeout,
    Writer,
    drive,
    reply_code,
    sendable,
    unsendable,
)
from reportsync.transports.ftp.lanes import run_lanes
from reportsync.transports.ftp.listing import (
    ListEntry,
    mlst_facts,
    parse_list,
    parse_mlsd_line,
    size_of,
    time_of,
)
from reportsync.transports.ftp.recall import exact_times
from reportsync.transports.ftp.translate import ErrorMap

log = logging.getLogger(__name__)

BLOCKSIZE = 256 * 1024
"""Bytes asked of the data socket per read during a download."""

UNSUPPORTED_REPLY_CODES = frozenset({"500", "502", "504"})
"""Replies meaning "this server does not implement that command"."""

MLSD_REFUSED_CODES = UNSUPPORTED_REPLY_CODES | {"550"}
"""Replies to MLSD after which LIST is tried: not implemented, or 550 (servers that have MLSD
switched off or denied say so; a folder that cannot be listed at all fails LIST as well)."""

QUIT_TIMEOUT = 5.0

Reopen = Callable[[bool | None], Client]
"""Logs in again (the connection steps once more) with what EPSV taught; returns the client."""

Question = tuple[str, str, str]
"""A question of ``FtpTransport.stat_plan``: (command, file name, the reply code expected)."""


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
        self.failure = errors.failure  # what the lanes translate their failures with
        self._reopen = reopen
        # What the server has: FEAT's word where it answered (MLST in FEAT means MLSD too, RFC
        # 3659), else found out by trying; a command it does not implement is not sent again.
        features = client.features
        self._mlsd: bool | None = None  # None: not tried yet
        if features is not None and not {"MLST", "MLSD"} & features:
            self._mlsd = False
        self._unsupported: dict[str, bool] = {"MLST": client.offers("MLST") is False}
        self._use_epsv: bool | None = client.use_epsv
        self.data_command: str | None = None  # "EPSV", "PASV" or "PORT", once a transfer ran
        self.pasv_named_host: str | None = None  # the address a PASV reply named, if one did
        self._spares: list[Client] = []  # the lanes' further control connections
        # name -> (size, whole-second mtime, the command that said so) of the files whose facts
        # the latest listing took from the server's own answer in this session (MLSD, MDTM):
        # the lanes take them for the stat before a transfer (``listed_clock``)
        self._answered: dict[str, tuple[int, int, str]] = {}
        self._spares_capped = False  # the server refused one more: no further one is asked

    # -- connection ---------------------------------------------------------------------------

    def _connected(self) -> Client:
        if self._client is not None:
            return self._client
        if self._closed:
            raise NetworkError("the FTP connection was closed", source=self.source_name)
        log.info("source %s: reconnecting after an interrupted transfer", self.source_name)
        self._close_spares()  # a server's session limit must have room for the session's own
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
        received = 0
        with conn:
            while True:
                try:
                    data = conn.recv(BLOCKSIZE)
                except TimeoutError as exc:
                    raise DataTimeout() from exc
                except ConnectionResetError as exc:
                    raise DataReset(received) from exc
                if not data:
                    break
                received += len(data)
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
        return self.list_files_knowing(())

    def list_files_knowing(self, known: KnownVersions) -> list[RemoteFile]:
        action = f"listing {self.source.remote_dir!r}"
        self._answered = {}
        if self._mlsd is not False:
            try:
                with self._session(action) as client:
                    lines = self._lines(client, "MLSD")
            except RemoteError as exc:
                if not isinstance(exc.__cause__, ftplib.error_perm) or \
                        reply_code(exc.__cause__) not in MLSD_REFUSED_CODES:
                    raise
                # A 550 may also mean the folder cannot be listed at all: then LIST fails too
                # and says so; MLSD counts as missing only once LIST has worked.
                log.debug("source %s: no MLSD (%s); listing with LIST", self.source_name,
                          exc.__cause__)
            else:
                self._mlsd = True
                entries = [entry for entry in map(parse_mlsd_line, lines) if entry is not None]
                return self._complete(entries)

        with self._session(action) as client:
            lines = self._lines(client, "LIST")
        self._mlsd = False
        parsed = parse_list(lines)
        if parsed is not None:
            return self._from_list(parsed, known)
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
            else:
                self._answered[name] = (size, int(mtime), "MDTM")
            result.append(RemoteFile(name=name, size=size, mtime=mtime))
        return result

    def _complete(self, entries: list[ListEntry]) -> list[RemoteFile]:
        """RemoteFiles for MLSD's regular files: its facts are exact (sizes in bytes, times in
        UTC to the second), so SIZE and MDTM are asked only where a fact is missing."""
        result: list[RemoteFile] = []
        for entry in entries:
            if entry.kind != "file":
                continue
            size = entry.size if entry.size is not None else self._size(entry.name)
            if size is None:
                log.warning("source %s: no size for %s; skipped", self.source_name,
                            printable(entry.name))
                continue
            if entry.size is not None and entry.mtime is not None:
                self._answered[entry.name] = (entry.size, int(entry.mtime), "MLST")
            mtime = entry.mtime if entry.mtime is not None else self._mdtm(entry.name)
            result.append(RemoteFile(name=entry.name, size=size,
                                     mtime=mtime if mtime is not None else 0.0))
        return result

    def _from_list(self, entries: list[ListEntry], known: KnownVersions) -> list[RemoteFile]:
        """RemoteFiles for LIST's regular files. LIST's sizes are bytes, as SIZE's are in binary
        mode (a lie is caught by the transfer's byte count); its times are minutes in the
        server's zone, so each file's exact time is MDTM's, or the recorded one the listing
        agrees with (``recall.exact_times`` argues when that is exact)."""
        files = [entry for entry in entries if entry.kind == "file" and entry.size is not None]
        asked: dict[str, float | None] = {}

        def mdtm(name: str) -> float | None:
            asked[name] = answer = self._mdtm(name)
            return answer

        exact = exact_times(files, known, mdtm)
        result = []
        for entry in files:
            assert entry.size is not None
            mtime = exact.get(entry.name)
            if mtime is None:
                mtime = entry.mtime if entry.mtime is not None else 0.0
            elif asked.get(entry.name) == mtime:  # the server's answer now, not the record's
                self._answered[entry.name] = (entry.size, int(mtime), "MDTM")
            result.append(RemoteFile(name=entry.name, size=entry.size, mtime=mtime))
        return result

    def listed_clock(self, listed: RemoteFile) -> str | None:
        """The command (``MLST`` or ``MDTM``) whose answer in this session gave ``listed``'s size
        and mtime, if ``stat`` asks that very command now; else None.

        Then the listing was itself a ``stat`` on the clock of the one after the transfer, and
        the lanes compare that one with the listing instead of asking the server once more
        before the transfer: a change since the listing shows in the size or the mtime (a
        change the stat before would have missed too, where the listing's clock is another:
        the same size, a new time). A time recalled from the ledger (``recall.py``) or taken
        from LIST is no such answer: those files are asked before their transfer, as always."""
        facts = self._answered.get(listed.name)
        if facts is None or facts[0] != listed.size or facts[1] != int(listed.mtime):
            return None
        clock = "MDTM" if self._unsupported.get("MLST") else "MLST"
        return clock if facts[2] == clock else None

    def _ask(self, command: str, name: str, expect: str = "213") -> str | None:
        """``command name``'s reply if it has the code ``expect``, else None (refused); a server
        that does not implement the command is not asked again this session."""
        if not self.askable(command, name):
            return None
        try:
            with self._session(f"{command} of {printable(name)}", name) as client:
                reply = client.sendcmd(f"{command} {name}")
        except RemoteError as exc:
            if isinstance(exc.__cause__, ftplib.error_perm):
                self.refused(command, exc.__cause__)
            return None
        return reply if reply[:3] == expect else None

    def askable(self, command: str, name: str) -> bool:
        """Whether ``command name`` may be sent: the name fits in a command, and the server has
        not said it lacks the command."""
        return sendable(name) and not self._unsupported.get(command)

    def refused(self, command: str, exc: ftplib.error_perm) -> None:
        """Remember a server that does not implement ``command`` (not asked again)."""
        if reply_code(exc) in UNSUPPORTED_REPLY_CODES:
            log.debug("source %s: the server has no %s (%s)", self.source_name, command, exc)
            self._unsupported[command] = True

    def _size(self, name: str) -> int | None:
        return size_of(self._ask("SIZE", name))

    def _mdtm(self, name: str) -> float | None:
        return time_of(self._ask("MDTM", name))

    def stat(self, name: str) -> RemoteFile | None:
        return drive(self.stat_plan(name), lambda question: self._ask(*question))

    def stat_plan(self, name: str) -> Generator[Question, str | None, RemoteFile | None]:
        """``stat`` as questions (command, name, expected code), each sent the reply with that
        code or None: the blocking ``stat`` and the lanes ask the same way."""
        if not self._unsupported.get("MLST"):  # one round trip where SIZE and MDTM are two
            facts = mlst_facts((yield ("MLST", name, "250")))
            if isinstance(facts, ListEntry):
                if facts.kind != "file":
                    return None  # a folder or a link now
                if facts.size is not None and facts.mtime is not None:
                    return RemoteFile(name=name, size=facts.size, mtime=facts.mtime)
            elif facts is False and not self._unsupported.get("MLST"):
                return None  # MLST works and refused: the file is gone
            # facts missing or unreadable, or no MLST after all: SIZE and MDTM say it
        size = size_of((yield ("SIZE", name, "213")))
        if size is None:
            return None
        mtime = time_of((yield ("MDTM", name, "213")))
        return RemoteFile(name=name, size=size, mtime=mtime if mtime is not None else 0.0)

    def download(
        self,
        name: str,
        destination: ByteSink,
        *,
        offset: int = 0,
        progress: ProgressCallback | None = None,
    ) -> int:
        if not sendable(name):
            raise unsendable(name, "downloading").with_context(source=self.source_name, path=name)
        writer = Writer(destination, progress)
        with self._session(f"downloading {printable(name)}", name) as client:
            self._retrieve(client, f"RETR {name}", writer.write, rest=offset or None)
        return writer.written

    def download_many(self, downloads: Iterable[Download]) -> Iterator[Downloaded]:
        """Plain FTP in passive mode: up to ``LANES`` files in flight, over as many control
        connections (``lanes.py``); FTPS and active mode take one file after the other."""
        items = list(downloads)
        if len(items) < 2 or self.source.protocol != "ftp" or not self.source.passive:
            yield from super().download_many(items)
            return
        yield from run_lanes(self, items)

    # -- the lanes' connections -------------------------------------------------------------------

    def lane_clients(self, wanted: int) -> list[Client]:
        """Up to ``wanted`` logged-in control connections, the session's own first: the spare
        ones are kept for the next batch. A server that refuses one more session (or cannot
        open one) is not asked again this session: the lanes go on with what they have."""
        clients = [self._connected()]
        while len(self._spares) < wanted - 1 and not self._spares_capped:
            try:
                self._spares.append(self._reopen(self._use_epsv))
            except TooManyConnectionsError as error:
                log.info("source %s: the server refused one more session (%s): %d file(s) in "
                         "flight", self.source_name, error.message, len(self._spares) + 1)
                self._spares_capped = True
            except ReportsyncError as error:
                log.info("source %s: no further connection (%s): %d file(s) in flight",
                         self.source_name, error.message, len(self._spares) + 1)
                self._spares_capped = True
        return clients + self._spares[:wanted - 1]

    def lane_done(self, client: Client, *, usable: bool) -> None:
        """A lane's connection after a batch: kept, or (``usable`` False) closed; the session's
        own is dropped and logs in again on its next use."""
        self._remember(client)
        if client is self._client:
            if not usable:
                self._abandon()
            return
        if not usable:
            with suppress(ValueError):
                self._spares.remove(client)
            with suppress(OSError):
                client.close()

    def _close_spares(self) -> None:
        spares, self._spares = self._spares, []
        for client in spares:
            self._quit(client)

    def delete(self, name: str) -> None:
        if not sendable(name):
            raise unsendable(name, "deleting").with_context(source=self.source_name, path=name)
        with self._session(f"deleting {printable(name)}", name) as client:
            client.delete(name)
        log.debug("source %s: deleted %s on the server", self.source_name, printable(name))

    def close(self) -> None:
        self._closed = True
        self._close_spares()
        client = self._client
        self._client = None
        if client is not None:
            self._quit(client)

    def _quit(self, client: Client) -> None:
        """QUIT, briefly, and close: never raises (QUIT is a courtesy; the socket is closed
        either way)."""
        self._remember(client)
        try:
            if client.sock is not None:
                client.sock.settimeout(min(QUIT_TIMEOUT, self.source.timeout))
            client.quit()
        except Exception as exc:
            log.debug("source %s: QUIT failed: %s", self.source_name, exc)
        finally:
            with suppress(Exception):
                client.close()
