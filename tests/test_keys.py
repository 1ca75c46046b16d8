"""`reportsync keys`: generate, export, back up, restore, with the real gpg, ssh-keygen and sshd.

The round trip runs the CLI as a user on one machine (one HOME), destroys that HOME, restores the
backup as a user on a "new machine" (another HOME), and fetches with the restored keys from the
real sshd.
"""

from __future__ import annotations

import getpass
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gnupg
import pytest

from reportsync import backup, pgpkeys
from reportsync.config import Secret, parse_config
from reportsync.errors import KeyProblemError, UsageError
from reportsync.pgp import Gpg
from tests.servers import LocalServer
from tests.support import CliResult, run_cli_inprocess, write_config

BACKUP_PASSPHRASE = "correct horse battery staple"


def home_env(home: Path, **extra: str) -> dict[str, str]:
    """An environment in which ``home`` is the user's home and the platform dirs follow it."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("XDG_")}
    env.update(HOME=str(home), REPORTSYNC_BACKUP_PASSPHRASE=BACKUP_PASSPHRASE, **extra)
    env.pop("REPORTSYNC_CONFIG", None)
    return env


def cli_as(home: Path, *args: str, **extra: str) -> CliResult:
    """A real process with ``home`` as HOME: the platform dirs and ``~`` follow it."""
    full_env = home_env(home, **extra)
    completed = subprocess.run([sys.executable, "-m", "reportsync", *args], capture_output=True,
                               text=True, env=full_env, timeout=120,
                               cwd=Path(__file__).resolve().parent.parent)
    return CliResult(completed.returncode, completed.stdout, completed.stderr)


def kill_agent(gnupg_home: Path) -> None:
    subprocess.run(["gpgconf", "--homedir", str(gnupg_home), "--kill", "gpg-agent"],
                   capture_output=True, check=False)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def user_config(home: Path, server: LocalServer) -> dict[str, Any]:
    source = dict(server.source)
    source.update({
        "key_file": "~/.ssh/reportsync_rsa",
        "certificate_file": "~/.ssh/reportsync_rsa-cert.pub",
        "known_hosts": "~/.ssh/known_hosts",
        "download_dir": "~/reports/encrypted",
        "output_dir": "~/reports/statements",
        "timeout": 10,
        "retries": 0,
    })
    return {"settings": {"state_dir": "~/state", "gnupg_home": "~/.reportsync-gnupg"},
            "sources": {"broker": source}}


@pytest.mark.slow
def test_round_trip_generate_backup_restore_on_a_new_home_then_fetch(
    tmp_path: Path, sftp_cert_server: LocalServer
) -> None:
    old_home, new_home = tmp_path / "old", tmp_path / "new"
    old_home.mkdir()
    new_home.mkdir()
    config_path = old_home / ".config" / "reportsync" / "config.toml"
    config_path.parent.mkdir(parents=True)
    write_config(config_path, user_config(old_home, sftp_cert_server))
    (old_home / ".ssh").mkdir(mode=0o700)
    shutil.copy(sftp_cert_server.source["known_hosts"], old_home / ".ssh" / "known_hosts")

    generated = cli_as(old_home, "--json", "keys", "pgp", "generate", "--name", "Acme Ltd",
                       "--email", "acme@example.com", "--algo", "rsa2048", "--no-passphrase",
                       "--export", str(old_home / "acme-public.asc"))
    assert generated.exit_code == 0, generated.stderr
    fingerprint = generated.result()["key"]["fingerprint"]
    assert "WITHOUT a passphrase" in generated.stderr
    assert (old_home / "acme-public.asc").read_text().startswith("-----BEGIN PGP PUBLIC KEY BLOCK")
    assert mode(old_home / ".reportsync-gnupg") == 0o700

    key_path = old_home / ".ssh" / "reportsync_rsa"
    ssh = cli_as(old_home, "keys", "ssh", "generate", "--out", str(key_path), "--no-passphrase")
    assert ssh.exit_code == 0, ssh.stderr
    subprocess.run(["ssh-keygen", "-q", "-s", sftp_cert_server.extra["ca_key"], "-I", "roundtrip",
                    "-n", getpass.getuser(), "-V", "+1d", f"{key_path}.pub"], check=True)
    assert (old_home / ".ssh" / "reportsync_rsa-cert.pub").exists()

    backup_file = old_home / "setup.rsbackup"
    made = cli_as(old_home, "keys", "backup", "--out", str(backup_file),
                  "--passphrase-env", "REPORTSYNC_BACKUP_PASSPHRASE")
    assert made.exit_code == 0, made.stderr
    assert mode(backup_file) == 0o600
    assert BACKUP_PASSPHRASE.encode() not in backup_file.read_bytes()
    assert b"PRIVATE KEY" not in backup_file.read_bytes(), "the archive is encrypted"

    # the report the provider will deliver, encrypted to the public key the user sent
    sender = gnupg.GPG(gnupghome=str(_fresh_gnupg_home(tmp_path / "provider")))
    sender.import_keys((old_home / "acme-public.asc").read_text())
    statement = b"<FlexQueryResponse>restored</FlexQueryResponse>\n"
    encrypted = sender.encrypt(statement, fingerprint, always_trust=True, armor=False)
    assert encrypted.ok
    delivered = sftp_cert_server.remote_root / "U1.Activity.20261120.xml.pgp"
    delivered.write_bytes(bytes(encrypted.data))
    kill_agent(tmp_path / "provider")

    kill_agent(old_home / ".reportsync-gnupg")
    shutil.copy(backup_file, tmp_path / "setup.rsbackup")
    shutil.rmtree(old_home)  # the old computer is gone

    restored = cli_as(new_home, "keys", "restore", str(tmp_path / "setup.rsbackup"),
                      "--passphrase-env", "REPORTSYNC_BACKUP_PASSPHRASE")
    assert restored.exit_code == 0, restored.stderr
    assert fingerprint in restored.stdout
    new_key = new_home / ".ssh" / "reportsync_rsa"
    assert mode(new_key) == 0o600 and mode(new_home / ".ssh") == 0o700
    assert (new_home / ".ssh" / "reportsync_rsa-cert.pub").exists()
    assert mode(new_home / ".reportsync-gnupg") == 0o700
    assert mode(new_home / ".config" / "reportsync" / "config.toml") == 0o600
    listed = cli_as(new_home, "--json", "keys", "pgp", "list")
    assert [key["fingerprint"] for key in listed.result()["keys"] if key["has_secret"]] == [fingerprint]

    try:
        fetched = cli_as(new_home, "--json", "fetch")
        assert fetched.exit_code == 0, fetched.stderr
        archived = new_home / "reports" / "statements" / "U1.Activity.20261120.xml"
        assert archived.read_bytes() == statement
    finally:
        kill_agent(new_home / ".reportsync-gnupg")

    again = cli_as(new_home, "keys", "restore", str(tmp_path / "setup.rsbackup"),
                   "--passphrase-env", "REPORTSYNC_BACKUP_PASSPHRASE")
    assert again.exit_code == 0, "restoring the same backup twice changes nothing"
    (new_home / ".ssh" / "reportsync_rsa-cert.pub").write_text("something else\n")
    refused = cli_as(new_home, "keys", "restore", str(tmp_path / "setup.rsbackup"),
                     "--passphrase-env", "REPORTSYNC_BACKUP_PASSPHRASE")
    assert refused.exit_code == 2 and "--force" in refused.stderr
    assert (new_home / ".ssh" / "reportsync_rsa-cert.pub").read_text() == "something else\n"
    kill_agent(new_home / ".reportsync-gnupg")


def test_restore_names_each_secret_file_where_this_machine_reads_it(tmp_path: Path) -> None:
    """A secret is never in a backup; restoring says which files to create, at the path the
    restored config reads on the new machine (its ``~`` is the new HOME), not the old one's."""
    old_home, new_home = tmp_path / "old", tmp_path / "new"
    for home in (old_home, new_home):
        home.mkdir()
    config_dir = old_home / ".config" / "reportsync"
    config_dir.mkdir(parents=True)
    write_config(config_dir / "config.toml", {"settings": {
        "state_dir": "~/state", "gnupg_home": "~/.reportsync-gnupg",
        "gpg_passphrase_file": "~/.config/reportsync/gpg.pass"}})
    (config_dir / "gpg.pass").write_text("not needed: the key has none\n")
    (config_dir / "gpg.pass").chmod(0o600)
    generated = cli_as(old_home, "keys", "pgp", "generate", "--name", "Acme", "--email",
                       "acme@example.com", "--algo", "ed25519", "--no-passphrase")
    assert generated.exit_code == 0, generated.stderr
    made = cli_as(old_home, "keys", "backup", "--out", str(tmp_path / "k.rsbak"),
                  "--passphrase-env", "REPORTSYNC_BACKUP_PASSPHRASE")
    assert made.exit_code == 0, made.stderr
    kill_agent(old_home / ".reportsync-gnupg")

    restored = cli_as(new_home, "--json", "keys", "restore", str(tmp_path / "k.rsbak"),
                      "--passphrase-env", "REPORTSYNC_BACKUP_PASSPHRASE")
    assert restored.exit_code == 0, restored.stderr
    here = new_home / ".config" / "reportsync" / "gpg.pass"
    [note] = [line for line in restored.stderr.splitlines() if "gpg_passphrase_file" in line]
    assert f"create {here} on this machine, 0600" in note, note
    assert str(old_home) not in restored.stderr
    assert [item for item in restored.result()["not_included"]
            if "gpg_passphrase_file" in item] == [note.split("not in the backup: ", 1)[1]]
    kill_agent(new_home / ".reportsync-gnupg")


