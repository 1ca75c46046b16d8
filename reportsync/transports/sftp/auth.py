"""SSH authentication: the login itself, and what explains a refusal (an OpenSSH certificate that
is expired, not yet valid or for another user; an old server that refuses RSA SHA-2 signatures).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

import paramiko

from reportsync.config import SourceConfig
from reportsync.errors import AuthenticationError, NetworkError, ReportsyncError
from reportsync.sshkeys import (
    STATUS_EXPIRED,
    STATUS_NOT_YET_VALID,
    SshCertificateInfo,
    inspect_ssh_file,
)
from reportsync.transports.base import StepFailure
from reportsync.transports.findings import StepFinding
from reportsync.transports.sftp.credentials import certificate_summary
from reportsync.transports.sftp.handshake import describe
from reportsync.transports.sftp.known_hosts import fingerprint

log = logging.getLogger(__name__)


def authenticate(source: SourceConfig, transport: paramiko.Transport,
                 key: paramiko.PKey | None, password: str | None) -> None:
    """Log in with the key (or certificate), then the password if one is configured.

    The "none" probe first learns which methods the server allows (it does not count as a failed
    attempt in OpenSSH), so a refusal can say what would work.
    """
    user = source.username
    allowed: list[str] | None = None
    refused: list[str] = []
    key_refused = False
    accepted: list[str] = []  # partial successes: the server wants more than this
    try:
        remaining = _auth_step(source, transport, lambda: transport.auth_none(user))
        if transport.is_authenticated():
            log.debug("server %s accepted user %s without credentials", source.host, user)
            return
        allowed = remaining or None
    except paramiko.BadAuthenticationType as exc:
        allowed = list(exc.allowed_types)
    except paramiko.AuthenticationException:
        pass
    log.debug("server allows authentication methods: %s", allowed)

    def permits(*methods: str) -> bool:
        return allowed is None or any(method in allowed for method in methods)

    if key is not None and permits("publickey"):
        try:
            remaining = _auth_step(source, transport, lambda: transport.auth_publickey(user, key))
            if transport.is_authenticated():
                return
            accepted.append("key")
            allowed = remaining
        except paramiko.BadAuthenticationType as exc:
            allowed = list(exc.allowed_types)
        except paramiko.AuthenticationException:
            refused.append(key_refused_text(source, key))
            key_refused = True
    if password is not None and not transport.is_authenticated() and \
            permits("password", "keyboard-interactive"):
        try:
            remaining = _auth_step(source, transport,
                                   lambda: transport.auth_password(user, password))
            if transport.is_authenticated():
                return
            accepted.append("password")
            allowed = remaining
        except paramiko.BadAuthenticationType as exc:
            allowed = list(exc.allowed_types)
        except paramiko.AuthenticationException:
            refused.append("server refused the password")

    raise login_failed(source, key, password is not None, refused=refused,
                       key_refused=key_refused, accepted=accepted, allowed=allowed)


def key_refused_text(source: SourceConfig, key: paramiko.PKey) -> str:
    """How a refused key (or certificate) is named: its type and fingerprint."""
    kind = "certificate" if source.certificate_file else "key"
    detail = f"{key.get_name()} {fingerprint(key)}"
    if source.certificate_file:
        detail += certificate_summary(source.certificate_file)
    return f"server refused our {kind} ({detail})"


def login_failed(source: SourceConfig, key: paramiko.PKey | None, with_password: bool, *,
                 refused: list[str], key_refused: bool, accepted: list[str],
                 allowed: list[str] | None) -> StepFailure:
    """The refused login, in the same words whichever engine tried it (the openssh engine reads
    ssh's "Permission denied (publickey)" into ``refused`` and ``allowed``)."""
    user = source.username
    offers = f"; the server allows: {', '.join(allowed)}" if allowed else ""
    configured = [kind for kind, given in (("key", key is not None),
                                           ("password", with_password)) if given]
    if refused:
        finding_id = StepFinding.AUTH_KEY_REFUSED if key_refused else \
            StepFinding.AUTH_PASSWORD_REFUSED
        message = f"login as {user!r} failed: {'; '.join(refused)}{offers}"
    elif accepted:
        finding_id = StepFinding.AUTH_INCOMPLETE
        message = (f"login as {user!r} incomplete: the server accepted the "
                   f"{' and '.join(accepted)} but requires more than reportsync can give"
                   f"{offers}")
    else:
        finding_id = StepFinding.AUTH_IMPOSSIBLE
        message = (f"login as {user!r} impossible: the server does not accept "
                   f"{' or '.join(configured) or 'any configured credential'}{offers}")
    remedy = None
    if refused and key is not None and not source.certificate_file:
        remedy = (f"Check `username` ({user}) and that the provider registered the public key "
                  f"of {source.key_file} ({fingerprint(key)}); run "
                  f"`reportsync doctor --source {source.name}`.")
    elif source.certificate_file:
        remedy = ("Check that the certificate is current, signed by the CA the server trusts, "
                  f"and lists {user!r} as a principal.")
    return StepFailure(finding_id, AuthenticationError(message, remedy=remedy, source=source.name))


def _timed_out(transport: paramiko.Transport) -> bool:
    """An auth call gave up waiting: the connection is up, but the server never answered (the
    event paramiko sets on an answer, accepting or refusing, was never set)."""
    event = getattr(transport.auth_handler, "auth_event", None)
    return transport.is_active() and event is not None and not event.is_set()


def _auth_step(source: SourceConfig, transport: paramiko.Transport,
               attempt: Callable[[], list[str]]) -> list[str]:
    """Run one auth call; a transport that died or timed out is a network error, not a refusal."""
    try:
        return attempt()
    except paramiko.AuthenticationException as exc:
        if _timed_out(transport) and not isinstance(exc, paramiko.BadAuthenticationType):
            raise StepFailure(StepFinding.AUTH_NO_ANSWER, NetworkError(
                f"authentication: no answer from {source.host} within {source.timeout:g}s",
                source=source.name)) from None
        if not transport.is_active() and not isinstance(exc, paramiko.BadAuthenticationType):
            raise StepFailure(StepFinding.AUTH_CLOSED, NetworkError(
                f"{source.host} closed the connection during login ({exc})",
                remedy="The server may limit login attempts; run "
                f"`reportsync doctor --source {source.name}`.",
                source=source.name,
            )) from None
        raise
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise StepFailure(StepFinding.AUTH_LOST, NetworkError(
            f"connection lost during login: {describe(exc)}", source=source.name)) from None


# --- what explains a refusal -----------------------------------------------------------------


@dataclass(frozen=True)
class CertificateProblem:
    finding_id: StepFinding
    text: str


def certificate_problems(source: SourceConfig
                         ) -> tuple[SshCertificateInfo | None, list[CertificateProblem]]:
    """The configured certificate (None: none, or unreadable) and what is wrong with it now."""
    path = source.certificate_file
    if path is None:
        return None, []
    unreadable = StepFinding.AUTH_CERTIFICATE_UNREADABLE
    try:
        info = inspect_ssh_file(path)
    except ReportsyncError as error:
        return None, [CertificateProblem(unreadable, error.message)]
    if not isinstance(info, SshCertificateInfo):
        return None, [CertificateProblem(unreadable,
                                         f"{path} is a plain public key, not a certificate")]
    problems = []
    if info.status == STATUS_EXPIRED and info.valid_to is not None:
        problems.append(CertificateProblem(
            StepFinding.AUTH_CERTIFICATE_EXPIRED,
            f"the certificate {path} expired on {info.valid_to:%Y-%m-%d %H:%M} UTC "
            f"({-(info.days_left or 0)} days ago)"))
    elif info.status == STATUS_NOT_YET_VALID:
        problems.append(CertificateProblem(
            StepFinding.AUTH_CERTIFICATE_NOT_YET_VALID,
            f"the certificate {path} is not valid before {info.valid_from:%Y-%m-%d %H:%M} UTC "
            "(check this machine's clock)"))
    if info.principals and source.username not in info.principals:
        problems.append(CertificateProblem(
            StepFinding.AUTH_CERTIFICATE_PRINCIPALS,
            f"the certificate's principals ({', '.join(info.principals)}) do not include the "
            f"username {source.username!r}"))
    if not info.signature_valid:
        problems.append(CertificateProblem(StepFinding.AUTH_CERTIFICATE_SIGNATURE,
                                           f"the CA signature on {path} does not verify"))
    return info, problems


def certificate_remedy(source: SourceConfig, problems: list[CertificateProblem]) -> str:
    """What to do about ``problems``: a certificate from the future needs the clock fixed (a new
    one would be just as early); everything else needs a new certificate."""
    remedies = []
    if any(problem.finding_id == StepFinding.AUTH_CERTIFICATE_NOT_YET_VALID
           for problem in problems):
        remedies.append("Check this machine's clock and fix it (turn on NTP time sync, e.g. "
                        "`timedatectl set-ntp true`); a certificate that is not valid yet works "
                        "as soon as the clock is right, or once its start date has come.")
    if any(problem.finding_id != StepFinding.AUTH_CERTIFICATE_NOT_YET_VALID
           for problem in problems):
        remedies.append(
            f"Ask the certificate authority (your provider) for a new certificate for "
            f"{source.key_file}.pub listing the principal {source.username!r}, then save it as "
            f"{source.certificate_file}.")
    return " ".join(remedies)


def old_rsa_server(key: paramiko.PKey | None, transport: paramiko.Transport) -> bool:
    """Whether a refused key is the old-server RSA case: an RSA key, and a server that does not
    announce SHA-2 RSA signatures (OpenSSH before 7.2 accepts only ssh-rsa, SHA-1)."""
    if key is None or "rsa" not in key.get_name():
        return False
    version = re.search(r"OpenSSH_(\d+)\.(\d+)", str(transport.remote_version or ""))
    if version is not None and (int(version.group(1)), int(version.group(2))) < (7, 2):
        return True  # OpenSSH learned rsa-sha2-256/512 in 7.2
    extensions = getattr(transport, "server_extensions", {}) or {}
    announced = extensions.get("server-sig-algs", b"")
    text = announced.decode("ascii", "replace") if isinstance(announced, bytes) else str(announced)
    return "rsa-sha2-256" not in text and "rsa-sha2-512" not in text
