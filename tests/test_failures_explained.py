"""Issue 14: failures explained right, each produced for real: a damaged ledger page (bytes of a
real SQLite file overwritten), a full disk (a real tmpfs, root only), a read-only GnuPG home (a
real read-only mount), a hung SSH server (a real socket that never speaks), a TCP reset. Each
test asserts the exit code, the key or file named, and the remedy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import socket
import sqlite3
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from reportsync.errors import KeyProblemError, LedgerDamagedError, StorageError
from reportsync.ledger import LEDGER_FILE, Ledger
from reportsync.pgp import DecryptionPool, Gpg
from reportsync.vocab import Action
from tests.fixtures_memory import MemoryWorkspace
from tests.servers import LocalServer
from tests.support import (
    CliResult,
    PgpIdentity,
    random_plain,
    run_cli,
    run_cli_inprocess,
    write_config,
)
from tests.test_fetch_e2e import Workspace
from tests.test_hardening_support import tiny_filesystem

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




# --- a full disk under state_dir -----------------------------------------------------------------


def fill_leaving(folder: Path, free: int) -> None:
    """Fill the file system of ``folder`` up (ENOSPC), then give back ``free`` bytes."""
    filler = folder / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as handle:
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()
    os.truncate(filler, max(0, filler.stat().st_size - free))


class SmallDiskWorkspace(MemoryWorkspace):
    """The state dir (and with ``everything``, the download and output folders) on the tmpfs
    at ``root/small``."""

    everything = False

    @property
    def state_dir(self) -> Path:
        return self.root / "small" / "state"

    @property
    def download_dir(self) -> Path:
        return self.root / ("small" if self.everything else "") / "encrypted"

    @property
    def output_dir(self) -> Path:
        return self.root / ("small" if self.everything else "") / "statements"


def assert_disk_full(message: str, remedy: str, state_dir: Path) -> None:
    assert f"disk full while writing {state_dir / LEDGER_FILE}" in message
    assert "Free space on that disk" in remedy
    assert DAMAGED not in message and "move" not in remedy.lower(), "the ledger is not blamed"


@pytest.mark.parametrize("free_kib", [4, 16, 64])
def test_a_little_free_space_under_state_dir_is_disk_full_not_a_damaged_ledger(
        tmp_path: Path, free_kib: int) -> None:
    # with a few KiB free the lock's holder file fits, but the new ledger's WAL and -shm do not:
    # SQLite says SQLITE_FULL (4, 64 KiB) or, for an -shm it cannot grow, a plain disk I/O
    # error (16 KiB); both are the full disk, never "damaged ... move it aside"
    mem = SmallDiskWorkspace(tmp_path)
    with tiny_filesystem(tmp_path / "small") as small:
        mem.state_dir.mkdir(mode=0o700)
        config = cli_config(mem)
        fill_leaving(small, free_kib * 1024)
        result = cli(config, "fetch")
        assert result.exit_code == 7, result.stderr
        assert "Traceback" not in result.stderr
        assert_disk_full(result.stderr, result.stderr, mem.state_dir)
        error = cli(config, "--json", "status").json()["error"]
        assert error["error"] == "StorageError" and error["path"] == str(mem.state_dir / LEDGER_FILE)
        assert_disk_full(error["message"], error["remedy"], mem.state_dir)


def test_a_disk_that_fills_during_the_run_stops_the_source_as_disk_full(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # the reports fill the disk the ledger is on: the next ledger write fails (SQLITE_FULL, once
    # a sqlite3.OperationalError per file, then a traceback from record_source_run); now the
    # source stops at the first write the ledger cannot make, and the run ends disk full
    mem = SmallDiskWorkspace(tmp_path)
    mem.everything = True
    for index in range(60):
        mem.put(f"r{index:02d}.xml", random_plain(15_000))
    with tiny_filesystem(tmp_path / "small"):
        try:  # the source's error, or (when the run's own record cannot be written) the run's
            stopped: StorageError | None = mem.fetch_run().sources[0].error  # type: ignore[assignment]
        except StorageError as raised:
            stopped = raised
        assert isinstance(stopped, StorageError) and stopped.exit_code == 7
        assert_disk_full(stopped.message, stopped.remedy, mem.state_dir)
        assert "unexpected" not in caplog.text, "no file failed as a defect of reportsync"
        stopped_at = len(mem.downloads())
        assert stopped_at < 60, "the source stopped once the ledger could not record"
        with Ledger(mem.state_dir / LEDGER_FILE) as ledger:  # what was recorded is intact
            ledger.require_intact(thorough=True)
            recorded = ledger.count("downloads") + ledger.count("archived")
        assert 0 < recorded < 120, "the batches committed before the disk filled stay recorded"


# --- a read-only GnuPG home ----------------------------------------------------------------------


@contextlib.contextmanager
def read_only_copy(home: Path, mount_point: Path) -> Iterator[Path]:
    """A real read-only file system holding a copy of the GnuPG ``home`` (a tmpfs remounted
    read-only: root ignores mode bits, a read-only mount it cannot)."""
    with tiny_filesystem(mount_point, "8m") as folder:
        subprocess.run(["cp", "-a", f"{home}/.", str(folder)], check=True)
        for leftover in folder.glob("S.*"):
            leftover.unlink()
        folder.chmod(0o700)
        remount_read_only(folder)
        yield folder


def test_a_read_only_gnupg_home_is_a_key_problem_with_gpgs_own_words(
        mem: MemoryWorkspace, pgp_identity: PgpIdentity) -> None:
    # gpg cannot create its agent's socket and lock files, reaches no secret key and says
    # NO_SECKEY for every file: once "encrypted to a key this GnuPG home does not hold", exit 1
    for index in range(3):
        mem.put(f"r{index}.xml.pgp", pgp_identity.encrypt(f"<r{index}/>".encode()))
    with read_only_copy(pgp_identity.home, mem.root / "gnupg") as home:
        mem.settings["gnupg_home"] = str(home)
        result = mem.fetch()
    assert result.exit_code == 6, result.error
    error = result.error
    assert isinstance(error, KeyProblemError)
    assert "gpg cannot use its agent" in error.message
    assert "can't connect to the agent: Read-only file system" in error.message, "gpg's words"
    assert f"Make the GnuPG home {home} writable" in error.remedy
    assert "settings.gnupg_home" in error.remedy
    failed = [outcome for outcome in result.files if outcome.action == Action.FAILED]
    assert len(failed) == 3
    assert all(isinstance(outcome.error, KeyProblemError) for outcome in failed)
    assert not any("does not hold" in (outcome.error.message if outcome.error else "")
                   for outcome in failed)
    assert sorted(path.name for path in mem.download_dir.iterdir()) == [
        "r0.xml.pgp", "r1.xml.pgp", "r2.xml.pgp"], "the encrypted copies are kept"


# --- an unreadable passphrase file: each file named, every byte counted --------------------------


def test_an_unreadable_passphrase_file_names_each_file_and_counts_every_byte(
        mem: MemoryWorkspace, pgp_identity: PgpIdentity) -> None:
    # once one error object was raised for every file, and the first file's name, filled in
    # by with_context, was in every line (and --json error.path); the bytes of the files that
    # came over and then could not be decrypted were not counted
    sizes = {}
    for index in range(3):
        data = pgp_identity.encrypt(random_plain(200_000 + index))
        mem.put(f"r{index}.xml.pgp", data)
        sizes[f"r{index}.xml.pgp"] = len(data)
    missing = mem.root / "secrets" / "gpg.pass"
    mem.settings.update(gnupg_home=str(pgp_identity.home), gpg_passphrase_file=str(missing))
    result = mem.fetch()
    assert result.exit_code == 6, result.error
    failed = {outcome.name: outcome for outcome in result.files}
    assert sorted(failed) == sorted(sizes)
    for name, outcome in failed.items():
        assert outcome.action == Action.FAILED and outcome.error is not None
        assert outcome.error.path == name, "each file's error names its own file"
        assert str(missing) in outcome.error.message and "settings.gpg_passphrase_file" in \
            outcome.error.message
        assert outcome.transferred == sizes[name]
    assert len({id(outcome.error) for outcome in failed.values()}) == 3
    assert result.bytes_transferred == sum(sizes.values()), "every transferred byte"
    assert result.error is not None and result.error.path is None, "the source's own error"
    assert "settings.gpg_passphrase_file" in result.error.describe()


def test_a_read_only_gnupg_home_is_the_same_key_problem_in_a_decryption_pool(
        tmp_path: Path, pgp_identity: PgpIdentity) -> None:
    # gpg --decrypt-files prints the agent failure inside each file's status block: the pool
    # judges it as Gpg.decrypt does
    files = []
    for index in range(3):
        encrypted = tmp_path / f"r{index}.pgp"
        encrypted.write_bytes(pgp_identity.encrypt(f"<r{index}/>".encode()))
        files.append(encrypted)
    out = tmp_path / "out"
    out.mkdir()
    with read_only_copy(pgp_identity.home, tmp_path / "gnupg") as home:
        gpg = Gpg(binary="gpg", home=home, passphrase=None, create_home=False)
        with DecryptionPool(gpg, workers=1) as pool:
            futures = pool.submit_many([(path, out / f".rs-{path.stem}.tmp", "")
                                        for path in files])
            errors = [future.exception(timeout=60) for future in futures]
    for error in errors:
        assert isinstance(error, KeyProblemError), error
        assert "can't connect to the agent" in error.message
        assert str(home) in error.remedy
    assert list(out.iterdir()) == [], "nothing half-written is kept"



# --- a hung SSH server ---------------------------------------------------------------------------


class HungServer:
    """A real TCP server on 127.0.0.1 that accepts every connection and never sends a byte
    (an sshd at MaxStartups, a load balancer with nothing behind it). ``accepted`` counts."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self._listener.accept()
                self._held.append(connection)
                self.accepted += 1

    def close(self) -> None:
        self._listener.close()
        for connection in self._held:
            connection.close()


