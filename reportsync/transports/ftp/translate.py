"""ftplib's exceptions turned into ReportsyncErrors: one wording for fetch and doctor.

``phase`` says which part of the conversation failed (``connect``: the greeting; ``tls``,
``login``, ``cwd``; ``session``: anything after), so a 550 at login is an authentication problem
and a 550 on ``CWD`` a wrong folder. The password is removed from every reply that is quoted.
"""

from __future__ import annotations

import ftplib
import re
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from reportsync.config import Secret, SourceConfig
from reportsync.errors import (
    AuthenticationError,
    ConfigError,
    NetworkError,
    Problem,
    RemoteError,
    ReportsyncError,
    StorageError,
    TlsError,
    TooManyConnectionsError,
)
from reportsync.transports.ftp.client import (
    DataChannelError,
    DataReset,
    DataTimeout,
    LocalWriteError,
    is_ssh_greeting,
    reply_code,
)


def data_channel_remedy(source: SourceConfig) -> str:
    return (
        "The control connection works but the data connection did not: keep passive mode on "
        "(passive = true); your firewall must allow outgoing connections to port "
        f"{source.port} and to the server's data ports above 1024; antivirus or security "
        f"software may block FTP. Run `reportsync doctor --source {source.name}`."
    )


def data_port_refused_remedy(source: SourceConfig) -> str:
    return (
        "Nothing accepts connections on the data port the server named: a problem of the "
        "server or of its NAT/firewall, so tell the provider (with this message). If your own "
        "firewall rejects the connection instead, keep passive mode on (passive = true) and allow "
        f"outgoing connections to port {source.port} and to the server's data ports above "
        "1024; antivirus or security software may block FTP. Run "
        f"`reportsync doctor --source {source.name}`."
    )


def wants_tls(source: SourceConfig, reply: str) -> bool:
    """A plain-FTP login refused because the server wants an encrypted session (the reply's
    words are all the server gives)."""
    return source.protocol == "ftp" and re.search(r"TLS|SSL|encrypt", reply, re.I) is not None


TLS_DEMAND_CODES = frozenset({"421", "530", "550"})
"""Codes servers refuse a cleartext login with when they want TLS, saying so in words: Pure-FTPd
``421 Sorry, cleartext sessions are not accepted ... reconnect using TLS``, ProFTPD and pyftpdlib
``550 SSL/TLS required on the control channel``, vsftpd ``530 Non-anonymous sessions must use
encryption``. RFC 4217's ``534`` (denied for policy reasons) needs no words."""


def demands_tls(source: SourceConfig, exc: BaseException, phase: str) -> bool:
    """Whether the server refused a plain-FTP greeting or login because it wants TLS: a
    configuration problem (``protocol = "ftps"``), never a network glitch to retry."""
    if source.protocol != "ftp" or phase not in ("connect", "login") or \
            not isinstance(exc, ftplib.error_perm | ftplib.error_temp):
        return False
    code = reply_code(exc)
    return code == "534" or (code in TLS_DEMAND_CODES and wants_tls(source, str(exc)))


_TOO_MANY = re.compile(
    r"too many|maximum number of (?:clients|connections|users|sessions)|"
    r"(?:connection|session|user|client)s? limit|limit of \d+ (?:connections|sessions|users)",
    re.I)


def too_many_sessions(exc: BaseException, phase: str) -> bool:
    """Whether a greeting or login was refused because the server has no session left (``421
    Too many connections``; ProFTPD's ``530 Sorry, the maximum number of clients (3) ...``)."""
    return phase in ("connect", "login") and \
        isinstance(exc, ftplib.error_perm | ftplib.error_temp) and \
        reply_code(exc) in ("421", "530") and _TOO_MANY.search(str(exc)) is not None


def named_limit(reply: str) -> int | None:
    """The number of sessions a "too many connections" reply names, if it names one."""
    number = re.search(r"\((\d+)\)|limit of (\d+)|maximum (?:of )?(\d+)", reply)
    if number is None:
        return None
    return int(next(group for group in number.groups() if group is not None))


TRANSLATED = (ftplib.Error, OSError, EOFError, DataChannelError, LocalWriteError)
"""The library exceptions ``ErrorMap`` turns into ReportsyncErrors; any other passes through."""


