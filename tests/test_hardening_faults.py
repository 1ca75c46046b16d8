"""Hardening, issue 6: faults (items 14, 15).

SIGKILL at named points uses the test-only fault injector REPORTSYNC_TEST_CRASH_AT
(``fsutil.crash_point``: the process kills itself with SIGKILL exactly there). Disk full is a
real 1 MiB tmpfs mounted for the test (root only; skipped with the reason otherwise).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from reportsync.errors import StorageError
from reportsync.fsutil import CRASH_ENV
from reportsync.pgp import Gpg
from tests.servers import LocalServer
from tests.support import REPO_ROOT, PgpIdentity, random_plain
from tests.test_fetch_e2e import Workspace
from tests.test_hardening_support import files_by_name, hidden_files, integrity_ok, tiny_filesystem


@pytest.fixture
def ws(tmp_path: Path, pgp_identity: PgpIdentity, sftp_server: LocalServer) -> Workspace:
    workspace = Workspace(tmp_path, pgp_identity, sftp_server)
    workspace.write_config()
    return workspace


def killed_at(ws: Workspace, point: str) -> int:
    completed = subprocess.run(
        [sys.executable, "-m", "reportsync", "--config", str(ws.config_path), "fetch"],
        cwd=REPO_ROOT, env={**os.environ, CRASH_ENV: point}, capture_output=True, timeout=60,
        check=False)
    return completed.returncode


# --- 14. SIGKILL at every step; the next run reconciles -----------------------------------------


@pytest.mark.parametrize("point", ["downloading", "after-download-rename", "decrypting",
                                   "after-rename"])
def test_sigkill_at_each_step_is_reconciled_by_the_next_run(ws: Workspace, point: str) -> None:
    # Lines of defence: the version-named .part (resumed), _adopt_existing (a copy renamed but
    # not recorded), fetch.transfer.remove_leftovers (stale .rs-*.tmp plaintext and parts removed at the
    # start of a source), place_file's same-content rule (no .v2 duplicate after a re-archive),
    # and the ledger's one row per version.
    expected = {f"r{index}.xml": ws.put_report(f"r{index}.xml.pgp",
                                               f"<r{index}>{'x' * 300_000}</r{index}>".encode())
                for index in range(3)}
    assert killed_at(ws, point) == -signal.SIGKILL, "the fault injector fired"
    versions = 3
    if point == "decrypting":
        left = hidden_files(ws.output_dir)
        assert left and all(name.endswith(".tmp") for name in left), \
            "the killed run left a half-written plaintext behind"
        assert ws.fetch("--no-decrypt").exit_code == 0
        assert hidden_files(ws.output_dir) == [], "removed at the next start, decrypting or not"
    if point == "downloading":
        assert [name for name in hidden_files(ws.download_dir) if name.endswith(".part")]
        # the provider replaces r0 meanwhile: the killed part can never be resumed
        expected["r0.xml"] = ws.put_report("r0.xml.pgp", b"<r0 delivered again/>",
                                           age_days=0.5)
        versions = 4
    result = ws.fetch()
    assert result.exit_code == 0, result.stderr
    assert ws.outputs() == expected, "everything archived, once, under its own name"
    assert hidden_files(ws.download_dir) == [] and hidden_files(ws.output_dir) == []
    assert sorted(p.name for p in ws.download_dir.iterdir()) == sorted(
        f"{name}.pgp" for name in expected)
    with ws.ledger() as db:
        assert db.execute("SELECT COUNT(*) FROM remote_files").fetchone()[0] == versions
        for table in ("downloads", "archived"):
            assert db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 3, table
    assert integrity_ok(ws.state_dir)


# --- 15. disk full, for real ---------------------------------------------------------------------


def test_disk_full_during_download_is_7_and_nothing_is_half_written(ws: Workspace) -> None:
    # Line of defence: fetch.transfer._transfer turns ENOSPC into StorageError (exit 7, the source stops)
    # and deletes the partial .part; the ledger's transactions are untouched.
    big = random_plain(3 * 1024 * 1024)
    ws.put("big.xml", big)
    with tiny_filesystem(ws.root / "small") as small:
        ws.write_config(download_dir=str(small / "encrypted"))
        result = ws.fetch()
        assert result.exit_code == 7, result.stderr
        assert "disk full" in result.stderr
        entry = files_by_name(result)["big.xml"]
        assert entry["action"] == "failed" and entry["error"]["error"] == "StorageError"
        assert list((small / "encrypted").iterdir()) == [], "no part, no copy"
        assert not ws.output_dir.exists() or list(ws.output_dir.iterdir()) == []
    assert integrity_ok(ws.state_dir)


def test_gpg_stops_and_its_temp_is_deleted_when_the_disk_fills(
    pgp_identity: PgpIdentity, tmp_path: Path,
) -> None:
    # Line of defence: pgp._PlaintextSink records the write error and stops gpg; Gpg.decrypt
    # raises StorageError and deletes its own temp (fetch's clean-up is a second line).
    encrypted = tmp_path / "big.pgp"
    encrypted.write_bytes(pgp_identity.encrypt(os.urandom(3 * 1024 * 1024)))
    gpg = Gpg(binary="gpg", home=pgp_identity.home, passphrase=None)
    with tiny_filesystem(tmp_path / "small") as small:
        with pytest.raises(StorageError, match="disk full"):
            gpg.decrypt(encrypted, small / "out")
        assert list(small.iterdir()) == []


def test_disk_full_during_decryption_is_7_and_no_plaintext_is_kept(ws: Workspace) -> None:
    # Line of defence: pgp._PlaintextSink stops gpg on a write error; Gpg.decrypt raises
    # StorageError and deletes the temp; the encrypted copy stays for the next run.
    plaintext = os.urandom(3 * 1024 * 1024)
    ws.put_report("big.xml.pgp", plaintext)
    with tiny_filesystem(ws.root / "small") as small:
        ws.write_config(output_dir=str(small / "statements"))
        result = ws.fetch()
        assert result.exit_code == 7, result.stderr
        assert "disk full" in result.stderr
        assert files_by_name(result)["big.xml.pgp"]["action"] == "failed"
        assert list((small / "statements").iterdir()) == [], "no temp, no half report"
        assert (ws.download_dir / "big.xml.pgp").exists(), "the encrypted copy is kept"
    assert integrity_ok(ws.state_dir)
    ws.write_config()  # room again: the next run archives from the local copy
    again = ws.fetch()
    assert again.exit_code == 0, again.stderr
    assert again.result()["sources"][0]["bytes_transferred"] == 0
    assert ws.outputs() == {"big.xml": plaintext}


def _fill(folder: Path) -> None:
    """Write until the file system says it is full (ENOSPC), leaving 0 bytes free."""
    with contextlib.suppress(OSError), (folder / "filler").open("wb") as handle:
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()


def test_a_full_disk_under_state_dir_says_disk_full_and_names_the_folder(ws: Workspace) -> None:
    # Line of defence: RunLock turns the failed write of its holder file into a StorageError
    # (exit 7, "disk full", the folder named) instead of a traceback; nothing else is written.
    ws.put_report("r.xml.pgp", b"<r/>")
    with tiny_filesystem(ws.root / "small") as small:
        state = small / "state"
        state.mkdir(mode=0o700)
        ws.write_config()
        text = ws.config_path.read_text().replace(str(ws.state_dir), str(state))
        ws.config_path.write_text(text)
        _fill(small)
        result = ws.fetch()
        assert result.exit_code == 7, result.stderr
        assert "disk full" in result.stderr and str(state) in result.stderr
        assert "Traceback" not in result.stderr and "damaged" not in result.stderr
        assert not ws.output_dir.exists() or list(ws.output_dir.iterdir()) == []
