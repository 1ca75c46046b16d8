"""The openssh engine: OpenSSH's ``ssh -s sftp`` as a child does the SSH part (TCP, key exchange,
host key check, login, crypto); SFTP is spoken over its stdin/stdout (``stream.PipeStream``) by
the same code as over paramiko (``stream.SftpClient``, ``wire.py``).

Why: paramiko does the SSH packet layer in Python, at about half the speed of ``sftp`` for one
big file (issue 13; docs/performance.md "The OpenSSH engine"). OpenSSH does it in C.

What ssh is told (docs/security.md "The OpenSSH engine" says why each): no configuration file of
the user's (``-F none``), no agent, only the source's key (and certificate), strict host key
checking against the source's ``known_hosts`` alone (or the pinned fingerprint, through
``KnownHostsCommand``), nothing forwarded, no multiplexing, no proxy, no local command, and
timeouts from the source. Its environment is the allowlist of ``process.child_environment``;
nothing secret is in its argv or environment (the engine is not used for a password login or a
key with a passphrase: ``engine.py`` hands those to paramiko).

Failures: ssh exits 255 with a line on stderr. ``login_failure`` below is the one place that
reads those lines; where paramiko's steps word a failure better (a host key refused, the DNS
lookup, a refused port: their words name the key, the line to add, the remedy), the connector
asks them (``steps.SftpConnector._explain_ssh_failure``), which sends no credential.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import re
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import paramiko

from reportsync import process
from reportsync.config import SourceConfig
from reportsync.errors import (
    HostKeyError,
    NetworkError,
    RemoteError,
    ReportsyncError,
)
from reportsync.fsutil import printable
from reportsync.transports.base import StepFailure
from reportsync.transports.findings import StepFinding
from reportsync.transports.openssh_program import SshProgram
from reportsync.transports.sftp.auth import key_refused_text, login_failed
from reportsync.transports.sftp.handshake import describe
from reportsync.transports.sftp.session import SshSession
from reportsync.transports.sftp.stream import PipeStream, SftpClient
from reportsync.transports.sftp.transport import RESET_REMEDY
from reportsync.vocab import SshEngine

log = logging.getLogger(__name__)

CLOSE_GRACE = 2.0  # seconds ssh gets to end after its input closed, before it is killed
STDERR_LIMIT = 64 * 1024  # bytes of ssh's stderr kept (LogLevel=ERROR says a few lines)

CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com," \
    "aes128-ctr,aes192-ctr,aes256-ctr"
"""AES-GCM first: with AES-NI it measured faster than chacha20-poly1305 here (issue 13 and
docs/performance.md); the rest of OpenSSH's default list follows, so no server loses."""

KEX_ALGORITHMS = "curve25519-sha256,curve25519-sha256@libssh.org," \
    "sntrup761x25519-sha512@openssh.com,ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521," \
    "diffie-hellman-group-exchange-sha256,diffie-hellman-group16-sha512," \
    "diffie-hellman-group18-sha512,diffie-hellman-group14-sha256"
"""curve25519 first, as the paramiko engine negotiates: OpenSSH 9's default first choice, the
post-quantum hybrid sntrup761x25519, measured 0.15-0.3 s more per connection here (two
connections' key exchanges on the 2 loaded cores), a third of a small-file fetch's login.
docs/security.md says what that trades. Names only that OpenSSH 8.5 knows too (an unknown one
stops ssh)."""


def known_hosts_command(pin: str) -> str:
    """``KnownHostsCommand`` for a pinned fingerprint: ssh runs it (no shell of its own: argv
    split by ssh, %-tokens expanded in each word) with the offered key's fingerprint, the name
    looked up, its type and its key; it prints that key as a known_hosts line only when the
    fingerprint is the pinned one. ``/bin/sh``, not Python: nothing to start but a shell."""
    if not re.fullmatch(r"SHA256:[A-Za-z0-9+/]+=*", pin):  # config's form check, once more
        raise ValueError(f"not a SHA256 fingerprint: {pin!r}")
    pinned = pin.rstrip("=")
    # no "%" but the tokens: ssh expands every "%" of the command
    return ("/bin/sh -c 'test \"$1\" = \"" + pinned + "\" && echo \"$2 $3 $4\"; exit 0' "
            "reportsync-pin %f %H %t %K")