@pytest.fixture
def hung_server() -> Iterator[HungServer]:
    server = HungServer()
    yield server
    server.close()


HUNG_TIMEOUT = 3


def hung_config(mem: MemoryWorkspace, server: HungServer, **source: object) -> Path:
    (mem.root / "known_hosts").write_text("")
    return cli_config(mem, protocol="sftp", port=server.port, password_env="RS_HUNG_PW",
                      known_hosts=str(mem.root / "known_hosts"), timeout=HUNG_TIMEOUT, **source)


SILENT = "accepted the connection but never spoke SSH"


def test_doctor_names_a_server_that_never_speaks_ssh_within_the_timeout(
        mem: MemoryWorkspace, hung_server: HungServer) -> None:
    # once: 40 s (a 10 s look at the first words, then the whole timeout again) and a raw
    # "SSHException: Error reading SSH protocol banner" or "no SSH handshake within"
    config = hung_config(mem, hung_server)
    result = run_cli_inprocess("--config", str(config), "--json", "doctor", "--source", "mem",
                               env={"RS_HUNG_PW": "x"})
    banner = next(finding for finding in json.loads(result.stdout)["result"]["findings"]
                  if finding["scope"] == "mem" and finding["check"] == "banner")
    assert banner["status"] == "FAIL" and banner["id"] == "banner.silent"
    assert f"127.0.0.1:{hung_server.port} {SILENT} (no identification line within " \
        f"{HUNG_TIMEOUT}s)" in banner["finding"]
    assert "SSHException" not in banner["finding"]
    assert "Check `port`" in banner["remedy"] and "stuck or overloaded" in banner["remedy"]
    # the whole wait is the source's timeout (the old look and handshake took it twice)
    assert banner["seconds"] <= HUNG_TIMEOUT + 1, banner


