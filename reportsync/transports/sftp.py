"""SFTP over paramiko, with the host key checked before any credential is sent.

The connection is built step by step rather than with ``SSHClient`` so the order is ours:
TCP connect → banner → key exchange → host key check → authentication → SFTP → ``chdir``.
Every library exception is turned into a ``ReportsyncError`` here (see ``transports/base.py``).
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import io
import logging
import re
import socket
import stat
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import paramiko
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from paramiko.pkey import UnknownKeyType
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_DATA,
    CMD_HANDLE,
    CMD_NAME,
    CMD_OPENDIR,
    CMD_READ,
    CMD_READDIR,
    CMD_STATUS,
    int64,
)
from paramiko.ssh_exception import IncompatiblePeer

from reportsync.config import SourceConfig
from reportsync.errors import (
    AuthenticationError,
    ConfigError,
    HostKeyError,
    NetworkError,
    RemoteError,
    ReportsyncError,
    StorageError,
)
from reportsync.fsutil import printable, require_private_file
from reportsync.transports.base import ByteSink, ProgressCallback, RemoteFile, Transport

log = logging.getLogger(__name__)

READ_REQUEST_BYTES = 255 * 1024
"""Bytes asked for by one SFTP READ (OpenSSH's largest: 256 KiB less 1 KiB), and so the most
handed to ``destination`` per write (and per progress call): what arrived is written before a
later read can fail. A server that answers with less gets smaller requests from then on."""

MIN_READ_BYTES = 32 * 1024
"""Requests never shrink below this (the SFTP drafts ask every server to take 32 KiB reads), so
a short read at the end of a file that is still growing cannot make the rest crawl."""

READS_IN_FLIGHT = 16
"""READ requests outstanding at once: enough to keep paramiko's 2 MiB channel window full (more
could not arrive sooner). It bounds memory whatever the file size: at most this many replies
(plus the pieces of one short read) are ever held. See docs/fetch.md, "SFTP reads and memory"."""

BANNER_PEEK_LIMIT = 10.0
"""Longest wait for the server to speak first before the handshake (SSH servers do at once)."""

SSH_PORT = 22

# Host key algorithm names paramiko negotiates for each key type a known_hosts file records.
_HOST_KEY_ALGORITHMS = {
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256"),
}

# errno values an SFTP server's status codes are turned into by paramiko.
_REMOTE_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR,
                  errno.EEXIST, errno.ENOTEMPTY}


def open_sftp(source: SourceConfig) -> Transport:
    """Connect and log in to ``source`` over SFTP, positioned at its ``remote_dir``."""
    return SftpTransport.connect(source)


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:<base64, no padding>``, exactly as ``ssh-keygen -l`` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def host_key_name(host: str, port: int) -> str:
    """How OpenSSH names a host in known_hosts: ``host`` on port 22, else ``[host]:port``."""
    return host if port == SSH_PORT else f"[{host}]:{port}"


# --- known_hosts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KnownHostKey:
    key: paramiko.PKey
    marker: str  # "", "@revoked" or "@cert-authority"
    lineno: int


REVOKED = "@revoked"
CERT_AUTHORITY = "@cert-authority"
MIN_PARAMIKO = (3, 4)  # strict key exchange (the Terrapin fix, CVE-2023-48795)


def _version_tuple(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.split(".")[:3]:
        digits = re.match(r"\d+", piece)
        if digits is None:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


def require_strict_kex_support(version: str | None = None) -> None:
    """Refuse to open an SFTP connection with a paramiko that cannot do strict key exchange.

    paramiko before 3.4 is open to the Terrapin prefix-truncation attack; pyproject.toml pins
    ``paramiko>=3.4``, and this catches an environment that installed around it.
    """
    installed = version if version is not None else getattr(paramiko, "__version__", "0")
    supported = _version_tuple(installed) >= MIN_PARAMIKO and hasattr(
        paramiko.Transport, "_enforce_strict_kex")
    if not supported:
        wanted = ".".join(map(str, MIN_PARAMIKO))
        raise ConfigError(
            [f"paramiko {installed} is too old: SFTP needs paramiko >= {wanted} for strict key "
             "exchange (the fix for the Terrapin attack, CVE-2023-48795)"],
            remedy=f"Upgrade it: pip install --upgrade 'paramiko>={wanted}'.",
        )


def _host_matches(patterns: str, names: tuple[str, ...]) -> bool:
    """OpenSSH's host matching: comma-separated patterns, ``*``/``?`` wildcards, ``!`` negation,
    and hashed entries (``|1|salt|hash``)."""
    matched = False
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        if negated:
            pattern = pattern[1:]
        if pattern.startswith("|1|"):
            hit = any(paramiko.HostKeys.hash_host(name, pattern) == pattern for name in names)
        else:
            hit = any(_wildcard(pattern).fullmatch(name) for name in names)
        if hit and negated:
            return False
        matched = matched or hit
    return matched


def _wildcard(pattern: str) -> re.Pattern[str]:
    """OpenSSH patterns know only ``*`` and ``?`` (``[`` is literal: ``[host]:port``)."""
    parts = (".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern)
    return re.compile("".join(parts), re.IGNORECASE)


def load_known_hosts(path: Path, names: tuple[str, ...]) -> list[KnownHostKey]:
    """The keys ``path`` records for any of ``names``, with their markers (``@revoked``,
    ``@cert-authority``); ``verify_host_key`` decides what each means."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        log.debug("known_hosts %s does not exist: no host key is known", path)
        return []
    except OSError as exc:
        raise ConfigError([f"known_hosts: cannot read {path}: {exc.strerror}"],
                          path=str(path)) from None
    found: list[KnownHostKey] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = ""
        if fields[0].startswith("@"):
            marker = fields.pop(0)
        if len(fields) < 3 or not _host_matches(fields[0], names):
            continue
        if marker not in ("", REVOKED, CERT_AUTHORITY):
            log.warning("known_hosts %s:%d: unknown marker %s: the line is not used", path,
                        lineno, marker)
            continue
        try:
            key = paramiko.PKey.from_type_string(fields[1], base64.b64decode(fields[2]))
        except (binascii.Error, ValueError, paramiko.SSHException, UnknownKeyType) as exc:
            # a marker line that cannot be read is said out loud: it was meant to restrict
            (log.warning if marker else log.debug)(
                "known_hosts %s:%d: unusable %s key skipped (%s)", path, lineno, fields[1], exc)
            continue
        found.append(KnownHostKey(key=key, marker=marker, lineno=lineno))
    return found


def _prefer_host_key_types(transport: paramiko.Transport, known: list[KnownHostKey]) -> None:
    """Ask first for the host key types on record, as SSHClient does (else a server with ed25519
    and RSA keys may show a type known_hosts does not hold)."""
    options = transport.get_security_options()
    available = list(options.key_types)
    wanted: list[str] = []
    for entry in known:
        if entry.marker:
            continue
        name = entry.key.get_name()
        for algorithm in _HOST_KEY_ALGORITHMS.get(name, (name,)):
            if algorithm in available and algorithm not in wanted:
                wanted.append(algorithm)
    if wanted:
        options.key_types = wanted + [name for name in available if name not in wanted]
        log.debug("host key algorithms preferred: %s", ", ".join(wanted))


# AES-GCM is an AEAD cipher: no separate MAC pass, and paramiko's fastest by far (the default
# aes128-ctr + hmac-sha2-256 pair costs about half the throughput). Servers without it still get
# paramiko's usual order.
_FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def _prefer_fast_ciphers(transport: paramiko.Transport) -> None:
    options = transport.get_security_options()
    available = list(options.ciphers)
    fast = [name for name in _FAST_CIPHERS if name in available]
    if fast:
        options.ciphers = fast + [name for name in available if name not in fast]


def verify_host_key(source: SourceConfig, offered: paramiko.PKey,
                    known: list[KnownHostKey]) -> None:
    """Raise HostKeyError unless ``offered`` matches known_hosts or the pinned fingerprint."""
    name = host_key_name(source.host, source.port)
    offered_fp = fingerprint(offered)
    key_type = offered.get_name()
    offered_blob = offered.asbytes()
    interception = ("Someone could be intercepting the connection (man-in-the-middle), or the "
                    "provider replaced its key.")

    for entry in known:
        if entry.marker == REVOKED and entry.key.asbytes() == offered_blob:
            raise HostKeyError(
                f"the host key of {name} ({key_type} {offered_fp}) is marked @revoked in "
                f"{source.known_hosts} line {entry.lineno}: refusing to connect. {interception}",
                remedy="Ask the provider for its current host key fingerprint before connecting.",
            )
    recorded = [entry for entry in known if not entry.marker]
    authorities = [entry for entry in known if entry.marker == CERT_AUTHORITY]
    unused_ca = (f"; {source.known_hosts} line(s) "
                 f"{', '.join(str(entry.lineno) for entry in authorities)} (@cert-authority) "
                 "were not used: reportsync does not validate host certificates")
    if any(entry.key.asbytes() == offered_blob for entry in recorded):
        log.debug("host key %s %s matches %s", key_type, offered_fp, source.known_hosts)
        if authorities:
            log.warning("source %s: host key accepted by its own known_hosts line%s",
                        source.name, unused_ca)
        return
    pin = source.host_key_fingerprint
    if pin and pin.rstrip("=") == offered_fp:
        log.debug("host key %s %s matches host_key_fingerprint", key_type, offered_fp)
        if authorities:
            log.warning("source %s: host key accepted by host_key_fingerprint%s", source.name,
                        unused_ca)
        return
    if authorities:
        # A host certificate would need its type, validity window, principals and CA signature
        # checked; paramiko offers none of that, so the trust the line expresses cannot be
        # honoured: refused loudly rather than skipped.
        raise HostKeyError(
            f"the host key of {name} ({key_type} {offered_fp}) is not recorded in "
            f"{source.known_hosts}, which trusts it only through a @cert-authority line "
            f"(line {', '.join(str(entry.lineno) for entry in authorities)}): reportsync does "
            "not validate SSH host certificates, so it refuses to connect rather than skip "
            "that line. No credential was sent.",
            remedy=f"Confirm the host key fingerprint with the provider, then add the plain key "
            f"line for {name} to {source.known_hosts} or set host_key_fingerprint = "
            f"\"{offered_fp}\".",
        )

    if recorded:
        same_type = [entry for entry in recorded if entry.key.get_name() == key_type]
        described = same_type or recorded
        on_record = ", ".join(
            f"{entry.key.get_name()} {fingerprint(entry.key)} (line {entry.lineno})"
            for entry in described
        )
        raise HostKeyError(
            f"HOST KEY CHANGED for {name}: the server offered {key_type} {offered_fp}, but "
            f"{source.known_hosts} records {on_record}. {interception} Not connecting.",
            remedy="Confirm the new fingerprint with the provider through another channel; only "
            f"then replace the old line in {source.known_hosts}.",
        )
    if pin:
        raise HostKeyError(
            f"HOST KEY CHANGED for {name}: the server offered {key_type} {offered_fp}, but "
            f"host_key_fingerprint pins {pin}. {interception} Not connecting.",
            remedy="Confirm the new fingerprint with the provider through another channel; only "
            "then update host_key_fingerprint.",
        )
    line = f"{name} {key_type} {offered.get_base64()}"
    where = f"to {source.known_hosts}" if source.known_hosts else "to your known_hosts file"
    raise HostKeyError(
        f"unknown host key for {name}: the server offered {key_type} {offered_fp}. If this "
        f"fingerprint is the one your provider publishes, add this line {where}:\n  {line}\n"
        f"or set host_key_fingerprint = \"{offered_fp}\".",
    )


# --- credentials ------------------------------------------------------------------------------


def check_secret_files(source: SourceConfig) -> None:
    """Refuse, as OpenSSH does, a private key (or a file holding its passphrase or the password)
    that group or others can access: paramiko itself never checks."""
    checks = [(source.key_file, f"sources.{source.name}.key_file", "private key"),
              (source.key_passphrase.file, f"sources.{source.name}.key_passphrase_file",
               "passphrase"),
              (source.password.file, f"sources.{source.name}.password_file", "password")]
    for path, config_key, what in checks:
        if path is not None:
            try:
                require_private_file(path, config_key, what)
            except ReportsyncError as error:
                raise error.with_context(source=source.name) from None


def _key_problem(source: SourceConfig, path: Path, text: str, remedy: str) -> ConfigError:
    error = ConfigError([f"sources.{source.name}.key_file: {path}: {text}"], path=str(path),
                        remedy=remedy)
    error.with_context(source=source.name)
    return error


def load_private_key(source: SourceConfig) -> paramiko.PKey:
    """The private key of ``source`` (RSA, ed25519, ECDSA), with its certificate if configured.

    ConfigError names the file when it is missing, unreadable, not a key, or the passphrase is
    wrong. The passphrase itself never appears anywhere.
    """
    assert source.key_file is not None
    path = source.key_file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _key_problem(source, path, f"cannot read the private key: {exc.strerror}",
                           "Check key_file; create a key with `reportsync keys ssh generate`."
                           ) from None
    secret = source.key_passphrase.resolve()
    passphrase = secret.reveal().encode("utf-8") if secret is not None else None

    def deserialize(password: bytes | None) -> object:
        if b"-----BEGIN OPENSSH PRIVATE KEY-----" in data:
            return serialization.load_ssh_private_key(data, password)
        return serialization.load_pem_private_key(data, password)

    try:
        try:
            private = deserialize(passphrase)
        except TypeError:
            if passphrase is None:
                raise _key_problem(
                    source, path, "the private key is encrypted and no passphrase is configured",
                    f"Set sources.{source.name}.key_passphrase_env or key_passphrase_file.",
                ) from None
            log.debug("key %s is not encrypted: the configured passphrase is not needed", path)
            private = deserialize(None)
    except (ValueError, UnsupportedAlgorithm):
        if passphrase is not None:
            text = "cannot decrypt the private key: wrong passphrase, or not a private key file"
        else:
            text = ("not a private key reportsync can read (OpenSSH or PEM format; RSA, ed25519 "
                    "or ECDSA)")
        raise _key_problem(source, path, text,
                           "Check key_file and the passphrase it is encrypted with.") from None

    key: paramiko.PKey
    if isinstance(private, rsa.RSAPrivateKey):
        key = paramiko.RSAKey(key=private)
    elif isinstance(private, ec.EllipticCurvePrivateKey):
        key = paramiko.ECDSAKey(vals=(private, private.public_key()))
    elif isinstance(private, ed25519.Ed25519PrivateKey):
        text = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ).decode("ascii")
        key = paramiko.Ed25519Key(file_obj=io.StringIO(text))
    else:
        raise _key_problem(source, path, f"unsupported key type {type(private).__name__}",
                           "Use an RSA, ed25519 or ECDSA key.")

    if source.certificate_file is not None:
        _load_certificate(source, key, source.certificate_file)
    log.debug("loaded %s key %s from %s", key.get_name(), fingerprint(key), path)
    return key