def ssh_argv(source: SourceConfig, program: SshProgram, key_path: Path | None = None
             ) -> list[str]:
    """The ``ssh`` command for ``source`` (nothing secret in it: paths, names, numbers);
    ``key_path``: where ssh reads the key (default: ``key_file``)."""
    timeout = math.ceil(source.timeout)
    alive = max(1, math.ceil(source.timeout / 3))
    options = {
        "BatchMode": "yes",  # never a prompt: no terminal under cron, no password typed
        "IdentitiesOnly": "yes",
        "IdentityAgent": "none",
        "PasswordAuthentication": "no",
        "KbdInteractiveAuthentication": "no",
        "StrictHostKeyChecking": "yes",
        "UserKnownHostsFile": quoted(source.known_hosts) if source.known_hosts else "none",
        "GlobalKnownHostsFile": "none",
        "UpdateHostKeys": "no",
        "CheckHostIP": "no",
        "HashKnownHosts": "no",
        "VerifyHostKeyDNS": "no",
        "ConnectTimeout": str(timeout),
        "ServerAliveInterval": str(alive),
        "ServerAliveCountMax": "3",
        "ControlMaster": "no",
        "ControlPath": "none",
        "ForwardAgent": "no",
        "ForwardX11": "no",
        "ClearAllForwardings": "yes",
        "PermitLocalCommand": "no",
        "ProxyCommand": "none",
        "ProxyJump": "none",
        "Tunnel": "no",
        "RequestTTY": "no",
        "EscapeChar": "none",
        "Compression": "no",
        "LogLevel": "ERROR",
        "Ciphers": CIPHERS,
        "KexAlgorithms": KEX_ALGORITHMS,
    }
    if source.key_file is not None:
        options["IdentityFile"] = quoted(key_path or source.key_file)
        options["PubkeyAuthentication"] = "yes"
    else:
        options["IdentityFile"] = "none"
    if source.certificate_file is not None:
        options["CertificateFile"] = quoted(source.certificate_file)
    if source.host_key_fingerprint:
        options["KnownHostsCommand"] = known_hosts_command(source.host_key_fingerprint)
    argv = [program.path, "-F", "none", "-T", "-x", "-a", "-p", str(source.port),
            "-l", source.username]
    for name, value in options.items():
        argv += ["-o", f"{name}={value}"]
    return [*argv, "-s", "--", source.host, "sftp"]


def unquotable(path: Path) -> bool:
    """A path ssh would not read as it is: it expands ``%`` tokens (and ``~``) in these options,
    and a double quote cannot be quoted (``engine.py`` leaves such a source to paramiko)."""
    text = str(path)
    return "%" in text or '"' in text or text.startswith("~")


def quoted(path: Path) -> str:
    """A path as an ssh option's value: in double quotes, so a space does not split it (these
    options take several files separated by spaces)."""
    return f'"{path}"'


def _hidden(source: SourceConfig) -> tuple[str, ...]:
    return tuple(ref.env for ref in (source.password, source.key_passphrase) if ref.env)


