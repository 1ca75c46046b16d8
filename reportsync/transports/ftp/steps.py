"""FTP and FTPS opened step by step: resolve → TCP → greeting → explicit TLS (``AUTH TLS``, ftps)
→ login, data channel protection (``PROT P``) and binary mode → ``CWD remote_dir``.

``FtpConnector`` is what both fetch (``transports.connect``) and doctor run, and what an
``FtpTransport`` runs again to log back in after an interrupted transfer. Doctor also runs the
data channel probe: the first listing, with what its data connection did (a fetch lists anyway,
so it needs no probe).
"""

from __future__ import annotations

import ftplib
import logging
import socket
import ssl
from collections.abc import Sequence
from contextlib import suppress

from reportsync.config import Secret, SourceConfig
from reportsync.errors import (
    ConfigError,
    InternalError,
    RemoteError,
    ReportsyncError,
    TlsError,
    TooManyConnectionsError,
)
from reportsync.fsutil import require_private_file
from reportsync.transports.base import (
    Check,
    Connector,
    RemoteFile,
    Step,
    StepResult,
    first_problem,
    run_steps,
    secret_where,
)
from reportsync.transports.findings import StepFinding
from reportsync.transports.ftp.client import (
    Client,
    DataChannelError,
    DataTimeout,
    TlsClient,
    is_ssh_greeting,
    reply_code,
)
from reportsync.transports.ftp.translate import ErrorMap, data_channel_remedy
from reportsync.transports.ftp.transport import FtpTransport
from reportsync.transports.network import Dialer

log = logging.getLogger(__name__)

FTP_PORT_HINT = "the FTP control port (usually 21)"


def _cause(error: ReportsyncError) -> BaseException | None:
    """The library exception an FTP error was translated from (``ErrorMap.guard`` keeps it)."""
    return error.__cause__