class ErrorMap:
    """The ``guard`` a source's FTP calls run in, and the translation it applies."""

    def __init__(self, source: SourceConfig, password: Callable[[], Secret | None]) -> None:
        self.source = source
        self.source_name = source.name
        self._password = password

    def redact(self, text: str) -> str:
        password = self._password()
        secret = password.reveal() if password is not None else ""
        if len(secret) >= 3:
            text = text.replace(secret, "***")
        return text[:300]

    @contextmanager
    def guard(self, action: str, path: str | None = None, *, phase: str = "session",
              ) -> Iterator[None]:
        """Turn library exceptions raised in the block into ReportsyncErrors."""
        try:
            yield
        except ReportsyncError as exc:
            raise exc.with_context(source=self.source_name, path=path) from None
        except TRANSLATED as exc:
            error = self.translate(exc, action, phase)
            raise error.with_context(source=self.source_name, path=path) from exc

    def failure(self, exc: BaseException, action: str, path: str | None = None
                ) -> ReportsyncError | None:
        """What ``guard`` raises for ``exc`` (its cause set), for a caller that cannot wrap
        the failing code in a block (the lanes resume generators); None: not ours to translate,
        it passes through."""
        if isinstance(exc, ReportsyncError):
            return exc.with_context(source=self.source_name, path=path)
        if not isinstance(exc, TRANSLATED):
            return None
        error = self.translate(exc, action, "session").with_context(source=self.source_name,
                                                                    path=path)
        error.__cause__ = exc
        return error

    def translate(self, exc: BaseException, action: str, phase: str) -> ReportsyncError:
        source = self.source
        where = f"{source.host}:{source.port}"
        doctor = f"Run `reportsync doctor --source {source.name}`."
        if isinstance(exc, LocalWriteError):
            return StorageError(f"writing the download failed: {exc.cause.strerror or exc.cause}")
        if isinstance(exc, DataChannelError):
            cause = exc.cause
            what = "timed out" if isinstance(cause, TimeoutError) else (
                "was refused" if isinstance(cause, ConnectionRefusedError) else f"failed ({cause})")
            refused = isinstance(cause, ConnectionRefusedError)
            return NetworkError(
                f"{action}: the data connection to {exc.host}:{exc.port} {what}",
                remedy=data_port_refused_remedy(source) if refused else data_channel_remedy(source),
            )
        if isinstance(exc, ssl.SSLCertVerificationError):
            return TlsError(
                f"the TLS certificate of {source.host} did not verify: "
                f"{exc.verify_message or exc.reason}",
            )
        if isinstance(exc, ssl.SSLError) and phase in ("tls", "connect"):
            return TlsError(f"the TLS handshake with {where} failed: {exc.reason or exc}")
        if demands_tls(source, exc, phase):
            reply = " ".join(self.redact(str(exc)).split())
            return ConfigError(
                [Problem(f"sources.{source.name}.protocol",
                         f'the server accepts only encrypted (FTPS) sessions; it refused the '
                         f'cleartext login with "{reply}": set protocol = "ftps"')],
                remedy=f'Set protocol = "ftps" in [sources.{source.name}] (explicit TLS on the '
                "same port); add ca_file if the provider's certificate is not signed by a CA "
                "this system trusts. Retrying in cleartext cannot help.",
            )
        if too_many_sessions(exc, phase):
            reply = " ".join(self.redact(str(exc)).split())
            limit = named_limit(reply)
            named = f" (it allows {limit})" if limit is not None else ""
            return TooManyConnectionsError(
                f"the server refused another session{named}: {reply}", limit=limit,
                remedy="The server limits the sessions per account or address: use fewer "
                "connections (--jobs) for this source, and check that no other client (or a "
                "hung earlier run) holds them. The next run tries again.",
            )
        if isinstance(exc, ftplib.error_perm):
            code = reply_code(exc)
            reply = self.redact(str(exc))
            if phase == "login":
                if code == "530":
                    return AuthenticationError(
                        f"login refused (530) for user {source.username!r}: {reply}")
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
            return NetworkError(f"{action}: temporary failure on the server ({self.redact(str(exc))})",
                                remedy=f"Usually passes; the next run tries again. {doctor}")
        if isinstance(exc, ftplib.error_proto | ftplib.error_reply):
            text = self.redact(str(exc))
            if is_ssh_greeting(exc):
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
        if isinstance(exc, TimeoutError):
            if phase == "connect":
                return NetworkError(
                    f"{action} {where} timed out",
                    remedy=f"Check host and port, and that your firewall allows outgoing "
                    f"connections to port {source.port}. Implicit FTPS (port 990) is not "
                    f"supported. {doctor}",
                )
            if isinstance(exc, DataTimeout):
                return NetworkError(f"{action}: the data transfer stalled (no data for "
                                    f"{source.timeout:g} s)", remedy=data_channel_remedy(source))
            return NetworkError(f"{action}: the server did not answer in time "
                                f"({source.timeout:g} s)")
        if isinstance(exc, DataReset):
            return NetworkError(
                f"{action}: the data connection was reset after {exc.received} bytes (a TCP "
                "reset: cut by the server or by something on the way, not a timeout)",
                remedy="A single reset usually passes: the next attempt resumes from the bytes "
                "already received. If it keeps happening, something aborts transfers actively "
                "(the server's limits, a proxy or antivirus that inspects FTP), which opening "
                "the firewall does not fix: tell the provider when it happened. "
                f"{doctor}",
            )
        if isinstance(exc, ConnectionResetError):
            return NetworkError(f"{action}: the connection to {where} was reset (a TCP reset "
                                "from the server or something on the way)")
        if isinstance(exc, EOFError | ConnectionError):
            return NetworkError(f"{action}: the connection to {where} was lost")
        if isinstance(exc, ssl.SSLError):
            return NetworkError(f"{action}: TLS error ({exc.reason or exc})")
        if isinstance(exc, OSError):
            return NetworkError(f"{action}: network error ({exc.strerror or exc})")
        return NetworkError(f"{action}: {self.redact(str(exc))}")