def ftp_config(path: Path, gnupg_home: Path) -> Path:
    """A config whose only use here is to name the GnuPG home."""
    folder = path.parent
    return write_config(path, {
        "settings": {"gnupg_home": str(gnupg_home), "state_dir": str(folder / f"{path.stem}-state")},
        "sources": {"f": {"protocol": "ftp", "host": "127.0.0.1", "username": "u",
                          "password_env": "X", "download_dir": str(folder / "d"),
                          "output_dir": str(folder / "o")}}})


def _fresh_gnupg_home(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True)
    return path


@pytest.fixture
def small_setup(tmp_path: Path) -> tuple[Path, Path]:
    """A config with one SFTP source whose key files exist, and a GnuPG home with one key."""
    home = tmp_path / "h"
    home.mkdir()
    gnupg_home = _fresh_gnupg_home(tmp_path / "g")
    gpg = Gpg(binary="gpg", home=gnupg_home, passphrase=None)
    pgpkeys.generate_pgp_key(gpg, name="T", email="t@example.com", algorithm="rsa2048",
                             passphrase=None)
    key = home / "id_rsa"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot a real key\n")
    known_hosts = home / "known_hosts"
    known_hosts.write_text("[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA\n")
    config_path = write_config(home / "config.toml", {
        "settings": {"state_dir": str(home / "state"), "gnupg_home": str(gnupg_home)},
        "sources": {"s": {"protocol": "sftp", "host": "127.0.0.1", "port": 2222, "username": "u",
                          "key_file": str(key), "known_hosts": str(known_hosts),
                          "download_dir": str(home / "d"), "output_dir": str(home / "o")}},
    })
    backup_file = tmp_path / "b.rsbackup"
    made = run_cli_inprocess("--config", str(config_path), "keys", "backup", "--out", str(backup_file),
                   "--passphrase-env", "RS_BK", env={"RS_BK": BACKUP_PASSPHRASE})
    assert made.exit_code == 0, made.stderr
    kill_agent(gnupg_home)
    return config_path, backup_file


