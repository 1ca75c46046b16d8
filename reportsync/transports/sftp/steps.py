"""SFTP opened step by step, in an order that sends no credential to an unverified server:
resolve → TCP → banner and key exchange → host key → authentication → SFTP and ``chdir``.

``SftpConnector`` is what both fetch (``transports.connect``) and doctor run. Fetch's first
connect makes exactly the round trips it always made; what only doctor shows (a certificate's
problems after a successful login, what the login folder holds when ``remote_dir`` is wrong) is
worked out only when doctor asked (``config_checks``), or when a step has failed anyway.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import stat
import time
from collections.abc import Sequence
from pathlib import Path

import paramiko

from reportsync.config import Secret, SourceConfig
from reportsync.errors import ConfigError, InternalError, NetworkError, ReportsyncError
from reportsync.fsutil import too_open
from reportsync.sshkeys import certificate_expiry
from reportsync.transports.base import (
    Check,
    Connector,
    Step,
    StepFailure,
    StepResult,
    first_problem,
    shown_names,
)
from reportsync.transports.findings import StepFinding
from reportsync.transports.network import Dialer
from reportsync.transports.sftp.auth import (
    authenticate,
    certificate_problems,
    certificate_remedy,
    old_rsa_server,
)
from reportsync.transports.sftp.credentials import (
    check_secret_files,
    load_private_key,
    require_strict_kex_support,
)
from reportsync.transports.sftp.engine import EngineChoice, choose_engine
from reportsync.transports.sftp.handshake import (
    check_banner,
    close_quietly,
    handshake,
    open_sftp_session,
    prefer_fast_ciphers,
)
from reportsync.transports.sftp.known_hosts import (
    KnownHostKey,
    fingerprint,
    host_key_name,
    load_known_hosts,
    prefer_host_key_types,
    verify_host_key,
)
from reportsync.transports.sftp.openssh import SshStartFailure, open_openssh_sftp
from reportsync.transports.sftp.session import ParamikoSession, SshSession
from reportsync.transports.sftp.stream import SftpClient
from reportsync.transports.sftp.transport import SftpTransport
from reportsync.vocab import CheckStatus, SshEngine

log = logging.getLogger(__name__)

SFTP_PORT_HINT = "the provider's SFTP port (the reference provider uses 32)"
KNOWN_HOSTS_LATER = ("The host key check below prints the line to add once you have compared "
                     "the fingerprint with the provider's.")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class SftpConnector(Connector):
    def __init__(self, source: SourceConfig) -> None:
        self.source = source
        self.source_name = source.name
        self._dialer = Dialer(source, SFTP_PORT_HINT)
        self._diagnose = False  # doctor asked: work out what only doctor shows
        self._key: paramiko.PKey | None = None
        self._key_problem: str | None = None
        self._password: Secret | None = None
        self._password_problem: str | None = None
        self._known: list[KnownHostKey] = []
        self._known_problem: str | None = None
        self._sock: socket.socket | None = None
        self._ssh: paramiko.Transport | None = None
        self._transport: SftpTransport | None = None
        self._engine: EngineChoice | None = None
        self._engine_problem: ConfigError | None = None
        self._opened: tuple[SshSession, SftpClient] | None = None  # the openssh engine's

    # --- before the network ---

    def prepare(self) -> None:
        source = self.source
        try:
            require_strict_kex_support()
            check_secret_files(source)
            self._key = load_private_key(source) if source.key_file is not None else None
            self._password = source.password.resolve()
            if source.known_hosts is not None:
                self._known = load_known_hosts(source.known_hosts, self._host_names(),
                                               f"sources.{source.name}.known_hosts")
            self._engine = choose_engine(source)
        except ReportsyncError as exc:
            raise exc.with_context(source=source.name) from None

    def _host_names(self) -> tuple[str, ...]:
        return (host_key_name(self.source.host, self.source.port),)

    def config_checks(self) -> list[StepResult]:
        self._diagnose = True
        try:
            self._engine = choose_engine(self.source)
        except ConfigError as error:  # the engine step says so, after the steps
            self._engine_problem = error
        results: list[StepResult] = []
        try:
            self._password = self.source.password.resolve()
        except ConfigError as error:  # doctor's secret check has said so
            self._password_problem = first_problem(error)
        if self.source.key_file is not None:
            results += self._check_key_file(self.source.key_file)
        if self.source.known_hosts is not None:
            results += self._check_known_hosts(self.source.known_hosts)
        return results

    def _check_key_file(self, path: Path) -> list[StepResult]:
        source = self.source
        where = f"sources.{source.name}.key_file"
        check = Check.KEY_FILE
        if not path.exists():
            self._key_problem = f"{where}: {path} does not exist"
            return [StepResult.failed(
                check, StepFinding.KEY_FILE_MISSING, ConfigError([self._key_problem]),
                finding=self._key_problem,
                remedy=f"Create a key (`reportsync keys ssh generate --out {path}`) and register "
                f"{path}.pub with the provider, or correct key_file.")]
        results = []
        if too_open(path) is not None:
            problem = (f"{where}: {path} has mode {_mode(path):04o}: other users can read your "
                       "private SSH key (ssh refuses such a key)")
            results.append(StepResult.failed(check, StepFinding.KEY_FILE_TOO_OPEN,
                                             ConfigError([problem]), finding=problem,
                                             remedy=f"chmod 600 {path}"))
        try:
            self._key = load_private_key(source)
        except ConfigError as error:
            self._key_problem = first_problem(error)
            return [*results, StepResult.failed(check, StepFinding.KEY_FILE_UNUSABLE, error,
                                                finding=self._key_problem)]
        except Exception as exc:  # a defect: said, and the login is not tried with it
            self._key_problem = f"{where}: {path}: {exc}"
            return [*results, StepResult.failed(check, StepFinding.KEY_FILE_UNUSABLE,
                                                InternalError(self._key_problem))]
        if not results:
            certificate = f" with certificate {source.certificate_file}" \
                if source.certificate_file else ""
            results.append(StepResult.passed(
                check, StepFinding.KEY_FILE_OK,
                f"{where}: {path} ({self._key.get_name()} {fingerprint(self._key)}), mode "
                f"{_mode(path):04o}{certificate}"))
        return results

    def _check_known_hosts(self, path: Path) -> list[StepResult]:
        source = self.source
        where = f"sources.{source.name}"
        check = Check.KNOWN_HOSTS
        names = self._host_names()
        try:
            self._known = load_known_hosts(path, names, f"{where}.known_hosts")
        except ConfigError as error:
            self._known_problem = first_problem(error)
            return [StepResult.failed(
                check, StepFinding.KNOWN_HOSTS_UNREADABLE, error, finding=self._known_problem,
                remedy=f"Fix the permissions of {path} or point {where}.known_hosts at a "
                "readable file.")]
        if not path.exists():
            return [StepResult.warned(check, StepFinding.KNOWN_HOSTS_MISSING,
                                      f"{where}.known_hosts: {path} does not exist",
                                      KNOWN_HOSTS_LATER)]
        records = len([entry for entry in self._known if not entry.marker])
        if records or source.host_key_fingerprint:
            return [StepResult.passed(check, StepFinding.KNOWN_HOSTS_OK,
                                      f"{where}.known_hosts: {path} holds {records} key(s) for "
                                      f"{names[0]}")]
        return [StepResult.warned(check, StepFinding.KNOWN_HOSTS_NO_KEY,
                                  f"{where}.known_hosts: {path} holds no key for {names[0]}, and "
                                  "no host_key_fingerprint is set", KNOWN_HOSTS_LATER)]

    # --- the steps ---

    def steps(self) -> Sequence[Step]:
        if self._engine is not None and self._engine.engine is SshEngine.OPENSSH \
                and not self._diagnose:
            # ssh does DNS, TCP, key exchange, the host key check and the login in one step;
            # doctor keeps paramiko's steps (they explain a failure) and adds ``_engine_step``
            return (Step(Check.AUTH, self._ssh_login),
                    Step(Check.REMOTE_FOLDER, self._remote_folder))
        return (Step(Check.DNS, self._dialer.dns), Step(Check.TCP, self._dialer.tcp),
                Step(Check.BANNER, self._banner), Step(Check.HOST_KEY, self._host_key),
                Step(Check.AUTH, self._auth), Step(Check.REMOTE_FOLDER, self._remote_folder))

    def probes(self) -> Sequence[Step]:
        return (Step(Check.SSH_ENGINE, self._engine_step),)

    # --- the openssh engine ---

    def _ssh_login(self) -> StepResult:
        engine = self._engine
        assert engine is not None and engine.program is not None
        try:
            session, _ = self._opened = open_openssh_sftp(self.source, engine.program, self._key)
        except SshStartFailure as failure:
            return self._explain_ssh_failure(failure)
        return StepResult.passed(Check.AUTH, StepFinding.AUTH_OK,
                                 f"logged in as {self.source.username!r} through "
                                 f"{session.describe()}")

    def _explain_ssh_failure(self, failure: SshStartFailure) -> StepResult:
        """ssh's failure, or, where paramiko's steps word it better (the host key offered and
        the line to add; DNS; what listens on the port), the first of those steps that fails:
        they stop before the login, so no credential is sent."""
        if failure.explain_with_paramiko:
            try:
                for step in (self._dialer.dns, self._dialer.tcp, self._banner, self._host_key):
                    result = step()
                    if result.status is CheckStatus.FAIL:
                        return result
            finally:
                ssh, self._ssh = self._ssh, None
                sock, self._sock = self._sock, None
                close_quietly(ssh, sock)
                self._dialer.close()
        return failure.result(Check.AUTH)

    def _engine_step(self) -> StepResult:
        """doctor: the engine a fetch will use and, for openssh, that ssh logs in too (its
        checks are its own: a key file ssh finds too open, a stricter known_hosts reading)."""
        check = Check.SSH_ENGINE
        if self._engine_problem is not None:
            return StepResult.failed(check, StepFinding.SSH_ENGINE_UNUSABLE,
                                     self._engine_problem)
        engine = self._engine
        if engine is None or engine.engine is SshEngine.PARAMIKO or engine.program is None:
            why = engine.why if engine is not None else "not chosen"
            return StepResult.passed(check, StepFinding.SSH_ENGINE_PARAMIKO,
                                     f"fetch speaks SSH with paramiko ({why})")
        try:
            session, sftp = open_openssh_sftp(self.source, engine.program, self._key)
        except SshStartFailure as failure:
            return StepResult.failed(
                check, StepFinding.SSH_ENGINE_OPENSSH_FAILED, failure.error,
                finding=f"fetch speaks SSH with {engine.describe()}, and ssh could not log in "
                f"although paramiko did: {failure.error.message}",
                remedy=f"{failure.error.remedy} Or set sources.{self.source.name}.ssh_engine = "
                "\"paramiko\".")
        try:
            sftp.chdir(self.source.remote_dir)
        except Exception as exc:
            problem = SftpTransport(self.source, session, sftp).classify(
                exc, f"cannot open remote_dir {self.source.remote_dir!r} through ssh",
                path=self.source.remote_dir)
            return StepResult.failed(check, StepFinding.SSH_ENGINE_OPENSSH_FAILED, problem)
        finally:
            with contextlib.suppress(Exception):
                sftp.close()
            session.close()
        return StepResult.passed(check, StepFinding.SSH_ENGINE_OPENSSH,
                                 f"fetch speaks SSH with {session.describe()}: it logged in "
                                 f"and opened {self.source.remote_dir!r}")

    # --- the paramiko engine ---

    def _banner(self) -> StepResult:
        source = self.source
        sock = self._sock = self._dialer.take_socket()
        # SFTP is request/response in small packets: Nagle's algorithm with delayed ACKs adds
        # tens of milliseconds to every small file (measured: 2.7x more small files per second)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.monotonic()
        try:
            first = check_banner(source, sock)
            ssh = self._ssh = paramiko.Transport(sock)
            ssh.banner_timeout = source.timeout
            ssh.handshake_timeout = source.timeout
            ssh.auth_timeout = source.timeout
            ssh.channel_timeout = source.timeout
            prefer_host_key_types(ssh, self._known)
            prefer_fast_ciphers(ssh)
            handshake(source, ssh, first, started)
        except StepFailure as failure:
            return failure.result(Check.BANNER)
        log.debug("source %s: strict key exchange %s", source.name,
                  "agreed" if getattr(ssh, "agreed_on_strict_kex", False)
                  else "not offered by the server")
        return StepResult.passed(Check.BANNER, StepFinding.BANNER_OK,
                                 f"SSH server: {ssh.remote_version}")

    def _host_key(self) -> StepResult:
        assert self._ssh is not None
        source = self.source
        if self._known_problem is not None:
            return StepResult.failed(
                Check.HOST_KEY, StepFinding.HOST_KEY_UNREADABLE, ConfigError([self._known_problem]),
                finding=self._known_problem,
                remedy=f"Make {source.known_hosts} readable; doctor does not log in before the "
                "host key is checked.")
        offered = self._ssh.get_remote_server_key()
        try:
            line = verify_host_key(source, offered, self._known)
        except StepFailure as failure:
            return failure.result(Check.HOST_KEY)
        how = (f"matches {source.known_hosts} line {line}" if line is not None
               else "matches host_key_fingerprint")
        return StepResult.passed(Check.HOST_KEY, StepFinding.HOST_KEY_OK,
                                 f"host key {offered.get_name()} {fingerprint(offered)} {how}")

    def _auth(self) -> StepResult:
        ssh = self._ssh
        assert ssh is not None
        source = self.source
        if self._key_problem is not None:
            return StepResult.skipped(Check.AUTH, StepFinding.AUTH_SKIPPED_KEY,
                                      "key_file could not be loaded (see the config checks)")
        if self._password_problem is not None:
            return StepResult.skipped(Check.AUTH, StepFinding.AUTH_SKIPPED_PASSWORD,
                                      "the password could not be read (see the config checks)")
        key = self._key
        try:
            authenticate(source, ssh, key, self._password.reveal() if self._password else None)
        except StepFailure as failure:
            return self._explain_refusal(failure, key, ssh)
        credential = "password"
        if key is not None:
            credential = f"key {key.get_name()} {fingerprint(key)}"
        if not self._diagnose or source.certificate_file is None:
            return StepResult.passed(Check.AUTH, StepFinding.AUTH_OK,
                                     f"logged in as {source.username!r} with the {credential}")
        certificate, problems = certificate_problems(source)
        if certificate is not None:
            until = "forever" if certificate.valid_to is None else \
                f"until {certificate.valid_to:%Y-%m-%d}"
            credential = f"certificate {source.certificate_file} (valid {until})"
        if problems:
            return StepResult.warned(
                Check.AUTH, StepFinding.AUTH_CERTIFICATE_PROBLEM,
                f"logged in as {source.username!r}, although "
                f"{'; '.join(problem.text for problem in problems)}",
                certificate_remedy(source, problems))
        expiry = certificate_expiry(certificate) if certificate is not None else None
        if expiry is not None and expiry.soon:
            return StepResult.warned(Check.AUTH, StepFinding.AUTH_CERTIFICATE_EXPIRING,
                                     f"logged in as {source.username!r}, but {expiry.finding}",
                                     expiry.remedy)
        return StepResult.passed(Check.AUTH, StepFinding.AUTH_OK,
                                 f"logged in as {source.username!r} with the {credential}")

    def _explain_refusal(self, failure: StepFailure, key: paramiko.PKey | None,
                         ssh: paramiko.Transport) -> StepResult:
        """doctor's words for a refused login: the certificate's own problems, or the old-server
        RSA case, when they explain it."""
        error = failure.error
        if isinstance(error, NetworkError):
            return failure.result(Check.AUTH)
        _, problems = certificate_problems(self.source)
        if problems:
            return StepResult.failed(
                Check.AUTH, problems[0].finding_id, error,
                finding=f"{'; '.join(problem.text for problem in problems)}: the server refused "
                f"the login ({error.message})", remedy=certificate_remedy(self.source, problems))
        if failure.finding_id == StepFinding.AUTH_KEY_REFUSED and old_rsa_server(key, ssh):
            return StepResult.failed(
                Check.AUTH, StepFinding.AUTH_OLD_RSA_SERVER, error,
                finding=f"{error.message}; the server does not announce RSA SHA-2 signatures "
                f"(server-sig-algs), like old SSH servers ({ssh.remote_version}) that accept only "
                "ssh-rsa (SHA-1) signatures, while reportsync signs with rsa-sha2-512/256",
                remedy="Ask the provider to allow rsa-sha2-256/rsa-sha2-512 signatures (OpenSSH "
                "7.2 or later does); or, if they accept it, register an ed25519 key instead "
                "(`reportsync keys ssh generate --type ed25519`).")
        return failure.result(Check.AUTH)

    def _remote_folder(self) -> StepResult:
        source = self.source
        session: SshSession
        if self._opened is not None:
            session, sftp = self._opened
            self._opened = None  # the transport's now
        else:
            ssh = self._ssh
            assert ssh is not None
            try:
                sftp = open_sftp_session(source, ssh)
            except StepFailure as failure:
                return failure.result(Check.REMOTE_FOLDER)
            session = ParamikoSession(ssh)
        transport = self._transport = SftpTransport(source, session, sftp)
        try:
            sftp.chdir(source.remote_dir)
        except Exception as exc:
            problem = transport.classify(exc, f"cannot open remote_dir {source.remote_dir!r}",
                                         path=source.remote_dir)
            if isinstance(problem, NetworkError):
                return StepResult.failed(Check.REMOTE_FOLDER, StepFinding.REMOTE_FOLDER_LOST,
                                         problem)
            reason = exc.errno if isinstance(exc, OSError) else None
            finding_id = {errno.ENOENT: StepFinding.REMOTE_FOLDER_MISSING,
                          errno.EACCES: StepFinding.REMOTE_FOLDER_DENIED,
                          errno.EPERM: StepFinding.REMOTE_FOLDER_DENIED,
                          }.get(reason or 0, StepFinding.REMOTE_FOLDER_REFUSED)
            return StepResult.failed(Check.REMOTE_FOLDER, finding_id, problem,
                                     remedy=self._folder_remedy(sftp) if self._diagnose else None)
        log.debug("source %s: logged in to %s:%d as %s, in %s", source.name, source.host,
                  source.port, source.username, source.remote_dir)
        return StepResult.passed(Check.REMOTE_FOLDER, StepFinding.REMOTE_FOLDER_OK,
                                 f"remote folder {source.remote_dir!r} opened ({sftp.getcwd()})")

    def _folder_remedy(self, sftp: paramiko.SFTPClient) -> str:
        """Where ``remote_dir`` is looked for, and what is there (the chdir failed: the session
        is still in the login folder)."""
        try:
            home = sftp.normalize(".")
        except Exception:
            home = "."
        try:
            there = sorted(sftp.listdir("."))
        except Exception:
            there = []
        holds = f", which holds: {shown_names(there)}" if there else ""
        return (f"Check remote_dir in [sources.{self.source.name}]: it is relative to the login "
                f"folder {home}{holds}. If the folder is right, ask the provider for read access "
                "to it.")

    # --- the result ---

    def transport(self) -> SftpTransport:
        if self._transport is None:
            raise InternalError("the SFTP connection is not open", source=self.source_name)
        return self._transport

    def close(self) -> None:
        transport, self._transport = self._transport, None
        ssh, self._ssh = self._ssh, None
        sock, self._sock = self._sock, None
        opened, self._opened = self._opened, None
        if opened is not None:
            opened[1].close()
            opened[0].close()
        if transport is not None:
            transport.close()
        else:
            close_quietly(ssh, sock)
        self._dialer.close()
