"""FTP and FTPS (explicit ``AUTH TLS``) transport on ftplib.

What real servers need, and what this module therefore does:

* Passive mode by default, ``EPSV`` first with a fall-back to ``PASV``. The data connection always
  goes to the control connection's peer address; the address a ``PASV`` reply names is only logged
  (a differing one is the classic NAT misconfiguration), never connected to.
* FTPS verifies the server certificate and host name, protects the data channel (``PROT P``) and
  resumes the control connection's TLS session on every data connection (vsftpd and FileZilla
  Server refuse data connections that do not).
* Listing: ``MLSD`` where the server has it; otherwise ``LIST`` (Unix and Windows/IIS styles) or
  ``NLST``, with ``SIZE`` and ``MDTM`` per file for exact sizes and UTC times. Which one works is
  remembered for the session.
* A transfer that breaks off leaves the control connection in an unknown state: the connection is
  dropped (``NetworkError``) and the next call logs in again, instead of hanging on a stale reply.

The password is never logged and never part of a message; ftplib's debug output (which would
print it) stays off.
"""

from __future__ import annotations

import ftplib
import logging
import re
import socket
import ssl
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from reportsync.config import Secret, SourceConfig
from reportsync.errors import (
    AuthenticationError,
    ConfigError,
    NetworkError,
    RemoteError,
    ReportsyncError,
    StorageError,
    TlsError,
)
from reportsync.fsutil import printable, require_private_file
from reportsync.transports.base import ByteSink, ProgressCallback, RemoteFile, Transport

log = logging.getLogger(__name__)

BLOCKSIZE = 256 * 1024
"""Bytes asked of the data socket per read during a download."""

UNSUPPORTED_REPLY_CODES = frozenset({"500", "502", "504"})
"""Replies meaning "this server does not implement that command"."""

QUIT_TIMEOUT = 5.0


# --- listing parsers (pure functions) -------------------------------------------------------------


@dataclass(frozen=True)
class ListEntry:
    """One line of a directory listing.

    ``kind`` is "file", "dir", "link" or "other". ``mtime`` is seconds since the epoch, UTC, as far as
    the listing tells (LIST gives minutes at best, and the server's idea of the time zone); ``None``
    when the listing does not say.
    """

    name: str
    kind: str
    size: int | None
    mtime: float | None


_MONTHS = {name: number for number, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}

_UNIX_LINE = re.compile(
    r"""^(?P<mode>[-dlbcpsD?][-rwxsStTlL]{9})[.+@]?\s+
        (?P<links>\d+)\s+
        (?P<owner>\S+)\s+
        (?:(?P<group>\S+)\s+)?
        (?P<size>\d+)\s+
        (?P<month>[A-Za-z]{3})\s+
        (?P<day>\d{1,2})\s+
        (?:(?P<hour>\d{1,2}):(?P<minute>\d{2})|(?P<year>\d{4}))
        \s(?P<name>.+)$""",
    re.VERBOSE,
)

_WINDOWS_LINE = re.compile(
    r"""^(?P<month>\d{1,2})-(?P<day>\d{1,2})-(?P<year>\d{2}|\d{4})\s+
        (?P<hour>\d{1,2}):(?P<minute>\d{2})\s*(?P<ampm>[AaPp][Mm])?\s+
        (?:(?P<dir><DIR>)|(?P<size>\d+))
        \s+(?P<name>.+)$""",
    re.VERBOSE,
)

_UNIX_KINDS = {"-": "file", "d": "dir", "l": "link"}


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0,
         second: int = 0) -> float | None:
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    except ValueError:
        return None
    return moment.timestamp()


def parse_unix_list_line(line: str, now: float | None = None) -> ListEntry | None:
    """A ``ls -l`` style LIST line, or None if it is not one.

    Without a year (``Nov  2 12:00``) the date is the latest one not in the future relative to
    ``now`` (a day of slack for time zones), as ``ls`` shows times only for recent files.
    """
    match = _UNIX_LINE.match(line.rstrip("\r\n"))
    if match is None:
        return None
    month = _MONTHS.get(match["month"].lower())
    if month is None:
        return None
    day = int(match["day"])
    name = match["name"]
    kind = _UNIX_KINDS.get(match["mode"][0], "other")
    if kind == "link" and " -> " in name:
        name = name.split(" -> ", 1)[0]
    if match["year"] is not None:
        mtime = _utc(int(match["year"]), month, day)
    else:
        hour, minute = int(match["hour"]), int(match["minute"])
        reference = datetime.now(timezone.utc) if now is None else datetime.fromtimestamp(
            now, timezone.utc)
        latest = (reference + timedelta(days=1)).timestamp()
        mtime = None
        for year in (reference.year + 1, reference.year, reference.year - 1,
                     reference.year - 4):  # -4: a 29 Feb seen from a later year
            candidate = _utc(year, month, day, hour, minute)
            if candidate is not None and candidate <= latest:
                mtime = candidate
                break
    if mtime is None or not name:
        return None
    return ListEntry(name=name, kind=kind, size=int(match["size"]), mtime=mtime)


