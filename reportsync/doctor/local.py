"""doctor's checks of this machine: gpg, the GnuPG home, the secret keys and their passphrase
(all through ``reportsync.pgp``), the folders, the free disk space, the ledger and the run lock.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import sqlite3
import stat
import tempfile
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

from reportsync import pgp, pgpkeys
from reportsync.config import Config, SourceConfig
from reportsync.doctor.findings import FAIL, PASS, SKIPPED, WARN, DoctorFinding, Findings, guarded
from reportsync.doctor.ledger import check_shared_ledger
from reportsync.errors import LedgerDamagedError, ReportsyncError
from reportsync.fsutil import shared_folder_problem, too_open
from reportsync.ledger import LEDGER_FILE, Ledger
from reportsync.lock import HOLDER_FILE, LOCK_FILE, LockState, RunLock, lock_state
from reportsync.transports.base import secret_where
from reportsync.units import GiB, MiB, human_bytes

SCOPE = "local"
DISK_FAIL_BYTES = 100 * MiB
DISK_WARN_BYTES = 1 * GiB


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def local_checks(config: Config, sources: list[SourceConfig], gpg_passphrase_problem: str | None,
                 out: Findings) -> str | None:
    """Every check of this machine; returns gpg's version (for the bundle), if gpg runs."""
    settings = config.settings
    no_gpg: tuple[str | None, str | None] = (None, None)
    gpg_path, version = guarded(
        out, "gpg", lambda: _check_gpg(settings.gpg_binary, out, config.environ), no_gpg)
    home_ok = guarded(out, "gnupg home", lambda: _check_gnupg_home(settings.gnupg_home, out),
                      False)
    usable: list[str] = []
    if gpg_path is None or not home_ok:
        reason = "gpg was not found" if gpg_path is None else "the GnuPG home is not usable"
        out.add("secret key", SCOPE, SKIPPED, DoctorFinding.SECRET_KEY_SKIPPED,
                f"not checked: {reason}")
    else:
        usable = guarded(out, "secret key",
                         lambda: check_secret_keys(gpg_path, settings.gnupg_home, out,
                                                    config.environ), [])
    if not usable:
        out.add("passphrase", SCOPE, SKIPPED, DoctorFinding.PASSPHRASE_SKIPPED_NO_KEY,
                "not checked: no secret key that can decrypt")
    elif gpg_passphrase_problem is not None:
        out.add("passphrase", SCOPE, SKIPPED, DoctorFinding.PASSPHRASE_SKIPPED_UNREADABLE,
                "not checked: the configured passphrase cannot be read (see the config checks)")
    else:
        assert gpg_path is not None
        guarded(out, "passphrase", lambda: _check_passphrase(config, gpg_path, usable, out), None)
    folders = _folders(config, sources)
    for path, config_key in folders:
        guarded(out, "folder", functools.partial(_check_folder, path, config_key, out), None)
    guarded(out, "disk space", lambda: _check_disk_space([path for path, _ in folders], out), None)
    if settings.ledger_url is None:
        guarded(out, "ledger", lambda: _check_ledger(settings.state_dir, out), None)
    else:  # a shared ledger: its connection, and the archive it records, seen from here
        guarded(out, "ledger", lambda: check_shared_ledger(config, sources, out), None)
    guarded(out, "lock", lambda: _check_lock(settings.state_dir, out), None)
    return version



def _check_gpg(binary: str, out: Findings, environ: Mapping[str, str] | None = None
               ) -> tuple[str | None, str | None]:
    found = pgp.inspect_gpg(binary, environ)
    if found.path is None:
        message, remedy = pgp.gpg_not_found(binary)
        out.add("gpg", SCOPE, FAIL, DoctorFinding.GPG_NOT_FOUND, message, remedy)
        return None, None
    path = found.path
    if found.error is not None:
        out.add("gpg", SCOPE, FAIL, DoctorFinding.GPG_BROKEN, f"{path} does not run: {found.error}",
                "Reinstall GnuPG or set settings.gpg_binary to a working gpg.")
        return None, None
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", found.first_line)
    if found.returncode != 0 or match is None:
        out.add("gpg", SCOPE, FAIL, DoctorFinding.GPG_NOT_GNUPG,
                f"{path} is not GnuPG: `{binary} --version` said "
                f"{found.first_line[:80]!r}",
                "Set settings.gpg_binary to GnuPG's gpg.")
        return None, None
    version = match.group(0)
    if (int(match.group(1)), int(match.group(2))) < (2, 1):
        out.add("gpg", SCOPE, WARN, DoctorFinding.GPG_OLD,
                f"gpg {version} ({path}) is older than 2.1",
                "Install GnuPG 2.2 or later; older versions handle passphrases differently.")
    else:
        out.add("gpg", SCOPE, PASS, DoctorFinding.GPG_OK, f"gpg {version} ({path})")
    return path, version


