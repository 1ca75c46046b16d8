"""The shared PostgreSQL ledger against the real server: first use by several hosts at once,
per-source advisory locks (skip, release, a killed holder), and every bad-input case of the
connection (password in the URL, unreachable, refused credentials, missing driver, newer schema)
through the CLI, with no password in any message."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from reportsync.config import Secret
from reportsync.errors import NetworkError
from reportsync.ledger import SCHEMA_VERSION, TABLES, Ledger, open_postgres_ledger
from tests.servers import free_port
from tests.servers.postgres import PostgresDatabase, PostgresServer
from tests.support import REPO_ROOT, CliResult, run_cli_inprocess, write_config

PASSWORD_ENV = "RS_TEST_LEDGER_PASSWORD"


def connect(database: PostgresDatabase, password: str | None = None) -> Ledger:
    ledger = open_postgres_ledger(database.url(),
                                  password=Secret(password or database.password))
    assert ledger is not None
    return ledger


def write_ledger_config(tmp_path: Path, url: str, **settings: Any) -> Path:
    """A config whose ledger is at ``url`` (password from ``PASSWORD_ENV`` unless overridden)
    and one FTP source (status and verify never connect to it)."""
    table = {"state_dir": str(tmp_path / "state"), "gnupg_home": str(tmp_path / "gnupg"),
             "ledger_url": url, "ledger_password_env": PASSWORD_ENV, **settings}
    table = {key: value for key, value in table.items() if value is not None}
    return write_config(tmp_path / "config.toml", {
        "settings": table,
        "sources": {"s": {"protocol": "ftp", "host": "127.0.0.1", "username": "u",
                          "password_env": "RS_TEST_FTP_PASSWORD",
                          "download_dir": str(tmp_path / "enc"),
                          "output_dir": str(tmp_path / "out")}},
    })


def status(config: Path, env: dict[str, str] | None = None, *extra: str) -> CliResult:
    # no ~/.pgpass of whoever runs the tests may stand in for the configured password
    return run_cli_inprocess("--config", str(config), *extra, "status",
                             env={"PGPASSFILE": "/nonexistent/pgpass", **(env or {})})


def assert_no_secret(result: CliResult, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in result.stdout and secret not in result.stderr


# --- first use ------------------------------------------------------------------------------------


def test_hosts_creating_the_schema_at_once_do_not_collide(postgres_db: PostgresDatabase) -> None:
    hosts = 6
    barrier = threading.Barrier(hosts)
    outcomes: list[object] = []

    def host() -> None:
        barrier.wait(10)
        try:
            with connect(postgres_db) as ledger:
                outcomes.append(ledger.schema_version)
        except Exception as exc:  # reported below, with the others
            outcomes.append(exc)

    threads = [threading.Thread(target=host) for _ in range(hosts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert outcomes == [SCHEMA_VERSION] * hosts
    with postgres_db.connect() as db:
        assert db.execute("SELECT count(*), max(version) FROM reportsync_schema").fetchone() == (
            1, SCHEMA_VERSION)
    with connect(postgres_db) as ledger:
        assert ledger.integrity_check() == "ok"
        assert all(ledger.count(table) == 0 for table in TABLES)


def test_hosts_listing_one_source_at_once_neither_deadlock_nor_double(
        postgres_db: PostgresDatabase) -> None:
    versions = [(f"r{index:04d}.pgp", index, 1_700_000_000 + index) for index in range(2000)]
    hosts, rounds = 4, 3
    barrier = threading.Barrier(hosts)
    results: list[object] = []

    def host(number: int) -> None:
        listing = list(versions)
        random.Random(number).shuffle(listing)  # each server listing in its own order
        try:
            with connect(postgres_db) as ledger:
                for _ in range(rounds):
                    barrier.wait(30)
                    results.append(ledger.see_files("s", listing))
        except Exception as exc:  # reported below
            results.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=host, args=(number,)) for number in range(hosts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    errors = [result for result in results if not isinstance(result, dict)]
    assert not errors, errors[:1]
    assert len(results) == hosts * rounds
    first = results[0]
    assert all(result == first for result in results), "every host got the same ids"
    with connect(postgres_db) as ledger:
        assert ledger.count("remote_files") == len(versions), "each version once"


def test_a_dry_run_creates_no_schema(postgres_db: PostgresDatabase) -> None:
    assert open_postgres_ledger(postgres_db.url(), password=Secret(postgres_db.password),
                                create=False) is None
    with postgres_db.connect() as db:
        assert db.execute("SELECT to_regclass('reportsync_schema')").fetchone() == (None,)


# --- per-source locks ------------------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import os, sys, time
    from reportsync.config import Secret
    from reportsync.ledger import open_postgres_ledger
    ledger = open_postgres_ledger(sys.argv[1], password=Secret(os.environ["{env}"]))
    lock = ledger.try_lock_source("s", command="fetch")
    print("locked" if lock is not None else "busy", flush=True)
    time.sleep(120)
""").format(env=PASSWORD_ENV)