def parse_windows_list_line(line: str) -> ListEntry | None:
    """An IIS / Windows style LIST line (``11-02-26  12:00PM  1234 name``), or None."""
    match = _WINDOWS_LINE.match(line.rstrip("\r\n"))
    if match is None:
        return None
    year = int(match["year"])
    if year < 100:
        year += 1900 if year >= 70 else 2000
    hour, minute = int(match["hour"]), int(match["minute"])
    ampm = (match["ampm"] or "").upper()
    if ampm:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if ampm == "PM" else 0)
    mtime = _utc(year, int(match["month"]), int(match["day"]), hour, minute)
    if mtime is None:
        return None
    if match["dir"]:
        return ListEntry(name=match["name"], kind="dir", size=None, mtime=mtime)
    return ListEntry(name=match["name"], kind="file", size=int(match["size"]), mtime=mtime)


def parse_list_line(line: str, now: float | None = None) -> ListEntry | None:
    """A LIST line in either style, or None if it is neither."""
    return parse_unix_list_line(line, now) or parse_windows_list_line(line)


def parse_list(lines: Iterable[str], now: float | None = None) -> list[ListEntry] | None:
    """Every entry of a LIST reply, or None if any line is not understood.

    One line we cannot read could be the one file that matters, so an unreadable listing is
    rejected as a whole (the caller falls back to NLST). ``total N`` and blank lines are skipped.
    """
    entries: list[ListEntry] = []
    for line in lines:
        text = line.rstrip("\r\n")
        if not text.strip() or re.fullmatch(r"total\s+\d+", text.strip()):
            continue
        entry = parse_list_line(text, now)
        if entry is None:
            return None
        if entry.name in (".", "..") and entry.kind == "dir":
            continue  # a *file* named "." or ".." is a lie: kept, so fetch refuses and reports it
        entries.append(entry)
    return entries