def _check_gnupg_home(home: Path, out: Findings) -> bool:
    if not home.exists():
        out.add("gnupg home", SCOPE, FAIL, DoctorFinding.GNUPG_HOME_MISSING,
                f"the GnuPG home {home} does not exist",
                "Restore your keys (`reportsync keys restore FILE`), import your secret key "
                "(`reportsync keys pgp import FILE`) or create one (`reportsync keys pgp generate "
                "--name N --email E`); or point settings.gnupg_home at the folder that holds it.")
        return False
    if not home.is_dir():
        out.add("gnupg home", SCOPE, FAIL, DoctorFinding.GNUPG_HOME_NOT_A_FOLDER,
                f"the GnuPG home {home} is not a folder",
                "Point settings.gnupg_home at the folder that holds your keys.")
        return False
    shared = shared_folder_problem(home, "settings.gnupg_home")
    if shared is not None:
        out.add("gnupg home", SCOPE, FAIL, DoctorFinding.GNUPG_HOME_SHARED,
                shared.message, shared.remedy)
        return True
    mode = too_open(home)
    if mode is not None and mode & 0o022:
        out.add("gnupg home", SCOPE, FAIL, DoctorFinding.GNUPG_HOME_WRITABLE,
                f"the GnuPG home {home} has mode {mode:04o}: others can change the files in it "
                "(a planted gpg.conf changes what gpg does), and gpg warns about unsafe "
                "permissions", f"chmod 700 {home}")
        return True
    if mode is not None:
        # reportsync never re-modes a folder it did not create; gpg still works, and warns
        out.add("gnupg home", SCOPE, WARN, DoctorFinding.GNUPG_HOME_READABLE,
                f"the GnuPG home {home} has mode {mode:04o}: others can see which keys it holds, "
                "and gpg warns about unsafe permissions", f"chmod 700 {home}")
        return True
    if hasattr(os, "geteuid") and home.stat().st_uid != os.geteuid():
        out.add("gnupg home", SCOPE, WARN, DoctorFinding.GNUPG_HOME_OTHER_OWNER,
                f"the GnuPG home {home} belongs to another user",
                f"Run reportsync as the owner of {home}, or chown it to this user.")
        return True
    out.add("gnupg home", SCOPE, PASS, DoctorFinding.GNUPG_HOME_OK,
            f"{home} exists, mode {_mode(home):04o}")
    return True


def check_secret_keys(gpg_path: str, home: Path, out: Findings,
                       environ: Mapping[str, str] | None = None) -> list[str]:
    """Fingerprints of secret keys that can decrypt now; a finding either way."""
    now = time.time()
    try:
        keys = pgp.Gpg(binary=gpg_path, home=home, passphrase=None, create_home=False,
                       environ=environ).decryption_keys(now)
    except Exception as exc:
        out.add("secret key", SCOPE, FAIL, DoctorFinding.SECRET_KEY_UNLISTABLE,
                f"gpg could not list the keys in {home}: {exc}",
                f"Run `gpg --homedir {home} --list-secret-keys` to see what gpg says.")
        return []
    if not keys.usable and not keys.unusable:
        out.add("secret key", SCOPE, FAIL, DoctorFinding.SECRET_KEY_NONE,
                f"no secret key in {home}: no report can be decrypted",
                "Import your secret key (`reportsync keys pgp import FILE`) or restore a backup "
                "(`reportsync keys restore FILE`); without one, generate a key (`reportsync keys pgp "
                "generate`) and send the provider the new public key.")
        return []
    if not keys.usable:
        out.add("secret key", SCOPE, FAIL, DoctorFinding.SECRET_KEY_UNUSABLE,
                f"no secret key in {home} can decrypt: {', '.join(keys.unusable)}",
                f"Extend an expired key (`gpg --homedir {home} --quick-set-expire FINGERPRINT 2y` "
                "and for its subkeys `... FINGERPRINT 2y '*'`), then send the provider the updated "
                "public key (`reportsync keys pgp export-public`); or import a current key.")
        return []
    expiry = pgpkeys.decryption_key_expiry(keys, home, now)
    if expiry is not None and expiry.soon:
        out.add("secret key", SCOPE, WARN, DoctorFinding.SECRET_KEY_EXPIRING,
                expiry.finding, expiry.remedy)
    else:
        described = ", ".join(f"{key.fingerprint} ({key.uid})" if key.uid else key.fingerprint
                              for key in keys.usable)
        until = "never expires" if expiry is None else \
            f"valid until {datetime.fromtimestamp(expiry.expires_at, tz=timezone.utc):%Y-%m-%d}"
        out.add("secret key", SCOPE, PASS, DoctorFinding.SECRET_KEY_OK,
                f"secret key able to decrypt: {described}; {until}")
    return [key.fingerprint for key in keys.usable]


