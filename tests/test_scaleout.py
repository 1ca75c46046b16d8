"""Scale-out (issue 16): several hosts fetching one config through a shared PostgreSQL ledger.

Real components: the PostgreSQL fixture (tests/servers/postgres.py), an OpenSSH sshd whose
``sftp-server`` logs each file it opens and closes (so the transfers of every file are counted on
the server's side), the real gpg, and ``reportsync fetch`` processes. A "host" is a state dir and
a config of its own; the hosts share the ledger database and the archive's folders, as the
Scale-out page says they must.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from reportsync.config import Secret
from reportsync.fsutil import CRASH_ENV
from reportsync.ledger import SCHEMA_VERSION, Ledger, open_postgres_ledger
from reportsync.lock import RunLock
from tests.fixtures_sftp import _fresh_folder
from tests.servers import LocalServer, free_port
from tests.servers.http_receiver import HttpReceiver
from tests.servers.postgres import PostgresDatabase
from tests.servers.sshd import find_sftp_server, sshd_available, start_sshd
from tests.support import REPO_ROOT, CliResult, PgpIdentity, run_cli_inprocess, write_config

PASSWORD_ENV = "RS_TEST_LEDGER_PASSWORD"
DAY = 86400
# "forced close": a handle the session ended with (the SFTP pipeline does not wait for a
# download's CLOSE, so the session's end may be what closes it; sftp-server logs it so)
CLOSE_LINE = re.compile(r'^(?:forced )?close "(?P<path>[^"]+)" bytes read (?P<read>\d+) ')


@pytest.fixture(scope="module")
def logged_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """An sshd whose SFTP server logs every open and close (its ``sftp_log``)."""
    if not sshd_available() or find_sftp_server() is None:
        pytest.skip("OpenSSH sshd and sftp-server are needed (apt-get install openssh-server)")
    server = start_sshd(tmp_path_factory.mktemp("sshd-logged"), sftp_log=True)
    yield server
    server.stop()


@dataclass
class Hosts:
    """Hosts sharing one ledger database and one archive, fetching the same sources."""

    root: Path
    identity: PgpIdentity
    server: LocalServer  # this test's own folder on the logged sshd
    database: PostgresDatabase
    sources: tuple[str, ...] = ("a", "b", "c")
    expected: dict[str, dict[str, bytes]] = field(default_factory=dict)  # source: name: plain

    def remote(self, source: str) -> Path:
        return self.server.remote_root / source

    def download_dir(self, source: str) -> Path:
        return self.root / "shared" / source / "encrypted"

    def output_dir(self, source: str) -> Path:
        return self.root / "shared" / source / "statements"

    def state_dir(self, host: str) -> Path:
        return self.root / host / "state"

    def config(self, host: str, *, ledger_url: str | None = None, shared: bool = True,
               notify: dict[str, Any] | None = None) -> Path:
        """The host's config; ``shared`` False: the embedded SQLite ledger in its state dir."""
        sources = {}
        for name in self.sources:
            table = dict(self.server.source)
            table.update({"remote_dir": f"{self.server.source['remote_dir']}/{name}",
                          "download_dir": str(self.download_dir(name)),
                          "output_dir": str(self.output_dir(name)),
                          "include": ["*.pgp"], "timeout": 10, "retries": 0})
            sources[name] = table
        settings = {"state_dir": str(self.state_dir(host)),
                    "gnupg_home": str(self.identity.home)}
        if shared:
            settings.update({"ledger_url": ledger_url or self.database.url(),
                             "ledger_password_env": PASSWORD_ENV})
        (self.root / host).mkdir(parents=True, exist_ok=True)
        document: dict[str, Any] = {"settings": settings, "sources": sources}
        if notify is not None:
            document["notify"] = notify
        return write_config(self.root / host / "config.toml", document)

    def env(self, password: str | None = None) -> dict[str, str]:
        # no ~/.pgpass of whoever runs the tests may stand in for the configured password
        return {PASSWORD_ENV: password or self.database.password,
                "PGPASSFILE": "/nonexistent/pgpass"}

    def put_reports(self, per_source: int, size: int = 200_000) -> None:
        stamp = time.time() - DAY
        for source in self.sources:
            self.remote(source).mkdir(parents=True, exist_ok=True)
            for index in range(per_source):
                plain = f"<{source}{index}>".encode() + os.urandom(size)
                path = self.remote(source) / f"{source}-r{index}.xml.pgp"
                path.write_bytes(self.identity.encrypt(plain))
                os.utime(path, (stamp, stamp))
                self.expected.setdefault(source, {})[f"{source}-r{index}.xml"] = plain

    def fetch(self, host: str, *args: str) -> CliResult:
        return run_cli_inprocess("--config", str(self.config(host)), "--json", "fetch", *args,
                                 env=self.env())

    def fetch_process(self, host: str, *args: str, crash_at: str | None = None
                      ) -> subprocess.Popen[str]:
        env = {**os.environ, **self.env()}
        if crash_at is not None:
            env[CRASH_ENV] = crash_at
        return subprocess.Popen(
            [sys.executable, "-m", "reportsync", "--config", str(self.config(host)), "--json",
             "fetch", *args], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)

    def transfers(self) -> collections.Counter[str]:
        """How often the server sent each of this test's files (by name): closes after reading."""
        log: Path = self.server.extra["sftp_log"]
        prefix = str(self.server.remote_root) + "/"
        counted: collections.Counter[str] = collections.Counter()
        for line in log.read_text(errors="replace").splitlines():
            match = CLOSE_LINE.match(line)
            if match and match["path"].startswith(prefix) and int(match["read"]) > 0:
                counted[Path(match["path"]).name] += 1
        return counted

    def outputs(self, source: str) -> dict[str, bytes]:
        folder = self.output_dir(source)
        return {path.name: path.read_bytes() for path in sorted(folder.iterdir())} \
            if folder.exists() else {}

    def hidden(self) -> list[str]:
        return [path.name for path in (self.root / "shared").rglob(".*")]

    def ledger(self) -> Ledger:
        ledger = open_postgres_ledger(self.database.url(),
                                      password=Secret(self.database.password))
        assert ledger is not None
        return ledger

    def rows(self, table: str) -> int:
        with self.database.connect() as db:
            row = db.execute(f"SELECT count(*) FROM {table}").fetchone()
            assert row is not None
            return int(row[0])