class FtpConnector(Connector):
    def __init__(self, source: SourceConfig, *, password: Secret | None = None,
                 use_epsv: bool | None = None) -> None:
        if source.protocol not in ("ftp", "ftps"):
            raise ValueError(f"FtpConnector cannot open protocol {source.protocol!r}")
        self.source = source
        self.source_name = source.name
        self._dialer = Dialer(source, FTP_PORT_HINT)
        self._password = password
        self._use_epsv = use_epsv  # what an earlier session of this transport learned
        self._errors = ErrorMap(source, lambda: self._password)
        self._context: ssl.SSLContext | None = None
        self._password_problem: str | None = None
        self._ca_problem: str | None = None
        self._prepare_error: ConfigError | None = None
        self._sock: socket.socket | None = None
        self._client: Client | None = None
        self._transport: FtpTransport | None = None
        self._listing: list[RemoteFile] | None = None
        self._listing_error: ReportsyncError | None = None

    # --- before the network ---

    def prepare(self) -> None:
        source = self.source
        if self._password is None:
            self._password = self._load_password()
        if source.protocol != "ftps":
            return  # plain FTP makes no TLS context: loading the CA store costs ~17 ms a connection
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
        self._context = context

    def _load_password(self) -> Secret:
        source = self.source
        try:
            if source.password.file is not None:
                require_private_file(source.password.file,
                                     f"sources.{source.name}.password_file", "password")
            password = source.password.resolve()
        except ReportsyncError as exc:
            raise exc.with_context(source=source.name) from None
        if password is None:
            raise ConfigError(
                [f"sources.{source.name}.password_env: {source.protocol} needs a password "
                 "(password_env or password_file)"],
            ).with_context(source=source.name)
        if any(char in password.reveal() for char in "\r\n\0"):
            # FTP is line-based: a line break in the password would end the PASS command and
            # send the rest to the server as a command of its own.
            raise ConfigError(
                [f"sources.{source.name}.password: the password contains a line break or "
                 "NUL character, which FTP cannot send"],
                remedy="Check the variable or file the password comes from (a file may end "
                "with one newline, which is ignored).",
            ).with_context(source=source.name)
        return password

    def config_checks(self) -> list[StepResult]:
        source = self.source
        results = []
        try:
            source.password.resolve()
        except ConfigError as error:  # doctor's secret check has said so
            self._password_problem = first_problem(error)
        if source.protocol == "ftps" and source.ca_file is not None:
            where = f"sources.{source.name}.ca_file"
            try:
                ssl.create_default_context(cafile=str(source.ca_file))
            except (OSError, ssl.SSLError) as exc:
                self._ca_problem = (f"{where}: cannot load {source.ca_file}: "
                                    f"{getattr(exc, 'strerror', None) or exc}")
                results.append(StepResult.failed(
                    Check.CA_FILE, StepFinding.CA_FILE_UNUSABLE, ConfigError([self._ca_problem]),
                    finding=self._ca_problem,
                    remedy="Point ca_file at a PEM file of CA certificates, or remove it to use "
                    "the system's CAs."))
            else:
                results.append(StepResult.passed(Check.CA_FILE, StepFinding.CA_FILE_OK,
                                                 f"{where}: {source.ca_file} loads"))
        if self._password_problem is None and self._ca_problem is None:
            try:
                self.prepare()
            except ConfigError as error:  # shown where the connection would have started
                self._prepare_error = error
        return results

    # --- the steps ---

    def steps(self) -> Sequence[Step]:
        steps = [Step(Check.DNS, self._dialer.dns), Step(Check.TCP, self._dialer.tcp),
                 Step(Check.BANNER, self._banner)]
        if self.source.protocol == "ftps":
            steps.append(Step(Check.TLS, self._tls))
        return (*steps, Step(Check.AUTH, self._auth),
                Step(Check.REMOTE_FOLDER, self._remote_folder))

    def probes(self) -> Sequence[Step]:
        return (Step(Check.DATA_CHANNEL, self._data_channel),)

    def _banner(self) -> StepResult:
        source = self.source
        if self._password_problem is not None:
            return StepResult.skipped(Check.BANNER, StepFinding.BANNER_SKIPPED_PASSWORD,
                                      "the password could not be read (see the config checks)")
        if self._ca_problem is not None:
            return StepResult.skipped(Check.BANNER, StepFinding.BANNER_SKIPPED_CA_FILE,
                                      "ca_file could not be loaded (see the config checks)")
        if self._prepare_error is not None:
            return StepResult.failed(Check.BANNER, StepFinding.BANNER_CONFIG,
                                     self._prepare_error)
        sock = self._sock = self._dialer.take_socket()
        client = self._client = (Client(source.timeout) if self._context is None
                                 else TlsClient(self._context, source.timeout))
        client.use_epsv = self._use_epsv
        where = f"{source.host}:{source.port}"
        try:
            with self._errors.guard("connecting", phase="connect"):
                client.attach(sock, source.host, source.port)
        except ReportsyncError as error:
            cause = _cause(error)
            finding_id = StepFinding.BANNER_FAILED
            if isinstance(error, TooManyConnectionsError):
                finding_id = StepFinding.BANNER_TOO_MANY_SESSIONS
            elif cause is not None and is_ssh_greeting(cause):
                finding_id = StepFinding.BANNER_SSH_SERVER
            elif isinstance(cause, ftplib.error_proto | ftplib.error_reply):
                finding_id = StepFinding.BANNER_NOT_FTP
            elif isinstance(cause, TimeoutError):
                finding_id = StepFinding.BANNER_SILENT
            elif isinstance(cause, EOFError | OSError):
                finding_id = StepFinding.BANNER_LOST
            return StepResult.failed(Check.BANNER, finding_id, error)
        self._sock = None  # the client's now
        greeting = " ".join(part.strip() for part in (client.welcome or "").splitlines()
                            if part.strip())
        log.debug("connected to %s: %s", where, greeting[:120])
        return StepResult.passed(Check.BANNER, StepFinding.BANNER_OK,
                                 f"FTP server at {where}" + (f": {greeting[:100]}" if greeting
                                                             else ""))

    def _tls(self) -> StepResult:
        client = self._client
        assert isinstance(client, TlsClient)
        source = self.source
        try:
            with self._errors.guard("setting up TLS", phase="tls"):
                client.auth()
        except ReportsyncError as error:
            cause = _cause(error)
            if isinstance(cause, ssl.SSLCertVerificationError):
                trust = f"ca_file {source.ca_file}" if source.ca_file else "the system's CA store"
                return StepResult.failed(
                    Check.TLS, StepFinding.TLS_UNVERIFIED, error,
                    remedy=f"Check that `host` ({source.host}) is the name on the server's "
                    f"certificate, and that {trust} holds the CA that signed it (ask the "
                    "provider for it). reportsync never skips this check.")
            finding_id = StepFinding.TLS_FAILED
            if isinstance(cause, ftplib.error_perm):
                finding_id = StepFinding.TLS_REFUSED
            elif isinstance(error, TlsError):
                finding_id = StepFinding.TLS_HANDSHAKE
            return StepResult.failed(Check.TLS, finding_id, error)
        version = f"{client.sock.version()}, " if isinstance(client.sock, ssl.SSLSocket) else ""
        trust = f"ca_file {source.ca_file}" if source.ca_file else "the system's CAs"
        return StepResult.passed(Check.TLS, StepFinding.TLS_OK,
                                 f"explicit TLS (AUTH TLS): {version}certificate verified for "
                                 f"{source.host} against {trust}")

    def _auth(self) -> StepResult:
        client = self._client
        assert client is not None and self._password is not None
        source = self.source
        try:
            with self._errors.guard("logging in", phase="login"):
                # (an ftps client is on TLS already: FTP_TLS.login does not send AUTH again)
                client.login(source.username, self._password.reveal())
        except ReportsyncError as error:
            return self._login_refused(error)
        try:
            if isinstance(client, TlsClient):
                with self._errors.guard("protecting the data channel", phase="tls"):
                    client.prot_p()
                client.data_protected = True
        except ReportsyncError as error:
            return StepResult.failed(Check.AUTH, StepFinding.AUTH_DATA_PROTECTION, error)
        try:
            with self._errors.guard("setting binary mode"):
                client.voidcmd("TYPE I")  # once: every transfer of the session is binary
                client.read_features()
                # RFC 2640: a server with UTF-8 names lists UTF8 in FEAT. Servers that do not
                # know OPTS UTF8 speak UTF-8 or nothing better anyway.
                if client.offers("UTF8") is not False:
                    with suppress(ftplib.error_perm, ftplib.error_reply):
                        client.sendcmd("OPTS UTF8 ON")
        except ReportsyncError as error:
            return StepResult.failed(Check.AUTH, StepFinding.AUTH_FAILED, error)
        client.set_pasv(source.passive)
        return StepResult.passed(Check.AUTH, StepFinding.AUTH_OK,
                                 f"logged in as {source.username!r}")

    def _login_refused(self, error: ReportsyncError) -> StepResult:
        source = self.source
        cause = _cause(error)
        if isinstance(error, ConfigError):  # the server wants TLS (translate.demands_tls)
            return StepResult.failed(Check.AUTH, StepFinding.AUTH_TLS_REQUIRED, error)
        if isinstance(error, TooManyConnectionsError):
            return StepResult.failed(Check.AUTH, StepFinding.AUTH_TOO_MANY_SESSIONS, error)
        if isinstance(cause, ftplib.error_temp):
            return StepResult.failed(Check.AUTH, StepFinding.AUTH_REJECTED, error)
        if not isinstance(cause, ftplib.error_perm):
            finding_id = StepFinding.AUTH_LOST if isinstance(cause, EOFError | OSError) \
                else StepFinding.AUTH_FAILED
            return StepResult.failed(Check.AUTH, finding_id, error)
        if reply_code(cause) == "530":
            return StepResult.failed(
                Check.AUTH, StepFinding.AUTH_REFUSED, error,
                remedy=f"Check the username {source.username!r} and the password in the "
                f"{secret_where(source.password)}: the server refused them (530). Repeated "
                "failures can lock the account; ask the provider to reset the password if you "
                "are unsure.")
        return StepResult.failed(Check.AUTH, StepFinding.AUTH_REJECTED, error)

    def _remote_folder(self) -> StepResult:
        client = self._client
        assert client is not None
        source = self.source
        if source.remote_dir not in ("", "."):
            try:
                with self._errors.guard(f"changing to {source.remote_dir!r}", phase="cwd"):
                    client.cwd(source.remote_dir)
            except ReportsyncError as error:
                finding_id = StepFinding.REMOTE_FOLDER_REFUSED if isinstance(error, RemoteError) \
                    else StepFinding.REMOTE_FOLDER_LOST
                return StepResult.failed(Check.REMOTE_FOLDER, finding_id, error)
        log.debug("logged in to %s as %s, in %s", source.host, source.username, source.remote_dir)
        return StepResult.passed(Check.REMOTE_FOLDER, StepFinding.REMOTE_FOLDER_OK,
                                 f"remote folder {source.remote_dir!r} opened")

    # --- doctor's probe ---

    def _data_channel(self) -> StepResult:
        transport = self.transport()
        source = self.source
        try:
            self._listing = transport.list_files_knowing(self.known_versions)
        except ReportsyncError as listing_error:
            self._listing_error = listing_error
        error = self._listing_error
        command = transport.data_command
        cause = _cause(error) if error is not None else None
        check = Check.DATA_CHANNEL
        if error is not None and isinstance(cause, DataChannelError):
            inner = cause.cause
            if isinstance(inner, TimeoutError):
                finding_id, what = StepFinding.DATA_CHANNEL_TIMEOUT, \
                    f"did not open within {source.timeout:g}s"
            elif isinstance(inner, ConnectionRefusedError):
                finding_id, what = StepFinding.DATA_CHANNEL_REFUSED, "was refused"
            else:
                finding_id, what = StepFinding.DATA_CHANNEL_FAILED, f"failed ({inner})"
            return StepResult.failed(
                check, finding_id, error,
                finding=f"{command or 'passive mode'} negotiated (data port {cause.port}), but "
                f"the data connection to {cause.host}:{cause.port} {what}")
        if error is not None and isinstance(cause, DataTimeout):
            return StepResult.failed(check, StepFinding.DATA_CHANNEL_SILENT, error,
                                     finding="the data connection opened, but no data arrived "
                                     f"within {source.timeout:g}s")
        if error is not None and isinstance(cause, ftplib.error_perm) and \
                reply_code(cause) == "522":
            return StepResult.failed(check, StepFinding.DATA_CHANNEL_TLS_REFUSED, error)
        if error is not None and command is None:
            if isinstance(cause, ftplib.Error):
                return StepResult.failed(
                    check, StepFinding.DATA_CHANNEL_PASSIVE_REFUSED, error,
                    finding=f"the server refused passive mode (EPSV and PASV): {error.message}",
                    remedy="Ask the provider whether passive mode is enabled for your account; "
                    "reportsync uses passive mode (passive = true) because active mode needs "
                    "incoming connections through your firewall.")
            return StepResult.failed(
                check, StepFinding.DATA_CHANNEL_FAILED, error,
                finding=f"no data connection could be set up: {error.message}",
                remedy=error.remedy or data_channel_remedy(source))
        peer_ip = self._dialer.peer_ip
        if command == "PORT":
            return StepResult.warned(
                check, StepFinding.DATA_CHANNEL_ACTIVE,
                "active mode (PORT): the server connects back to this machine, which firewalls "
                "and NAT routers usually block",
                f"Set passive = true in [sources.{source.name}] (the provider's advice).")
        named = transport.pasv_named_host
        if command == "PASV" and named is not None and peer_ip is not None and named != peer_ip:
            return StepResult.warned(
                check, StepFinding.DATA_CHANNEL_NAT,
                f"the PASV reply names {named}, but the control connection goes to {peer_ip}: "
                "the server is behind NAT and announces an internal address; reportsync ignores "
                f"it and connects the data channel to {peer_ip}, which works",
                "Nothing to change in reportsync. Other FTP clients that trust the PASV address "
                "will fail: tell the provider their passive address setting is wrong.")
        mode = {"EPSV": "EPSV (extended passive mode)", "PASV": "PASV (passive mode)"}.get(
            command or "", command or "passive mode")
        return StepResult.passed(check, StepFinding.DATA_CHANNEL_OK,
                                 f"{mode} negotiated; the data connection to {peer_ip} opened")

    def list_files(self) -> list[RemoteFile]:
        if self._listing_error is not None:
            raise self._listing_error
        if self._listing is not None:
            return self._listing
        return self.transport().list_files_knowing(self.known_versions)

    # --- the result ---

    def transport(self) -> FtpTransport:
        if self._transport is None:
            self._transport = FtpTransport(self.source, self.take_client(), self._errors,
                                           self._reopen)
        return self._transport

    def take_client(self) -> Client:
        """The logged-in client, now the caller's to close."""
        client, self._client = self._client, None
        if client is None:
            raise InternalError("the FTP connection is not open", source=self.source_name)
        return client

    def _reopen(self, use_epsv: bool | None) -> Client:
        """Log in again, as these steps did, with the password already read."""
        again = FtpConnector(self.source, password=self._password, use_epsv=use_epsv)
        try:
            run_steps(again)
            return again.take_client()
        except BaseException:
            again.close()
            raise

    def close(self) -> None:
        transport, self._transport = self._transport, None
        client, self._client = self._client, None
        sock, self._sock = self._sock, None
        if transport is not None:
            transport.close()
        if client is not None:
            with suppress(Exception):
                client.close()
        if sock is not None:
            with suppress(OSError):
                sock.close()
        self._dialer.close()