def test_fetch_from_a_server_that_never_speaks_ssh_is_bounded_by_timeout_and_retries(
        mem: MemoryWorkspace, hung_server: HungServer) -> None:
    config = hung_config(mem, hung_server, retries=1)
    result = run_cli_inprocess("--config", str(config), "--json", "fetch",
                               env={"RS_HUNG_PW": "x"})
    assert result.exit_code == 3, result.stderr
    error = result.json()["result"]["sources"][0]["error"]
    assert error["error"] == "NetworkError" and SILENT in error["message"]
    assert "stuck or overloaded" in error["remedy"]
    assert hung_server.accepted == 2, "one attempt and one retry, each ending at the timeout"
    assert result.json()["result"]["seconds"] <= 2 * (HUNG_TIMEOUT + 1) + 1, \
        "each attempt bounded by the timeout (plus the 1 s backoff)"


# --- a TCP reset on SFTP -------------------------------------------------------------------------


class ResetProxy:
    """A real TCP relay on 127.0.0.1 to ``upstream`` that, once more than ``reset_after``
    bytes came from the server on a connection, cuts it with a TCP reset towards the client
    (SO_LINGER 0, then close: a RST, as a middlebox or the server's limits would)."""

    def __init__(self, upstream: tuple[str, int], reset_after: int) -> None:
        self.upstream = upstream
        self.reset_after = reset_after
        self.resets = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        # one thread per connection: a socket another thread is blocked on would not send
        # its RST until that thread lets go of it
        server = socket.create_connection(self.upstream)
        relayed = 0
        with contextlib.suppress(OSError), client, server:
            while True:
                ready, _, _ = select.select([client, server], [], [])
                if client in ready:
                    data = client.recv(65536)
                    if not data:
                        return
                    server.sendall(data)
                if server in ready:
                    data = server.recv(65536)
                    if not data:
                        return
                    client.sendall(data)
                    relayed += len(data)
                    if relayed > self.reset_after:
                        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                          struct.pack("ii", 1, 0))
                        self.resets += 1
                        return

    def close(self) -> None:
        self._listener.close()


