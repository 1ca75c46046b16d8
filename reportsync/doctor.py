"""``reportsync doctor``: ordered checks that say what is wrong and what to change.

Every check returns a ``Finding`` (PASS / WARN / FAIL / SKIPPED, one line, a remedy) instead of
raising: a broken config, a missing gpg or a server that never answers are findings, not crashes.
A check whose prerequisite failed is SKIPPED. The order is SPEC.md's: config → local → per source
(DNS → TCP → banner → TLS → host key → authentication → remote folder → FTP data channel →
listing → files at risk of purge). Every network step is bounded by the source's ``timeout``.

The network steps reuse the transports' own building blocks and error messages (``transports/``),
so doctor and fetch describe a failure in the same words. This module never prints: the CLI
renders the ``DoctorReport``.
"""

from __future__ import annotations

import contextlib
import ftplib
import functools
import io
import json
import logging
import os
import platform
import re
import shutil
import socket
import sqlite3
import ssl
import stat
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import filelock
import paramiko

from reportsync import __version__, pgp, pgpkeys
from reportsync.config import NO_SOURCE, NO_SOURCE_REMEDY, Config, SecretRef, SourceConfig, load_config
from reportsync.config import secret_values as config_secret_values
from reportsync.config.tomlio import tomllib
from reportsync.errors import (
    ConfigError,
    ExitCode,
    HostKeyError,
    NetworkError,
    ReportsyncError,
)
from reportsync.fsutil import printable, shared_folder_problem, too_open, write_atomically
from reportsync.ledger import LEDGER_FILE, Ledger
from reportsync.lock import HOLDER_FILE, LOCK_FILE, RunLock
from reportsync.sshkeys import (
    STATUS_EXPIRED,
    STATUS_NOT_YET_VALID,
    SshCertificateInfo,
    certificate_expiry,
    inspect_ssh_file,
)
from reportsync.transports import RemoteFile, Transport
from reportsync.transports import ftp as ftp_transport
from reportsync.transports import sftp as sftp_transport

log = logging.getLogger(__name__)

PASS = "PASS"
WARN = "WARN"
FAIL = "FAIL"
SKIPPED = "SKIPPED"
STATUSES = (PASS, WARN, FAIL, SKIPPED)