def _check_passphrase(config: Config, gpg_path: str, fingerprints: list[str], out: Findings) -> None:
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
            out.add("passphrase", SCOPE, FAIL, DoctorFinding.PASSPHRASE_NONE,
                    f"the secret key {keys} is protected by a passphrase, and none is configured",
                    "Set settings.gpg_passphrase_env (a variable holding the passphrase) or "
                    "settings.gpg_passphrase_file (a 0600 file).", seconds)
        else:
            where = secret_where(ref)
            setting = "settings.gpg_passphrase_env" if ref.env else "settings.gpg_passphrase_file"
            out.add("passphrase", SCOPE, FAIL, DoctorFinding.PASSPHRASE_WRONG,
                    f"the passphrase from {where} does not unlock the secret key {keys}",
                    f"Put the right passphrase into the {where} ({setting}); under cron or "
                    "systemd it must be set there too.", seconds)
    elif probe.problems:
        out.add("passphrase", SCOPE, FAIL, DoctorFinding.PASSPHRASE_PROBE_FAILED,
                "; ".join(probe.problems),
                f"Run `gpg --homedir {settings.gnupg_home} --list-secret-keys` and check the "
                "key; re-import it from a backup if it is damaged.", seconds)
    else:
        how = "with the configured passphrase" if passphrase is not None else \
            "without a passphrase (none is configured or needed)"
        out.add("passphrase", SCOPE, PASS, DoctorFinding.PASSPHRASE_OK,
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


def _check_folder(path: Path, config_key: str, out: Findings) -> None:
    target = path if path.exists() else _existing_ancestor(path)
    if path.exists() and not path.is_dir():
        out.add("folder", SCOPE, FAIL, DoctorFinding.FOLDER_NOT_A_FOLDER,
                f"{config_key}: {path} is not a folder",
                f"Change {config_key} to a folder, or move the file away.")
        return
    # the rule fetch applies (fsutil.ensure_private_dir): never write into a folder anyone can
    # write to without the sticky bit
    shared = shared_folder_problem(target, config_key, creating=None if target == path else path)
    if shared is not None:
        out.add("folder", SCOPE, FAIL, DoctorFinding.FOLDER_SHARED, shared.message, shared.remedy)
        return
    try:
        descriptor, probe = tempfile.mkstemp(prefix=".rs-doctor-", dir=target)
        os.close(descriptor)
        os.unlink(probe)
    except OSError as exc:
        what = "permission denied" if isinstance(exc, PermissionError) else (exc.strerror or str(exc))
        if target == path:
            out.add("folder", SCOPE, FAIL, DoctorFinding.FOLDER_NOT_WRITABLE,
                    f"{config_key}: cannot write in {path}: {what}",
                    f"Fix the owner or permissions of {path} (it should belong to the user "
                    f"reportsync runs as, mode 700), or change {config_key}.")
        else:
            out.add("folder", SCOPE, FAIL, DoctorFinding.FOLDER_CANNOT_CREATE,
                    f"{config_key}: {path} does not exist and cannot be created: {target} is not "
                    f"writable ({what})",
                    f"Create {path} for the user reportsync runs as, or change {config_key}.")
        return
    if target == path:
        out.add("folder", SCOPE, PASS, DoctorFinding.FOLDER_OK, f"{config_key}: {path} is writable")
    else:
        out.add("folder", SCOPE, PASS, DoctorFinding.FOLDER_WILL_CREATE,
                f"{config_key}: {path} does not exist yet; it will be created ({target} is writable)")


def _check_disk_space(paths: list[Path], out: Findings) -> None:
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
            out.add("disk space", SCOPE, WARN, DoctorFinding.DISK_SPACE_UNKNOWN,
                    f"cannot tell the free space at {anchor}: {exc}")
            continue
        where = ", ".join(str(path) for path in folders)
        if free < DISK_FAIL_BYTES:
            out.add("disk space", SCOPE, FAIL, DoctorFinding.DISK_SPACE_FULL,
                    f"only {human_bytes(free)} free on the disk of {where}",
                    "Free space on that disk (downloads and decrypted reports need room), or move "
                    "the folders to another disk.")
        elif free < DISK_WARN_BYTES:
            out.add("disk space", SCOPE, WARN, DoctorFinding.DISK_SPACE_LOW,
                    f"only {human_bytes(free)} free on the disk of {where}",
                    "Free space on that disk before it fills up.")
        else:
            out.add("disk space", SCOPE, PASS, DoctorFinding.DISK_SPACE_OK,
                    f"{human_bytes(free)} free on the disk of {where}")


def _check_ledger(state_dir: Path, out: Findings) -> None:
    path = state_dir / LEDGER_FILE
    if not path.exists():
        out.add("ledger", SCOPE, PASS, DoctorFinding.LEDGER_NONE,
                f"no ledger yet at {path}: the first fetch creates it")
        return
    try:
        with Ledger(path) as ledger:  # opening runs SQLite's quick check (LedgerDamagedError)
            try:
                ledger.require_intact(thorough=True)
            except LedgerDamagedError as damaged:
                out.add("ledger", SCOPE, FAIL, DoctorFinding.LEDGER_INTEGRITY, damaged.message,
                        damaged.remedy)
                return
            files = ledger.count("remote_files")
            failures = len(ledger.open_failures())
            version = ledger.schema_version
    except ReportsyncError as error:
        out.add("ledger", SCOPE, FAIL, DoctorFinding.LEDGER_DAMAGED, error.message, error.remedy)
        return
    except sqlite3.Error as exc:
        out.add("ledger", SCOPE, FAIL, DoctorFinding.LEDGER_UNREADABLE,
                f"the ledger {path} cannot be read: {exc}",
                "Move the file aside and run again (the archive is kept), or restore it from a "
                "backup.")
        return
    out.add("ledger", SCOPE, PASS, DoctorFinding.LEDGER_OK,
            f"ledger {path}: integrity ok, schema {version}, {files} file "
            f"version(s) recorded, {failures} open failure(s)")


def _check_lock(state_dir: Path, out: Findings) -> None:
    lock_path = state_dir / LOCK_FILE
    holder_path = state_dir / HOLDER_FILE
    try:
        state = lock_state(state_dir)
    except OSError as exc:
        out.add("lock", SCOPE, FAIL, DoctorFinding.LOCK_UNOPENABLE,
                f"cannot open the lock {lock_path}: {exc.strerror or exc}",
                f"Fix the permissions of {state_dir}.")
        return
    if state is LockState.ABSENT:
        out.add("lock", SCOPE, PASS, DoctorFinding.LOCK_NONE,
                "no run lock: no reportsync run is active")
        return
    holder = RunLock(state_dir, "doctor").describe_holder()
    if state is LockState.HELD:
        out.add("lock", SCOPE, WARN, DoctorFinding.LOCK_ACTIVE,
                f"a reportsync run is active now: {holder}",
                "Run doctor again when it has finished; its findings may overlap with that run.")
        return
    if holder_path.exists():
        out.add("lock", SCOPE, WARN, DoctorFinding.LOCK_STALE,
                f"stale lock: the run recorded in {holder_path} ({holder}) did not finish (killed "
                "or crashed); the lock itself is free and does not block the next run",
                "Nothing blocks the next run; read state_dir/logs/reportsync.log for why that run "
                f"stopped, then delete {holder_path}.")
        return
    out.add("lock", SCOPE, PASS, DoctorFinding.LOCK_FREE, "the run lock is free")