RESET = "was reset (a TCP reset: cut by the server or by something on the way, not a timeout)"


# Both cut points under load once read "connection lost": the kernel reports a reset to the
# first call that meets it, and when that was a send of the pipelined requests paramiko turned
# it into EOFError; transports.network.ResetWatchingSocket remembers it for the transport.
@pytest.mark.parametrize("engine", ["paramiko", "openssh"])
@pytest.mark.parametrize("reset_after", [400_000, 6_000], ids=["mid-download", "early"])
def test_a_tcp_reset_on_sftp_is_named_a_reset_not_a_timeout(
        tmp_path: Path, pgp_identity: PgpIdentity, sftp_server: LocalServer,
        reset_after: int, engine: str) -> None:
    # once "connection lost (SSHException: Server connection dropped ...)" or "no answer within
    # 10s", as if the network were slow; FTP names a reset a reset (transports/ftp), SFTP now too
    proxy = ResetProxy((sftp_server.host, sftp_server.port), reset_after)
    try:
        ws = Workspace(tmp_path, pgp_identity, sftp_server)
        table = {key: value for key, value in sftp_server.source.items() if key != "known_hosts"}
        ws.write_config({**table, "port": proxy.port, "ssh_engine": engine,
                         "host_key_fingerprint": sftp_server.extra["host_key_fingerprint"]},
                        timeout=10)
        ws.put("big.xml", random_plain(3_000_000))
        result = ws.fetch()
    finally:
        proxy.close()
    assert proxy.resets >= 1, "the proxy really cut the connection"
    source = result.result()["sources"][0]
    error = source["error"] or source["files"][0]["error"]
    assert error["error"] == "NetworkError" and error["retryable"]
    assert "no answer" not in error["message"], "a reset is not a timeout"
    if engine == "openssh" and RESET not in error["message"]:
        # ssh names a reset only when it says so on stderr; it sometimes ends after one without
        # a word (docs/security.md, "The OpenSSH engine"): then it is a connection lost
        assert "connection lost" in error["message"]
        return
    assert f"the connection to 127.0.0.1:{proxy.port} {RESET}" in error["message"]
    assert "SSHException" not in error["message"]
    assert "a longer timeout does not fix" in error["remedy"]


# --- config keys named: state_dir, gnupg_home, known_hosts, gpg_binary ---------------------------