@pytest.mark.parametrize("damage", ["flip-a-byte", "truncate", "wrong-passphrase", "not-a-backup"])
def test_damaged_backup_or_wrong_passphrase_is_refused_and_nothing_is_written(
    small_setup: tuple[Path, Path], tmp_path: Path, damage: str
) -> None:
    _, backup_file = small_setup
    data = bytearray(backup_file.read_bytes())
    passphrase = BACKUP_PASSPHRASE
    if damage == "flip-a-byte":
        data[len(data) // 2] ^= 0x01
    elif damage == "truncate":
        del data[-100:]
    elif damage == "wrong-passphrase":
        passphrase = "not the passphrase"
    else:
        data = bytearray(b"PK\x03\x04 a zip file, say")
    damaged = tmp_path / "damaged.rsbackup"
    damaged.write_bytes(bytes(data))
    new_home = tmp_path / "newhome"
    new_home.mkdir()
    target_config = new_home / "restored.toml"

    verify = run_cli_inprocess("keys", "verify-backup", str(damaged), "--passphrase-env", "RS_BK",
                     env={"RS_BK": passphrase})
    restore = run_cli_inprocess("--config", str(target_config), "keys", "restore", str(damaged),
                      "--passphrase-env", "RS_BK", env={"RS_BK": passphrase})
    for result in (verify, restore):
        assert result.exit_code == 6, "a key problem: the keys in the backup are out of reach"
        expected = {"flip-a-byte": "damaged", "truncate": "damaged",
                    "wrong-passphrase": "wrong passphrase", "not-a-backup": "not a reportsync backup"}
        assert expected[damage] in result.stderr
        assert "nothing was written" in result.stderr.lower()
        assert passphrase not in result.stderr + result.stdout
    assert list(new_home.iterdir()) == [], "nothing written"


def test_verify_backup_lists_members_with_fingerprints(small_setup: tuple[Path, Path]) -> None:
    _, backup_file = small_setup
    result = run_cli_inprocess("--json", "keys", "verify-backup", str(backup_file), "--passphrase-env",
                     "RS_BK", env={"RS_BK": BACKUP_PASSPHRASE})
    assert result.exit_code == 0, result.stderr
    kinds = {member["kind"]: member for member in result.result()["manifest"]["members"]}
    assert set(kinds) >= {"pgp-secret-key", "pgp-public-keys", "pgp-ownertrust",
                          "pgp-revocation", "ssh-private-key", "known-hosts", "config"}
    assert len(kinds["pgp-secret-key"]["fingerprints"]) == 1
    assert kinds["config"]["sha256"] and kinds["ssh-private-key"]["source"] == "s"


def test_passphrases_never_reach_a_command_line(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Every process python-gnupg and reportsync start is recorded; none gets a passphrase."""
    seen: list[list[str]] = []
    real_popen = subprocess.Popen

    class RecordingPopen(real_popen):  # type: ignore[misc, valid-type]
        def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
            seen.append([str(arg) for arg in (args if isinstance(args, (list, tuple)) else [args])])
            super().__init__(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", RecordingPopen)
    key_passphrase = "pgp key passphrase 1234"
    gnupg_home = _fresh_gnupg_home(tmp_path / "g")
    gpg = Gpg(binary="gpg", home=gnupg_home, passphrase=Secret(key_passphrase))
    generated = pgpkeys.generate_pgp_key(gpg, name="T", email="t@example.com", algorithm="rsa2048",
                                         passphrase=Secret(key_passphrase))
    encrypted = tmp_path / "r.pgp"
    encrypted.write_bytes(bytes(gpg.raw.encrypt(b"<r/>", generated.key.fingerprint,
                                                always_trust=True, armor=False).data))
    gpg.decrypt(encrypted, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"<r/>"
    monkeypatch.setenv("RS_GPG_PP", key_passphrase)
    config_path = write_config(tmp_path / "c.toml", {
        "settings": {"gnupg_home": str(gnupg_home), "gpg_passphrase_env": "RS_GPG_PP",
                     "state_dir": str(tmp_path / "s")},
        "sources": {"f": {"protocol": "ftp", "host": "127.0.0.1", "username": "u",
                          "password_env": "X", "download_dir": str(tmp_path / "d"),
                          "output_dir": str(tmp_path / "o")}}})
    from reportsync.config import load_config

    backup.create_backup(load_config(config_path), gpg, tmp_path / "b.rsbackup",
                         Secret(BACKUP_PASSPHRASE))
    kill_agent(gnupg_home)
    assert seen, "gpg was started"
    for argv in seen:
        joined = " ".join(argv)
        assert key_passphrase not in joined and BACKUP_PASSPHRASE not in joined, argv


def test_second_key_for_the_same_email_needs_force(tmp_path: Path) -> None:
    gpg = Gpg(binary="gpg", home=_fresh_gnupg_home(tmp_path / "g"), passphrase=None)
    first = pgpkeys.generate_pgp_key(gpg, name="T", email="t@example.com", algorithm="rsa2048",
                                     passphrase=None)
    with pytest.raises(UsageError, match=first.key.fingerprint):
        pgpkeys.generate_pgp_key(gpg, name="T", email="t@example.com", algorithm="rsa2048",
                                 passphrase=None)
    second = pgpkeys.generate_pgp_key(gpg, name="T", email="t@example.com", algorithm="rsa2048",
                                      passphrase=None, force=True, expire="never")
    assert second.other_secret_keys == (first.key.fingerprint,)
    assert second.key.expires is None
    assert 725 <= (first.key.days_to_expiry() or 0) <= 731, "the default expiry is two years"
    with pytest.raises(UsageError, match="not an expiry"):
        pgpkeys.generate_pgp_key(gpg, name="T", email="x@example.com", expire="soon",
                                 passphrase=None)
    kill_agent(gpg.home)


def test_ed25519_key_warns_about_ecc_and_lists(tmp_path: Path) -> None:
    gpg = Gpg(binary="gpg", home=_fresh_gnupg_home(tmp_path / "g"), passphrase=None)
    generated = pgpkeys.generate_pgp_key(gpg, name="T", email="t@example.com", algorithm="ed25519",
                                         passphrase=None)
    assert any("ECC" in warning for warning in generated.warnings)
    assert generated.key.algorithm == "eddsa" and generated.key.has_secret
    kill_agent(gpg.home)


def test_pgp_cli_list_export_import(tmp_path: Path) -> None:
    gnupg_home = _fresh_gnupg_home(tmp_path / "g")
    config_path = ftp_config(tmp_path / "c.toml", gnupg_home)
    base = ("--config", str(config_path))
    empty = run_cli_inprocess(*base, "keys", "pgp", "list")
    assert empty.exit_code == 0 and "no PGP keys" in empty.stdout
    made = run_cli_inprocess(*base, "--json", "keys", "pgp", "generate", "--name", "T", "--email",
                   "t@example.com", "--algo", "rsa2048", "--passphrase-env", "RS_PP",
                   env={"RS_PP": "a passphrase"})
    assert made.exit_code == 0, made.stderr
    fingerprint = made.result()["key"]["fingerprint"]
    assert made.result()["protected"] is True
    assert "a passphrase" not in made.stdout + made.stderr
    listed = run_cli_inprocess(*base, "keys", "pgp", "list")
    assert fingerprint in listed.stdout and "secret+public" in listed.stdout
    exported = run_cli_inprocess(*base, "keys", "pgp", "export-public")
    assert exported.stdout.startswith("-----BEGIN PGP PUBLIC KEY BLOCK")
    assert "PRIVATE" not in exported.stdout
    public_file = tmp_path / "pub.asc"
    public_file.write_text(exported.stdout)
    other_home = _fresh_gnupg_home(tmp_path / "g2")
    other_config = ftp_config(tmp_path / "c2.toml", other_home)
    imported = run_cli_inprocess("--config", str(other_config), "--json", "keys", "pgp", "import",
                       str(public_file))
    assert imported.exit_code == 0, imported.stderr
    assert imported.result()["fingerprints"] == [fingerprint]
    assert imported.result()["public_imported"] == 1 and imported.result()["secret_imported"] == 0
    garbage = tmp_path / "garbage.asc"
    garbage.write_text("not a key")
    bad = run_cli_inprocess("--config", str(other_config), "keys", "pgp", "import", str(garbage))
    assert bad.exit_code == 6 and "no OpenPGP key" in bad.stderr
    kill_agent(gnupg_home)
    kill_agent(other_home)


def test_backup_needs_a_secret_key_and_a_real_passphrase(tmp_path: Path) -> None:
    gnupg_home = _fresh_gnupg_home(tmp_path / "g")
    config = parse_config({"settings": {"gnupg_home": str(gnupg_home)}, "sources": {
        "f": {"protocol": "ftp", "host": "h", "username": "u", "password_env": "X",
              "download_dir": "/d", "output_dir": "/o"}}})
    gpg = Gpg(binary="gpg", home=gnupg_home, passphrase=None)
    with pytest.raises(UsageError, match="at least"):
        backup.create_backup(config, gpg, tmp_path / "b", Secret("short"))
    with pytest.raises(KeyProblemError, match="no PGP secret key"):
        backup.create_backup(config, gpg, tmp_path / "b", Secret(BACKUP_PASSPHRASE))
    assert not (tmp_path / "b").exists()
    started = time.monotonic()
    sealed = backup.seal(b"payload", Secret(BACKUP_PASSPHRASE))
    assert backup.unseal(sealed, Secret(BACKUP_PASSPHRASE), tmp_path / "x") == b"payload"
    assert time.monotonic() - started < 10


def test_ssh_cli_generate_and_show_key_and_certificates(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "id_rsa"
    made = run_cli_inprocess("--json", "keys", "ssh", "generate", "--out", str(key), "--passphrase-env",
                   "RS_SSH_PP", "--comment", "acme", env={"RS_SSH_PP": "ssh key passphrase"})
    assert made.exit_code == 0, made.stderr
    listed = subprocess.run(["ssh-keygen", "-l", "-f", str(key)], capture_output=True, text=True,
                            check=True).stdout
    assert made.result()["key"]["fingerprint"] in listed and listed.startswith("2048 ")
    assert mode(key) == 0o600 and mode(key.parent) == 0o700
    again = run_cli_inprocess("keys", "ssh", "generate", "--out", str(key), "--no-passphrase")
    assert again.exit_code == 2 and "--force" in again.stderr

    shown = run_cli_inprocess("keys", "ssh", "show", str(key))
    assert shown.exit_code == 0 and made.result()["key"]["fingerprint"] in shown.stdout
    assert "protected by a passphrase" in shown.stdout
    assert "ssh key passphrase" not in made.stdout + shown.stdout

    ca = tmp_path / "ca"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ca)], check=True)
    ca_print = subprocess.run(["ssh-keygen", "-l", "-f", f"{ca}.pub"], capture_output=True,
                              text=True, check=True).stdout.split()[1]
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-I", "acme-2026", "-n", "acme,ops",
                    "-V", "+52w", "-O", "force-command=/usr/bin/true", f"{key}.pub"], check=True)
    cert = tmp_path / "keys" / "id_rsa-cert.pub"
    valid = run_cli_inprocess("keys", "ssh", "show", str(cert))
    assert valid.exit_code == 0, valid.stderr
    for expected in ("key id: acme-2026", "principals: acme, ops", "status: valid", ca_print,
                     "force-command=/usr/bin/true"):
        assert expected in valid.stdout, expected
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-I", "old", "-n", "acme",
                    "-V", "20200101:20200201", f"{key}.pub"], check=True)
    expired = run_cli_inprocess("--json", "keys", "ssh", "show", str(cert))
    assert expired.result()["info"]["status"] == "expired"
    assert "EXPIRED" in run_cli_inprocess("keys", "ssh", "show", str(cert)).stdout


def test_backup_refuses_rather_than_silently_dropping_a_key(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    gnupg_home = _fresh_gnupg_home(tmp_path / "g")
    gpg = Gpg(binary="gpg", home=gnupg_home, passphrase=None)
    pgpkeys.generate_pgp_key(gpg, name="Old", email="old@example.com", algorithm="rsa2048",
                             passphrase=Secret("first passphrase"))
    rotated = pgpkeys.generate_pgp_key(gpg, name="New", email="new@example.com",
                                       algorithm="rsa2048", passphrase=Secret("other passphrase"))
    monkeypatch.setenv("RS_GPG_PP", "first passphrase")
    config = parse_config({"settings": {"gnupg_home": str(gnupg_home),
                                        "gpg_passphrase_env": "RS_GPG_PP"},
                           "sources": {"f": {"protocol": "ftp", "host": "h", "username": "u",
                                             "password_env": "X", "download_dir": "/d",
                                             "output_dir": "/o"}}})
    with pytest.raises(KeyProblemError, match=rotated.key.fingerprint):
        backup.create_backup(config, gpg, tmp_path / "b.rsbackup", Secret(BACKUP_PASSPHRASE))
    assert not (tmp_path / "b.rsbackup").exists()
    kill_agent(gnupg_home)


def test_a_config_with_only_settings_serves_the_keys_commands_and_schedule(tmp_path: Path) -> None:
    """The first steps (a key pair, a backup, the schedule) come before the provider has sent the
    login details: a config without any [sources.NAME] is valid for them (SPEC: Configuration);
    the commands that need a server say that no source is configured (exit 2)."""
    gnupg_home = tmp_path / "g"
    config_path = write_config(tmp_path / "config.toml", {
        "settings": {"state_dir": str(tmp_path / "state"), "gnupg_home": str(gnupg_home)},
        "retention": {"days": 100}})
    config = ["--config", str(config_path), "--json"]
    env = {"RS_BK": BACKUP_PASSPHRASE}

    generated = run_cli_inprocess(*config, "keys", "pgp", "generate", "--name", "Acme", "--email",
                        "acme@example.com", "--algo", "ed25519", "--no-passphrase",
                        "--export", str(tmp_path / "acme.asc"))
    assert generated.exit_code == 0, generated.stderr
    fingerprint = generated.result()["key"]["fingerprint"]
    listed = run_cli_inprocess(*config, "keys", "pgp", "list")
    assert listed.exit_code == 0, listed.stderr
    assert [key["fingerprint"] for key in listed.result()["keys"]] == [fingerprint]
    exported = run_cli_inprocess(*config, "keys", "pgp", "export-public", "--out", str(tmp_path / "p.asc"))
    assert exported.exit_code == 0, exported.stderr
    imported = run_cli_inprocess(*config, "keys", "pgp", "import", str(tmp_path / "p.asc"))
    assert imported.exit_code == 0, imported.stderr
    made = run_cli_inprocess(*config, "keys", "backup", "--out", str(tmp_path / "k.rsbak"),
                   "--passphrase-env", "RS_BK", env=env)
    assert made.exit_code == 0, made.stderr
    checked = run_cli_inprocess("--json", "keys", "verify-backup", str(tmp_path / "k.rsbak"),
                      "--passphrase-env", "RS_BK", env=env)
    assert checked.exit_code == 0, checked.stderr
    restored_config = tmp_path / "new" / "config.toml"
    restored = run_cli_inprocess("--config", str(restored_config), "keys", "restore",
                       str(tmp_path / "k.rsbak"), "--passphrase-env", "RS_BK", env=env)
    assert restored.exit_code == 0, restored.stderr
    assert restored_config.read_bytes() == config_path.read_bytes()
    scheduled = run_cli_inprocess(*config, "schedule")
    assert scheduled.exit_code == 0, scheduled.stderr

    for command in (["fetch"], ["retention", "--dry-run"], ["status"], ["verify"]):
        refused = run_cli_inprocess("--config", str(config_path), *command)
        assert refused.exit_code == 2, (command, refused.stderr)
        assert "no source is configured" in refused.stderr, command
        assert "[sources.NAME]" in refused.stderr and "Traceback" not in refused.stderr
    doctor = run_cli_inprocess(*config, "doctor")
    findings = {(f["scope"], f["check"]): f for f in doctor.result()["findings"]}
    assert doctor.exit_code == 1
    assert findings[("config", "source")]["status"] == "FAIL"
    assert "no source is configured" in findings[("config", "source")]["finding"]
    assert findings[("local", "secret key")]["status"] == "PASS", "the local checks still run"
    kill_agent(gnupg_home)


@pytest.mark.parametrize("algorithm", ["rsa2048", "ed25519"])
def test_a_generated_key_has_the_usual_shape_primary_sc_subkey_e(tmp_path: Path,
                                                                  algorithm: str) -> None:
    # Encryptors that pick "a key that can encrypt" must find only the subkey: a primary key that
    # can also encrypt ([SCEA]) invites them to encrypt to it, and rotating the encryption subkey
    # then no longer helps.
    home = tmp_path / "gnupg"
    config = write_config(tmp_path / "config.toml", {"settings": {"gnupg_home": str(home)}})
    made = run_cli_inprocess("--config", str(config), "--json", "keys", "pgp", "generate",
                             "--name", "Acme Ltd", "--email", "acme@example.com", "--algo",
                             algorithm, "--no-passphrase")
    assert made.exit_code == 0, made.stderr
    listing = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--with-colons",
                              "--list-keys"], capture_output=True, text=True, check=True).stdout
    capabilities = {fields[0]: fields[11] for fields in
                    (line.split(":") for line in listing.splitlines())
                    if fields[0] in ("pub", "sub")}
    own = {kind: "".join(char for char in caps if char.islower())
           for kind, caps in capabilities.items()}
    assert own == {"pub": "sc", "sub": "e"}, capabilities
    kill_agent(home)


def test_generating_a_protected_key_names_the_passphrase_file_the_guide_uses(
    tmp_path: Path,
) -> None:
    home = tmp_path / "gnupg"
    config = write_config(tmp_path / "config.toml", {"settings": {"gnupg_home": str(home)}})
    made = run_cli_inprocess("--config", str(config), "keys", "pgp", "generate", "--name", "Acme",
                             "--email", "acme@example.com", "--algo", "rsa2048",
                             "--passphrase-env", "NEW_KEY_PASSPHRASE",
                             env={"NEW_KEY_PASSPHRASE": "correct horse"})
    assert made.exit_code == 0, made.stderr
    assert "settings.gpg_passphrase_file" in made.stdout, made.stdout
    assert "correct horse" not in made.stdout + made.stderr
    kill_agent(home)
