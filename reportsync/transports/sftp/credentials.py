"""What SFTP logs in with, read before the network is touched: the private key (and its
certificate), its passphrase, the password; and the paramiko version check (strict kex)."""

from __future__ import annotations

import io
import logging
import re
import time
from pathlib import Path

import paramiko
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from reportsync.config import SourceConfig
from reportsync.errors import ConfigError, ReportsyncError
from reportsync.fsutil import require_private_file
from reportsync.transports.sftp.known_hosts import fingerprint

log = logging.getLogger(__name__)

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


def certificate_summary(path: Path) -> str:
    try:
        certificate = serialization.load_ssh_public_identity(path.read_bytes())
    except (OSError, ValueError, UnsupportedAlgorithm):
        return ""
    if not isinstance(certificate, serialization.SSHCertificate):
        return ""
    principals = ", ".join(p.decode("utf-8", "replace") for p in certificate.valid_principals)
    return (f"; certificate principals: {principals or 'any'}, valid "
            f"{_when(certificate.valid_after)} to {_when(certificate.valid_before)}")