@contextlib.contextmanager
def read_only_folder(mount_point: Path) -> Iterator[Path]:
    """An empty, real read-only file system at ``mount_point`` (root ignores mode bits)."""
    with tiny_filesystem(mount_point) as folder:
        remount_read_only(folder)
        yield folder


def remount_read_only(folder: Path) -> None:
    """Remount the tiny file system at ``folder`` read-only; the test is skipped where that is
    not permitted."""
    remounted = subprocess.run(["mount", "-o", "remount,ro", str(folder)],
                               capture_output=True, text=True, check=False)
    if remounted.returncode != 0:
        pytest.skip(f"remounting read-only is not permitted here: {remounted.stderr.strip()}")


def test_a_state_dir_that_cannot_be_created_names_settings_state_dir(
        tmp_path: Path) -> None:
    mem = SmallDiskWorkspace(tmp_path)
    with read_only_folder(tmp_path / "small"):
        config = cli_config(mem)
        for command in ("fetch", "status"):
            result = cli(config, command)
            assert result.exit_code == 7, result.stderr
            assert f"settings.state_dir: {mem.state_dir} is on a read-only file system" \
                in result.stderr, command
            assert "change settings.state_dir to a writable folder" in result.stderr
            assert "Traceback" not in result.stderr


def test_a_gnupg_home_that_cannot_be_created_names_settings_gnupg_home(
        mem: MemoryWorkspace, pgp_identity: PgpIdentity) -> None:
    mem.put("r.xml.pgp", pgp_identity.encrypt(b"<r/>"))
    with read_only_folder(mem.root / "ro") as folder:
        mem.settings["gnupg_home"] = str(folder / "gnupg")
        result = mem.fetch()
    assert result.exit_code == 6, result.error
    assert result.error is not None
    assert f"settings.gnupg_home: {folder / 'gnupg'} is on a read-only file system" in \
        result.error.message
    assert "change settings.gnupg_home" in result.error.remedy


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_an_unreadable_known_hosts_is_named_with_its_source(mem: MemoryWorkspace,
                                                            kind: str) -> None:
    # a FIFO once blocked fetch and doctor forever (read_text waits for a writer)
    known_hosts = mem.root / "known_hosts"
    if kind == "folder":
        known_hosts.mkdir()
    else:
        os.mkfifo(known_hosts)
    config = cli_config(mem, protocol="sftp", known_hosts=str(known_hosts),
                        password_env="RS_KH_PW")
    result = run_cli("--config", str(config), "fetch", env={"RS_KH_PW": "x"}, timeout=60)
    assert result.exit_code == 2, result.stderr
    assert f"sources.mem.known_hosts: cannot read {known_hosts}: " in result.stderr
    assert "not a regular file" in result.stderr
    assert "point sources.mem.known_hosts at" in result.stderr


def test_a_gpg_binary_that_is_not_executable_is_said_so_not_off_the_path(
        mem: MemoryWorkspace, pgp_identity: PgpIdentity) -> None:
    not_executable = mem.root / "bin" / "gpg"
    not_executable.parent.mkdir()
    not_executable.write_text("#!/bin/sh\n")
    not_executable.chmod(0o644)
    mem.put("r.xml.pgp", pgp_identity.encrypt(b"<r/>"))
    mem.settings.update(gnupg_home=str(pgp_identity.home), gpg_binary=str(not_executable))
    result = mem.fetch()
    assert result.exit_code == 6
    said = f"settings.gpg_binary names {not_executable}, which is not executable (mode 0644)"
    assert result.error is not None and said in result.error.message
    assert "not on PATH" not in result.error.message
    assert f"chmod +x {not_executable}" in result.error.remedy
    config = cli_config(mem)
    text = config.read_text().replace("[settings]", f'[settings]\ngpg_binary = "{not_executable}"')
    config.write_text(text)
    doctor = run_cli_inprocess("--config", str(config), "--json", "doctor")
    gpg = next(finding for finding in json.loads(doctor.stdout)["result"]["findings"]
               if finding["check"] == "gpg")
    assert gpg["status"] == "FAIL" and gpg["id"] == "gpg.not-found" and said in gpg["finding"]