def wait_for_lock(ledger: Ledger, source: str, seconds: float = 15.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        lock = ledger.try_lock_source(source)
        if lock is not None:
            return lock
        time.sleep(0.05)
    raise AssertionError(f"the lock of {source!r} was not released within {seconds} s")


def test_a_killed_holders_lock_goes_with_its_process(postgres_db: PostgresDatabase) -> None:
    with connect(postgres_db):  # the schema exists before the holder starts
        pass
    child = subprocess.Popen([sys.executable, "-c", HOLDER, postgres_db.url()], cwd=REPO_ROOT,
                             env={**os.environ, PASSWORD_ENV: postgres_db.password},
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "locked"
        with connect(postgres_db) as ledger:
            assert ledger.try_lock_source("s") is None, "another host holds it: skipped"
            holder = ledger.lock_holder("s")
            assert holder is not None and holder.pid == child.pid and holder.command == "fetch"
            assert f"pid {child.pid} on " in holder.describe()
            free = ledger.try_lock_source("other")
            assert free is not None, "only that source is held"
            free.release()
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
            lock = wait_for_lock(ledger, "s")
            holder = ledger.lock_holder("s")
            assert holder is not None and holder.pid == os.getpid(), \
                "the dead holder's row is replaced, not reported"
            lock.release()
            assert ledger.lock_holder("s") is None
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_dead_holders_row_is_never_reported(postgres_db: PostgresDatabase) -> None:
    with connect(postgres_db) as ledger:
        with postgres_db.connect(autocommit=True) as db:  # a row left by a host that died
            db.execute("INSERT INTO source_locks (source, host, pid, command, since, backend_pid)"
                       " VALUES ('s', 'gone-host', 99999, 'fetch', 1.0, 99999)")
        assert ledger.lock_holder("s") is None
        lock = ledger.try_lock_source("s")
        assert lock is not None
        holder = ledger.lock_holder("s")
        assert holder is not None and holder.host != "gone-host"
        lock.release()


def test_a_dropped_connection_releases_its_locks(postgres_server: PostgresServer,
                                                 postgres_db: PostgresDatabase) -> None:
    holder = connect(postgres_db)
    lock = holder.try_lock_source("s")
    assert lock is not None
    with connect(postgres_db) as other:
        assert other.try_lock_source("s") is None
    assert postgres_server.terminate_connections(dbname=postgres_db.dbname) >= 2
    with connect(postgres_db) as after:
        wait_for_lock(after, "s").release()
    # the holder's own connection is gone: its next step is a network error (exit 3) that
    # names the database and never the password
    with pytest.raises(NetworkError) as lost:
        holder.start_run("fetch", 1)
    assert f"127.0.0.1:{postgres_db.port}" in lost.value.message
    assert postgres_db.password not in str(lost.value.to_dict())
    lock.release()  # harmless: the server already released it
    holder.close()


# --- bad input, through the CLI --------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "postgresql://{user}:{secret}@127.0.0.1:{port}/{db}",
    "postgresql://{user}@127.0.0.1:{port}/{db}?sslmode=disable&password={secret}",
    "postgresql://{user}:{secret}",
])
def test_a_password_inside_the_url_is_refused_without_repeating_it(
        tmp_path: Path, postgres_db: PostgresDatabase, url: str) -> None:
    secret = "Zq7-not-to-be-shown"
    config = write_ledger_config(tmp_path, url.format(user=postgres_db.user, secret=secret,
                                                      port=postgres_db.port,
                                                      db=postgres_db.dbname))
    for extra in ((), ("--json",)):
        result = status(config, {PASSWORD_ENV: postgres_db.password}, *extra)
        assert result.exit_code == 2, result.stderr
        assert "settings.ledger_url" in result.stderr
        assert_no_secret(result, secret)
    assert "must not hold a password" in result.stderr or "port that is not a number" in \
        result.stderr


def test_an_unreachable_database_exits_3_naming_host_and_port(tmp_path: Path) -> None:
    port = free_port()  # nobody listens there
    config = write_ledger_config(tmp_path, f"postgresql://reportsync@127.0.0.1:{port}/reportsync")
    result = status(config, {PASSWORD_ENV: "irrelevant-secret"})
    assert result.exit_code == 3, result.stderr
    assert f"127.0.0.1:{port}" in result.stderr and "cannot reach the ledger database" in \
        result.stderr
    assert_no_secret(result, "irrelevant-secret")