class OpenSshSession(SshSession):
    engine = SshEngine.OPENSSH
    reads_in_flight = 64
    """64 reads of 255 KiB (16 MiB) in flight: ssh and the pipe keep up; fewer left the big file
    waiting on round trips (docs/performance.md "The OpenSSH engine")."""

    def __init__(self, source: SourceConfig, program: SshProgram) -> None:
        self.source = source
        self.program = program
        self._key_folder: Path | None = None
        key_path = None
        if source.key_file is not None:
            # ssh offers KEY-cert.pub too whenever it lies beside the key (no option stops
            # that): a certificate the config did not name. ssh reads the key through a link in
            # a private folder of its own instead, removed once logged in.
            self._key_folder = Path(tempfile.mkdtemp(prefix="reportsync-ssh-"))
            key_path = self._key_folder / "key"
            key_path.symlink_to(source.key_file.resolve())
        try:
            self.child = process.popen_pipes(
                ssh_argv(source, program, key_path),
                env=process.child_environment(_hidden(source), environ=source.password.environ))
        except BaseException:
            self.forget_key_link()
            raise
        _open_sessions.add(self)
        assert self.child.stdin is not None and self.child.stdout is not None
        assert self.child.stderr is not None
        self.stream = PipeStream(self.child.stdout.fileno(), self.child.stdin.fileno(),
                                 source.timeout)
        os.set_blocking(self.child.stderr.fileno(), False)
        self._stderr = b""
        self._closed = False

    # --- SshSession ---

    def is_active(self) -> bool:
        return (not self._closed and not self.stream.closed and not self.stream.ended
                and self.child.poll() is None)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        _open_sessions.discard(self)
        self.stream.close()
        child = self.child
        try:
            with contextlib.suppress(OSError):
                assert child.stdin is not None
                child.stdin.close()  # ssh sends EOF to the server, which ends the session
            try:
                child.wait(timeout=min(CLOSE_GRACE, self.source.timeout))
            except process.TimeoutExpired:
                child.kill()
                child.wait(timeout=CLOSE_GRACE)
        except Exception as exc:  # close never raises
            log.debug("stopping ssh: %s", exc)
        finally:
            self.forget_key_link()
            self._read_stderr()
            for pipe in (child.stdout, child.stderr):
                with contextlib.suppress(OSError):
                    if pipe is not None:
                        pipe.close()

    def describe(self) -> str:
        return f"openssh ({self.program.version_text}, {self.program.path})"

    def ended_by(self) -> BaseException | None:
        if self.child.poll() is None:
            if not self.stream.ended:
                return None
            # ssh closed its pipes as it exits: its last words are on stderr in a moment
            try:
                self.child.wait(timeout=CLOSE_GRACE)
            except process.TimeoutExpired:
                return None
        text = self.stderr_text()
        log.debug("ssh ended (exit %s): %s", self.child.returncode, printable(text, quote=False))
        if _was_reset(text):
            return ConnectionResetError(f"ssh: {printable(text.strip(), quote=False)}")
        return None

    def forget_key_link(self) -> None:
        """Remove the key's link and its folder (ssh has read the key: logged in, or ended)."""
        folder, self._key_folder = self._key_folder, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    # --- ssh's own words ---

    def _read_stderr(self) -> None:
        pipe = self.child.stderr
        if pipe is None or pipe.closed:
            return
        while len(self._stderr) < STDERR_LIMIT:
            try:
                data = os.read(pipe.fileno(), STDERR_LIMIT - len(self._stderr))
            except (BlockingIOError, OSError):
                return
            if not data:
                return
            self._stderr += data

    def stderr_text(self) -> str:
        self._read_stderr()
        return self._stderr.decode("utf-8", "replace")

    def wait_for_exit(self) -> int | None:
        """ssh's exit code once it ended by itself (bounded by the source's timeout), else it is
        killed and None."""
        try:
            return self.child.wait(timeout=self.source.timeout)
        except process.TimeoutExpired:
            self.child.kill()
            with contextlib.suppress(process.TimeoutExpired):
                self.child.wait(timeout=CLOSE_GRACE)
            return None


_open_sessions: weakref.WeakSet[OpenSshSession] = weakref.WeakSet()


