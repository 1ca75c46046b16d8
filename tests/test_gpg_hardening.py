"""Issue 11, the gpg items: never lose a report over a signature nobody asked for, never give a
misleading remedy, never archive an unsigned file under ``require_signature``, never accept a
wrong passphrase because gpg-agent remembers the right one, never hand a secret to a child.

Real gpg, real sshd/FTP servers, the real CLI in a subprocess. Environments of children are read
where the kernel keeps them (``/proc/PID/environ``) or dumped by a wrapper that then execs the
real gpg.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reportsync.config import parse_config
from reportsync.errors import ConfigError, DecryptionError
from reportsync.ledger import MIGRATIONS, SCHEMA_VERSION, Ledger
from reportsync.pgp import Gpg
from tests.servers import LocalServer
from tests.support import REPO_ROOT, PgpIdentity, make_identity, processes, run_cli_inprocess
from tests.test_fetch_e2e import Workspace
from tests.test_hardening_support import files_by_name, gpg_cli, hidden_files


@pytest.fixture
def ws(tmp_path: Path, pgp_identity: PgpIdentity, sftp_server: LocalServer) -> Workspace:
    workspace = Workspace(tmp_path, pgp_identity, sftp_server)
    workspace.write_config()
    return workspace


def public_key_file(identity: PgpIdentity, folder: Path) -> Path:
    path = folder / f"{identity.fingerprint}.asc"
    path.write_bytes(gpg_cli(identity.home, "--armor", "--export", identity.fingerprint))
    return path


def signed_by(signer: Path, recipient_key: Path, plaintext: bytes, *, armor: bool = False,
              from_file: Path | None = None) -> bytes:
    """``gpg -s -e`` as a provider runs it: signed with ``signer``'s key, encrypted to the key in
    ``recipient_key`` (never imported into the signer's home), from stdin or from a file."""
    args = ["--trust-model", "always", "--recipient-file", str(recipient_key), "--sign",
            "--encrypt", *(["--armor"] if armor else [])]
    if from_file is not None:
        from_file.write_bytes(plaintext)
        return gpg_cli(signer, *args, "--output", "-", str(from_file))
    return gpg_cli(signer, *args, data=plaintext)


def signed_in_2020(signer: Path, recipient: PgpIdentity, plaintext: bytes) -> bytes:
    """Signed while ``signer``'s key was valid, then encrypted (as it is) to ``recipient``."""
    signed = gpg_cli(signer, "--faked-system-time", "20200101T010000", "--sign", data=plaintext)
    return gpg_cli(recipient.home, "--trust-model", "always", "--no-literal", "-r",
                   recipient.fingerprint, "--encrypt", data=signed)


def archived_rows(ws: Workspace) -> dict[str, tuple[Any, ...]]:
    with ws.ledger() as db:
        rows = db.execute("SELECT f.name, a.decrypted, a.signature, a.signer FROM archived a "
                          "JOIN remote_files f ON f.id = a.file_id").fetchall()
    return {row[0]: tuple(row[1:]) for row in rows}


@pytest.fixture(scope="module")
def expired_signer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A signing key made in 2020 that expired a day later."""
    home = tmp_path_factory.mktemp("exp") / "h"
    home.mkdir(mode=0o700)
    spec = ("%no-protection\nKey-Type: EDDSA\nKey-Curve: ed25519\nKey-Usage: sign\n"
            "Name-Email: expired@example.com\nExpire-Date: 1d\n%commit\n")
    gpg_cli(home, "--faked-system-time", "20200101T000000", "--gen-key", data=spec.encode())
    yield home
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False,
                   capture_output=True)


def fingerprint_of(home: Path) -> str:
    listing = gpg_cli(home, "--with-colons", "--list-keys").decode()
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))


# --- 1. a signature nobody asked for never costs a report --------------------------------------


def test_signed_by_a_key_we_do_not_have_is_archived_and_its_signature_status_kept(
    ws: Workspace, other_pgp_identity: PgpIdentity, expired_signer: Path, tmp_path: Path,
) -> None:
    # Line of defence: pgp.Gpg._judge accepts gpg's exit code 2 when the only trouble is a
    # signature it could not check (ERRSIG/NO_PUBKEY) and require_signature is empty;
    # pgp._signature_status names the outcome and the ledger keeps it (archived.signature).
    me = ws.identity
    mine = public_key_file(me, tmp_path)
    stranger = other_pgp_identity
    gpg_cli(me.home, "--import", data=gpg_cli(expired_signer, "--export"))
    reports = {
        "binary.xml": signed_by(stranger.home, mine, b"<binary from stdin/>"),
        "armored.xml": signed_by(stranger.home, mine, b"<armored from stdin/>", armor=True),
        "fromfile.xml": signed_by(stranger.home, mine, b"<binary from a file/>",
                                  from_file=tmp_path / "statement.xml"),
        "expired.xml": signed_in_2020(expired_signer, me, b"<signed by an expired key/>"),
        "mine.xml": me.encrypt(b"<signed by a key we have/>", sign=True),
        "unsigned.xml": me.encrypt(b"<unsigned/>"),
    }
    for name, data in reports.items():
        ws.put(f"{name}.pgp", data)
    ws.put("notice.xml", b"<notice>not encrypted</notice>")
    result = ws.fetch()
    assert result.exit_code == 0, result.stderr
    outputs = ws.outputs()
    assert outputs["binary.xml"] == b"<binary from stdin/>"
    assert outputs["armored.xml"] == b"<armored from stdin/>"
    assert outputs["fromfile.xml"] == b"<binary from a file/>"
    assert set(outputs) == {*reports, "notice.xml"}
    assert hidden_files(ws.output_dir) == []
    rows = archived_rows(ws)
    for name in ("binary.xml.pgp", "armored.xml.pgp", "fromfile.xml.pgp"):
        assert rows[name] == (1, "no-public-key", stranger.fingerprint), name
    assert rows["expired.xml.pgp"] == (1, "expired-key", fingerprint_of(expired_signer))
    assert rows["mine.xml.pgp"] == (1, "good", me.fingerprint)
    assert rows["unsigned.xml.pgp"] == (1, "unsigned", None)
    assert rows["notice.xml"] == (0, None, None)


def test_a_bad_signature_still_fails_without_require_signature(
    ws: Workspace, tmp_path: Path,
) -> None:
    # Line of defence: BADSIG in pgp.Gpg._judge, before any leniency about unverifiable ones.
    me = ws.identity
    signed = bytearray(gpg_cli(me.home, "-z", "0", "--sign", data=b"<altered after signing/>"))
    signed[signed.find(b"<altered")] ^= 0x01
    ws.put("bad.xml.pgp", gpg_cli(me.home, "--trust-model", "always", "--no-literal", "-r",
                                  me.fingerprint, "--encrypt", data=bytes(signed)))
    result = ws.fetch()
    assert result.exit_code == 1, result.stderr
    entry = files_by_name(result)["bad.xml.pgp"]
    assert entry["action"] == "failed"
    assert entry["error"]["message"].startswith("the file carries a BAD signature")
    assert "do not trust" in entry["error"]["remedy"]
    assert not ws.output_dir.exists() or ws.outputs() == {}


def test_a_schema_3_ledger_gains_the_signature_column_and_keeps_its_rows(tmp_path: Path) -> None:
    # Line of defence: ledger.MIGRATIONS[3] (3 → 4), a self-contained ALTER TABLE.
    path = tmp_path / "ledger.sqlite3"
    with sqlite3.connect(path) as db:
        for version in range(3):
            db.executescript(MIGRATIONS[version])
        db.execute("PRAGMA user_version = 3")
        db.execute("INSERT INTO remote_files (id, source, name, size, mtime, first_seen, "
                   "last_seen) VALUES (1, 's', 'a.pgp', 1, 1, 0, 0), (2, 's', 'b.pgp', 1, 1, 0, 0)")
        db.execute("INSERT INTO archived (file_id, output_path, bytes, sha256, decrypted, signer, "
                   "at) VALUES (1, '/o/a', 1, 'x', 1, 'ABCDEF', 0), (2, '/o/b', 1, 'y', 1, NULL, 0)")
    assert SCHEMA_VERSION >= 4
    with Ledger(path) as ledger:
        assert ledger.schema_version == SCHEMA_VERSION
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT file_id, signer, signature FROM archived ORDER BY file_id")
        # schema 3 recorded a signer only for a good signature; a row without one is unknown
        assert rows.fetchall() == [(1, "ABCDEF", "good"), (2, None, None)]


# --- 2. every refusal says what happened -------------------------------------------------------


def no_mdc_message(identity: PgpIdentity, cipher: str, plaintext: bytes) -> bytes:
    return gpg_cli(identity.home, "--trust-model", "always", "--rfc2440", "--cipher-algo", cipher,
                   "-r", identity.fingerprint, "--encrypt", data=plaintext)


def test_a_message_without_mdc_fails_with_the_integrity_remedy(
    ws: Workspace, tmp_path: Path,
) -> None:
    # Line of defence: pgp.Gpg._judge recognises gpg 2.2's own refusal of a message without an
    # MDC (DECRYPTION_INFO 0 ..., "decryption forced to fail") as "no integrity protection"
    # instead of falling back to DecryptionError's generic remedy.
    gpg = Gpg(binary="gpg", home=ws.identity.home, passphrase=None)
    for cipher in ("AES256", "CAST5"):
        encrypted = tmp_path / f"{cipher}.pgp"
        encrypted.write_bytes(no_mdc_message(ws.identity, cipher, b"<no mdc/>"))
        with pytest.raises(DecryptionError) as caught:
            gpg.decrypt(encrypted, tmp_path / f"{cipher}.out")
        assert "no integrity protection" in caught.value.message, cipher
        assert "integrity" in caught.value.remedy and "encrypted to your key" not in \
            caught.value.remedy, cipher
        assert not (tmp_path / f"{cipher}.out").exists()
    ws.put("nomdc.xml.pgp", no_mdc_message(ws.identity, "AES256", b"<no mdc/>"))
    result = ws.fetch()
    assert result.exit_code == 1, result.stderr
    error = files_by_name(result)["nomdc.xml.pgp"]["error"]
    assert "no integrity protection" in error["message"]
    assert "encrypted to your key" not in error["remedy"]


def test_each_refusal_carries_its_own_remedy(
    pgp_identity: PgpIdentity, other_pgp_identity: PgpIdentity, tmp_path: Path,
) -> None:
    # Line of defence: every DecryptionError pgp.py raises names its remedy (checked in the
    # source below too); none falls back to the generic default.
    me = pgp_identity
    flipped = bytearray(me.encrypt(b"<x/>" * 500))
    flipped[-5] ^= 0x01
    whole = me.encrypt(os.urandom(50_000))
    signed_by_stranger = signed_by(other_pgp_identity.home, public_key_file(me, tmp_path),
                                   b"<x/>")
    cases: dict[str, tuple[bytes, str, str, str]] = {
        # label: (message, require_signer, message says, remedy says)
        "altered": (bytes(flipped), "", "BADMDC", "deliver the file again"),
        "truncated": (whole[: len(whole) // 2], "", "truncated", "cut short"),
        "foreign": (other_pgp_identity.encrypt(b"<x/>"), "", "does not hold", "secret key"),
        "not-pgp": (b"<xml>plain</xml>" * 10, "", "not a PGP message", "not encrypted"),
        "no-mdc": (no_mdc_message(me, "AES256", b"<x/>"), "", "no integrity protection",
                   "integrity"),
        "unsigned": (me.encrypt(b"<x/>"), me.fingerprint, "not signed", "not signed"),
        "unknown-signer": (signed_by_stranger, me.fingerprint, "cannot be checked",
                           "public signing key"),
        "wrong-signer": (me.encrypt(b"<x/>", sign=True), "0123456789ABCDEF",
                         "not by the required", "require_signature"),
    }
    gpg = Gpg(binary="gpg", home=me.home, passphrase=None)
    remedies = {}
    for label, (data, require, says, remedy) in cases.items():
        encrypted = tmp_path / f"{label}.pgp"
        encrypted.write_bytes(data)
        with pytest.raises(DecryptionError) as caught:
            gpg.decrypt(encrypted, tmp_path / f"{label}.out", require_signer=require)
        assert says in caught.value.message, (label, caught.value.message)
        assert remedy in caught.value.remedy, (label, caught.value.remedy)
        assert caught.value.remedy != DecryptionError.default_remedy, label
        remedies[label] = caught.value.remedy
    assert "encrypted to your key" not in " ".join(
        remedy for label, remedy in remedies.items() if label != "foreign")


def test_every_decryption_error_in_the_code_names_its_remedy() -> None:
    # Line of defence: a DecryptionError raised without remedy= would show the generic default,
    # which is wrong for most kinds of refusal; so there must be none.
    missing = []
    for path in sorted((REPO_ROOT / "reportsync").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "DecryptionError" \
                    and not any(keyword.arg == "remedy" for keyword in node.keywords):
                missing.append(f"{path.name}:{node.lineno}")
    assert missing == []


# --- 3. require_signature covers files that are not PGP ----------------------------------------


def test_require_signature_fails_a_plain_file_as_unsigned(ws: Workspace) -> None:
    # Line of defence: pgp.archive_as_plaintext decides, in one place, whether a file is
    # decrypted or archived as delivered, and refuses the latter under require_signature.
    me = ws.identity
    ws.put("signed.xml.pgp", me.encrypt(b"<signed/>", sign=True))
    ws.put("notice.xml", b"<notice>delivered in clear</notice>")
    ws.write_config(require_signature=me.fingerprint)
    result = ws.fetch()
    assert result.exit_code == 1, result.stderr
    entry = files_by_name(result)["notice.xml"]
    assert entry["action"] == "failed"
    assert "not a PGP message" in entry["error"]["message"]
    assert "unsigned" in entry["error"]["message"]
    assert "require_signature" in entry["error"]["remedy"]
    assert ws.outputs() == {"signed.xml": b"<signed/>"}
    assert (ws.download_dir / "notice.xml").exists(), "the delivered copy is kept"
    with ws.ledger() as db:
        reasons = [row[0] for row in db.execute("SELECT reason FROM failures WHERE name = "
                                                "'notice.xml' AND resolved_at IS NULL")]
    assert len(reasons) == 1 and "unsigned" in reasons[0]


def test_require_signature_without_decrypt_is_a_config_error() -> None:
    # Line of defence: config.model._signature_and_folders: a file archived as delivered is never verified.
    table = {"protocol": "ftp", "host": "h", "username": "u", "password_env": "X",
             "download_dir": "/d", "output_dir": "/o", "decrypt": False,
             "require_signature": "0123456789ABCDEF"}
    with pytest.raises(ConfigError, match="require_signature"):
        parse_config({"sources": {"a": table}})


# --- 4. a wrong passphrase is caught although the agent caches the right one -------------------


PASSPHRASE_ENV = "RS_GPGH_PASSPHRASE"


def recording_gpg(folder: Path) -> tuple[Path, Path]:
    """``gpg`` and ``gpgconf`` wrappers in ``folder`` that log their argv and environment, then
    exec the real program: every run is still a real gpg run."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "calls.jsonl"
    for name in ("gpg", "gpgconf"):
        real = subprocess.run(["which", name], capture_output=True, text=True,
                              check=True).stdout.strip()
        wrapper = folder / name
        wrapper.write_text(
            f"#!{sys.executable}\n"
            "import json, os, sys\n"
            f"with open({str(log)!r}, 'a') as out:\n"
            f"    out.write(json.dumps({{'program': {name!r}, 'argv': sys.argv[1:], "
            "'env': dict(os.environ)}) + '\\n')\n"
            f"os.execv({real!r}, [{real!r}] + sys.argv[1:])\n",
            encoding="utf-8",
        )
        wrapper.chmod(0o700)
    return folder / "gpg", log


def recorded(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def protected_identity(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgpIdentity]:
    identity = make_identity(tmp_path_factory.mktemp("pp") / "h", "pp@example.com",
                             passphrase="correct horse")
    identity.stop_agent()
    yield identity
    identity.stop_agent()


def test_a_wrong_passphrase_is_6_even_while_the_agent_caches_the_right_one(
    tmp_path: Path, sftp_server: LocalServer, protected_identity: PgpIdentity,
) -> None:
    # Line of defence: pgp.Gpg.require_working_passphrase, once per run from fetch.archive.LazyGpg before
    # the first decryption: the passphrase is tried on a copy of the GnuPG home with a gpg-agent
    # of its own, whose cache is empty.
    ws = Workspace(tmp_path, protected_identity, sftp_server)
    gpg, log = recording_gpg(tmp_path / "bin")
    ws.write_config()
    ws.config_path.write_text(ws.config_path.read_text().replace(
        "[settings]", f'[settings]\ngpg_binary = "{gpg}"\ngpg_passphrase_env = "{PASSPHRASE_ENV}"'))
    ws.put_report("first.xml.pgp", b"<first/>")
    right = ws.fetch(env={PASSPHRASE_ENV: "correct horse"})
    assert right.exit_code == 0, right.stderr
    before = len(recorded(log))

    ws.put_report("second.xml.pgp", b"<second/>")
    wrong = ws.fetch(env={PASSPHRASE_ENV: "battery staple"})
    assert wrong.exit_code == 6, wrong.stderr
    assert "does not unlock" in wrong.stderr and PASSPHRASE_ENV in wrong.stderr
    assert "battery staple" not in wrong.stdout + wrong.stderr
    assert ws.outputs() == {"first.xml": b"<first/>"}, "nothing archived with a wrong passphrase"
    entry = files_by_name(wrong)["second.xml.pgp"]
    assert entry["error"]["exit_code"] == 6 and "does not unlock" in entry["error"]["message"]
    assert (ws.download_dir / "second.xml.pgp").exists(), "the download still happened"
    home = str(protected_identity.home)
    decrypting_reports = [call for call in recorded(log)[before:]
                          if "--decrypt" in call["argv"] and home in call["argv"]]
    assert decrypting_reports == [], "no report was handed to gpg"
    with ws.ledger() as db:
        reasons = [row[0] for row in db.execute("SELECT reason FROM failures "
                                                "WHERE resolved_at IS NULL")]
    assert all("does not unlock" in reason for reason in reasons), reasons

    again = ws.fetch(env={PASSPHRASE_ENV: "correct horse"})
    assert again.exit_code == 0, again.stderr
    assert ws.outputs() == {"first.xml": b"<first/>", "second.xml": b"<second/>"}


# --- 5. no secret in a child's environment ------------------------------------------------------


MARKERS = {
    "FTP_PASSWORD": None,  # the real FTP password, set below
    "REPORTSYNC_SSH_PASSPHRASE": "ssh-marker-Qz81",
    PASSPHRASE_ENV: "correct horse",
    "RS_GPGH_BACKUP_PASSPHRASE": "backup-marker-Wm52",
    "RS_GPGH_UNRELATED_TOKEN": "token-marker-Hk17",
}


def agent_environments(home: Path) -> list[str]:
    """The environment of each running gpg-agent serving ``home``."""
    found = []
    for pid in processes(lambda argv: argv[0].endswith(b"gpg-agent")
                         and str(home).encode() in argv):
        with contextlib.suppress(OSError):  # ended meanwhile
            found.append(Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace"))
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_no_secret_reaches_gpg_gpgconf_or_the_agent(
    tmp_path: Path, ftp_server: LocalServer, protected_identity: PgpIdentity,
) -> None:
    # Line of defence: process.child_environment (an allowlist), used for every child reportsync
    # starts: gpg through python-gnupg and pgp.Gpg, gpg --version, gpgconf --kill, and so the
    # gpg-agent gpg starts, which outlives the run.
    ws = Workspace(tmp_path, protected_identity, ftp_server)
    gpg, log = recording_gpg(tmp_path / "bin")
    table = {key: value for key, value in ftp_server.source.items() if key != "password_file"}
    ws.write_config(source=table, password_env="FTP_PASSWORD")
    ws.config_path.write_text(ws.config_path.read_text().replace(
        "[settings]", f'[settings]\ngpg_binary = "{gpg}"\ngpg_passphrase_env = "{PASSPHRASE_ENV}"'))
    ws.put_report("r.xml.pgp", b"<r/>")
    env = {**{name: value for name, value in MARKERS.items() if value is not None},
           "FTP_PASSWORD": ftp_server.extra["password"],
           "PATH": f"{gpg.parent}{os.pathsep}{os.environ['PATH']}"}
    secrets = [value for value in env.values() if value != env["PATH"]]
    config = ["--config", str(ws.config_path)]
    runs = [
        [*config, "--json", "fetch"],
        [*config, "--json", "doctor"],
        [*config, "keys", "pgp", "list"],
        [*config, "keys", "pgp", "export-public"],
        [*config, "keys", "backup", "--out", str(tmp_path / "k.rsbak"), "--passphrase-env",
         "RS_GPGH_BACKUP_PASSPHRASE"],
        ["--version"],
    ]
    for args in runs:
        result = run_cli_inprocess(*args, env=env)
        assert result.exit_code == 0, (args, result.stdout[-2000:], result.stderr)
    assert ws.outputs() == {"r.xml": b"<r/>"}

    calls = recorded(log)
    programs = {call["program"] for call in calls}
    assert programs == {"gpg", "gpgconf"}, "gpg and gpgconf both ran through the wrappers"
    assert any("--version" in call["argv"] for call in calls)
    assert any("--decrypt" in call["argv"] for call in calls)
    for call in calls:
        dumped = json.dumps(call["env"])
        for name in MARKERS:
            assert name not in call["env"], (call["program"], call["argv"], name)
        for secret in secrets:
            assert secret not in dumped, (call["program"], call["argv"], secret[:4])
    agents = agent_environments(protected_identity.home)
    assert agents, "the gpg-agent reportsync's gpg started is still running"
    for environ in agents:
        for secret in secrets:
            assert secret not in environ, secret[:4]
        for name in MARKERS:
            assert f"{name}=" not in environ


def test_only_pgp_py_starts_gpg() -> None:
    # Line of defence: one module owns gpg, gpgconf and their environment (no other module
    # imports python-gnupg), and one module starts every child, with the allowlisted environment:
    # process.py (schedule's Python probe goes through it too).
    importers: dict[str, set[str]] = {"gnupg": set(), "subprocess": set()}
    for path in sorted((REPO_ROOT / "reportsync").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                if name in importers:
                    importers[name].add(path.relative_to(REPO_ROOT / "reportsync").as_posix())
    assert importers == {"gnupg": {"pgp/gpg.py"}, "subprocess": {"process.py"}}
    runner = (REPO_ROOT / "reportsync" / "process.py").read_text()
    assert runner.count("subprocess.run(") == 1
    assert "env=child_environment(hidden, environ=environ)" in runner
    assert runner.count("subprocess.Popen(") == 1
    schedule = (REPO_ROOT / "reportsync" / "schedule.py").read_text()
    assert "process.run(" in schedule


def test_doctor_looks_at_the_gnupg_home_through_pgp_py_without_changing_it(
    pgp_identity: PgpIdentity,
) -> None:
    # Line of defence: doctor reaches gpg only through pgp.Gpg (create_home=False), which never
    # creates or re-modes the home it is pointed at: doctor repairs nothing.
    from reportsync.doctor import findings as doctor_findings
    from reportsync.doctor import local

    home = pgp_identity.home
    home.chmod(0o755)
    try:
        findings = doctor_findings.Findings()
        usable = local.check_secret_keys("gpg", home, findings)
        assert usable == [pgp_identity.fingerprint]
        assert home.stat().st_mode & 0o777 == 0o755, "the home's mode is left as found"
    finally:
        home.chmod(0o700)
