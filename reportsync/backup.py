"""`keys backup`, `keys verify-backup`, `keys restore`: one encrypted file holds the whole setup.

The archive is a tar (members read into memory, never extracted by path) sealed with AES-256-GCM
under a key derived from the passphrase with scrypt. GCM authenticates every byte, so a changed or
truncated file cannot decrypt; a separate check value derived from the passphrase tells "wrong
passphrase" apart from "damaged file". Restore verifies everything and plans every write before
it writes anything.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import socket
import sys
import tarfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from reportsync import __version__
from reportsync.config import Config, Secret, SecretRef, SourceConfig, parse_config
from reportsync.errors import (
    BackupError,
    BackupPassphraseError,
    ConfigError,
    ExitCode,
    KeyProblemError,
    ReportsyncError,
    UsageError,
)
from reportsync.fsutil import ensure_private_dir, sha256_file, write_atomically
from reportsync.pgp import Gpg
from reportsync.pgpkeys import import_key_data, list_pgp_keys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

MAGIC = b"REPORTSYNC-BACKUP\n"
FORMAT = 1
SCRYPT_N = 2**16  # 64 MiB of memory per guess: slow for an attacker, a quarter second for us
SCRYPT_R = 8
SCRYPT_P = 1
CHECK_LABEL = b"reportsync backup passphrase check"
MIN_PASSPHRASE = 8
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Member:
    name: str  # path inside the archive
    kind: str  # pgp-secret-key | pgp-public-keys | pgp-ownertrust | pgp-revocation |
    # ssh-private-key | ssh-public-key | ssh-certificate | known-hosts | config
    sha256: str
    size: int
    fingerprints: tuple[str, ...] = ()
    source: str | None = None  # for SSH material: the source whose config names it
    config_key: str | None = None  # e.g. "key_file"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "sha256": self.sha256, "size": self.size,
                "fingerprints": list(self.fingerprints), "source": self.source,
                "config_key": self.config_key}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Member:
        return cls(name=str(raw["name"]), kind=str(raw["kind"]), sha256=str(raw["sha256"]),
                   size=int(raw["size"]), fingerprints=tuple(raw.get("fingerprints") or ()),
                   source=raw.get("source"), config_key=raw.get("config_key"))


@dataclass(frozen=True)
class Manifest:
    created: str
    tool_version: str
    host: str
    members: tuple[Member, ...]
    not_included: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "tool": "reportsync", "tool_version": self.tool_version,
                "created": self.created, "host": self.host,
                "members": [member.to_dict() for member in self.members],
                "not_included": list(self.not_included)}


@dataclass(frozen=True)
class BackupWritten:
    """``keys backup``: the file written and what it holds."""

    path: Path
    manifest: Manifest

    exit_code: ClassVar[ExitCode] = ExitCode.OK


@dataclass(frozen=True)
class BackupContents:
    """A verified backup, in memory (``keys verify-backup``; the data never goes to output)."""

    path: Path
    manifest: Manifest
    data: dict[str, bytes] = field(repr=False, metadata={"json": False})

    exit_code: ClassVar[ExitCode] = ExitCode.OK


@dataclass(frozen=True)
class RestoreReport:
    """``keys restore``."""

    backup: Path
    written: tuple[str, ...]  # human descriptions of what was restored where
    unchanged: tuple[str, ...]
    pgp_fingerprints: tuple[str, ...]
    # what the backup does not hold; secrets (never backed up) named where the restored config
    # expects them on this machine
    not_included: tuple[str, ...]

    exit_code: ClassVar[ExitCode] = ExitCode.OK


# how a manifest's ``not_included`` names a secret file left out (format 1: kept as it is)
SECRET_LEFT_OUT = "(a secret: set it up again on the new machine)"


# --- sealing -------------------------------------------------------------------------------------


def _derive(passphrase: Secret, salt: bytes, n: int, r: int, p: int) -> tuple[bytes, bytes]:
    material = Scrypt(salt=salt, length=64, n=n, r=r, p=p).derive(passphrase.reveal().encode())
    return material[:32], material[32:]


def seal(plaintext: bytes, passphrase: Secret) -> bytes:
    salt, nonce = os.urandom(16), os.urandom(12)
    key, check_key = _derive(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    header = {
        "format": FORMAT, "kdf": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
        "cipher": "AES-256-GCM", "salt": base64.b64encode(salt).decode(),
        "nonce": base64.b64encode(nonce).decode(),
        "check": base64.b64encode(hmac.new(check_key, CHECK_LABEL, "sha256").digest()).decode(),
    }
    header_line = json.dumps(header, sort_keys=True).encode() + b"\n"
    return MAGIC + header_line + AESGCM(key).encrypt(nonce, plaintext, MAGIC + header_line)


def unseal(sealed: bytes, passphrase: Secret, origin: Path) -> bytes:
    if not sealed.startswith(MAGIC):
        raise BackupError(f"{origin} is not a reportsync backup", path=str(origin))
    header_end = sealed.find(b"\n", len(MAGIC))
    try:
        header = json.loads(sealed[len(MAGIC):header_end])
        if header.get("format") != FORMAT or header.get("kdf") != "scrypt":
            raise BackupError(f"{origin}: backup format {header.get('format')} is not supported",
                              path=str(origin), remedy="Restore it with a newer reportsync.")
        salt = base64.b64decode(header["salt"])
        nonce = base64.b64decode(header["nonce"])
        check = base64.b64decode(header["check"])
        n, r, p = int(header["n"]), int(header["r"]), int(header["p"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupError(f"{origin}: the backup's header is damaged ({exc})",
                          path=str(origin)) from None
    if header_end < 0 or not (2**10 <= n <= 2**22 and 1 <= r <= 32 and 1 <= p <= 16):
        raise BackupError(f"{origin}: the backup's header is damaged", path=str(origin))
    key, check_key = _derive(passphrase, salt, n, r, p)
    if not hmac.compare_digest(hmac.new(check_key, CHECK_LABEL, "sha256").digest(), check):
        raise BackupPassphraseError(f"wrong passphrase for {origin}", path=str(origin))
    associated = sealed[: header_end + 1]
    try:
        return AESGCM(key).decrypt(nonce, sealed[header_end + 1:], associated)
    except InvalidTag:
        raise BackupError(
            f"{origin} is damaged: it was changed or truncated after it was written",
            path=str(origin),
        ) from None


# --- creating a backup -------------------------------------------------------------------------


def _ssh_fingerprints(path: Path) -> tuple[str, ...]:
    from reportsync.sshkeys import inspect_ssh_file

    try:
        info = inspect_ssh_file(path)
    except ReportsyncError:
        return ()
    return (info.fingerprint,) if info.fingerprint else ()


def collect_members(config: Config, gpg: Gpg) -> tuple[list[tuple[Member, bytes]], list[str]]:
    """Everything needed to decrypt and log in again, read into memory."""
    collected: list[tuple[Member, bytes]] = []
    not_included: list[str] = []

    def add(name: str, kind: str, data: bytes, **extra: Any) -> None:
        member = Member(name=name, kind=kind, sha256=hashlib.sha256(data).hexdigest(),
                        size=len(data), **extra)
        collected.append((member, data))

    secret_keys = [key for key in list_pgp_keys(gpg) if key.has_secret]
    if not secret_keys:
        raise KeyProblemError(f"no PGP secret key in {gpg.home}: nothing to back up there",
                              remedy="Create one (`reportsync keys pgp generate`) or check "
                              "settings.gnupg_home.")
    fingerprints = tuple(key.fingerprint for key in secret_keys)
    passphrase = config.settings.gpg_passphrase.resolve()
    for fingerprint in fingerprints:
        # one key per export: gpg silently leaves out a key whose passphrase differs
        exported = str(gpg.raw.export_keys(
            fingerprint, secret=True, armor=True,
            passphrase=passphrase.reveal() if passphrase else None,
            expect_passphrase=passphrase is not None))
        if "BEGIN PGP PRIVATE KEY BLOCK" not in exported:
            raise KeyProblemError(
                f"gpg did not export the secret key {fingerprint}: it needs its passphrase",
                remedy="Set the key's passphrase in the variable settings.gpg_passphrase_env "
                "names (keys with different passphrases cannot be backed up in one run).",
            )
        add(f"pgp/secret-{fingerprint}.asc", "pgp-secret-key", exported.encode(),
            fingerprints=(fingerprint,))
    public = str(gpg.raw.export_keys([key.fingerprint for key in list_pgp_keys(gpg)], armor=True))
    add("pgp/public-keys.asc", "pgp-public-keys", public.encode(),
        fingerprints=tuple(key.fingerprint for key in list_pgp_keys(gpg)))
    add("pgp/ownertrust.txt", "pgp-ownertrust", gpg.run("--export-ownertrust"))
    for fingerprint in fingerprints:
        revocation = gpg.home / "openpgp-revocs.d" / f"{fingerprint}.rev"
        if revocation.is_file():
            add(f"pgp/revocations/{fingerprint}.rev", "pgp-revocation", revocation.read_bytes(),
                fingerprints=(fingerprint,))
        else:
            not_included.append(f"revocation certificate for {fingerprint} (none in "
                                f"{revocation.parent}; create one with `gpg --gen-revoke`)")

    seen: set[Path] = set()
    for source in config.sources.values():
        files: list[tuple[Path | None, str, str]] = [
            (source.key_file, "ssh-private-key", "key_file"),
            (Path(f"{source.key_file}.pub") if source.key_file else None, "ssh-public-key",
             "key_file.pub"),
            (source.certificate_file, "ssh-certificate", "certificate_file"),
            (source.known_hosts, "known-hosts", "known_hosts"),
        ]
        for path, kind, config_key in files:
            if path is None or path in seen:
                continue
            if not path.is_file():
                if kind != "ssh-public-key":
                    not_included.append(f"sources.{source.name}.{config_key}: {path} does not exist")
                continue
            seen.add(path)
            fingerprints_of = _ssh_fingerprints(path) if kind.startswith("ssh-") else ()
            add(f"ssh/{source.name}/{config_key}/{path.name}", kind, path.read_bytes(),
                fingerprints=fingerprints_of, source=source.name, config_key=config_key)
    not_included.extend(f"{ref.config_key}_file {ref.file} {SECRET_LEFT_OUT}"
                        for ref in _secret_files(config))
    if config.path is not None:
        add("config/config.toml", "config", config.path.read_bytes())
    return collected, not_included


def _secret_files(config: Config) -> list[SecretRef]:
    """The secrets the config reads from files, settings first, then source by source."""
    refs = [config.settings.gpg_passphrase, config.settings.ledger_password]
    for source in config.sources.values():
        refs += [source.password, source.key_passphrase]
    return [ref for ref in refs if ref.file is not None]


def create_backup(config: Config, gpg: Gpg, out: Path, passphrase: Secret) -> BackupWritten:
    if len(passphrase.reveal()) < MIN_PASSPHRASE:
        raise UsageError(f"the backup passphrase must have at least {MIN_PASSPHRASE} characters",
                         remedy="A few unrelated words make a good one; store it apart from the "
                         "backup.")
    members, not_included = collect_members(config, gpg)
    manifest = Manifest(created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        tool_version=__version__, host=socket.gethostname(),
                        members=tuple(member for member, _ in members),
                        not_included=tuple(not_included))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        entries = [(MANIFEST, json.dumps(manifest.to_dict(), indent=2).encode())]
        entries += [(member.name, data) for member, data in members]
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = int(time.time())
            info.mode = 0o600
            archive.addfile(info, io.BytesIO(data))
    write_atomically(out, seal(buffer.getvalue(), passphrase), mode=0o600)
    return BackupWritten(path=out, manifest=manifest)


# --- verifying ---------------------------------------------------------------------------------


def verify_backup(path: Path, passphrase: Secret) -> BackupContents:
    """Decrypt in memory and check every member against the manifest; writes nothing."""
    try:
        sealed = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}", path=str(path)) from None
    plaintext = unseal(sealed, passphrase, path)
    data: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(plaintext), mode="r:") as archive:
            for info in archive.getmembers():
                if not info.isfile():
                    raise BackupError(f"{path}: unexpected archive entry {info.name!r}")
                extracted = archive.extractfile(info)
                assert extracted is not None
                data[info.name] = extracted.read()
        raw_manifest = json.loads(data.pop(MANIFEST))
        manifest = Manifest(
            created=str(raw_manifest["created"]), tool_version=str(raw_manifest["tool_version"]),
            host=str(raw_manifest.get("host", "")),
            members=tuple(Member.from_dict(item) for item in raw_manifest["members"]),
            not_included=tuple(raw_manifest.get("not_included", ())),
        )
    except (tarfile.TarError, KeyError, ValueError, TypeError) as exc:
        raise BackupError(f"{path}: the archive inside the backup is damaged ({exc})",
                          path=str(path)) from None
    problems = []
    for member in manifest.members:
        content = data.get(member.name)
        if content is None:
            problems.append(f"{member.name}: listed in the manifest but missing")
        elif hashlib.sha256(content).hexdigest() != member.sha256 or len(content) != member.size:
            problems.append(f"{member.name}: does not match the manifest's sha256")
    extra = set(data) - {member.name for member in manifest.members}
    problems.extend(f"{name}: not listed in the manifest" for name in sorted(extra))
    if problems:
        raise BackupError(f"{path} failed verification: " + "; ".join(problems), path=str(path))
    return BackupContents(path=path, manifest=manifest, data=data)


# --- restoring ---------------------------------------------------------------------------------


@dataclass
class _PlannedWrite:
    target: Path
    data: bytes
    mode: int
    description: str
    merge_lines: bool = False  # known_hosts: add missing lines instead of replacing


def restore_backup(
    path: Path,
    passphrase: Secret,
    *,
    config_path: Path,
    force: bool = False,
    environ: Mapping[str, str] | None = None,
) -> RestoreReport:
    """``environ``: this machine's environment, which the restored config is read in (its
    ``~`` and ``$VARS`` name paths here, not on the machine the backup was made on)."""
    contents = verify_backup(path, passphrase)
    by_kind: dict[str, list[Member]] = {}
    for member in contents.manifest.members:
        by_kind.setdefault(member.kind, []).append(member)
    config_members = by_kind.get("config", [])
    if not config_members:
        raise BackupError(f"{path} holds no config file", path=str(path))
    config_bytes = contents.data[config_members[0].name]
    try:
        document = tomllib.loads(config_bytes.decode("utf-8"))
        config = parse_config(document, config_path=config_path, allow_no_sources=True,
                              environ=environ)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BackupError(f"{path}: the backed-up config is not valid TOML ({exc})") from None
    except ConfigError as error:
        raise ConfigError(error.problems, path=f"{config_path} (from {path})",
                          remedy="The backed-up config does not validate on this machine; "
                          "restore it by hand and fix it.") from None

    plan = [_PlannedWrite(config_path, config_bytes, 0o600, f"config → {config_path}")]
    for member in contents.manifest.members:
        if not member.kind.startswith(("ssh-", "known-hosts")) or member.source is None:
            continue
        source = config.sources.get(member.source)
        if source is None:
            continue
        target = _ssh_target(source, member)
        if target is None:
            continue
        mode = 0o600 if member.kind in ("ssh-private-key", "ssh-certificate") else 0o644
        plan.append(_PlannedWrite(target, contents.data[member.name], mode,
                                  f"{member.kind} of source {member.source} → {target}",
                                  merge_lines=member.kind == "known-hosts"))

    conflicts = [write.target for write in plan if not write.merge_lines and
                 write.target.exists() and _differs(write.target, write.data)]
    if conflicts and not force:
        listing = ", ".join(str(target) for target in conflicts)
        raise UsageError(f"restore would overwrite different existing files: {listing}",
                         remedy="Move them aside, or pass --force to replace them. Nothing was "
                         "written.")

    written: list[str] = []
    unchanged: list[str] = []
    # importing needs no passphrase: keys keep the protection they were exported with
    gpg = Gpg(binary=config.settings.gpg_binary, home=config.settings.gnupg_home, passphrase=None,
              environ=environ)
    fingerprints: list[str] = []
    for member in by_kind.get("pgp-public-keys", []) + by_kind.get("pgp-secret-key", []):
        report = import_key_data(gpg, contents.data[member.name], origin=member.name)
        fingerprints.extend(report.fingerprints)
        written.append(f"{member.kind}: {', '.join(report.fingerprints)} → {gpg.home}")
    for member in by_kind.get("pgp-ownertrust", []):
        gpg.run("--import-ownertrust", stdin=contents.data[member.name])
        written.append(f"ownertrust → {gpg.home}")
    for member in by_kind.get("pgp-revocation", []):
        folder = ensure_private_dir(gpg.home / "openpgp-revocs.d")
        target = folder / Path(member.name).name
        write_atomically(target, contents.data[member.name], mode=0o600)
        written.append(f"revocation certificate → {target}")
    for write in plan:
        if write.merge_lines:
            added = _merge_lines(write.target, write.data)
            (written if added else unchanged).append(
                f"{write.description} ({added} line(s) added)" if added else write.description)
            continue
        if write.target.exists() and not _differs(write.target, write.data):
            unchanged.append(write.description)
            continue
        ensure_private_dir(write.target.parent)
        write_atomically(write.target, write.data, mode=write.mode)
        written.append(write.description)
    return RestoreReport(backup=path, written=tuple(written), unchanged=tuple(unchanged),
                         pgp_fingerprints=tuple(dict.fromkeys(fingerprints)),
                         not_included=_not_included_here(contents.manifest, config))


def _not_included_here(manifest: Manifest, config: Config) -> tuple[str, ...]:
    """The manifest's list of what the backup lacks, with each secret file named where the
    restored config reads it on this machine: the manifest names the old machine's path, and a
    person following it would create the file where reportsync never looks."""
    kept = [item for item in manifest.not_included if not item.endswith(SECRET_LEFT_OUT)]
    kept += [f"{ref.config_key}_file (a secret): create {ref.file} on this machine, 0600, "
             "holding it" for ref in _secret_files(config)]
    return tuple(kept)


def _ssh_target(source: SourceConfig, member: Member) -> Path | None:
    if member.config_key == "key_file":
        return source.key_file
    if member.config_key == "key_file.pub" and source.key_file is not None:
        return Path(f"{source.key_file}.pub")
    if member.config_key == "certificate_file":
        return source.certificate_file
    if member.config_key == "known_hosts":
        return source.known_hosts
    return None


def _differs(target: Path, data: bytes) -> bool:
    return sha256_file(target) != hashlib.sha256(data).hexdigest()


def _merge_lines(target: Path, data: bytes) -> int:
    existing = target.read_bytes().splitlines() if target.exists() else []
    missing = [line for line in data.splitlines() if line.strip() and line not in existing]
    if not missing:
        return 0
    merged = b"\n".join([*existing, *missing]) + b"\n"
    ensure_private_dir(target.parent)
    write_atomically(target, merged, mode=0o644)
    return len(missing)