@atexit.register
def _end_open_sessions() -> None:
    """At the process's end, the ssh of a session nobody closed (a login started ahead that the
    run did not wait for: ``transports/head_start.py``) is killed and its key link removed:
    no ssh outlives reportsync, no link to the key stays in the temp folder."""
    for session in list(_open_sessions):
        with contextlib.suppress(OSError):
            session.child.kill()
        session.forget_key_link()


@dataclass(frozen=True)
class LoginFailure:
    """Why ssh ended before the SFTP session was up, from its exit and stderr."""

    finding_id: StepFinding
    error: ReportsyncError
    explain_with_paramiko: bool
    """paramiko's steps up to the host key check (no credential sent) word this better: the
    host key offered and the line to add, the DNS answer, what listens on the port."""


class SshStartFailure(StepFailure):
    """ssh did not bring the SFTP session up (``login_failure``'s reading of why)."""

    def __init__(self, failure: LoginFailure) -> None:
        super().__init__(failure.finding_id, failure.error)
        self.explain_with_paramiko = failure.explain_with_paramiko


def open_openssh_sftp(source: SourceConfig, program: SshProgram, key: paramiko.PKey | None
                      ) -> tuple[OpenSshSession, SftpClient]:
    """Start ssh and the SFTP session over it (INIT, VERSION); ``StepFailure`` with ssh's failure
    (``login_failure``) when it did not come up."""
    session = OpenSshSession(source, program)
    # the first answer waits for ssh's connect (bounded by ConnectTimeout), then the key
    # exchange, the login and the subsystem (one more timeout)
    session.stream.settimeout(2 * source.timeout)
    try:
        sftp = SftpClient(session.stream)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        timed_out = isinstance(exc, TimeoutError)
        returncode = None if timed_out else session.wait_for_exit()
        text = session.stderr_text()
        session.close()
        raise SshStartFailure(login_failure(source, key, returncode, text, timed_out=timed_out,
                                            cause=exc)) from None
    except BaseException:
        session.close()
        raise
    session.forget_key_link()
    session.stream.settimeout(source.timeout)
    return session, sftp


def _was_reset(stderr: str) -> bool:
    """ssh met a TCP reset: said as such ("Connection reset by peer", or ssh's own "Connection
    reset by HOST port N"), or as EPIPE on the socket ("send disconnect: Broken pipe"), which a
    TCP socket gives only once the peer reset it (a clean close is "closed by remote host").
    ssh sometimes ends after a reset without a word: that reads "connection lost"."""
    return "Connection reset by " in stderr or "send disconnect: Broken pipe" in stderr


def _ssh_says(text: str) -> str:
    lines = [line.strip().rstrip(".") for line in text.splitlines()
             if line.strip() and set(line.strip()) != {"@"}]
    return printable("; ".join(lines[-3:]), quote=False) if lines else "nothing"