def _load_certificate(source: SourceConfig, key: paramiko.PKey, path: Path) -> None:
    def problem(text: str) -> ConfigError:
        error = ConfigError([f"sources.{source.name}.certificate_file: {path}: {text}"],
                            path=str(path),
                            remedy="Check certificate_file: it must be the OpenSSH certificate "
                            "(*-cert.pub) issued for key_file.")
        error.with_context(source=source.name)
        return error

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise problem(f"cannot read the certificate: {exc.strerror}") from None
    try:
        certificate = serialization.load_ssh_public_identity(data)
    except (ValueError, UnsupportedAlgorithm):
        raise problem("not an OpenSSH certificate") from None
    if not isinstance(certificate, serialization.SSHCertificate):
        raise problem("a plain public key, not a certificate")
    try:
        key.load_certificate(data.decode("ascii").strip())
    except (ValueError, UnicodeDecodeError, paramiko.SSHException) as exc:
        raise problem(f"does not fit the private key ({exc})") from None
    now = time.time()
    if not certificate.valid_after <= now < certificate.valid_before:
        log.warning("source %s: certificate %s is not valid now (valid %s to %s)", source.name,
                    path, _when(certificate.valid_after), _when(certificate.valid_before))


def _when(timestamp: int) -> str:
    if timestamp >= 2**63:
        return "forever"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(min(timestamp, 253402300799)))


