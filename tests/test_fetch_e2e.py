"""End to end: the real CLI against real servers, in-process (``cli.main``, its real exit codes
and output); in a subprocess where a test needs a process of its own (SIGKILL, the lock held by
another process, ``-q`` silence).

Each test gets its own GnuPG home, state dir and server folder. Reports are encrypted to the
test's key with the real gpg, placed in the server's folder with a delivery mtime, and fetched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reportsync.lock import RunLock
from tests.servers import LocalServer, free_port
from tests.servers.proxy import FaultPlan, FaultProxy
from tests.support import (
    REPO_ROOT,
    CliResult,
    PgpIdentity,
    random_plain,
    run_cli,
    run_cli_inprocess,
    write_config,
)

DAY = 86400


def report_xml(account: str, day: str, rows: int = 40) -> bytes:
    body = "".join(f"  <Trade id='{i}' symbol='SYM{i}' qty='{i * 10}'/>\n" for i in range(rows))
    return (f"<FlexQueryResponse account='{account}' date='{day}'>\n{body}"
            "</FlexQueryResponse>\n").encode()


@dataclass
class Workspace:
    root: Path
    identity: PgpIdentity
    server: LocalServer

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def download_dir(self) -> Path:
        return self.root / "reports" / "encrypted"

    @property
    def output_dir(self) -> Path:
        return self.root / "reports" / "statements"

    @property
    def config_path(self) -> Path:
        return self.root / "config.toml"

    def write_config(self, source: dict[str, Any] | None = None, **overrides: Any) -> Path:
        table = dict(source if source is not None else self.server.source)
        table.update({"download_dir": str(self.download_dir), "output_dir": str(self.output_dir),
                      "include": ["*.pgp", "*.gpg", "*.asc", "*.xml"], "timeout": 5,
                      "retries": 0})
        table.update(overrides)
        return write_config(self.config_path, {
            "settings": {"state_dir": str(self.state_dir), "gnupg_home": str(self.identity.home)},
            "sources": {"broker": table},
        })

    def put(self, name: str, data: bytes, *, age_days: float = 1.0) -> Path:
        path = self.server.remote_root / name
        path.write_bytes(data)
        stamp = time.time() - age_days * DAY
        os.utime(path, (stamp, stamp))
        return path

    def put_report(self, name: str, plaintext: bytes, *, age_days: float = 1.0,
                   armor: bool = False) -> bytes:
        self.put(name, self.identity.encrypt(plaintext, armor=armor), age_days=age_days)
        return plaintext

    def fetch(self, *args: str, env: dict[str, str] | None = None) -> CliResult:
        return run_cli_inprocess("--config", str(self.config_path), "--json", "fetch", *args,
                                 env=env)

    def ledger(self) -> sqlite3.Connection:
        return sqlite3.connect(self.state_dir / "ledger.sqlite3")

    def outputs(self) -> dict[str, bytes]:
        return {path.name: path.read_bytes() for path in sorted(self.output_dir.iterdir())}


def counts(result: CliResult) -> dict[str, int]:
    source: dict[str, Any] = result.result()["sources"][0]
    return dict(source["counts"])


@pytest.fixture
def sftp_workspace(tmp_path: Path, pgp_identity: PgpIdentity, sftp_server: LocalServer) -> Workspace:
    workspace = Workspace(tmp_path, pgp_identity, sftp_server)
    workspace.write_config()
    return workspace


@pytest.fixture(params=["sftp_server", "ftp_server", "ftps_server", "ftp_server_no_mlsd"])
def any_workspace(request: pytest.FixtureRequest, tmp_path: Path,
                  pgp_identity: PgpIdentity) -> Workspace:
    server: LocalServer = request.getfixturevalue(request.param)
    workspace = Workspace(tmp_path, pgp_identity, server)
    workspace.write_config()
    return workspace


def test_first_run_archives_everything_byte_identical_then_nothing_is_transferred(
    any_workspace: Workspace,
) -> None:
    ws = any_workspace
    expected = {
        "U1234567.Activity_Daily.20261102.20261102.xml": ws.put_report(
            "U1234567.Activity_Daily.20261102.20261102.xml.pgp", report_xml("U1234567", "20261102")),
        "U1234567.Activity_Daily.20261103.20261103.xml": ws.put_report(
            "U1234567.Activity_Daily.20261103.20261103.xml.asc", report_xml("U1234567", "20261103"),
            armor=True),
        "U1234567.Trades.20261103.csv": ws.put_report(
            "U1234567.Trades.20261103.csv.gpg", b"date,symbol,qty\n2026-11-03,SYM,10\n"),
        "U1234567.Notice.20261103.xml": ws.put("U1234567.Notice.20261103.xml", b"<notice/>")
        .read_bytes(),
    }
    (ws.server.remote_root / "subfolder.pgp").mkdir()
    ws.put("ignored.txt", b"not matched by include")

    first = ws.fetch()
    assert first.exit_code == 0, first.stderr
    assert counts(first)["archived"] == 4
    assert ws.outputs() == expected
    for path in ws.output_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(ws.output_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(ws.download_dir.stat().st_mode) == 0o700
    remote_mtime = int((ws.server.remote_root / "U1234567.Trades.20261103.csv.gpg").stat().st_mtime)
    assert int((ws.download_dir / "U1234567.Trades.20261103.csv.gpg").stat().st_mtime) == remote_mtime
    assert not [p for p in ws.download_dir.iterdir() if p.name.startswith(".")], "no temp left"

    # The second run must not transfer: the server's copies are replaced by same-size garbage
    # with the same mtimes; if anything were downloaded again it would fail to decrypt.
    for path in ws.server.remote_root.iterdir():
        if path.is_file():
            info = path.stat()
            path.write_bytes(b"\0" * info.st_size)
            os.utime(path, (info.st_atime, info.st_mtime))
    second = ws.fetch()
    assert second.exit_code == 0, second.stderr
    assert counts(second)["skipped"] == 4 and counts(second)["archived"] == 0
    assert second.result()["sources"][0]["bytes_transferred"] == 0
    assert ws.outputs() == expected
    with ws.ledger() as db:
        assert db.execute("SELECT COUNT(*) FROM downloads").fetchone()[0] == 4
        assert db.execute("SELECT COUNT(*) FROM runs WHERE exit_code = 0").fetchone()[0] == 2


def test_new_file_alone_and_changed_version_kept_beside_the_old(sftp_workspace: Workspace) -> None:
    ws = sftp_workspace
    old = ws.put_report("r.xml.pgp", b"<v1/>", age_days=3)
    ws.put_report("a.xml.pgp", b"<a/>", age_days=3)
    assert ws.fetch().exit_code == 0

    ws.put_report("b.xml.pgp", b"<b/>", age_days=1)
    newer = ws.put_report("r.xml.pgp", b"<version two/>", age_days=0.5)
    result = ws.fetch()
    assert result.exit_code == 0, result.stderr
    actions = {f["name"]: f["action"] for f in result.result()["sources"][0]["files"]}
    assert actions == {"a.xml.pgp": "skipped", "b.xml.pgp": "archived", "r.xml.pgp": "archived"}
    outputs = ws.outputs()
    assert outputs["r.xml"] == old and outputs["r.v2.xml"] == newer
    assert outputs["b.xml"] == b"<b/>"


def test_bad_files_fail_alone_keep_their_copy_and_are_retried(
    sftp_workspace: Workspace, other_pgp_identity: PgpIdentity
) -> None:
    ws = sftp_workspace
    good = ws.put_report("good.xml.pgp", b"<good/>")
    corrupt = bytearray(ws.identity.encrypt(b"<corrupt/>" * 100))
    corrupt[len(corrupt) // 2] ^= 0x55
    ws.put("corrupt.xml.pgp", bytes(corrupt))
    ws.put("stranger.xml.pgp", other_pgp_identity.encrypt(b"<not for us/>"))

    result = ws.fetch()
    assert result.exit_code == 1
    files = {f["name"]: f for f in result.result()["sources"][0]["files"]}
    assert files["good.xml.pgp"]["action"] == "archived"
    assert files["corrupt.xml.pgp"]["action"] == "failed"
    assert files["stranger.xml.pgp"]["action"] == "failed"
    assert "does not hold" in files["stranger.xml.pgp"]["error"]["message"]
    assert "stranger.xml.pgp" in result.stderr and "what to do" in result.stderr
    assert ws.outputs() == {"good.xml": good}, "nothing half-written in output_dir"
    assert (ws.download_dir / "corrupt.xml.pgp").exists(), "the encrypted copy is kept"

    again = ws.fetch()
    assert again.exit_code == 1
    with ws.ledger() as db:
        attempts = dict(db.execute("SELECT name, attempts FROM failures WHERE resolved_at IS NULL"))
    assert attempts == {"corrupt.xml.pgp": 2, "stranger.xml.pgp": 2}

    ws.put_report("corrupt.xml.pgp", b"<fixed/>", age_days=0.5)  # the provider re-delivers
    fixed = ws.fetch()
    assert fixed.exit_code == 1  # the stranger's file still fails
    assert ws.outputs()["corrupt.xml"] == b"<fixed/>"


def test_truncated_transfer_fails_alone_then_resumes(sftp_workspace: Workspace) -> None:
    ws = sftp_workspace
    big = random_plain(3 * 1024 * 1024)
    ws.put("big.xml", big)
    small = ws.put_report("small.xml.pgp", b"<small/>")
    proxy = FaultProxy(int(ws.server.port), FaultPlan(cut_after=1024 * 1024))
    try:
        ws.write_config(port=proxy.port, known_hosts=_proxy_known_hosts(ws, proxy.port))
        first = ws.fetch()
        assert first.exit_code == 1, first.stderr
        files = {f["name"]: f for f in first.result()["sources"][0]["files"]}
        assert files["big.xml"]["action"] == "failed"
        assert files["small.xml.pgp"]["action"] == "archived"
        assert "big.xml" not in ws.outputs()
        parts = [p for p in ws.download_dir.iterdir() if p.name.endswith(".part")]
        assert len(parts) == 1 and 0 < parts[0].stat().st_size < len(big)
        kept = parts[0].stat().st_size

        second = ws.fetch()
        assert second.exit_code == 0, second.stderr
        files = {f["name"]: f for f in second.result()["sources"][0]["files"]}
        assert files["big.xml"]["bytes_transferred"] == len(big) - kept, "resumed, not restarted"
        assert ws.outputs() == {"big.xml": big, "small.xml": small}
    finally:
        proxy.stop()


def test_dropped_connection_is_retried_in_the_same_run(sftp_workspace: Workspace) -> None:
    ws = sftp_workspace
    big = random_plain(2 * 1024 * 1024)
    ws.put("big.xml", big)
    proxy = FaultProxy(int(ws.server.port), FaultPlan(cut_after=512 * 1024))
    try:
        ws.write_config(port=proxy.port, known_hosts=_proxy_known_hosts(ws, proxy.port), retries=2)
        result = ws.fetch()
        assert result.exit_code == 0, result.stderr
        assert ws.outputs() == {"big.xml": big}
        assert proxy.connections >= 2, "a second connection carried the retry"
        with ws.ledger() as db:
            assert db.execute("SELECT COUNT(*) FROM failures").fetchone()[0] == 0
    finally:
        proxy.stop()


def _proxy_known_hosts(ws: Workspace, port: int) -> str:
    """The server's known_hosts lines, re-addressed to the proxy's port."""
    original = Path(ws.server.source["known_hosts"]).read_text()
    rewritten = original.replace(f"[127.0.0.1]:{ws.server.port}", f"[127.0.0.1]:{port}")
    path = ws.root / "known_hosts_proxy"
    path.write_text(rewritten)
    return str(path)


def test_unknown_and_changed_host_keys_stop_the_source_with_5(sftp_workspace: Workspace) -> None:
    ws = sftp_workspace
    ws.put_report("r.xml.pgp", b"<r/>")
    empty = ws.root / "empty_known_hosts"
    empty.write_text("")
    ws.write_config(known_hosts=str(empty))
    unknown = ws.fetch()
    assert unknown.exit_code == 5, unknown.stderr
    assert "SHA256:" in unknown.stderr
    ws.write_config(known_hosts=str(ws.server.extra["wrong_known_hosts"]))
    changed = ws.fetch()
    assert changed.exit_code == 5
    assert "changed" in changed.stderr.lower()
    assert not ws.output_dir.exists() or not any(ws.output_dir.iterdir())


def test_refused_key_is_4(sftp_workspace: Workspace) -> None:
    ws = sftp_workspace
    ws.write_config(key_file=str(ws.server.extra["other_user_key"]))
    result = ws.fetch()
    assert result.exit_code == 4, result.stderr
    assert "doctor --source broker" in result.stderr


def test_wrong_ftp_password_is_4_and_not_retried(tmp_path: Path, pgp_identity: PgpIdentity,
                                 ftp_server: LocalServer) -> None:
    ws = Workspace(tmp_path, pgp_identity, ftp_server)
    wrong = tmp_path / "wrong_password"
    wrong.write_text("not-the-password")
    wrong.chmod(0o600)
    ws.write_config(password_file=str(wrong), retries=3)
    started = time.monotonic()
    result = ws.fetch()
    assert result.exit_code == 4, result.stderr
    assert "not-the-password" not in result.stderr + result.stdout
    assert time.monotonic() - started < 5, "not retried: three backoffs (1+2+4 s) take over 7 s"


def test_nothing_listening_is_3(sftp_workspace: Workspace) -> None:
    ws = sftp_workspace
    ws.write_config(port=free_port())
    result = ws.fetch()
    assert result.exit_code == 3
    assert result.result()["sources"][0]["error"]["error"] == "NetworkError"


def test_concurrent_run_exits_75_at_once_naming_the_holder(sftp_workspace: Workspace) -> None:
    ws = sftp_workspace
    with RunLock(ws.state_dir, "fetch"):
        started = time.monotonic()
        result = run_cli("--config", str(ws.config_path), "fetch")  # another process
        elapsed = time.monotonic() - started
    assert result.exit_code == 75
    assert f"pid {os.getpid()}" in result.stderr
    assert elapsed < 10
    assert ws.fetch().exit_code == 0, "the lock is free again"


def largest_part(folder: Path) -> int:
    """The size of the largest ``.part`` in ``folder`` now (0: none)."""
    sizes = [0]
    for part in folder.glob(".*.part") if folder.exists() else []:
        with contextlib.suppress(FileNotFoundError):  # renamed into place meanwhile
            sizes.append(part.stat().st_size)
    return max(sizes)


@pytest.mark.slow
def test_killed_mid_download_next_run_completes_without_duplicates(sftp_workspace: Workspace) -> None:
    ws = sftp_workspace
    payload = random_plain(4 * 1024 * 1024)
    ws.put("large.xml", payload)
    others = {f"r{i}.xml": ws.put_report(f"r{i}.xml.pgp", f"<r{i}/>".encode()) for i in range(3)}
    proxy = FaultProxy(int(ws.server.port), FaultPlan(rate=1024 * 1024))  # ~4 s for large.xml
    try:
        ws.write_config(port=proxy.port, known_hosts=_proxy_known_hosts(ws, proxy.port))
        process = subprocess.Popen(
            [sys.executable, "-m", "reportsync", "--config", str(ws.config_path), "fetch"],
            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            # the largest part: the small files of the same batch have theirs there too
            if largest_part(ws.download_dir) > 256 * 1024:
                break
            time.sleep(0.02)
        else:
            process.kill()
            pytest.fail("the download never started")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        assert "large.xml" not in (ws.outputs() if ws.output_dir.exists() else {})
    finally:
        proxy.stop()
    ws.write_config()
    result = ws.fetch()
    assert result.exit_code == 0, result.stderr
    assert ws.outputs() == {"large.xml": payload, **others}
    with ws.ledger() as db:
        for table in ("remote_files", "downloads", "archived"):
            assert db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 4, table
        duplicates = db.execute("SELECT COUNT(*) FROM (SELECT file_id FROM archived GROUP BY "
                                "file_id HAVING COUNT(*) > 1)").fetchone()[0]
        assert duplicates == 0
    assert not list(ws.download_dir.glob(".*")), "no temp or part file left"


def test_dry_run_writes_nothing_and_no_decrypt_defers(sftp_workspace: Workspace) -> None:
    ws = sftp_workspace
    plain = ws.put_report("r.xml.pgp", b"<r/>")
    dry = ws.fetch("--dry-run")
    assert dry.exit_code == 0
    assert counts(dry)["would-fetch"] == 1
    assert not ws.download_dir.exists() and not ws.output_dir.exists()

    downloaded = ws.fetch("--no-decrypt")
    assert counts(downloaded)["downloaded"] == 1
    assert (ws.download_dir / "r.xml.pgp").exists() and not ws.output_dir.exists()
    # the server copy becomes same-size garbage: archiving must use the local copy, no transfer
    remote = ws.server.remote_root / "r.xml.pgp"
    info = remote.stat()
    remote.write_bytes(b"\0" * info.st_size)
    os.utime(remote, (info.st_atime, info.st_mtime))
    archived = ws.fetch()
    assert counts(archived)["archived"] == 1
    assert archived.result()["sources"][0]["bytes_transferred"] == 0
    assert ws.outputs() == {"r.xml": plain}


def test_hostile_names_are_refused_and_reported(sftp_workspace: Workspace) -> None:
    ws = sftp_workspace
    ws.put_report("fine.xml.pgp", b"<fine/>")
    ws.put_report("evil\nname.xml.pgp", b"<evil/>")
    ws.put_report("back\\slash.xml.pgp", b"<evil/>")
    result = ws.fetch()
    assert result.exit_code == 1
    actions = sorted(f["action"] for f in result.result()["sources"][0]["files"])
    assert actions == ["archived", "refused", "refused"]
    assert ws.outputs() == {"fine.xml": b"<fine/>"}
    assert "\nname" not in result.stderr, "control characters are escaped in messages"


def test_parallel_jobs_fetch_everything(sftp_workspace: Workspace) -> None:
    ws = sftp_workspace
    expected = {f"r{i:02d}.xml": ws.put_report(f"r{i:02d}.xml.pgp", report_xml("U1", str(i)))
                for i in range(12)}
    result = ws.fetch("--jobs", "4")
    assert result.exit_code == 0, result.stderr
    assert ws.outputs() == expected


def test_quiet_success_prints_nothing_and_bad_config_is_2(sftp_workspace: Workspace) -> None:
    ws = sftp_workspace
    ws.put_report("r.xml.pgp", b"<r/>")
    quiet = run_cli("--config", str(ws.config_path), "-q", "fetch")
    assert quiet.exit_code == 0 and quiet.stdout == "" and quiet.stderr == ""
    ws.config_path.write_text('[sources.broker]\nprotocol = "gopher"\nhots = "x"\n')
    bad = run_cli("--config", str(ws.config_path), "fetch")
    assert bad.exit_code == 2
    assert "sources.broker.protocol" in bad.stderr and "sources.broker.hots" in bad.stderr
    assert str(ws.config_path) in bad.stderr
    unknown = run_cli("--config", str(ws.config_path), "fetch", "--bogus")
    assert unknown.exit_code == 2


def test_several_sources_worst_code_wins(tmp_path: Path, pgp_identity: PgpIdentity,
                                         sftp_server: LocalServer, ftp_server: LocalServer) -> None:
    ws = Workspace(tmp_path, pgp_identity, sftp_server)
    ws.put_report("r.xml.pgp", b"<r/>")
    good = dict(sftp_server.source, download_dir=str(tmp_path / "a" / "enc"),
                output_dir=str(tmp_path / "a" / "out"), retries=0, timeout=5)
    down = dict(ftp_server.source, port=free_port(), download_dir=str(tmp_path / "b" / "enc"),
                output_dir=str(tmp_path / "b" / "out"), retries=0, timeout=5)
    write_config(ws.config_path, {"settings": {"state_dir": str(ws.state_dir),
                                               "gnupg_home": str(pgp_identity.home)},
                                  "sources": {"good": good, "down": down}})
    result = ws.fetch()
    assert result.exit_code == 3
    by_name = {source["name"]: source for source in result.result()["sources"]}
    assert by_name["good"]["counts"]["archived"] == 1 and by_name["good"]["exit_code"] == 0
    assert by_name["down"]["exit_code"] == 3
    only_good = ws.fetch("--source", "good")
    assert only_good.exit_code == 0
    assert [s["name"] for s in only_good.result()["sources"]] == ["good"]


def test_decrypt_false_archives_files_as_delivered(sftp_workspace: Workspace) -> None:
    ws = sftp_workspace
    ws.put_report("r.xml.pgp", b"<r/>")
    delivered = (ws.server.remote_root / "r.xml.pgp").read_bytes()
    ws.write_config(decrypt=False)
    result = ws.fetch()
    assert result.exit_code == 0, result.stderr
    assert ws.outputs() == {"r.xml.pgp": delivered}


def test_unwritable_output_dir_is_7_and_the_download_is_kept(sftp_workspace: Workspace) -> None:
    ws = sftp_workspace
    ws.put_report("r.xml.pgp", b"<r/>")
    ws.put_report("s.xml.pgp", b"<s/>")
    ws.output_dir.parent.mkdir(parents=True)
    ws.output_dir.write_text("a file where the archive folder should be")
    result = ws.fetch()
    assert result.exit_code == 7, result.stderr
    assert str(ws.output_dir) in result.stderr
    assert (ws.download_dir / "r.xml.pgp").exists()
    actions = {f["name"]: f["action"] for f in result.result()["sources"][0]["files"]}
    assert actions == {"r.xml.pgp": "failed", "s.xml.pgp": "pending"}, "the source stops at once"
    ws.output_dir.unlink()
    again = ws.fetch()
    assert again.exit_code == 0
    assert ws.outputs() == {"r.xml": b"<r/>", "s.xml": b"<s/>"}


def test_missing_gpg_is_6_but_files_are_still_downloaded(sftp_workspace: Workspace) -> None:
    ws = sftp_workspace
    ws.put_report("a.xml.pgp", b"<a/>")
    ws.put_report("b.xml.pgp", b"<b/>")
    ws.config_path.write_text(ws.config_path.read_text().replace(
        "[settings]", '[settings]\ngpg_binary = "/nonexistent/gpg"'))
    result = ws.fetch()
    assert result.exit_code == 6, result.stderr
    assert "gpg not found" in result.stderr
    assert sorted(p.name for p in ws.download_dir.iterdir()) == ["a.xml.pgp", "b.xml.pgp"], \
        "downloading before the purge matters more than decrypting now"


def test_wrong_passphrase_is_6(tmp_path: Path, sftp_server: LocalServer) -> None:
    from tests.support import make_identity

    identity = make_identity(tmp_path / "gpg", "pp@example.com", passphrase="correct horse")
    try:
        ws = Workspace(tmp_path, identity, sftp_server)
        ws.put_report("a.xml.pgp", b"<a/>")
        ws.write_config()
        ws.config_path.write_text(ws.config_path.read_text().replace(
            "[settings]", '[settings]\ngpg_passphrase_env = "RS_TEST_GPG_PASSPHRASE"'))
        wrong = ws.fetch(env={"RS_TEST_GPG_PASSPHRASE": "battery staple"})
        assert wrong.exit_code == 6, wrong.stderr
        assert "battery staple" not in wrong.stdout + wrong.stderr
        assert "passphrase" in wrong.stderr
        right = ws.fetch(env={"RS_TEST_GPG_PASSPHRASE": "correct horse"})
        assert right.exit_code == 0, right.stderr
        assert ws.outputs() == {"a.xml": b"<a/>"}
    finally:
        identity.stop_agent()
