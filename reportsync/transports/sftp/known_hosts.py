"""known_hosts and the host key check: the server is trusted before any credential is sent.

OpenSSH's file format and host matching (patterns, negation, hashed names, ``[host]:port``), the
``@revoked`` and ``@cert-authority`` markers, and the ``host_key_fingerprint`` pin.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import paramiko
from paramiko.pkey import UnknownKeyType

from reportsync.config import SourceConfig
from reportsync.errors import ConfigError, HostKeyError, Problem
from reportsync.fsutil import read_regular_file
from reportsync.transports.base import StepFailure
from reportsync.transports.findings import StepFinding

log = logging.getLogger(__name__)

SSH_PORT = 22

# Host key algorithm names paramiko negotiates for each key type a known_hosts file records.
_HOST_KEY_ALGORITHMS = {
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256"),
}


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:<base64, no padding>``, exactly as ``ssh-keygen -l`` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def host_key_name(host: str, port: int) -> str:
    """How OpenSSH names a host in known_hosts: ``host`` on port 22, else ``[host]:port``."""
    return host if port == SSH_PORT else f"[{host}]:{port}"


@dataclass(frozen=True)
class KnownHostKey:
    key: paramiko.PKey
    marker: str  # "", "@revoked" or "@cert-authority"
    lineno: int


REVOKED = "@revoked"
CERT_AUTHORITY = "@cert-authority"


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


def load_known_hosts(path: Path, names: tuple[str, ...],
                     config_key: str = "known_hosts") -> list[KnownHostKey]:
    """The keys ``path`` records for any of ``names``, with their markers (``@revoked``,
    ``@cert-authority``); ``verify_host_key`` decides what each means. A file that cannot be
    read (a folder, a FIFO, no permission) is a ConfigError naming ``config_key``
    (``sources.NAME.known_hosts``)."""
    try:
        text = read_regular_file(path).decode("utf-8", errors="replace")
    except FileNotFoundError:
        log.debug("known_hosts %s does not exist: no host key is known", path)
        return []
    except OSError as exc:
        raise ConfigError([Problem(config_key, f"cannot read {path}: {exc.strerror or exc}")],
                          path=str(path),
                          remedy=f"Make {path} a readable file, or point {config_key} at one."
                          ) from None
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


def prefer_host_key_types(transport: paramiko.Transport, known: list[KnownHostKey]) -> None:
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


def verify_host_key(source: SourceConfig, offered: paramiko.PKey,
                    known: list[KnownHostKey]) -> int | None:
    """Accept ``offered`` if known_hosts records it (return the line) or the pinned fingerprint
    is its own (return None); else raise StepFailure with the HostKeyError a fetch reports."""
    name = host_key_name(source.host, source.port)
    offered_fp = fingerprint(offered)
    key_type = offered.get_name()
    offered_blob = offered.asbytes()
    interception = ("Someone could be intercepting the connection (man-in-the-middle), or the "
                    "provider replaced its key.")

    def refused(finding_id: StepFinding, error: HostKeyError) -> StepFailure:
        # doctor adds what a person must not do meanwhile
        return StepFailure(finding_id, error, remedy=f"{error.remedy} Until then reportsync does "
                           "not connect, and neither should you.")

    for entry in known:
        if entry.marker == REVOKED and entry.key.asbytes() == offered_blob:
            raise refused(StepFinding.HOST_KEY_REVOKED, HostKeyError(
                f"the host key of {name} ({key_type} {offered_fp}) is marked @revoked in "
                f"{source.known_hosts} line {entry.lineno}: refusing to connect. {interception}",
                remedy="Ask the provider for its current host key fingerprint before connecting.",
            ))
    recorded = [entry for entry in known if not entry.marker]
    authorities = [entry for entry in known if entry.marker == CERT_AUTHORITY]
    unused_ca = (f"; {source.known_hosts} line(s) "
                 f"{', '.join(str(entry.lineno) for entry in authorities)} (@cert-authority) "
                 "were not used: reportsync does not validate host certificates")
    matched = next((entry for entry in recorded if entry.key.asbytes() == offered_blob), None)
    if matched is not None:
        log.debug("host key %s %s matches %s", key_type, offered_fp, source.known_hosts)
        if authorities:
            log.warning("source %s: host key accepted by its own known_hosts line%s",
                        source.name, unused_ca)
        return matched.lineno
    pin = source.host_key_fingerprint
    if pin and pin.rstrip("=") == offered_fp:
        log.debug("host key %s %s matches host_key_fingerprint", key_type, offered_fp)
        if authorities:
            log.warning("source %s: host key accepted by host_key_fingerprint%s", source.name,
                        unused_ca)
        return None
    if authorities:
        # A host certificate would need its type, validity window, principals and CA signature
        # checked; paramiko offers none of that, so the trust the line expresses cannot be
        # honoured: refused loudly rather than skipped.
        raise refused(StepFinding.HOST_KEY_CERT_AUTHORITY, HostKeyError(
            f"the host key of {name} ({key_type} {offered_fp}) is not recorded in "
            f"{source.known_hosts}, which trusts it only through a @cert-authority line "
            f"(line {', '.join(str(entry.lineno) for entry in authorities)}): reportsync does "
            "not validate SSH host certificates, so it refuses to connect rather than skip "
            "that line. No credential was sent.",
            remedy=f"Confirm the host key fingerprint with the provider, then add the plain key "
            f"line for {name} to {source.known_hosts} or set host_key_fingerprint = "
            f"\"{offered_fp}\".",
        ))

    if recorded:
        same_type = [entry for entry in recorded if entry.key.get_name() == key_type]
        described = same_type or recorded
        on_record = ", ".join(
            f"{entry.key.get_name()} {fingerprint(entry.key)} (line {entry.lineno})"
            for entry in described
        )
        raise refused(StepFinding.HOST_KEY_CHANGED, HostKeyError(
            f"HOST KEY CHANGED for {name}: the server offered {key_type} {offered_fp}, but "
            f"{source.known_hosts} records {on_record}. {interception} Not connecting.",
            remedy="Confirm the new fingerprint with the provider through another channel; only "
            f"then replace the old line in {source.known_hosts}.",
        ))
    if pin:
        raise refused(StepFinding.HOST_KEY_CHANGED, HostKeyError(
            f"HOST KEY CHANGED for {name}: the server offered {key_type} {offered_fp}, but "
            f"host_key_fingerprint pins {pin}. {interception} Not connecting.",
            remedy="Confirm the new fingerprint with the provider through another channel; only "
            "then update host_key_fingerprint.",
        ))
    line = f"{name} {key_type} {offered.get_base64()}"
    where = f"to {source.known_hosts}" if source.known_hosts else "to your known_hosts file"
    target = source.known_hosts or "your known_hosts file"
    raise StepFailure(
        StepFinding.HOST_KEY_UNKNOWN,
        HostKeyError(
            f"unknown host key for {name}: the server offered {key_type} {offered_fp}. If this "
            f"fingerprint is the one your provider publishes, add this line {where}:\n  {line}\n"
            f"or set host_key_fingerprint = \"{offered_fp}\".",
        ),
        finding=f"unknown host key: {name} offered {key_type} {offered_fp}, which neither "
        "known_hosts nor host_key_fingerprint records; reportsync refuses to log in",
        remedy=f"Compare {offered_fp} with the fingerprint your provider publishes (not with what "
        f"this server says). If it matches, add this line to {target}: {line} -- or set "
        f"host_key_fingerprint = \"{offered_fp}\" in [sources.{source.name}].",
    )