def parse_ftp_time(value: str) -> float | None:
    """``YYYYMMDDHHMMSS[.sss]`` (MLSD ``modify``, MDTM) as seconds since the epoch, UTC."""
    match = re.fullmatch(r"(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:\.(\d{1,9}))?", value.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    seconds = _utc(year, month, day, hour, minute, second)
    if seconds is None:
        return None
    fraction = match.group(7)
    return seconds + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def parse_mlsd_line(line: str) -> ListEntry | None:
    """An MLSD line (``type=file;size=12;modify=20261102120000; name``), or None."""
    text = line.rstrip("\r\n")
    facts_text, separator, name = text.partition(" ")
    if not separator:
        return None  # an empty name is kept: fetch refuses it and says so
    facts: dict[str, str] = {}
    for fact in facts_text.split(";"):
        key, equals, value = fact.partition("=")
        if equals:
            facts[key.strip().lower()] = value
    kind_fact = facts.get("type", "").lower()
    kind = {"file": "file", "dir": "dir", "cdir": "dir", "pdir": "dir"}.get(kind_fact, "other")
    if kind_fact.startswith("os.unix=slink") or kind_fact.startswith("os.unix=symlink"):
        kind = "link"
    size: int | None = None
    if facts.get("size", "").isdigit():
        size = int(facts["size"])
    mtime = parse_ftp_time(facts["modify"]) if "modify" in facts else None
    return ListEntry(name=name, kind=kind, size=size, mtime=mtime)


# --- the ftplib client ---------------------------------------------------------------------------


class _DataChannelError(Exception):
    """Opening the data connection failed (the classic firewall / NAT / antivirus case)."""

    def __init__(self, host: str, port: int, cause: OSError) -> None:
        super().__init__(f"{host}:{port}: {cause}")
        self.host = host
        self.port = port
        self.cause = cause


class _DataTimeout(TimeoutError):
    """The data connection stalled mid-transfer."""


class _LocalWriteError(Exception):
    """Writing a downloaded chunk failed locally (not a network problem)."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _Client(ftplib.FTP_TLS):
    """ftplib's FTP_TLS, used for plain FTP too (it is plain FTP until ``auth()``).

    Overrides the data connection set-up: EPSV then PASV, always to the control peer, TLS session
    reuse on protected data connections.
    """

    def __init__(self, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(context=context, timeout=timeout)
        self.set_debuglevel(0)  # ftplib's debug output would print the password
        # Never connect where a PASV reply points (the FTP bounce / NAT problem); ftplib's default
        # is False already, this makes it independent of that default.
        self.trust_server_pasv_ipv4_address = False
        self.use_epsv: bool | None = None  # None: not tried yet in this session
        self.data_protected = False
        self.pasv_named_host: str | None = None
        self.data_command: str | None = None

    def getmultiline(self) -> str:
        """ftplib's, except that a first line without a reply code is an error at once.

        ftplib reads ``SSH-2.0-...`` as the start of a multi-line reply with code "SSH" and waits
        for its end until the timeout; an SSH server on the port must be named as such instead.
        """
        line = self.getline()
        if not line[:3].isdigit():
            raise ftplib.error_proto(line)
        if line[3:4] == "-":
            code = line[:3]
            while True:
                next_line = self.getline()
                line = f"{line}\n{next_line}"
                if next_line[:3] == code and next_line[3:4] != "-":
                    break
        return line

    def _peer_host(self) -> str:
        if self.sock is None:
            raise EOFError("not connected")
        return str(self.sock.getpeername()[0])

    def makepasv(self) -> tuple[str, int]:
        """(host, port) of the server's passive data port; host is always the control peer."""
        peer_host = self._peer_host()
        if self.use_epsv is not False:
            try:
                reply = self.sendcmd("EPSV")
            except ftplib.error_perm as exc:
                if self.af != socket.AF_INET:
                    raise  # PASV cannot express IPv6
                log.debug("EPSV refused (%s); using PASV", str(exc)[:80])
                self.use_epsv = False
            else:
                self.use_epsv = True
                self.data_command = "EPSV"
                _, port = ftplib.parse229(reply, (peer_host, 0))
                return peer_host, port
        reply = self.sendcmd("PASV")
        named_host, port = ftplib.parse227(reply)
        self.data_command = "PASV"
        self.pasv_named_host = named_host
        if named_host != peer_host:
            log.debug(
                "PASV reply names %s but the control connection goes to %s (a NAT hint); "
                "connecting the data channel to %s", named_host, peer_host, peer_host,
            )
        return peer_host, port

    def control_session(self) -> ssl.SSLSession | None:
        return self.sock.session if isinstance(self.sock, ssl.SSLSocket) else None

    def ntransfercmd(self, cmd: str, rest: int | str | None = None) -> tuple[socket.socket, int | None]:
        if self.passiveserver:
            host, port = self.makepasv()
            try:
                conn = socket.create_connection((host, port), self.timeout,
                                                source_address=self.source_address)
            except OSError as exc:
                raise _DataChannelError(host, port, exc) from exc
            try:
                if rest is not None:
                    self.sendcmd(f"REST {rest}")
                reply = self.sendcmd(cmd)
                if reply[0] == "2":  # some servers send a 200 before the 150
                    reply = self.getresp()
                if reply[0] != "1":
                    raise ftplib.error_reply(reply)
            except BaseException:
                conn.close()
                raise
            size = ftplib.parse150(reply) if reply[:3] == "150" else None
        else:
            self.data_command = "PORT"
            conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self.data_protected:
            peer = conn.getpeername()
            try:
                conn = self.context.wrap_socket(
                    conn, server_hostname=self.host, session=self.control_session()
                )
            except OSError as exc:  # ssl.SSLError too: e.g. a server that insists on reuse
                conn.close()
                raise _DataChannelError(str(peer[0]), int(peer[1]), exc) from exc
            except BaseException:
                conn.close()
                raise
            if isinstance(conn, ssl.SSLSocket):
                log.debug("data connection: %s, TLS session reused: %s", conn.version(),
                          conn.session_reused)
        return conn, size


# --- the transport -------------------------------------------------------------------------------


def _reply_code(exc: BaseException) -> str:
    return str(exc)[:3]


def _sendable(name: str) -> bool:
    """Whether ``name`` can go into an FTP command: a CR, LF or NUL would end the command early
    and smuggle the rest in as another one (ftplib raises ValueError for CR/LF), and bytes that
    were not UTF-8 in the listing cannot be encoded back (fetch refuses such names anyway)."""
    if any(char in name for char in "\r\n\0"):
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _unsendable(name: str, action: str) -> RemoteError:
    return RemoteError(f"{action}: the name {printable(name)} holds a line break, a NUL or bytes "
                       "that are not UTF-8 and cannot be sent in an FTP command")


def _data_channel_remedy(source: SourceConfig) -> str:
    return (
        "The control connection works but the data connection did not: keep passive mode on "
        "(passive = true); your firewall must allow outgoing connections to port "
        f"{source.port} and to the server's data ports above 1024; antivirus or security "
        f"software may block FTP. Run `reportsync doctor --source {source.name}`."
    )


class FtpTransport(Transport):
    """A logged-in FTP/FTPS session positioned at the source's ``remote_dir``."""

    stat_mtime_matches_listing = False

    def __init__(self, source: SourceConfig) -> None:
        self.source = source
        self.source_name = source.name
        self._client: _Client | None = None
        self._closed = False
        self._password: Secret | None = None
        self._mlsd: bool | None = None  # None: not tried yet
        self._use_epsv: bool | None = None
        self.data_command: str | None = None  # "EPSV", "PASV" or "PORT", once a transfer ran
        self.pasv_named_host: str | None = None  # the address a PASV reply named, if one did
        self.failed_phase: str | None = None  # connect/tls/login/cwd/session: where it last failed

    # -- connection ---------------------------------------------------------------------------

    def connect(self) -> None:
        """Connect, secure (ftps), log in, set binary mode, change to ``remote_dir``."""
        source = self.source
        if self._password is None:
            try:
                if source.password.file is not None:
                    require_private_file(source.password.file,
                                         f"sources.{source.name}.password_file", "password")
                self._password = source.password.resolve()
            except ReportsyncError as exc:
                raise exc.with_context(source=source.name) from None
            if self._password is None:
                raise ConfigError(
                    [f"sources.{source.name}.password_env: {source.protocol} needs a password "
                     "(password_env or password_file)"],
                ).with_context(source=source.name)
            if any(char in self._password.reveal() for char in "\r\n\0"):
                # FTP is line-based: a line break in the password would end the PASS command and
                # send the rest to the server as a command of its own.
                self._password = None
                raise ConfigError(
                    [f"sources.{source.name}.password: the password contains a line break or "
                     "NUL character, which FTP cannot send"],
                    remedy="Check the variable or file the password comes from (a file may end "
                    "with one newline, which is ignored).",
                ).with_context(source=source.name)
        try:
            context = ssl.create_default_context(
                cafile=str(source.ca_file) if source.ca_file is not None else None
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                [f"sources.{source.name}.ca_file: cannot load {source.ca_file}: "
                 f"{getattr(exc, 'strerror', None) or exc}"],
                remedy="Point ca_file at a PEM file of CA certificates, or remove it to use "
                "the system's CAs.",
            ).with_context(source=source.name) from None
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        client = _Client(context, source.timeout)
        client.use_epsv = self._use_epsv
        try:
            with self._guard("connecting", phase="connect"):
                client.connect(source.host, source.port, timeout=source.timeout)
            greeting = (client.welcome or "").splitlines()
            log.debug("connected to %s:%d: %s", source.host, source.port,
                      greeting[0][:120] if greeting else "")
            if source.protocol == "ftps":
                with self._guard("setting up TLS", phase="tls"):
                    client.auth()
            with self._guard("logging in", phase="login"):
                client.login(source.username, self._password.reveal(), secure=False)
            if source.protocol == "ftps":
                with self._guard("protecting the data channel", phase="tls"):
                    client.prot_p()
                client.data_protected = True
            with self._guard("setting binary mode"):
                client.voidcmd("TYPE I")
                # Servers that do not know OPTS UTF8 speak UTF-8 or nothing better anyway.
                with suppress(ftplib.error_perm, ftplib.error_reply):
                    client.sendcmd("OPTS UTF8 ON")
            client.set_pasv(source.passive)
            if source.remote_dir not in ("", "."):
                with self._guard(f"changing to {source.remote_dir!r}", phase="cwd"):
                    client.cwd(source.remote_dir)
        except BaseException:
            client.close()
            raise
        log.debug("logged in to %s as %s, in %s", source.host, source.username, source.remote_dir)
        self._client = client

    def _connected(self) -> _Client:
        if self._client is not None:
            return self._client
        if self._closed:
            raise NetworkError("the FTP connection was closed", source=self.source_name)
        log.info("source %s: reconnecting after an interrupted transfer", self.source_name)
        self.connect()
        if self._client is None:  # pragma: no cover - connect() either sets it or raises
            raise NetworkError("could not reconnect", source=self.source_name)
        return self._client

    def _abandon(self) -> None:
        """Drop a control connection whose state is unknown; the next call logs in again."""
        client = self._client
        self._client = None
        if client is not None:
            self._remember(client)
            with suppress(OSError):
                client.close()

    def _remember(self, client: _Client) -> None:
        self._use_epsv = client.use_epsv
        self.data_command = client.data_command or self.data_command
        self.pasv_named_host = client.pasv_named_host or self.pasv_named_host

    # -- error mapping ------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        secret = self._password.reveal() if self._password is not None else ""
        if len(secret) >= 3:
            text = text.replace(secret, "***")
        return text[:300]

    @contextmanager
    def _guard(self, action: str, path: str | None = None, *, phase: str = "session",
               ) -> Iterator[None]:
        """Turn library exceptions raised in the block into ReportsyncErrors."""
        try:
            yield
        except ReportsyncError as exc:
            self.failed_phase = phase
            raise exc.with_context(source=self.source_name, path=path) from None
        except (ftplib.Error, OSError, EOFError, _DataChannelError, _LocalWriteError) as exc:
            self.failed_phase = phase
            error = self._translate(exc, action, phase)
            raise error.with_context(source=self.source_name, path=path) from exc

    def _translate(self, exc: BaseException, action: str, phase: str) -> ReportsyncError:
        source = self.source
        where = f"{source.host}:{source.port}"
        doctor = f"Run `reportsync doctor --source {source.name}`."
        if isinstance(exc, _LocalWriteError):
            return StorageError(f"writing the download failed: {exc.cause.strerror or exc.cause}")
        if isinstance(exc, _DataChannelError):
            cause = exc.cause
            what = "timed out" if isinstance(cause, TimeoutError) else (
                "was refused" if isinstance(cause, ConnectionRefusedError) else f"failed ({cause})")
            return NetworkError(
                f"{action}: the data connection to {exc.host}:{exc.port} {what}",
                remedy=_data_channel_remedy(source),
            )
        if isinstance(exc, ssl.SSLCertVerificationError):
            return TlsError(
                f"the TLS certificate of {source.host} did not verify: "
                f"{exc.verify_message or exc.reason}",
            )
        if isinstance(exc, ssl.SSLError) and phase in ("tls", "connect"):
            return TlsError(f"the TLS handshake with {where} failed: {exc.reason or exc}")
        if isinstance(exc, ftplib.error_perm):
            code = _reply_code(exc)
            reply = self._redact(str(exc))
            if phase == "login":
                if code == "530":
                    remedy = None
                    if source.protocol == "ftp" and re.search(r"TLS|SSL|encrypt", reply, re.I):
                        remedy = ('The server wants an encrypted session: set protocol = "ftps" '
                                  "for this source.")
                    return AuthenticationError(
                        f"login refused (530) for user {source.username!r}: {reply}", remedy=remedy
                    )
                if source.protocol == "ftp" and re.search(r"TLS|SSL|encrypt", reply, re.I):
                    return AuthenticationError(
                        f"login refused ({code}): {reply}",
                        remedy='The server wants an encrypted session: set protocol = "ftps".',
                    )
                return AuthenticationError(f"login refused ({code}): {reply}")
            if phase == "tls":
                return TlsError(
                    f"the server refused explicit TLS ({reply})",
                    remedy="The server may not offer FTPS (AUTH TLS); check the provider's "
                    "instructions. Implicit FTPS (port 990) is not supported.",
                )
            if phase == "cwd":
                return RemoteError(
                    f"cannot open remote folder {source.remote_dir!r}: {reply}",
                    remedy="Check `remote_dir` (it is relative to the login folder) and your "
                    f"permissions on the server. {doctor}",
                )
            if code == "522":  # RFC 4217: the TLS data connection was not acceptable
                return RemoteError(
                    f"{action}: the server refused the TLS data connection ({reply})",
                    remedy="The server's FTPS settings do not accept this client's data "
                    f"connections; tell the provider what it says. {doctor}",
                )
            return RemoteError(f"{action}: the server refused ({reply})")
        if isinstance(exc, ftplib.error_temp):
            return NetworkError(f"{action}: temporary failure on the server ({self._redact(str(exc))})",
                                remedy=f"Usually passes; the next run tries again. {doctor}")
        if isinstance(exc, ftplib.error_proto | ftplib.error_reply):
            text = self._redact(str(exc))
            if text.startswith("SSH-"):
                return NetworkError(
                    f"{where} is an SSH server ({text.strip()[:60]}), not an FTP server",
                    remedy=f'Set protocol = "sftp" for source {source.name!r} (with the SSH port), '
                    "or correct the port.",
                )
            if phase == "connect":
                return NetworkError(
                    f"{where} did not answer like an FTP server ({text[:80]!r})",
                    remedy="Check the host and port; FTP usually listens on port 21.",
                )
            return NetworkError(f"{action}: unexpected reply from the server ({text[:120]})")
        if isinstance(exc, socket.gaierror):
            return NetworkError(
                f"cannot resolve host name {source.host!r}: {exc.strerror or exc}",
                remedy=f"Check the host name in the config and your DNS / network. {doctor}",
            )
        if isinstance(exc, ConnectionRefusedError):
            return NetworkError(
                f"connection to {where} refused",
                remedy="Check host and port (FTP usually 21) and that the server is up; a "
                f"firewall may reject the connection. {doctor}",
            )
        if isinstance(exc, TimeoutError):
            if phase == "connect":
                return NetworkError(
                    f"{action} {where} timed out",
                    remedy=f"Check host and port, and that your firewall allows outgoing "
                    f"connections to port {source.port}. Implicit FTPS (port 990) is not "
                    f"supported. {doctor}",
                )
            if isinstance(exc, _DataTimeout):
                return NetworkError(f"{action}: the data transfer stalled (no data for "
                                    f"{source.timeout:g} s)", remedy=_data_channel_remedy(source))
            return NetworkError(f"{action}: the server did not answer in time "
                                f"({source.timeout:g} s)")
        if isinstance(exc, EOFError | ConnectionError):
            return NetworkError(f"{action}: the connection to {where} was lost")
        if isinstance(exc, ssl.SSLError):
            return NetworkError(f"{action}: TLS error ({exc.reason or exc})")
        if isinstance(exc, OSError):
            return NetworkError(f"{action}: network error ({exc.strerror or exc})")
        return NetworkError(f"{action}: {self._redact(str(exc))}")

    @contextmanager
    def _session(self, action: str, path: str | None = None, *, phase: str = "session",
                 ) -> Iterator[_Client]:
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

    def _retrieve(self, client: _Client, command: str, sink: Callable[[bytes], None],
                  rest: int | None = None) -> None:
        """Run a data-channel command, feeding what arrives to ``sink``; raise on a bad ending."""
        conn, _ = client.ntransfercmd(command, rest)
        with conn:
            while True:
                try:
                    data = conn.recv(BLOCKSIZE)
                except TimeoutError as exc:
                    raise _DataTimeout() from exc
                if not data:
                    break
                sink(data)
            if isinstance(conn, ssl.SSLSocket):
                try:
                    conn.unwrap()
                except (ssl.SSLError, OSError) as exc:
                    log.debug("TLS shutdown of the data connection: %s", exc)
        client.voidresp()

    def _lines(self, client: _Client, command: str) -> list[str]:
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
                        _reply_code(exc.__cause__) not in UNSUPPORTED_REPLY_CODES:
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
                    _reply_code(cause) in ("450", "550") and re.search(r"no files|not found|empty",
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
            if not _sendable(name):  # cannot be asked about: listed so fetch refuses it by name
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
        if not _sendable(name):
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
        if not _sendable(name):
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
                raise _LocalWriteError(exc) from exc
            written += len(chunk)
            if progress is not None:
                progress(len(chunk))

        if not _sendable(name):
            raise _unsendable(name, "downloading").with_context(source=self.source_name, path=name)
        with self._session(f"downloading {printable(name)}", name) as client:
            self._retrieve(client, f"RETR {name}", sink, rest=offset or None)
        return written

    def delete(self, name: str) -> None:
        if not _sendable(name):
            raise _unsendable(name, "deleting").with_context(source=self.source_name, path=name)
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


def open_ftp(source: SourceConfig) -> Transport:
    """Connect and log in to an ftp/ftps source, positioned at its ``remote_dir``."""
    if source.protocol not in ("ftp", "ftps"):
        raise ValueError(f"open_ftp cannot open protocol {source.protocol!r}")
    transport = FtpTransport(source)
    transport.connect()
    return transport