@pytest.fixture
def hosts(tmp_path: Path, pgp_identity: PgpIdentity, logged_sshd: LocalServer,
          postgres_db: PostgresDatabase) -> Hosts:
    return Hosts(tmp_path, pgp_identity, _fresh_folder(logged_sshd), postgres_db)


def sources_of(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {source["name"]: source for source in document["result"]["sources"]}


def assert_each_file_archived_once(hosts: Hosts) -> None:
    """On disk: every report once, byte-identical, nothing else (no .v2, no temp); in the ledger:
    one version, one download and one archive row per file."""
    for source in hosts.sources:
        assert hosts.outputs(source) == hosts.expected[source], source
        assert sorted(p.name for p in hosts.download_dir(source).iterdir()) == sorted(
            f"{name}.pgp" for name in hosts.expected[source]), source
    assert hosts.hidden() == [], "no part, no temp left"
    files = sum(len(names) for names in hosts.expected.values())
    for table in ("remote_files", "downloads", "archived"):
        assert hosts.rows(table) == files, table


def wait_until_free(ledger: Ledger, sources: tuple[str, ...], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while any(ledger.lock_holder(source) is not None for source in sources):
        assert time.monotonic() < deadline, "a killed host's locks outlived its connection"
        time.sleep(0.05)


# --- two hosts at the same moment ----------------------------------------------------------------


def test_two_hosts_started_together_transfer_and_archive_each_file_once(hosts: Hosts) -> None:
    # big enough that both hosts are listing and transferring while the other one is
    hosts.put_reports(per_source=4, size=1_500_000)
    first, second = hosts.fetch_process("host-a"), hosts.fetch_process("host-b")
    outputs = [process.communicate(timeout=180) for process in (first, second)]
    codes = [first.returncode, second.returncode]
    for code, (_, stderr) in zip(codes, outputs, strict=True):
        assert code in (0, 75), stderr
    assert 0 in codes, "at least one host could process a source"

    transfers = hosts.transfers()
    names = [f"{name}.pgp" for source in hosts.sources for name in hosts.expected[source]]
    assert {name: transfers[name] for name in names} == {name: 1 for name in names}, \
        "the server sent each file once, to one of the hosts"
    assert_each_file_archived_once(hosts)
    documents = [json.loads(stdout) for stdout, _ in outputs]
    archived = collections.Counter(
        entry["name"] for document in documents for source in sources_of(document).values()
        for entry in source["files"] if entry["action"] == "archived")
    assert sorted(archived) == sorted(names) and set(archived.values()) == {1}
    pids = {0: first.pid, 1: second.pid}
    for index, document in enumerate(documents):
        for source in sources_of(document).values():
            if source["holder"] is not None:  # skipped: the other host held it then
                assert source["holder"]["pid"] == pids[1 - index], source
                assert source["counts"]["archived"] == 0 and source["files"] == []

    # each host's next run finds everything done, and transfers nothing
    again = hosts.fetch("host-b")
    assert again.exit_code == 0, again.stderr
    assert all(source["counts"]["skipped"] == 4 and source["bytes_transferred"] == 0
               for source in sources_of(again.json()).values())
    assert hosts.transfers() == transfers


# --- a source another host holds --------------------------------------------------------------------


def test_a_source_another_host_holds_is_skipped_naming_it_and_alone_exits_75(
        hosts: Hosts) -> None:
    hosts.sources = ("a", "b")
    hosts.put_reports(per_source=2, size=1000)
    other = hosts.ledger()  # "another host": a connection of its own
    lock = other.try_lock_source("a", command="fetch")
    assert lock is not None
    me = f"pid {os.getpid()} on {socket.gethostname()}"
    try:
        result = hosts.fetch("host-b")
        assert result.exit_code == 0, result.stderr
        assert f"skipped: source 'a': another run holds its lock: {me}" in result.stderr
        by_name = sources_of(result.json())
        assert by_name["a"]["holder"]["pid"] == os.getpid()
        assert by_name["a"]["holder"]["host"] == socket.gethostname()
        assert by_name["a"]["files"] == [] and by_name["a"]["exit_code"] == 0
        assert by_name["b"]["holder"] is None and by_name["b"]["counts"]["archived"] == 2
        assert hosts.transfers() == {"b-r0.xml.pgp": 1, "b-r1.xml.pgp": 1}, \
            "the held source's server was not even connected to"

        alone = hosts.fetch("host-b", "--source", "a")
        assert alone.exit_code == 75, alone.stderr
        assert me in alone.stderr
        assert alone.json()["exit_code"] == 75
        text = run_cli_inprocess("--config", str(hosts.config("host-b")), "fetch", "--source",
                                 "a", env=hosts.env())
        assert text.exit_code == 75
        assert "a: skipped: another run holds its lock" in text.stdout
        retention = run_cli_inprocess("--config", str(hosts.config("host-b")), "--json",
                                      "retention", "--source", "a", env=hosts.env())
        assert retention.exit_code == 75, retention.stderr
        assert me in retention.stderr
        assert retention.result()["sources"][0]["holder"]["pid"] == os.getpid()
    finally:
        lock.release()
    # released: the next run takes it, and its own lock is gone when it ends
    after = hosts.fetch("host-b", "--source", "a")
    assert after.exit_code == 0, after.stderr
    assert sources_of(after.json())["a"]["counts"]["archived"] == 2
    assert other.lock_holder("a") is None, "released after the source"
    other.close()
    assert_each_file_archived_once(hosts)


def test_the_embedded_ledger_keeps_its_run_lock(hosts: Hosts) -> None:
    """Without ledger_url nothing changes: a second run on one state dir stops at the state
    dir's lock, exit 75, naming its holder; the run uses the state dir's SQLite ledger."""
    hosts.sources = ("a",)
    hosts.put_reports(per_source=1, size=100)
    config = hosts.config("solo", shared=False)
    with RunLock(hosts.state_dir("solo"), "fetch"):
        held = run_cli_inprocess("--config", str(config), "fetch")
    assert held.exit_code == 75
    assert "another reportsync run holds the lock in" in held.stderr
    assert f"pid {os.getpid()} on" in held.stderr
    done = run_cli_inprocess("--config", str(config), "fetch")
    assert done.exit_code == 0, done.stderr
    assert (hosts.state_dir("solo") / "ledger.sqlite3").exists()
    with hosts.database.connect() as db:
        assert db.execute("SELECT to_regclass('reportsync_schema')").fetchone() == (None,), \
            "the database of the other tests is not touched"


def test_a_run_whose_every_source_another_host_holds_sends_nothing(
        hosts: Hosts, http_receiver: HttpReceiver) -> None:
    """Like the single machine's locked run (exit 75): the holder's run is the one monitored, so
    neither a healthchecks ping (not even /start) nor the metrics file; a run that could process
    a source pings as usual."""
    hosts.sources = ("a", "b")
    hosts.put_reports(per_source=1, size=100)
    metrics = hosts.root / "host-b" / "reportsync.prom"
    config = hosts.config("host-b", notify={"healthchecks_url_env": "RS_HC",
                                            "metrics_file": str(metrics)})
    check = http_receiver.ping_url()
    env = {**hosts.env(), "RS_HC": check}
    with hosts.ledger() as other:
        locks = [other.try_lock_source(name, command="fetch") for name in hosts.sources]
        assert all(lock is not None for lock in locks)
        held = run_cli_inprocess("--config", str(config), "fetch", env=env)
        assert held.exit_code == 75, held.stderr
        assert http_receiver.requests == [], "nothing sent"
        assert not metrics.exists()
        locks[0].release()  # type: ignore[union-attr]
        half = run_cli_inprocess("--config", str(config), "fetch", env=env)
    assert half.exit_code == 0, half.stderr
    assert "skipped: source 'b'" in half.stderr
    assert http_receiver.ping_events(check) == ["start", "success"]
    assert metrics.exists()


# --- a host killed mid-run --------------------------------------------------------------------------


@pytest.mark.parametrize("point", ["downloading", "after-download-rename", "after-rename"])
def test_a_host_killed_mid_run_leaves_nothing_the_other_does_not_finish(
        hosts: Hosts, point: str) -> None:
    hosts.sources = ("a", "b")
    hosts.put_reports(per_source=3, size=300_000)
    killed = hosts.fetch_process("host-a", crash_at=point)
    _, stderr = killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL, stderr
    with hosts.ledger() as ledger:
        wait_until_free(ledger, hosts.sources)
        lock = ledger.try_lock_source("a")
        assert lock is not None, "the dead host's lock went with its connection"
        lock.release()
    result = hosts.fetch("host-b")
    assert result.exit_code == 0, result.stderr
    assert all(source["holder"] is None for source in sources_of(result.json()).values())
    assert_each_file_archived_once(hosts)
    again = hosts.fetch("host-a")
    assert again.exit_code == 0, again.stderr
    assert all(source["bytes_transferred"] == 0 and source["counts"]["archived"] == 0
               for source in sources_of(again.json()).values())


# --- doctor's ledger checks ---------------------------------------------------------------------------


def doctor(hosts: Hosts, config: Path, password: str | None = None
           ) -> tuple[int, list[dict[str, Any]], str]:
    result = run_cli_inprocess("--config", str(config), "--json", "doctor",
                               env=hosts.env(password))
    assert result.stdout, result.stderr
    return result.exit_code, result.json()["result"]["findings"], result.stdout + result.stderr


def finding(findings: list[dict[str, Any]], scope: str, check: str) -> dict[str, Any]:
    matches = [f for f in findings if f["scope"] == scope and f["check"] == check]
    assert matches, f"no {scope}/{check} finding in {findings}"
    return matches[0]


def test_doctor_names_an_unreachable_ledger_by_host_and_port(hosts: Hosts) -> None:
    port = free_port()  # nobody listens there
    config = hosts.config("host-a", ledger_url=f"postgresql://reportsync@127.0.0.1:{port}/rs")
    code, findings, output = doctor(hosts, config, "not-this-secret-7")
    ledger = finding(findings, "local", "ledger")
    assert ledger["status"] == "FAIL" and ledger["id"] == "ledger.unreachable", ledger
    assert f"127.0.0.1:{port}" in ledger["finding"]
    assert code == 1
    assert "not-this-secret-7" not in output


def test_doctor_says_the_ledger_refused_the_login_without_the_password(hosts: Hosts) -> None:
    wrong = "Wrong-ledger-Pw-93"
    code, findings, output = doctor(hosts, hosts.config("host-a"), wrong)
    ledger = finding(findings, "local", "ledger")
    assert ledger["status"] == "FAIL" and ledger["id"] == "ledger.auth-refused", ledger
    assert hosts.database.user in ledger["finding"] and "refused the login" in ledger["finding"]
    assert code == 1
    assert wrong not in output and hosts.database.password not in output
    assert finding(findings, "a", "archive visible")["status"] == "SKIPPED"


def test_doctor_names_both_versions_of_a_newer_ledger_schema(hosts: Hosts) -> None:
    hosts.ledger().close()
    with hosts.database.connect(autocommit=True) as db:
        db.execute("UPDATE reportsync_schema SET version = %s", (SCHEMA_VERSION + 1,))
    _, findings, _ = doctor(hosts, hosts.config("host-a"))
    ledger = finding(findings, "local", "ledger")
    assert ledger["status"] == "FAIL" and ledger["id"] == "ledger.schema-newer", ledger
    assert f"schema {SCHEMA_VERSION + 1}" in ledger["finding"]
    assert f"reads schema {SCHEMA_VERSION}" in ledger["finding"]


def test_doctor_warns_when_an_archived_path_is_not_visible_from_this_host(hosts: Hosts) -> None:
    hosts.sources = ("a",)
    hosts.put_reports(per_source=2, size=100)
    assert hosts.fetch("host-a").exit_code == 0
    _, findings, output = doctor(hosts, hosts.config("host-b"))
    ledger = finding(findings, "local", "ledger")
    assert ledger["status"] == "PASS" and ledger["id"] == "ledger.shared-ok", ledger
    assert "2 file version(s) recorded" in ledger["finding"]
    assert hosts.database.password not in output
    visible = finding(findings, "a", "archive visible")
    assert visible["status"] == "PASS" and visible["id"] == "archive.visible", visible
    bundle = hosts.root / "bundle.zip"
    bundled = run_cli_inprocess("--config", str(hosts.config("host-b")), "doctor", "--bundle",
                                str(bundle), env=hosts.env())
    assert bundle.exists(), bundled.stderr
    with zipfile.ZipFile(bundle) as archive:
        summary = json.loads(archive.read("ledger.json"))
        assert summary["location"] == hosts.database.url() and summary["exists"] is True
        assert summary["counts"]["archived"] == 2, "the shared ledger, not an absent SQLite file"
        for member in archive.namelist():
            assert hosts.database.password not in archive.read(member).decode(), member
    # host-a archived on a disk of its own: host-b does not see the folder
    hidden = hosts.root / "host-a-private-disk"
    hosts.output_dir("a").rename(hidden)
    _, findings, _ = doctor(hosts, hosts.config("host-b"))
    unseen = finding(findings, "a", "archive visible")
    assert unseen["status"] == "WARN" and unseen["id"] == "archive.not-visible", unseen
    assert str(hosts.output_dir("a") / "a-r0.xml") in unseen["finding"]
    assert "2 of 2" in unseen["finding"] and "shared" in unseen["remedy"]