DAY = 86400.0
DISK_FAIL_BYTES = 100 * 1024 * 1024
DISK_WARN_BYTES = 1024 * 1024 * 1024
SHOWN_NAMES = 5  # how many remote names a finding quotes
BUNDLE_LOG_LINES = 200
REDACTED = "<redacted>"


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One check's result: ``scope`` is "config", "local" or a source name."""

    check: str
    scope: str
    status: str
    finding: str
    remedy: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {"check": self.check, "scope": self.scope, "status": self.status,
                "finding": self.finding, "remedy": self.remedy, "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class DoctorReport:
    config_path: Path
    findings: tuple[Finding, ...]
    seconds: float
    config: Config | None = field(default=None, repr=False)
    gpg_version: str | None = None

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.PARTIAL if any(f.status == FAIL for f in self.findings) else ExitCode.OK

    def counts(self) -> dict[str, int]:
        return {status: sum(1 for f in self.findings if f.status == status) for status in STATUSES}

    def first_fail(self) -> Finding | None:
        return next((f for f in self.findings if f.status == FAIL), None)

    def to_dict(self) -> dict[str, object]:
        return {
            "command": "doctor",
            "exit_code": int(self.exit_code),
            "config": str(self.config_path),
            "seconds": round(self.seconds, 3),
            "counts": self.counts(),
            "findings": [finding.to_dict() for finding in self.findings],
        }


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _names(names: Iterable[str]) -> str:
    listed = list(names)
    shown = ", ".join(printable(name, quote=False) for name in listed[:SHOWN_NAMES])
    return shown + (f" (and {len(listed) - SHOWN_NAMES} more)" if len(listed) > SHOWN_NAMES else "")


# --- the run ---------------------------------------------------------------------------------


def run_doctor(config_path: Path, sources: Sequence[str] = (), *, now: float | None = None,
               environ: Mapping[str, str] | None = None) -> DoctorReport:
    """Run every check for ``config_path`` (only ``sources`` when given); never raises.
    ``environ``: the environment the config is loaded in (its secrets, gpg's children)."""
    started = time.monotonic()
    out = _Findings()
    config = _check_config_file(config_path, out, environ)
    gpg_version: str | None = None
    if config is None:
        out.add("checks", "local", SKIPPED, "not checked: the config did not load")
    else:
        none: list[SourceConfig] = []
        selected = _guarded(out, "source", lambda: _select_sources(config, sources, out), none,
                            scope="config")
        prepared = {source.name: _guarded(out, "source",
                                          functools.partial(_check_source_config, source, out),
                                          _Prepared(), scope="config")
                    for source in selected}
        unchecked: str | None = "the passphrase could not be checked"
        gpg_problem = _guarded(out, "secret", lambda: _check_settings_secrets(config, out),
                               unchecked, scope="config")
        gpg_version = _local_checks(config, selected, gpg_problem, out)
        for source in selected:
            _SourceChecks(source, config, prepared[source.name], out,
                          now if now is not None else time.time()).run()
    for finding in out.items:
        if finding.status in (WARN, FAIL):
            log.info("doctor: %s %s/%s: %s", finding.status, finding.scope, finding.check,
                     finding.finding)
    return DoctorReport(config_path=config_path, findings=tuple(out.items),
                        seconds=time.monotonic() - started, config=config, gpg_version=gpg_version)


def _without_doctor_advice(remedy: str) -> str:
    """The transports' remedies end with "run `reportsync doctor`": inside doctor, drop that."""
    kept: list[str] = []
    for clause in re.split(r"(?<=[.;])\s+", remedy):
        if "`reportsync doctor" not in clause:
            kept.append(clause)
            continue
        before = re.match(r"(.*?),\s*then run `reportsync doctor", clause)
        if before is not None:
            kept.append(before.group(1) + ".")
    text = " ".join(kept).strip()
    return text[:-1] + "." if text.endswith(";") else text


class _Findings:
    def __init__(self) -> None:
        self.items: list[Finding] = []

    def add(self, check: str, scope: str, status: str, finding: str, remedy: str = "",
            seconds: float = 0.0) -> Finding:
        item = Finding(check=check, scope=scope, status=status, finding=_one_line(finding),
                       remedy=_without_doctor_advice(_one_line(remedy)), seconds=seconds)
        self.items.append(item)
        return item


_BUG_REMEDY = ("This is a bug in reportsync doctor: please report it with the bundle "
               "(`reportsync doctor --bundle FILE`).")


# --- 1. config -------------------------------------------------------------------------------


def _check_config_file(path: Path, out: _Findings, environ: Mapping[str, str] | None = None
                       ) -> Config | None:
    try:
        # without sources the local checks (gpg, keys, folders) still run; the missing source
        # is its own finding below
        config = load_config(path, environ=environ, allow_no_sources=True)
    except ConfigError as error:
        for problem in error.problems:
            remedy = error.remedy
            if remedy == ConfigError.default_remedy:
                key = problem.key
                where = key if key and re.fullmatch(r"[\w.-]+", key) else "this"
                remedy = f"Fix {where} in {path}; docs/configuration.md describes every key."
            out.add("parse", "config", FAIL, f"{path}: {problem}", remedy)
        return None
    except Exception as exc:  # never raise: a doctor that crashes helps nobody
        out.add("parse", "config", FAIL, f"{path}: cannot be read: {exc}", _BUG_REMEDY)
        return None
    names = ", ".join(config.sources)
    out.add("parse", "config", PASS,
            f"{path} is valid: {len(config.sources)} source(s)" + (f" ({names})" if names else ""))
    if not config.sources:
        out.add("source", "config", FAIL, f"{path}: {NO_SOURCE}: nothing to fetch or check "
                "on a server", NO_SOURCE_REMEDY)
    return config


def _select_sources(config: Config, names: Sequence[str], out: _Findings) -> list[SourceConfig]:
    unknown = [name for name in names if name not in config.sources]
    for name in unknown:
        out.add("source", "config", FAIL,
                f"no source named {name!r} (configured: {', '.join(config.sources) or 'none'})",
                "Use one of the configured source names with --source, or add a "
                f"[sources.{name}] table.")
    known = [name for name in names if name in config.sources]
    if names and not known:
        return []
    return config.select(known)


def _secret_where(ref: SecretRef) -> str:
    if ref.env is not None:
        return f"environment variable {ref.env}"
    if ref.file is not None:
        return f"file {ref.file}"
    return "the config file (inline)"


def _check_secret(ref: SecretRef, what: str, out: _Findings) -> str | None:
    """A finding for one configured secret; returns a problem text when it cannot be read."""
    if not ref.configured:
        return None
    if ref.file is not None and ref.file.exists() and too_open(ref.file) is not None:
        out.add("secret", "config", FAIL,
                f"{ref.config_key}_file: {ref.file} (the {what}) is readable by group or others "
                f"(mode {_mode(ref.file):04o})", f"chmod 600 {ref.file}")
    try:
        value = ref.resolve()
    except ConfigError as error:
        problem = str(error.problems[0]) if error.problems else error.message
        out.add("secret", "config", FAIL, f"the {what} cannot be read: {problem}", error.remedy)
        return problem
    if value is not None and not value.reveal():
        out.add("secret", "config", WARN, f"the {what} from {_secret_where(ref)} is empty",
                f"Put the {what} into the {_secret_where(ref)}.")
        return None
    out.add("secret", "config", PASS, f"the {what} is read from {_secret_where(ref)}")
    return None


def _check_settings_secrets(config: Config, out: _Findings) -> str | None:
    return _check_secret(config.settings.gpg_passphrase, "PGP key passphrase", out)


@dataclass
class _Prepared:
    """What the config checks learned about one source, for its network checks."""

    password_problem: str | None = None
    key: paramiko.PKey | None = None
    key_problem: str | None = None
    known: list[sftp_transport.KnownHostKey] = field(default_factory=list)
    known_problem: str | None = None
    tls_problem: str | None = None


def _check_source_config(source: SourceConfig, out: _Findings) -> _Prepared:
    prepared = _Prepared()
    where = f"sources.{source.name}"
    prepared.password_problem = _check_secret(source.password, f"password of source "
                                              f"{source.name!r}", out)
    if source.protocol == "sftp":
        _check_secret(source.key_passphrase, f"SSH key passphrase of source {source.name!r}", out)
        if source.key_file is not None:
            prepared.key, prepared.key_problem = _check_key_file(source, out)
        if source.known_hosts is not None:
            names = (sftp_transport.host_key_name(source.host, source.port),)
            try:
                prepared.known = sftp_transport.load_known_hosts(source.known_hosts, names)
            except ConfigError as error:
                prepared.known_problem = str(error.problems[0]) if error.problems else error.message
                out.add("known_hosts", "config", FAIL, prepared.known_problem,
                        f"Fix the permissions of {source.known_hosts} or point "
                        f"{where}.known_hosts at a readable file.")
            else:
                if not source.known_hosts.exists():
                    out.add("known_hosts", "config", WARN,
                            f"{where}.known_hosts: {source.known_hosts} does not exist",
                            "The host key check below prints the line to add once you have "
                            "compared the fingerprint with the provider's.")
                else:
                    records = len([entry for entry in prepared.known if not entry.marker])
                    if records or source.host_key_fingerprint:
                        out.add("known_hosts", "config", PASS,
                                f"{where}.known_hosts: {source.known_hosts} holds {records} key(s) "
                                f"for {names[0]}")
                    else:
                        out.add("known_hosts", "config", WARN,
                                f"{where}.known_hosts: {source.known_hosts} holds no key for "
                                f"{names[0]}, and no host_key_fingerprint is set",
                                "The host key check below prints the line to add once you have "
                                "compared the fingerprint with the provider's.")
    if source.protocol == "ftps" and source.ca_file is not None:
        try:
            ssl.create_default_context(cafile=str(source.ca_file))
        except (OSError, ssl.SSLError) as exc:
            prepared.tls_problem = f"{where}.ca_file: cannot load {source.ca_file}: " \
                f"{getattr(exc, 'strerror', None) or exc}"
            out.add("ca_file", "config", FAIL, prepared.tls_problem,
                    "Point ca_file at a PEM file of CA certificates, or remove it to use the "
                    "system's CAs.")
        else:
            out.add("ca_file", "config", PASS, f"{where}.ca_file: {source.ca_file} loads")
    return prepared


def _check_key_file(source: SourceConfig, out: _Findings) -> tuple[paramiko.PKey | None, str | None]:
    assert source.key_file is not None
    path = source.key_file
    where = f"sources.{source.name}.key_file"
    if not path.exists():
        problem = f"{where}: {path} does not exist"
        out.add("key file", "config", FAIL, problem,
                f"Create a key (`reportsync keys ssh generate --out {path}`) and register "
                f"{path}.pub with the provider, or correct key_file.")
        return None, problem
    if too_open(path) is not None:
        out.add("key file", "config", FAIL,
                f"{where}: {path} has mode {_mode(path):04o}: other users can read your "
                "private SSH key (ssh refuses such a key)",
                f"chmod 600 {path}")
    try:
        key = sftp_transport.load_private_key(source)
    except ConfigError as error:
        problem = str(error.problems[0]) if error.problems else error.message
        out.add("key file", "config", FAIL, problem, error.remedy)
        return None, problem
    except Exception as exc:
        problem = f"{where}: {path}: {exc}"
        out.add("key file", "config", FAIL, problem, _BUG_REMEDY)
        return None, problem
    if too_open(path) is None:
        certificate = f" with certificate {source.certificate_file}" if source.certificate_file \
            else ""
        out.add("key file", "config", PASS,
                f"{where}: {path} ({key.get_name()} {sftp_transport.fingerprint(key)}), mode "
                f"{_mode(path):04o}{certificate}")
    return key, None


# --- 2. local --------------------------------------------------------------------------------


def _local_checks(config: Config, sources: list[SourceConfig], gpg_passphrase_problem: str | None,
                  out: _Findings) -> str | None:
    settings = config.settings
    no_gpg: tuple[str | None, str | None] = (None, None)
    gpg_path, version = _guarded(
        out, "gpg", lambda: _check_gpg(settings.gpg_binary, out, config.environ), no_gpg)
    home_ok = _guarded(out, "gnupg home", lambda: _check_gnupg_home(settings.gnupg_home, out),
                       False)
    usable: list[str] = []
    if gpg_path is None or not home_ok:
        reason = "gpg was not found" if gpg_path is None else "the GnuPG home is not usable"
        out.add("secret key", "local", SKIPPED, f"not checked: {reason}")
    else:
        usable = _guarded(out, "secret key",
                          lambda: _check_secret_keys(gpg_path, settings.gnupg_home, out,
                                                     config.environ), [])
    if not usable:
        out.add("passphrase", "local", SKIPPED, "not checked: no secret key that can decrypt")
    elif gpg_passphrase_problem is not None:
        out.add("passphrase", "local", SKIPPED,
                "not checked: the configured passphrase cannot be read (see the config checks)")
    else:
        assert gpg_path is not None
        _guarded(out, "passphrase", lambda: _check_passphrase(config, gpg_path, usable, out), None)
    folders = _folders(config, sources)
    for path, config_key in folders:
        _guarded(out, "folder", functools.partial(_check_folder, path, config_key, out), None)
    _guarded(out, "disk space", lambda: _check_disk_space([path for path, _ in folders], out), None)
    _guarded(out, "ledger", lambda: _check_ledger(settings.state_dir, out), None)
    _guarded(out, "lock", lambda: _check_lock(settings.state_dir, out), None)
    return version


T = TypeVar("T")


def _guarded(out: _Findings, check: str, run: Callable[[], T], default: T, *,
             scope: str = "local") -> T:
    """Run one check; an unexpected exception becomes its FAIL finding, never a crash."""
    try:
        return run()
    except Exception as exc:
        log.debug("doctor: check %s/%s failed unexpectedly", scope, check, exc_info=True)
        out.add(check, scope, FAIL, f"the check itself failed: {type(exc).__name__}: {exc}",
                _BUG_REMEDY)
        return default


def _check_gpg(binary: str, out: _Findings, environ: Mapping[str, str] | None = None
               ) -> tuple[str | None, str | None]:
    found = pgp.inspect_gpg(binary, environ)
    if found.path is None:
        out.add("gpg", "local", FAIL, f"gpg not found: {binary!r} is not on PATH",
                "Install GnuPG (Debian/Ubuntu: apt install gnupg; macOS: brew install gnupg; "
                "Windows: Gpg4win) or set settings.gpg_binary to its full path.")
        return None, None
    path = found.path
    if found.error is not None:
        out.add("gpg", "local", FAIL, f"{path} does not run: {found.error}",
                "Reinstall GnuPG or set settings.gpg_binary to a working gpg.")
        return None, None
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", found.first_line)
    if found.returncode != 0 or match is None:
        out.add("gpg", "local", FAIL, f"{path} is not GnuPG: `{binary} --version` said "
                f"{found.first_line[:80]!r}",
                "Set settings.gpg_binary to GnuPG's gpg.")
        return None, None
    version = match.group(0)
    if (int(match.group(1)), int(match.group(2))) < (2, 1):
        out.add("gpg", "local", WARN, f"gpg {version} ({path}) is older than 2.1",
                "Install GnuPG 2.2 or later; older versions handle passphrases differently.")
    else:
        out.add("gpg", "local", PASS, f"gpg {version} ({path})")
    return path, version


def _check_gnupg_home(home: Path, out: _Findings) -> bool:
    if not home.exists():
        out.add("gnupg home", "local", FAIL, f"the GnuPG home {home} does not exist",
                "Restore your keys (`reportsync keys restore FILE`), import your secret key "
                "(`reportsync keys pgp import FILE`) or create one (`reportsync keys pgp generate "
                "--name N --email E`); or point settings.gnupg_home at the folder that holds it.")
        return False
    if not home.is_dir():
        out.add("gnupg home", "local", FAIL, f"the GnuPG home {home} is not a folder",
                "Point settings.gnupg_home at the folder that holds your keys.")
        return False
    shared = shared_folder_problem(home, "settings.gnupg_home")
    if shared is not None:
        out.add("gnupg home", "local", FAIL, shared.message, shared.remedy)
        return True
    mode = too_open(home)
    if mode is not None and mode & 0o022:
        out.add("gnupg home", "local", FAIL,
                f"the GnuPG home {home} has mode {mode:04o}: others can change the files in it "
                "(a planted gpg.conf changes what gpg does), and gpg warns about unsafe "
                "permissions", f"chmod 700 {home}")
        return True
    if mode is not None:
        # reportsync never re-modes a folder it did not create; gpg still works, and warns
        out.add("gnupg home", "local", WARN,
                f"the GnuPG home {home} has mode {mode:04o}: others can see which keys it holds, "
                "and gpg warns about unsafe permissions", f"chmod 700 {home}")
        return True
    if hasattr(os, "geteuid") and home.stat().st_uid != os.geteuid():
        out.add("gnupg home", "local", WARN, f"the GnuPG home {home} belongs to another user",
                f"Run reportsync as the owner of {home}, or chown it to this user.")
        return True
    out.add("gnupg home", "local", PASS, f"{home} exists, mode {_mode(home):04o}")
    return True


def _check_secret_keys(gpg_path: str, home: Path, out: _Findings,
                       environ: Mapping[str, str] | None = None) -> list[str]:
    """Fingerprints of secret keys that can decrypt now; a finding either way."""
    now = time.time()
    try:
        keys = pgp.Gpg(binary=gpg_path, home=home, passphrase=None, create_home=False,
                       environ=environ).decryption_keys(now)
    except Exception as exc:
        out.add("secret key", "local", FAIL, f"gpg could not list the keys in {home}: {exc}",
                f"Run `gpg --homedir {home} --list-secret-keys` to see what gpg says.")
        return []
    if not keys.usable and not keys.unusable:
        out.add("secret key", "local", FAIL, f"no secret key in {home}: no report can be decrypted",
                "Import your secret key (`reportsync keys pgp import FILE`) or restore a backup "
                "(`reportsync keys restore FILE`); without one, generate a key (`reportsync keys pgp "
                "generate`) and send the provider the new public key.")
        return []
    if not keys.usable:
        out.add("secret key", "local", FAIL,
                f"no secret key in {home} can decrypt: {', '.join(keys.unusable)}",
                f"Extend an expired key (`gpg --homedir {home} --quick-set-expire FINGERPRINT 2y` "
                "and for its subkeys `... FINGERPRINT 2y '*'`), then send the provider the updated "
                "public key (`reportsync keys pgp export-public`); or import a current key.")
        return []
    expiry = pgpkeys.decryption_key_expiry(keys, home, now)
    if expiry is not None and expiry.soon:
        out.add("secret key", "local", WARN, expiry.finding, expiry.remedy)
    else:
        described = ", ".join(f"{key.fingerprint} ({key.uid})" if key.uid else key.fingerprint
                              for key in keys.usable)
        until = "never expires" if expiry is None else \
            f"valid until {datetime.fromtimestamp(expiry.expires_at, tz=timezone.utc):%Y-%m-%d}"
        out.add("secret key", "local", PASS, f"secret key able to decrypt: {described}; {until}")
    return [key.fingerprint for key in keys.usable]


def _check_passphrase(config: Config, gpg_path: str, fingerprints: list[str], out: _Findings) -> None:
    """Encrypt a probe to each usable key and decrypt it with the configured passphrase: the
    check fetch makes once per run (``pgp.probe_passphrase``, on a throwaway copy of the GnuPG
    home with its own gpg-agent, so a cached passphrase cannot make a wrong one look right)."""
    settings = config.settings
    ref = settings.gpg_passphrase
    passphrase = ref.resolve()
    try:
        gpg = pgp.Gpg(binary=gpg_path, home=settings.gnupg_home, passphrase=passphrase,
                      hide_env=(ref.env,) if ref.env else (), create_home=False,
                      environ=config.environ)
        probe = pgp.probe_passphrase(gpg, fingerprints)
    except ReportsyncError as exc:
        probe = pgp.PassphraseProbe((), (f"the probe could not run: {exc}",), 0.0)
    seconds = probe.seconds
    if probe.refused:
        keys = ", ".join(probe.refused)
        if passphrase is None:
            out.add("passphrase", "local", FAIL,
                    f"the secret key {keys} is protected by a passphrase, and none is configured",
                    "Set settings.gpg_passphrase_env (a variable holding the passphrase) or "
                    "settings.gpg_passphrase_file (a 0600 file).", seconds)
        else:
            where = _secret_where(ref)
            setting = "settings.gpg_passphrase_env" if ref.env else "settings.gpg_passphrase_file"
            out.add("passphrase", "local", FAIL,
                    f"the passphrase from {where} does not unlock the secret key {keys}",
                    f"Put the right passphrase into the {where} ({setting}); under cron or "
                    "systemd it must be set there too.", seconds)
    elif probe.problems:
        out.add("passphrase", "local", FAIL, "; ".join(probe.problems),
                f"Run `gpg --homedir {settings.gnupg_home} --list-secret-keys` and check the "
                "key; re-import it from a backup if it is damaged.", seconds)
    else:
        how = "with the configured passphrase" if passphrase is not None else \
            "without a passphrase (none is configured or needed)"
        out.add("passphrase", "local", PASS,
                f"a probe encrypted to {', '.join(fingerprints)} decrypted {how}", seconds=seconds)


def _folders(config: Config, sources: list[SourceConfig]) -> list[tuple[Path, str]]:
    folders: list[tuple[Path, str]] = [(config.settings.state_dir, "settings.state_dir")]
    for source in sources:
        folders.append((source.download_dir, f"sources.{source.name}.download_dir"))
        if source.decrypt:
            folders.append((source.output_dir, f"sources.{source.name}.output_dir"))
    seen: set[Path] = set()
    unique = []
    for path, key in folders:
        if path not in seen:
            seen.add(path)
            unique.append((path, key))
    return unique


def _existing_ancestor(path: Path) -> Path:
    candidate = path
    while not candidate.exists() and candidate.parent != candidate:
        candidate = candidate.parent
    return candidate


def _check_folder(path: Path, config_key: str, out: _Findings) -> None:
    target = path if path.exists() else _existing_ancestor(path)
    if path.exists() and not path.is_dir():
        out.add("folder", "local", FAIL, f"{config_key}: {path} is not a folder",
                f"Change {config_key} to a folder, or move the file away.")
        return
    # the rule fetch applies (fsutil.ensure_private_dir): never write into a folder anyone can
    # write to without the sticky bit
    shared = shared_folder_problem(target, config_key, creating=None if target == path else path)
    if shared is not None:
        out.add("folder", "local", FAIL, shared.message, shared.remedy)
        return
    try:
        descriptor, probe = tempfile.mkstemp(prefix=".rs-doctor-", dir=target)
        os.close(descriptor)
        os.unlink(probe)
    except OSError as exc:
        what = "permission denied" if isinstance(exc, PermissionError) else (exc.strerror or str(exc))
        if target == path:
            out.add("folder", "local", FAIL, f"{config_key}: cannot write in {path}: {what}",
                    f"Fix the owner or permissions of {path} (it should belong to the user "
                    f"reportsync runs as, mode 700), or change {config_key}.")
        else:
            out.add("folder", "local", FAIL,
                    f"{config_key}: {path} does not exist and cannot be created: {target} is not "
                    f"writable ({what})",
                    f"Create {path} for the user reportsync runs as, or change {config_key}.")
        return
    if target == path:
        out.add("folder", "local", PASS, f"{config_key}: {path} is writable")
    else:
        out.add("folder", "local", PASS,
                f"{config_key}: {path} does not exist yet; it will be created ({target} is writable)")


def _human(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1024 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} B"  # pragma: no cover


def _check_disk_space(paths: list[Path], out: _Findings) -> None:
    by_device: dict[int, list[Path]] = {}
    for path in paths:
        try:
            by_device.setdefault(_existing_ancestor(path).stat().st_dev, []).append(path)
        except OSError:
            continue
    for folders in by_device.values():
        anchor = _existing_ancestor(folders[0])
        try:
            free = shutil.disk_usage(anchor).free
        except OSError as exc:
            out.add("disk space", "local", WARN, f"cannot tell the free space at {anchor}: {exc}")
            continue
        where = ", ".join(str(path) for path in folders)
        if free < DISK_FAIL_BYTES:
            out.add("disk space", "local", FAIL, f"only {_human(free)} free on the disk of {where}",
                    "Free space on that disk (downloads and decrypted reports need room), or move "
                    "the folders to another disk.")
        elif free < DISK_WARN_BYTES:
            out.add("disk space", "local", WARN, f"only {_human(free)} free on the disk of {where}",
                    "Free space on that disk before it fills up.")
        else:
            out.add("disk space", "local", PASS, f"{_human(free)} free on the disk of {where}")


def _check_ledger(state_dir: Path, out: _Findings) -> None:
    path = state_dir / LEDGER_FILE
    if not path.exists():
        out.add("ledger", "local", PASS, f"no ledger yet at {path}: the first fetch creates it")
        return
    try:
        with Ledger(path) as ledger:
            result = ledger.integrity_check()
            files = ledger.count("remote_files")
            failures = len(ledger.open_failures())
            version = ledger.schema_version
    except ReportsyncError as error:
        out.add("ledger", "local", FAIL, error.message, error.remedy)
        return
    except sqlite3.Error as exc:
        out.add("ledger", "local", FAIL, f"the ledger {path} cannot be read: {exc}",
                "Move the file aside and run again (the archive is kept), or restore it from a "
                "backup.")
        return
    if result != "ok":
        out.add("ledger", "local", FAIL, f"the ledger {path} failed its integrity check: {result}",
                "Move the file aside and run again (the archive is kept; files are re-checked "
                "against it), or restore it from a backup.")
        return
    out.add("ledger", "local", PASS, f"ledger {path}: integrity ok, schema {version}, {files} file "
            f"version(s) recorded, {failures} open failure(s)")


def _check_lock(state_dir: Path, out: _Findings) -> None:
    lock_path = state_dir / LOCK_FILE
    holder_path = state_dir / HOLDER_FILE
    if not lock_path.exists():
        out.add("lock", "local", PASS, "no run lock: no reportsync run is active")
        return
    holder = RunLock(state_dir, "doctor").describe_holder()
    probe = filelock.FileLock(str(lock_path), timeout=0)
    try:
        probe.acquire(timeout=0)
    except filelock.Timeout:
        out.add("lock", "local", WARN, f"a reportsync run is active now: {holder}",
                "Run doctor again when it has finished; its findings may overlap with that run.")
        return
    except OSError as exc:
        out.add("lock", "local", FAIL, f"cannot open the lock {lock_path}: {exc.strerror or exc}",
                f"Fix the permissions of {state_dir}.")
        return
    probe.release()
    if holder_path.exists():
        out.add("lock", "local", WARN,
                f"stale lock: the run recorded in {holder_path} ({holder}) did not finish (killed "
                "or crashed); the lock itself is free and does not block the next run",
                "Nothing blocks the next run; read state_dir/logs/reportsync.log for why that run "
                f"stopped, then delete {holder_path}.")
        return
    out.add("lock", "local", PASS, "the run lock is free")


# --- 3. per source ---------------------------------------------------------------------------


class _Blocked(Exception):
    """A step could not run because an earlier one failed."""


@dataclass
class _Step:
    status: str
    finding: str
    remedy: str = ""


class _SourceChecks:
    """The network checks of one source, in order; a FAIL (or a SKIPPED) blocks the rest."""

    def __init__(self, source: SourceConfig, config: Config, prepared: _Prepared, out: _Findings,
                 now: float) -> None:
        self.source = source
        self.config = config
        self.prepared = prepared
        self.out = out
        self.now = now
        self.where = f"{source.host}:{source.port}"
        self.peer_ip: str | None = None
        self.addresses: list[Any] = []  # getaddrinfo's answers, from the DNS step
        self.sock: socket.socket | None = None
        self.ssh: paramiko.Transport | None = None
        self.remote: Transport | None = None
        self.ftp: ftp_transport.FtpTransport | None = None
        self.ftp_error: ReportsyncError | None = None
        self.listing: list[RemoteFile] | None = None
        self.listing_error: ReportsyncError | None = None
        self.candidates: list[RemoteFile] = []

    def steps(self) -> list[tuple[str, Callable[[], _Step | None]]]:
        protocol = self.source.protocol
        steps: list[tuple[str, Callable[[], _Step | None]]] = [
            ("dns", self.check_dns), ("tcp", self.check_tcp)]
        if protocol == "sftp":
            steps += [("banner", self.ssh_banner), ("host key", self.ssh_host_key),
                      ("auth", self.ssh_auth), ("remote folder", self.ssh_remote_folder)]
        else:
            steps += [("banner", self.ftp_banner)]
            if protocol == "ftps":
                steps += [("tls", self.ftp_tls)]
            steps += [("auth", self.ftp_auth), ("remote folder", self.ftp_remote_folder),
                      ("data channel", self.ftp_data_channel)]
        steps += [("listing", self.check_listing), ("at risk", self.check_at_risk)]
        return steps

    def run(self) -> None:
        blocked: str | None = None
        try:
            for check, step in self.steps():
                if blocked is not None:
                    self.out.add(check, self.source.name, SKIPPED, f"not checked: {blocked}")
                    continue
                started = time.monotonic()
                try:
                    result = step()
                except _Blocked as reason:
                    result = _Step(SKIPPED, f"not checked: {reason}")
                except Exception as exc:
                    log.debug("doctor: check %s of %s failed unexpectedly", check,
                              self.source.name, exc_info=True)
                    result = _Step(FAIL, f"the check itself failed: {type(exc).__name__}: {exc}",
                                   _BUG_REMEDY)
                if result is None:
                    continue
                self.out.add(check, self.source.name, result.status, result.finding,
                             result.remedy, time.monotonic() - started)
                if result.status == FAIL:
                    blocked = f"{check} failed"
                elif result.status == SKIPPED:
                    blocked = result.finding.removeprefix("not checked: ")
        finally:
            self.close()

    def close(self) -> None:
        for closer in (self.remote, self.ftp):
            if closer is not None:
                closer.close()
        if self.ssh is not None:
            sftp_transport._close_quietly(self.ssh, None)
        elif self.sock is not None:
            self.sock.close()

    # --- common steps ---

    def check_dns(self) -> _Step:
        host = self.source.host
        timeout = self.source.timeout
        answer: dict[str, Any] = {}

        def resolve() -> None:
            try:
                answer["infos"] = socket.getaddrinfo(host, self.source.port, type=socket.SOCK_STREAM)
            except OSError as exc:
                answer["error"] = exc

        worker = threading.Thread(target=resolve, name="doctor-dns", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            return _Step(FAIL, f"the DNS lookup of {host!r} got no answer within {timeout:g}s",
                         "This machine's DNS server does not answer: check the network settings "
                         f"(try `nslookup {host}`).")
        error = answer.get("error")
        if error is not None:
            reason = getattr(error, "strerror", None) or str(error)
            return _Step(FAIL, f"cannot resolve host {host!r}: {reason}",
                         f"Check `host` in [sources.{self.source.name}] for typos, and that DNS "
                         f"works on this machine (try `nslookup {host}`).")
        self.addresses = list(answer.get("infos", []))
        addresses = list(dict.fromkeys(str(info[4][0]) for info in self.addresses))
        if addresses == [host]:
            return _Step(PASS, f"{host} is an IP address")
        return _Step(PASS, f"{host} resolves to {_names(addresses)}")

    def check_tcp(self) -> _Step:
        source = self.source
        port_hint = ("the provider's SFTP port (the reference provider uses 32)"
                     if source.protocol == "sftp" else "the FTP control port (usually 21)")
        try:
            sock = self._connect()
        except ConnectionRefusedError:
            return _Step(FAIL, f"connection to {self.where} refused: nothing listens on port "
                         f"{source.port}, or a firewall rejects it",
                         f"Check `port` in [sources.{source.name}]: it must be {port_hint}; check "
                         "that the server is up.")
        except TimeoutError:
            return _Step(FAIL, f"connection to {self.where} timed out after {source.timeout:g}s: "
                         "no answer at all",
                         f"A firewall (yours or the network's) drops the traffic, or host/port are "
                         f"wrong: allow outgoing TCP connections to {source.host} port "
                         f"{source.port}, and check `port` ({port_hint}).")
        except OSError as exc:
            return _Step(FAIL, f"cannot connect to {self.where}: {exc.strerror or exc}",
                         "Check this machine's network connection and routing to the server.")
        self.peer_ip = str(sock.getpeername()[0])
        if source.protocol == "sftp":
            self.sock = sock  # the SSH steps continue on this connection
        else:
            sock.close()  # ftplib opens its own
        return _Step(PASS, f"TCP connection to {self.where} ({self.peer_ip}) opened")

    def _connect(self) -> socket.socket:
        """A TCP connection to the addresses the DNS step found, all within one ``timeout``."""
        deadline = time.monotonic() + self.source.timeout
        failure: OSError = TimeoutError("no address to connect to")
        for family, kind, proto, _, address in self.addresses:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out")
            sock = socket.socket(family, kind, proto)
            sock.settimeout(remaining)
            try:
                sock.connect(address)
            except OSError as exc:
                sock.close()
                failure = exc
                continue
            sock.settimeout(self.source.timeout)
            return sock
        raise failure

    def check_listing(self) -> _Step:
        if self.listing is None:
            if self.remote is not None and self.listing_error is None:
                try:
                    self.listing = self.remote.list_files()
                except ReportsyncError as listing_error:
                    self.listing_error = listing_error
            if self.listing_error is not None:
                return _Step(FAIL, self.listing_error.message, self.listing_error.remedy)
        assert self.listing is not None
        from reportsync.fetch import _select

        candidates, refused = _select(self.source, self.listing)
        self.candidates = candidates
        source = self.source
        names = sorted(remote.name for remote in self.listing)
        patterns = f"include {list(source.include)}" + (
            f", exclude {list(source.exclude)}" if source.exclude else "")
        if not names:
            return _Step(WARN, f"the remote folder {source.remote_dir!r} is empty",
                         "Nothing to fetch now. If you expect reports, check remote_dir and ask "
                         "the provider whether deliveries to this account are set up.")
        if refused:
            return _Step(WARN, f"{len(refused)} file name(s) refused as unsafe: "
                         f"{_names(outcome.name for outcome in refused)}; {len(candidates)} of "
                         f"{len(names)} files match {patterns}",
                         "These files are never downloaded; ask the provider why such names are in "
                         "your folder.")
        if not candidates:
            return _Step(WARN, f"none of the {len(names)} files matches {patterns}; the folder "
                         f"holds: {_names(names)}",
                         f"Adjust include/exclude in [sources.{source.name}] to match the names the "
                         "provider uses.")
        return _Step(PASS, f"{len(names)} file(s) listed in {source.remote_dir!r}, "
                     f"{len(candidates)} match {patterns}")

    def check_at_risk(self) -> _Step:
        policy = self.config.retention
        horizon = policy.days - policy.warn_days
        fetched: set[tuple[str, int, int]] = set()
        ledger_path = self.config.settings.state_dir / LEDGER_FILE
        if ledger_path.exists():
            try:
                with Ledger(ledger_path) as ledger:
                    records = ledger.versions_by_key(self.source.name)
            except (ReportsyncError, sqlite3.Error) as exc:
                return _Step(WARN, f"cannot read the ledger to tell which files are fetched: {exc}",
                             "See the ledger check above.")
            # archived, or downloaded with its encrypted copy kept: the purge cannot take it
            # (a file whose copy keeps failing to decrypt shows up in `reportsync status`)
            fetched = {key for key, record in records.items() if record.archived or (
                record.download_path is not None and Path(record.download_path).is_file())}
        unfetched = [remote for remote in self.candidates
                     if (remote.name, remote.size, int(remote.mtime)) not in fetched]
        at_risk = sorted((remote for remote in unfetched
                          if (self.now - remote.mtime) / DAY > horizon), key=lambda r: r.mtime)

        def left(remote: RemoteFile) -> str:
            days = policy.days - (self.now - remote.mtime) / DAY
            return f"{days:.0f} days left" if days >= 0.5 else "past the purge date"

        if at_risk:
            described = _names(f"{remote.name} ({left(remote)})" for remote in at_risk)
            return _Step(WARN, f"{len(at_risk)} file(s) not archived yet are older than {horizon} "
                         f"days; the provider purges files {policy.days} days after delivery: "
                         f"{described}",
                         f"Run `reportsync fetch --source {self.source.name}` now (after fixing "
                         "any FAIL above); a purged file is gone for good.")
        return _Step(PASS, f"no file near the provider's purge: {len(unfetched)} matching file(s) "
                     f"not archived yet, none older than {horizon} days")

    # --- SFTP ---

    def ssh_banner(self) -> _Step:
        assert self.sock is not None
        source = self.source
        try:
            greeting = sftp_transport._check_banner(source, self.sock)
            self.ssh = paramiko.Transport(self.sock)
            self.ssh.banner_timeout = source.timeout
            self.ssh.handshake_timeout = source.timeout
            self.ssh.auth_timeout = source.timeout
            self.ssh.channel_timeout = source.timeout
            sftp_transport._prefer_host_key_types(self.ssh, self.prepared.known)
            sftp_transport._handshake(source, self.ssh, greeting)
        except ReportsyncError as error:
            return _Step(FAIL, error.message, error.remedy)
        return _Step(PASS, f"SSH server: {self.ssh.remote_version}")

    def ssh_host_key(self) -> _Step:
        assert self.ssh is not None
        source = self.source
        if self.prepared.known_problem is not None:
            return _Step(FAIL, self.prepared.known_problem,
                         f"Make {source.known_hosts} readable; doctor does not log in before the "
                         "host key is checked.")
        offered = self.ssh.get_remote_server_key()
        name = sftp_transport.host_key_name(source.host, source.port)
        fingerprint = sftp_transport.fingerprint(offered)
        key_type = offered.get_name()
        try:
            sftp_transport.verify_host_key(source, offered, self.prepared.known)
        except HostKeyError as error:
            if error.message.startswith("unknown host key"):
                line = f"{name} {key_type} {offered.get_base64()}"
                target = source.known_hosts or "your known_hosts file"
                return _Step(
                    FAIL,
                    f"unknown host key: {name} offered {key_type} {fingerprint}, which neither "
                    "known_hosts nor host_key_fingerprint records; reportsync refuses to log in",
                    f"Compare {fingerprint} with the fingerprint your provider publishes (not with "
                    f"what this server says). If it matches, add this line to {target}: {line} "
                    f"-- or set host_key_fingerprint = \"{fingerprint}\" in "
                    f"[sources.{source.name}].")
            return _Step(FAIL, error.message,
                         f"{error.remedy} Until then reportsync does not connect, and neither "
                         "should you.")
        blob = offered.asbytes()
        matched = next((entry for entry in self.prepared.known
                        if not entry.marker and entry.key.asbytes() == blob), None)
        how = (f"matches {source.known_hosts} line {matched.lineno}" if matched is not None
               else "matches host_key_fingerprint")
        return _Step(PASS, f"host key {key_type} {fingerprint} {how}")

    def _certificate_problems(self) -> tuple[SshCertificateInfo | None, list[str]]:
        path = self.source.certificate_file
        if path is None:
            return None, []
        try:
            info = inspect_ssh_file(path)
        except ReportsyncError as error:
            return None, [error.message]
        if not isinstance(info, SshCertificateInfo):
            return None, [f"{path} is a plain public key, not a certificate"]
        problems = []
        if info.status == STATUS_EXPIRED and info.valid_to is not None:
            problems.append(f"the certificate {path} expired on {info.valid_to:%Y-%m-%d %H:%M} UTC "
                            f"({-(info.days_left or 0)} days ago)")
        elif info.status == STATUS_NOT_YET_VALID:
            problems.append(f"the certificate {path} is not valid before "
                            f"{info.valid_from:%Y-%m-%d %H:%M} UTC (check this machine's clock)")
        if info.principals and self.source.username not in info.principals:
            problems.append(f"the certificate's principals ({', '.join(info.principals)}) do not "
                            f"include the username {self.source.username!r}")
        if not info.signature_valid:
            problems.append(f"the CA signature on {path} does not verify")
        return info, problems

    def ssh_auth(self) -> _Step:
        assert self.ssh is not None
        source = self.source
        if self.prepared.key_problem is not None:
            raise _Blocked("key_file could not be loaded (see the config checks)")
        if self.prepared.password_problem is not None:
            raise _Blocked("the password could not be read (see the config checks)")
        password = source.password.resolve()
        key = self.prepared.key
        certificate, problems = self._certificate_problems()
        certificate_remedy = (
            f"Ask the certificate authority (your provider) for a new certificate for "
            f"{source.key_file}.pub listing the principal {source.username!r}, then save it as "
            f"{source.certificate_file}.")
        try:
            sftp_transport._authenticate(source, self.ssh, key,
                                         password.reveal() if password else None)
        except ReportsyncError as error:
            if problems:
                return _Step(FAIL, f"{'; '.join(problems)}: the server refused the login "
                             f"({error.message})", certificate_remedy)
            if self._old_rsa_server(key, error):
                return _Step(
                    FAIL,
                    f"{error.message}; the server does not announce RSA SHA-2 signatures "
                    f"(server-sig-algs), like old SSH servers ({self.ssh.remote_version}) that "
                    "accept only ssh-rsa (SHA-1) signatures, while reportsync signs with "
                    "rsa-sha2-512/256",
                    "Ask the provider to allow rsa-sha2-256/rsa-sha2-512 signatures (OpenSSH 7.2 "
                    "or later does); or, if they accept it, register an ed25519 key instead "
                    "(`reportsync keys ssh generate --type ed25519`).")
            return _Step(FAIL, error.message, error.remedy)
        credential = "password"
        if key is not None:
            credential = f"key {key.get_name()} {sftp_transport.fingerprint(key)}"
        if certificate is not None:
            until = "forever" if certificate.valid_to is None else \
                f"until {certificate.valid_to:%Y-%m-%d}"
            credential = f"certificate {source.certificate_file} (valid {until})"
            if problems:
                return _Step(WARN, f"logged in as {source.username!r}, although "
                             f"{'; '.join(problems)}", certificate_remedy)
            expiry = certificate_expiry(certificate)
            if expiry is not None and expiry.soon:
                return _Step(WARN, f"logged in as {source.username!r}, but {expiry.finding}",
                             expiry.remedy)
        return _Step(PASS, f"logged in as {source.username!r} with the {credential}")

    def _old_rsa_server(self, key: paramiko.PKey | None, error: ReportsyncError) -> bool:
        """An RSA key refused by a server that does not announce SHA-2 RSA signatures."""
        assert self.ssh is not None
        if key is None or "rsa" not in key.get_name() or "refused our" not in error.message:
            return False
        version = re.search(r"OpenSSH_(\d+)\.(\d+)", str(self.ssh.remote_version or ""))
        if version is not None and (int(version.group(1)), int(version.group(2))) < (7, 2):
            return True  # OpenSSH learned rsa-sha2-256/512 in 7.2
        extensions = getattr(self.ssh, "server_extensions", {}) or {}
        announced = extensions.get("server-sig-algs", b"")
        text = announced.decode("ascii", "replace") if isinstance(announced, bytes) else str(announced)
        return "rsa-sha2-256" not in text and "rsa-sha2-512" not in text

    def ssh_remote_folder(self) -> _Step:
        assert self.ssh is not None
        source = self.source
        try:
            sftp = sftp_transport._open_sftp_session(source, self.ssh)
        except ReportsyncError as error:
            return _Step(FAIL, error.message, error.remedy)
        transport = sftp_transport.SftpTransport(source, self.ssh, sftp)
        self.remote = transport
        try:
            home = sftp.normalize(".")
        except Exception:
            home = "."
        try:
            sftp.chdir(source.remote_dir)
        except Exception as exc:
            problem = transport._error(exc, f"cannot open remote_dir {source.remote_dir!r}",
                                       path=source.remote_dir)
            if isinstance(problem, NetworkError):
                return _Step(FAIL, problem.message, problem.remedy)
            try:
                there = sorted(sftp.listdir("."))
            except Exception:
                there = []
            holds = f", which holds: {_names(there)}" if there else ""
            return _Step(FAIL, problem.message,
                         f"Check remote_dir in [sources.{source.name}]: it is relative to the "
                         f"login folder {home}{holds}. If the folder is right, ask the provider "
                         "for read access to it.")
        return _Step(PASS, f"remote folder {source.remote_dir!r} opened ({sftp.getcwd()})")

    # --- FTP / FTPS ---

    _FTP_PHASE_CHECK = {"connect": "banner", "tls": "tls", "login": "auth", "session": "auth",
                        "cwd": "remote folder"}

    def _ftp_failed_check(self) -> str | None:
        """Which check the connect failure belongs to (None: it did not fail)."""
        if self.ftp_error is None:
            return None
        assert self.ftp is not None
        phase = self.ftp.failed_phase
        if phase is None:
            return "banner"  # failed before any network step: a config problem
        return self._FTP_PHASE_CHECK.get(phase, "auth")

    def _ftp_step(self, check: str, passed: _Step) -> _Step:
        failed = self._ftp_failed_check()
        if failed == check:
            assert self.ftp_error is not None
            return _Step(FAIL, self.ftp_error.message, self._ftp_remedy(check, self.ftp_error))
        return passed

    def _ftp_remedy(self, check: str, error: ReportsyncError) -> str:
        source = self.source
        if check == "auth" and "530" in error.message:
            where = _secret_where(source.password)
            return (f"Check the username {source.username!r} and the password in the {where}: "
                    "the server refused them (530). Repeated failures can lock the account; ask "
                    "the provider to reset the password if you are unsure.")
        if check == "tls" and "did not verify" in error.message:
            trust = f"ca_file {source.ca_file}" if source.ca_file else "the system's CA store"
            return (f"Check that `host` ({source.host}) is the name on the server's certificate, "
                    f"and that {trust} holds the CA that signed it (ask the provider for it). "
                    "reportsync never skips this check.")
        return error.remedy

    def ftp_banner(self) -> _Step:
        source = self.source
        if self.prepared.password_problem is not None:
            raise _Blocked("the password could not be read (see the config checks)")
        if self.prepared.tls_problem is not None:
            raise _Blocked("ca_file could not be loaded (see the config checks)")
        self.ftp = ftp_transport.FtpTransport(source)
        try:
            self.ftp.connect()
        except ReportsyncError as error:
            self.ftp_error = error
        greeting = ""
        client = self.ftp._client
        if client is not None and client.welcome:
            greeting = f": {_one_line(client.welcome)[:100]}"
        return self._ftp_step("banner", _Step(PASS, f"FTP server at {self.where}{greeting}"))

    def ftp_tls(self) -> _Step:
        client = self.ftp._client if self.ftp is not None else None
        version = ""
        if client is not None and isinstance(client.sock, ssl.SSLSocket):
            version = f"{client.sock.version()}, "
        trust = f"ca_file {self.source.ca_file}" if self.source.ca_file else "the system's CAs"
        return self._ftp_step("tls", _Step(
            PASS, f"explicit TLS (AUTH TLS): {version}certificate verified for "
            f"{self.source.host} against {trust}"))

    def ftp_auth(self) -> _Step:
        return self._ftp_step("auth", _Step(PASS, f"logged in as {self.source.username!r}"))

    def ftp_remote_folder(self) -> _Step:
        step = self._ftp_step("remote folder",
                              _Step(PASS, f"remote folder {self.source.remote_dir!r} opened"))
        if self.ftp_error is not None and step.status != FAIL:
            # a failure this mapping does not place: name it here rather than pass silently
            return _Step(FAIL, self.ftp_error.message, self.ftp_error.remedy)
        return step

    def ftp_data_channel(self) -> _Step:
        assert self.ftp is not None
        source = self.source
        try:
            self.listing = self.ftp.list_files()
        except ReportsyncError as listing_error:
            self.listing_error = listing_error
        error = self.listing_error
        command = self.ftp.data_command
        cause = error.__cause__ if error is not None else None
        if isinstance(cause, ftp_transport._DataChannelError):
            inner = cause.cause
            what = (f"did not open within {source.timeout:g}s" if isinstance(inner, TimeoutError)
                    else "was refused" if isinstance(inner, ConnectionRefusedError)
                    else f"failed ({inner})")
            assert error is not None
            return _Step(FAIL, f"{command or 'passive mode'} negotiated (data port {cause.port}), "
                         f"but the data connection to {cause.host}:{cause.port} {what}",
                         error.remedy)
        if isinstance(cause, ftp_transport._DataTimeout):
            assert error is not None
            return _Step(FAIL, f"the data connection opened, but no data arrived within "
                         f"{source.timeout:g}s", error.remedy)
        if error is not None and isinstance(cause, ftplib.error_perm) and str(cause)[:3] == "522":
            return _Step(FAIL, error.message, error.remedy)
        if error is not None and command is None:
            if isinstance(cause, ftplib.Error):
                return _Step(FAIL, f"the server refused passive mode (EPSV and PASV): {error.message}",
                             "Ask the provider whether passive mode is enabled for your account; "
                             "reportsync uses passive mode (passive = true) because active mode "
                             "needs incoming connections through your firewall.")
            return _Step(FAIL, f"no data connection could be set up: {error.message}",
                         error.remedy or ftp_transport._data_channel_remedy(source))
        if command == "PORT":
            return _Step(WARN, "active mode (PORT): the server connects back to this machine, "
                         "which firewalls and NAT routers usually block",
                         f"Set passive = true in [sources.{source.name}] (the provider's advice).")
        named = self.ftp.pasv_named_host
        if command == "PASV" and named is not None and self.peer_ip is not None \
                and named != self.peer_ip:
            return _Step(WARN, f"the PASV reply names {named}, but the control connection goes to "
                         f"{self.peer_ip}: the server is behind NAT and announces an internal "
                         f"address; reportsync ignores it and connects the data channel to "
                         f"{self.peer_ip}, which works",
                         "Nothing to change in reportsync. Other FTP clients that trust the PASV "
                         "address will fail: tell the provider their passive address setting is "
                         "wrong.")
        mode = {"EPSV": "EPSV (extended passive mode)", "PASV": "PASV (passive mode)"}.get(
            command or "", command or "passive mode")
        return _Step(PASS, f"{mode} negotiated; the data connection to {self.peer_ip} opened")


# --- the support bundle ------------------------------------------------------------------------


def write_bundle(report: DoctorReport, path: Path) -> Path:
    """A zip for a support ticket (0600, written atomically): findings, versions, the redacted
    config, recent log lines and a ledger summary. No configured secret goes into any member."""
    secrets = _secret_values(report.config_path, report.config)
    members: dict[str, str] = {
        "findings.json": json.dumps(report.to_dict(), indent=2),
        "versions.json": json.dumps(versions(report.gpg_version), indent=2),
    }
    config_text = _redacted_config(report.config_path)
    if config_text is not None:
        members["config.toml"] = config_text
    if report.config is not None:
        state_dir = report.config.settings.state_dir
        log_tail = _log_tail(state_dir / "logs" / "reportsync.log")
        if log_tail is not None:
            members["reportsync.log"] = log_tail
        members["ledger.json"] = json.dumps(_ledger_summary(state_dir / LEDGER_FILE), indent=2)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, text in members.items():
            archive.writestr(name, _scrub(text, secrets))
    return write_atomically(path, buffer.getvalue(), mode=0o600)


def versions(gpg_version: str | None = None) -> dict[str, str | None]:
    from importlib import metadata

    def installed(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "reportsync": __version__,
        "python": sys.version.split()[0],
        "paramiko": installed("paramiko"),
        "cryptography": installed("cryptography"),
        "python-gnupg": installed("python-gnupg"),
        "click": installed("click"),
        "gpg": gpg_version,
        "openssl": ssl.OPENSSL_VERSION,
        "os": platform.platform(),
    }


_SECRET_KEYS = ("password", "password_env", "password_file", "key_passphrase_env",
                "key_passphrase_file", "gpg_passphrase_env", "gpg_passphrase_file")


def _secret_values(config_path: Path, config: Config | None) -> list[str]:
    """Every secret value the config names (resolved), to scrub from the bundle's members."""
    found: set[str] = set()
    refs: list[SecretRef] = []
    if config is not None:
        refs.append(config.settings.gpg_passphrase)
        for source in config.sources.values():
            refs += [source.password, source.key_passphrase]
    for ref in refs:
        try:
            value = ref.resolve()
        except ReportsyncError:
            continue
        if value is not None:
            found.add(value.reveal())
    # also from the raw text, so a config that does not validate is scrubbed too
    try:
        text = config_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    # and every secret by the schema ([notify]'s URLs, each one of several), valid config or not
    with contextlib.suppress(tomllib.TOMLDecodeError):
        found.update(config_secret_values(config) if config is not None else
                     config_secret_values(tomllib.loads(text), config_path=config_path))
    pattern = re.compile(r"\b(" + "|".join(_SECRET_KEYS) + r")\s*=\s*(\"[^\"]*\"|'[^']*')")
    for key, quoted in pattern.findall(text):
        value = quoted[1:-1]
        if key == "password":
            found.add(value)
        elif key.endswith("_env"):
            found.add((os.environ if config is None else config.environ).get(value, ""))
        else:
            with contextlib.suppress(OSError):
                found.add(Path(os.path.expanduser(value)).read_text(encoding="utf-8")
                          .rstrip("\r\n"))
    return sorted((value for value in found if value), key=len, reverse=True)


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        for form in (secret, json.dumps(secret)[1:-1]):
            text = text.replace(form, REDACTED)
    return text


_INLINE_PASSWORD = re.compile(
    r"(\bpassword\s*=\s*)(\"\"\".*?\"\"\"|'''.*?'''|\"(?:[^\"\\\n]|\\.)*\"|'[^'\n]*')", re.S)


def _redacted_config(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return _INLINE_PASSWORD.sub(lambda match: f'{match.group(1)}"{REDACTED}"', text)


def _log_tail(path: Path) -> str | None:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    return "\n".join(lines[-BUNDLE_LOG_LINES:]) + "\n"


def _ledger_summary(path: Path) -> dict[str, object]:
    if not path.exists():
        return {"path": str(path), "exists": False}
    try:
        with Ledger(path) as ledger:
            counts: dict[str, int] = {}
            for table in ("runs", "source_runs", "remote_files", "downloads", "archived",
                          "failures", "deletions"):
                with contextlib.suppress(ValueError, sqlite3.Error):  # tables of other versions
                    counts[table] = ledger.count(table)
            return {
                "path": str(path),
                "exists": True,
                "schema_version": ledger.schema_version,
                "integrity": ledger.integrity_check(),
                "counts": counts,
                "open_failures": ledger.open_failures(),
            }
    except (ReportsyncError, sqlite3.Error) as exc:
        return {"path": str(path), "exists": True, "error": str(exc)}