def _certificate_summary(path: Path) -> str:
    try:
        certificate = serialization.load_ssh_public_identity(path.read_bytes())
    except (OSError, ValueError, UnsupportedAlgorithm):
        return ""
    if not isinstance(certificate, serialization.SSHCertificate):
        return ""
    principals = ", ".join(p.decode("utf-8", "replace") for p in certificate.valid_principals)
    return (f"; certificate principals: {principals or 'any'}, valid "
            f"{_when(certificate.valid_after)} to {_when(certificate.valid_before)}")


# --- the transport ----------------------------------------------------------------------------


class SftpTransport(Transport):
    """A logged-in SFTP session positioned at the source's ``remote_dir``."""

    stat_mtime_matches_listing = True

    def __init__(self, source: SourceConfig, transport: paramiko.Transport,
                 sftp: paramiko.SFTPClient) -> None:
        self.source = source
        self.source_name = source.name
        self._transport = transport
        self._sftp = sftp

    # --- opening ---

    @classmethod
    def connect(cls, source: SourceConfig) -> SftpTransport:
        # Local problems first: nothing touches the network with a config that cannot work.
        try:
            require_strict_kex_support()
            check_secret_files(source)
            key = load_private_key(source) if source.key_file is not None else None
            password = source.password.resolve()
            known: list[KnownHostKey] = []
            if source.known_hosts is not None:
                names = (host_key_name(source.host, source.port),)
                known = load_known_hosts(source.known_hosts, names)
        except ReportsyncError as exc:
            raise exc.with_context(source=source.name) from None

        sock = _connect_socket(source)
        transport: paramiko.Transport | None = None
        try:
            greeting = _check_banner(source, sock)
            transport = paramiko.Transport(sock)
            transport.banner_timeout = source.timeout
            transport.handshake_timeout = source.timeout
            transport.auth_timeout = source.timeout
            transport.channel_timeout = source.timeout
            _prefer_host_key_types(transport, known)
            _prefer_fast_ciphers(transport)
            _handshake(source, transport, greeting)
            log.debug("source %s: strict key exchange %s", source.name,
                      "agreed" if getattr(transport, "agreed_on_strict_kex", False)
                      else "not offered by the server")
            verify_host_key(source, transport.get_remote_server_key(), known)
            _authenticate(source, transport, key, password.reveal() if password else None)
            sftp = _open_sftp_session(source, transport)
        except ReportsyncError as exc:
            _close_quietly(transport, sock)
            raise exc.with_context(source=source.name) from None
        except BaseException:
            _close_quietly(transport, sock)
            raise
        self = cls(source, transport, sftp)
        try:
            self._sftp.chdir(source.remote_dir)
        except Exception as exc:
            error = self._error(exc, f"cannot open remote_dir {source.remote_dir!r}",
                                path=source.remote_dir)
            self.close()
            raise error from None
        log.debug("source %s: logged in to %s:%d as %s, in %s", source.name, source.host,
                  source.port, source.username, source.remote_dir)
        return self

    # --- Transport ---

    def list_files(self) -> list[RemoteFile]:
        try:
            entries = _list_folder(self._sftp)
        except Exception as exc:
            raise self._error(exc, f"cannot list remote_dir {self.source.remote_dir!r}",
                              path=self.source.remote_dir) from None
        files: list[RemoteFile] = []
        for name, attrs in entries:
            if attrs.st_mode is not None and stat.S_ISLNK(attrs.st_mode):
                try:
                    attrs = self._sftp.stat(_wire_name(name))
                except OSError as exc:
                    if not self._transport.is_active() or isinstance(
                            exc, (TimeoutError, ConnectionError)):
                        raise self._error(exc, f"cannot follow the link {printable(name)}",
                                          path=name) from None
                    log.debug("skipping %s: link target unreachable (%s)", printable(name), exc)
                    continue
                except Exception as exc:
                    raise self._error(exc, f"cannot follow the link {printable(name)}",
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
            raise self._error(exc, f"cannot look at {printable(name)}", path=name) from None
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
            remote = self._sftp.open(name, "rb")
        except Exception as exc:
            raise self._error(exc, f"cannot open {name!r} for download", path=name) from None
        reads: _ReadWindow | None = None
        done = False
        try:
            try:
                size = remote.stat().st_size
            except Exception as exc:
                raise self._error(exc, f"cannot read {name!r}", path=name) from None
            # stopping at the size the server stated saves a last round trip that would only say
            # "end of file"; fetch checks the byte count against the listing either way. Without
            # a size (or past it) the reads go on until the server says end of file.
            end = size if size is not None and size >= offset else None
            reads = _ReadWindow(self._sftp, remote, offset, end)
            while True:
                try:
                    data = reads.next_block()
                except Exception as exc:
                    raise self._error(exc, f"download of {name!r} failed after {written} bytes",
                                      path=name) from None
                if not data:
                    break
                try:
                    destination.write(data)
                except OSError as exc:
                    raise StorageError(
                        f"cannot write the download of {name!r}: {exc.strerror or exc}",
                        source=self.source_name, path=name,
                    ) from None
                written += len(data)
                if progress is not None:
                    progress(len(data))  # the caller's exceptions pass through unchanged
            done = True
        finally:
            if reads is not None:
                reads.abandon()
            if not done:
                self._close_file(remote)
        try:
            remote.close()
        except Exception as exc:
            raise self._error(exc, f"download of {name!r}: closing the remote file failed",
                              path=name) from None
        log.debug("source %s: downloaded %r from offset %d: %d bytes", self.source_name, name,
                  offset, written)
        return written

    def delete(self, name: str) -> None:
        try:
            self._sftp.remove(name)
        except Exception as exc:
            raise self._error(exc, f"cannot delete {printable(name)}", path=name) from None
        log.debug("source %s: deleted %s", self.source_name, printable(name))

    def close(self) -> None:
        try:
            self._sftp.close()
        except Exception as exc:  # close never raises
            log.debug("closing SFTP session: %s", exc)
        _close_quietly(self._transport, None)

    # --- helpers ---

    def _close_file(self, remote: paramiko.SFTPFile) -> None:
        if not self._transport.is_active():
            return  # closing would only wait for an answer that cannot come
        try:
            remote.close()
        except Exception as exc:
            log.debug("closing remote file: %s", exc)

    def _error(self, exc: BaseException, what: str, *, path: str | None = None
               ) -> ReportsyncError:
        """Classify a failure: the connection (retryable) or the server's refusal."""
        if isinstance(exc, ReportsyncError):
            return exc.with_context(source=self.source_name, path=path)
        lost = not self._transport.is_active()
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
            reason = f"connection lost ({_describe(exc)})"
        return NetworkError(f"{what}: {reason}", source=self.source_name, path=path)


def _list_folder(sftp: paramiko.SFTPClient) -> list[tuple[str, paramiko.SFTPAttributes]]:
    """``listdir_attr(".")`` (the same OPENDIR/READDIR/CLOSE requests), except for the names.

    paramiko decodes every name of the listing as strict UTF-8, so one name in another encoding
    raised UnicodeDecodeError for the whole folder, and the source fetched nothing. Here each
    name is decoded with ``surrogateescape``: a name that is not UTF-8 keeps its bytes (as lone
    surrogates), fetch refuses that one name (fsutil.check_remote_name), and the rest are
    fetched. paramiko has no public call that returns the raw names, hence its internals
    (``_request``, ``_adjust_cwd``, ``SFTPAttributes._from_msg``), unchanged since paramiko 1.x.
    """
    client: Any = sftp  # the internals are not in paramiko's type stubs
    folder = client._adjust_cwd(".")
    kind, message = client._request(CMD_OPENDIR, folder)
    if kind != CMD_HANDLE:
        raise paramiko.SFTPError("Expected handle")
    handle = message.get_binary()
    entries: list[tuple[str, paramiko.SFTPAttributes]] = []
    while True:
        try:
            kind, message = client._request(CMD_READDIR, handle)
        except EOFError:  # the end of the folder
            break
        if kind != CMD_NAME:
            raise paramiko.SFTPError("Expected name response")
        for _ in range(message.get_int()):
            raw = message.get_string()
            message.get_string()  # the "longname" (ls -l text): not used, not decoded
            attrs: Any = paramiko.SFTPAttributes
            entry = attrs._from_msg(message)
            name = raw.decode("utf-8", "surrogateescape")
            if name not in (".", ".."):
                entries.append((name, entry))
    client._request(CMD_CLOSE, handle)
    return entries


def _wire_name(name: str) -> bytes:
    """The bytes the server sent for ``name`` (the reverse of ``_list_folder``'s decoding)."""
    return name.encode("utf-8", "surrogateescape")


class _SftpRequests(Protocol):
    """The request machinery of ``paramiko.SFTPClient`` that its type stubs leave out."""

    def _async_request(self, fileobj: object, t: int, *args: object) -> int: ...
    def _read_response(self, waitfor: int | None = None) -> tuple[int | None, object]: ...
    def _convert_status(self, msg: paramiko.Message) -> None: ...


class _ReadWindow:
    """The bytes of one open remote file from ``start`` to ``end``, read through a sliding window
    of at most ``READS_IN_FLIGHT`` READ requests and handed out in file order.

    Used instead of paramiko's ``prefetch``: that one asks for the whole file at once from a
    background thread and, when its reader catches up with that thread, stops looking at the
    replies still coming, which then pile up unread in ``SFTPFile._prefetch_data`` (the whole
    file, in memory; docs/fetch.md, "SFTP reads and memory"). Here the downloading thread sends
    every request itself, so no thread outlives the download, and no reply is kept longer than it
    takes to hand it out.

    paramiko's ``SFTPClient`` delivers the reply to each of these requests to
    ``_async_response`` (it is registered as the request's file object) whenever any caller
    reads a packet; replies may come in any order, and the ones not yet due wait in
    ``_replies``, never more than the window.
    """

    def __init__(self, sftp: paramiko.SFTPClient, remote: paramiko.SFTPFile, start: int,
                 end: int | None) -> None:
        self._sftp = cast(_SftpRequests, sftp)
        self._handle = cast(bytes, remote.handle)
        self._next = start  # where the next request starts
        self._end = end  # None: until the server says end of file
        self._pending: deque[tuple[int, int, int]] = deque()  # (request, offset, length), in order
        self._replies: dict[int, tuple[int, paramiko.Message]] = {}
        self._request_bytes = READ_REQUEST_BYTES
        self._finished = False

    def next_block(self) -> bytes:
        """The next bytes of the file (at most one request's worth), or b"" at its end.

        Raises what paramiko raises: ``OSError`` for a status the server sent instead of data,
        ``SSHException``/``EOFError``/``OSError``/``TimeoutError`` for a lost connection."""
        self._fill()
        if not self._pending:
            return b""
        request, offset, length = self._pending.popleft()
        while request not in self._replies:
            self._sftp._read_response()  # one packet: a reply to one of ours, or to nobody's
        kind, msg = self._replies.pop(request)
        if kind == CMD_STATUS:
            try:
                self._sftp._convert_status(msg)  # EOFError at the end, OSError for a refusal
            except EOFError:
                self.abandon()
                return b""
            raise paramiko.SFTPError("the server answered a read with no data")
        if kind != CMD_DATA:
            raise paramiko.SFTPError(f"the server answered a read with message type {kind}")
        data = msg.get_binary()
        if not data:
            self.abandon()  # what paramiko's read takes for the end of the file
            return b""
        if len(data) > length:
            raise paramiko.SFTPError(f"the server sent {len(data)} bytes for a read of {length}")
        if len(data) < length:
            # a short read (the protocol allows it; some servers cap the size of a read): the
            # rest is asked for at once, before anything later, in pieces of the size the server
            # gave, and later requests are that size too
            self._request_bytes = max(min(self._request_bytes, len(data)), MIN_READ_BYTES)
            self._ask_first(offset + len(data), offset + length)
        return data

    def abandon(self) -> None:
        """Read no further: replies still on their way are dropped as they arrive (closing the
        file waits for them, as the server answers in order)."""
        self._finished = True
        self._pending.clear()
        self._replies.clear()

    def _async_response(self, kind: int, msg: paramiko.Message, request: int) -> None:
        # called by paramiko's SFTPClient._read_response, in whichever call reads the packet
        if not self._finished:
            self._replies[request] = (kind, msg)

    def _fill(self) -> None:
        while (not self._finished and len(self._pending) < READS_IN_FLIGHT
               and (self._end is None or self._next < self._end)):
            length = self._request_bytes
            if self._end is not None:
                length = min(length, self._end - self._next)
            self._pending.append((self._send(self._next, length), self._next, length))
            self._next += length

    def _ask_first(self, start: int, stop: int) -> None:
        pieces = [(offset, min(self._request_bytes, stop - offset))
                  for offset in range(start, stop, self._request_bytes)]
        for offset, length in reversed(pieces):
            self._pending.appendleft((self._send(offset, length), offset, length))

    def _send(self, offset: int, length: int) -> int:
        return self._sftp._async_request(self, CMD_READ, self._handle, int64(offset), length)


def _remote_reason(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "no such file or folder on the server"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied by the server"
    if exc.errno == errno.ENOTDIR:
        return "not a folder"
    return exc.strerror or str(exc) or type(exc).__name__


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _close_quietly(transport: paramiko.Transport | None, sock: socket.socket | None) -> None:
    try:
        if transport is not None:
            transport.close()
        elif sock is not None:
            sock.close()
    except Exception as exc:
        log.debug("closing connection: %s", exc)


def _connect_socket(source: SourceConfig) -> socket.socket:
    where = f"{source.host}:{source.port}"
    try:
        sock = socket.create_connection((source.host, source.port), timeout=source.timeout)
        # SFTP is request/response in small packets: Nagle's algorithm with delayed ACKs adds
        # tens of milliseconds to every small file (measured: 2.7x more small files per second)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    except socket.gaierror as exc:
        raise NetworkError(
            f"cannot resolve host {source.host!r}: {exc.strerror}",
            remedy="Check `host` for typos and that DNS works on this machine; run "
            f"`reportsync doctor --source {source.name}`.",
            source=source.name,
        ) from None
    except ConnectionRefusedError:
        raise NetworkError(
            f"connection to {where} refused: nothing listens there, or a firewall rejects it",
            remedy=f"Check `port` (the provider's SFTP port); run "
            f"`reportsync doctor --source {source.name}`.",
            source=source.name,
        ) from None
    except TimeoutError:
        raise NetworkError(
            f"connection to {where} timed out after {source.timeout:g}s",
            remedy="A firewall may drop the traffic, or host/port are wrong; run "
            f"`reportsync doctor --source {source.name}`.",
            source=source.name,
        ) from None
    except OSError as exc:
        raise NetworkError(f"cannot connect to {where}: {exc.strerror or exc}",
                           source=source.name) from None


def _check_banner(source: SourceConfig, sock: socket.socket) -> str | None:
    """Look (without consuming) at what the server says first: an FTP server is named as such.

    Returns the first line when it is not an SSH banner (the protocol allows lines before it, so
    that alone is not fatal yet), else None.
    """
    where = f"{source.host}:{source.port}"
    try:
        sock.settimeout(min(source.timeout, BANNER_PEEK_LIMIT))
        first = sock.recv(256, socket.MSG_PEEK)
    except TimeoutError:
        log.debug("%s sent nothing first; trying the SSH handshake anyway", where)
        return None
    except OSError as exc:
        raise NetworkError(f"connection to {where} lost before the SSH banner: "
                           f"{exc.strerror or exc}", source=source.name) from None
    finally:
        sock.settimeout(source.timeout)
    if not first:
        raise NetworkError(
            f"{where} closed the connection before sending an SSH banner (the server may be "
            "overloaded or refuse this address)",
            source=source.name,
        )
    if first.startswith(b"SSH-") or b"\nSSH-" in first:
        return None
    line = first.split(b"\n", 1)[0].strip().decode("ascii", "replace")[:80]
    if line.startswith("220"):
        raise NetworkError(
            f"{where} is not an SSH server: it is an FTP server (it greeted with {line!r})",
            remedy="Use the provider's SFTP port, or set protocol = \"ftp\" for this port.",
            source=source.name,
        )
    log.debug("%s sent %r before any SSH banner", where, line)
    return line


def _not_ssh(source: SourceConfig, greeting: str, detail: str) -> NetworkError:
    where = f"{source.host}:{source.port}"
    return NetworkError(
        f"{where} is not an SSH server (it greeted with {greeting!r}; {detail})",
        remedy="Check `port`: it must be the provider's SFTP port.",
        source=source.name,
    )


def _handshake(source: SourceConfig, transport: paramiko.Transport,
               greeting: str | None) -> None:
    where = f"{source.host}:{source.port}"
    try:
        transport.start_client(timeout=source.timeout)
    except IncompatiblePeer as exc:
        error = NetworkError(f"cannot agree on SSH algorithms with {where}: {exc}",
                             remedy="The server only offers algorithms paramiko no longer "
                             "accepts; ask the provider.", source=source.name)
        error.retryable = False
        raise error from None
    except paramiko.SSHException as exc:
        if greeting is not None:
            raise _not_ssh(source, greeting, _describe(exc)) from None
        if "banner" in str(exc).lower() or "protocol version" in str(exc).lower():
            raise NetworkError(f"{where} did not complete the SSH greeting: {_describe(exc)}",
                               remedy="Check `port`: it must be the provider's SFTP port.",
                               source=source.name) from None
        raise NetworkError(f"SSH handshake with {where} failed: {_describe(exc)}",
                           source=source.name) from None
    except (EOFError, OSError) as exc:
        raise NetworkError(f"connection to {where} lost during the SSH handshake: "
                           f"{_describe(exc)}", source=source.name) from None
    if not transport.is_active() or not transport.initial_kex_done:
        # start_client returns (without raising) when its timeout runs out.
        detail = f"no SSH handshake within {source.timeout:g}s"
        if greeting is not None:
            raise _not_ssh(source, greeting, detail)
        raise NetworkError(f"SSH handshake with {where}: {detail}", source=source.name)


def _authenticate(source: SourceConfig, transport: paramiko.Transport,
                  key: paramiko.PKey | None, password: str | None) -> None:
    """Log in with the key (or certificate), then the password if one is configured.

    The "none" probe first learns which methods the server allows (it does not count as a failed
    attempt in OpenSSH), so a refusal can say what would work.
    """
    user = source.username
    allowed: list[str] | None = None
    refused: list[str] = []
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
            kind = "certificate" if source.certificate_file else "key"
            detail = f"{key.get_name()} {fingerprint(key)}"
            if source.certificate_file:
                detail += _certificate_summary(source.certificate_file)
            refused.append(f"server refused our {kind} ({detail})")
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

    offers = f"; the server allows: {', '.join(allowed)}" if allowed else ""
    configured = [kind for kind, given in (("key", key is not None),
                                           ("password", password is not None)) if given]
    if refused:
        message = f"login as {user!r} failed: {'; '.join(refused)}{offers}"
    elif accepted:
        message = (f"login as {user!r} incomplete: the server accepted the "
                   f"{' and '.join(accepted)} but requires more than reportsync can give"
                   f"{offers}")
    else:
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
    raise AuthenticationError(message, remedy=remedy, source=source.name)


def _auth_step(source: SourceConfig, transport: paramiko.Transport,
               attempt: Callable[[], list[str]]) -> list[str]:
    """Run one auth call; a transport that died or timed out is a network error, not a refusal."""
    try:
        return attempt()
    except paramiko.AuthenticationException as exc:
        text = str(exc)
        if "timeout" in text.lower():
            raise NetworkError(f"authentication: no answer from {source.host} within "
                               f"{source.timeout:g}s", source=source.name) from None
        if not transport.is_active() and not isinstance(exc, paramiko.BadAuthenticationType):
            raise NetworkError(
                f"{source.host} closed the connection during login ({text})",
                remedy="The server may limit login attempts; run "
                f"`reportsync doctor --source {source.name}`.",
                source=source.name,
            ) from None
        raise
    except paramiko.SSHException as exc:
        raise NetworkError(f"connection lost during login: {_describe(exc)}",
                           source=source.name) from None
    except (EOFError, OSError) as exc:
        raise NetworkError(f"connection lost during login: {_describe(exc)}",
                           source=source.name) from None


def _open_sftp_session(source: SourceConfig, transport: paramiko.Transport
                       ) -> paramiko.SFTPClient:
    try:
        sftp = paramiko.SFTPClient.from_transport(transport)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        if transport.is_active():
            raise RemoteError(
                f"{source.host} did not start its SFTP service ({_describe(exc)})",
                remedy="The account may not be allowed SFTP; ask the provider.",
                source=source.name,
            ) from None
        raise NetworkError(f"connection lost opening the SFTP session: {_describe(exc)}",
                           source=source.name) from None
    if sftp is None:
        raise NetworkError("could not open an SFTP channel", source=source.name)
    channel = sftp.get_channel()
    if channel is not None:
        channel.settimeout(source.timeout)
    return sftp