def login_failure(source: SourceConfig, key: paramiko.PKey | None, returncode: int | None,
                  stderr: str, *,
                  timed_out: bool = False, cause: BaseException | None = None) -> LoginFailure:
    """The one reading of how ssh failed to bring up the SFTP session: its stderr mapped to our
    finding ids and errors (exit codes: host key 5, login 3, network 4 retryable)."""
    where = f"{source.host}:{source.port}"
    says = _ssh_says(stderr)
    doctor = f"Run `reportsync doctor --source {source.name}`."
    name = source.name

    def network(finding_id: StepFinding, message: str, remedy: str | None = None,
                explain: bool = False) -> LoginFailure:
        return LoginFailure(finding_id, NetworkError(message, remedy=remedy or doctor,
                                                     source=name), explain)

    if "Host key verification failed" in stderr or "REMOTE HOST IDENTIFICATION HAS CHANGED" in \
            stderr or "revoked key" in stderr:
        finding_id = StepFinding.HOST_KEY_CHANGED if "HAS CHANGED" in stderr or \
            "revoked" in stderr else StepFinding.HOST_KEY_UNKNOWN
        return LoginFailure(finding_id, HostKeyError(
            f"ssh refused the host key of {where}: {says}. No credential was sent.",
            remedy=f"Compare the server's fingerprint with the one your provider publishes "
            f"(`reportsync doctor --source {name}` shows it and the line to add).",
            source=name), True)
    denied = re.search(r"Permission denied \(([^)]*)\)", stderr)
    if denied is not None:  # paramiko's words: the key's type and fingerprint, what is allowed
        refused = [key_refused_text(source, key)] if key is not None else \
            [f"server refused the login ({says})"]
        allowed = [method for method in denied.group(1).split(",") if method] or None
        step = login_failed(source, key, False, refused=refused, key_refused=True, accepted=[],
                            allowed=allowed)
        return LoginFailure(step.finding_id, step.error, False)
    if "Could not resolve hostname" in stderr:
        return network(StepFinding.DNS_UNRESOLVED,
                       f"cannot resolve host {source.host!r}: {says}", explain=True)
    if "Connection refused" in stderr:
        return network(StepFinding.TCP_REFUSED, f"connection to {where} refused ({says})",
                       explain=True)
    if _was_reset(stderr):
        # said as the transport says a reset (transport.classify): not a timeout
        return LoginFailure(StepFinding.BANNER_LOST, NetworkError(
            f"logging in: the connection to {where} was reset (a TCP reset: cut by the server or "
            f"by something on the way, not a timeout; ssh says: {says})", remedy=RESET_REMEDY,
            source=name), False)
    if "banner exchange" in stderr:
        # no SSH greeting within the timeout: not an SSH server (an HTTP one), or a silent one;
        # paramiko's banner step names which (for a silent server it waits one more timeout)
        return network(StepFinding.BANNER_HANDSHAKE_FAILED,
                       f"SSH handshake with {where} failed ({says})", explain=True)
    if "kex_exchange_identification" in stderr:
        # closed before the SSH greeting: a connection dropped on the way (retried as it is,
        # no second connection to explain it), or not an SSH server (an FTP one): doctor's
        # banner step names what answers there
        return network(StepFinding.BANNER_CLOSED,
                       f"{where} closed the connection before the SSH greeting ({says})",
                       remedy="If it keeps happening, check that `port` is the provider's SFTP "
                       f"port: `reportsync doctor --source {name}` names what answers there.")
    if "timed out" in stderr:
        return network(StepFinding.TCP_TIMEOUT,
                       f"connection to {where} timed out after {source.timeout:g}s: no answer at "
                       f"all ({says})")
    if "not responding" in stderr:
        return network(StepFinding.AUTH_NO_ANSWER,
                       f"{source.host} stopped answering during login ({says})")
    if "subsystem request failed" in stderr:
        return LoginFailure(StepFinding.REMOTE_FOLDER_NO_SFTP, _no_sftp(source, says), False)
    if timed_out:
        return network(StepFinding.BANNER_HANDSHAKE_TIMEOUT,
                       f"SSH connection to {where}: no SFTP session within "
                       f"{2 * source.timeout:g}s (ssh says: {says})")
    if returncode is not None and returncode != 255 and not stderr.strip():
        # ssh logged in, then the server ended the session at once: no SFTP there
        return LoginFailure(StepFinding.REMOTE_FOLDER_NO_SFTP, _no_sftp(source, says), False)
    how = f"exit {returncode}" if returncode is not None else "stopped"
    detail = f"; {describe(cause)}" if cause is not None and not stderr.strip() else ""
    return network(StepFinding.BANNER_FAILED,
                   f"ssh could not open the SFTP session with {where} ({how}): {says}{detail}")


def _no_sftp(source: SourceConfig, says: str) -> ReportsyncError:
    return RemoteError(f"{source.host} did not start its SFTP service (ssh says: {says})",
                       remedy="The account may not be allowed SFTP; ask the provider.",
                       source=source.name)