def test_refused_credentials_exit_4_with_no_password_anywhere(
        tmp_path: Path, postgres_db: PostgresDatabase) -> None:
    config = write_ledger_config(tmp_path, postgres_db.url())
    wrong = "wrong-Pw-4711"
    for extra in ((), ("--json",)):
        result = status(config, {PASSWORD_ENV: wrong}, *extra)
        assert result.exit_code == 4, result.stderr
        assert "refused the login" in result.stderr and postgres_db.user in result.stderr
        assert_no_secret(result, wrong, postgres_db.password)
    assert json.loads(result.stdout)["error"]["error"] == "AuthenticationError"
    log = tmp_path / "state" / "logs" / "reportsync.log"
    assert not log.exists() or wrong not in log.read_text()


def test_no_password_configured_and_none_in_pgpass_exits_4(
        tmp_path: Path, postgres_db: PostgresDatabase) -> None:
    config = write_ledger_config(tmp_path, postgres_db.url(), ledger_password_env=None)
    result = status(config)
    assert result.exit_code == 4, result.stderr
    assert "asks for a password and none is configured" in result.stderr
    assert "ledger_password_env" in result.stderr


def test_the_password_may_come_from_libpqs_pgpass(tmp_path: Path,
                                                  postgres_db: PostgresDatabase) -> None:
    config = write_ledger_config(tmp_path, postgres_db.url(), ledger_password_env=None)
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{postgres_db.port}:{postgres_db.dbname}:{postgres_db.user}:"
                      f"{postgres_db.password}\n")
    pgpass.chmod(0o600)
    result = status(config, {"PGPASSFILE": str(pgpass)}, "--json")
    assert result.exit_code == 0, result.stderr
    assert [source["name"] for source in result.result()["sources"]] == ["s"]


def test_a_password_file_others_can_read_is_refused(tmp_path: Path,
                                                    postgres_db: PostgresDatabase) -> None:
    secret_file = tmp_path / "ledger.pass"
    secret_file.write_text(postgres_db.password + "\n")
    secret_file.chmod(0o644)
    config = write_ledger_config(tmp_path, postgres_db.url(), ledger_password_env=None,
                                 ledger_password_file=str(secret_file))
    result = status(config)
    assert result.exit_code == 2, result.stderr
    assert "settings.ledger_password_file" in result.stderr and "too open" in result.stderr
    assert_no_secret(result, postgres_db.password)
    secret_file.chmod(0o600)
    assert status(config).exit_code == 0, "0600: read, and the login works"


def test_a_missing_database_is_a_config_error(tmp_path: Path,
                                              postgres_db: PostgresDatabase) -> None:
    url = f"postgresql://{postgres_db.user}@127.0.0.1:{postgres_db.port}/no_such_db"
    result = status(write_ledger_config(tmp_path, url), {PASSWORD_ENV: postgres_db.password})
    assert result.exit_code == 2, result.stderr
    assert "settings.ledger_url" in result.stderr and "'no_such_db' does not exist" in \
        result.stderr


def test_a_newer_schema_exits_2_naming_both_versions(tmp_path: Path,
                                                     postgres_db: PostgresDatabase) -> None:
    connect(postgres_db).close()
    with postgres_db.connect(autocommit=True) as db:
        db.execute("UPDATE reportsync_schema SET version = %s", (SCHEMA_VERSION + 2,))
    result = status(write_ledger_config(tmp_path, postgres_db.url()),
                    {PASSWORD_ENV: postgres_db.password})
    assert result.exit_code == 2, result.stderr
    assert f"schema {SCHEMA_VERSION + 2}" in result.stderr
    assert f"reads schema {SCHEMA_VERSION}" in result.stderr and "Upgrade reportsync" in \
        result.stderr


def test_without_psycopg_the_error_says_what_to_install(
        tmp_path: Path, postgres_db: PostgresDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    # a Python without the extra: psycopg cannot be imported (None in sys.modules blocks it)
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.delitem(sys.modules, "reportsync.ledger.postgres", raising=False)
    result = status(write_ledger_config(tmp_path, postgres_db.url()),
                    {PASSWORD_ENV: postgres_db.password})
    assert result.exit_code == 2, result.stderr
    assert "pip install 'reportsync[postgres]'" in result.stderr
    assert "settings.ledger_url" in result.stderr


def test_the_ledger_sessions_carry_no_password_where_others_can_see(
        postgres_server: PostgresServer, postgres_db: PostgresDatabase) -> None:
    with connect(postgres_db) as ledger:
        assert ledger.try_lock_source("s") is not None
        with postgres_server.admin.connect(autocommit=True) as admin:
            rows = admin.execute("SELECT application_name, query FROM pg_stat_activity "
                                 "WHERE datname = %s", (postgres_db.dbname,)).fetchall()
        assert [name for name, _ in rows].count("reportsync") == 2, "the ledger and its locks"
        assert all(postgres_db.password not in (query or "") for _, query in rows)
    assert psycopg.__version__  # the driver the extra installs
