"""``reportsync ledger migrate --to URL [--force]``: a SQLite ledger moved into the real
PostgreSQL server; ``status`` and ``verify`` say the same before and after, a database that
already holds the sources is refused without ``--force``, and ``--force`` never doubles a
record."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pytest

from reportsync.config import Secret
from reportsync.ledger import TABLES, Ledger, open_postgres_ledger
from tests.servers.postgres import PostgresDatabase
from tests.support import CliResult, run_cli_inprocess, write_config
from tests.test_docs import documented_json, same_shape

PASSWORD_ENV = "RS_TEST_LEDGER_PASSWORD"
DAY = 86400


class Setup:
    """A state dir whose SQLite ledger knows two sources' files in every state a run leaves
    them in, their archive on disk, and configs that read it from SQLite or from PostgreSQL."""

    def __init__(self, root: Path, database: PostgresDatabase) -> None:
        self.root = root
        self.database = database
        self.state = root / "state"
        self.env = {PASSWORD_ENV: database.password, "PGPASSFILE": "/nonexistent/pgpass"}
        sources = {name: {"protocol": "ftp", "host": "127.0.0.1", "username": "u",
                          "password_env": "RS_TEST_FTP_PASSWORD",
                          "download_dir": str(root / name / "enc"),
                          "output_dir": str(root / name / "out")} for name in ("s", "t")}
        settings = {"state_dir": str(self.state), "gnupg_home": str(root / "gnupg"),
                    "ledger_password_env": PASSWORD_ENV}
        self.sqlite_config = write_config(root / "sqlite.toml",
                                          {"settings": settings, "sources": sources})
        self.pg_config = write_config(root / "pg.toml", {
            "settings": dict(settings, ledger_url=database.url()), "sources": sources})

    def cli(self, *args: str, config: Path | None = None) -> CliResult:
        return run_cli_inprocess("--config", str(config or self.sqlite_config), *args,
                                 env=self.env)

    def migrate(self, *extra: str, url: str | None = None) -> CliResult:
        return self.cli("--json", "ledger", "migrate", "--to", url or self.database.url(), *extra)

    def _keep(self, ledger: Ledger, run: int, ids: dict[Any, int], source: str,
              version: tuple[str, int, int], *, archive: bool = True) -> None:
        name = version[0]
        encrypted = self.root / source / "enc" / name
        encrypted.parent.mkdir(parents=True, exist_ok=True)
        encrypted.write_bytes(b"ciphertext " + name.encode())
        ledger.record_download(ids[version], run, encrypted, encrypted.stat().st_size,
                               hashlib.sha256(encrypted.read_bytes()).hexdigest())
        if archive:
            report = self.root / source / "out" / name.removesuffix(".pgp")
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_bytes(b"statement " + name.encode())
            ledger.record_archived(ids[version], run, report, report.stat().st_size,
                                   hashlib.sha256(report.read_bytes()).hexdigest(),
                                   decrypted=True, signer="F00D", signature="good")

    def seed(self) -> None:
        now = time.time()
        s_files = [(f"U1.{day}.xml.pgp", 100 + day, int(now - day * DAY)) for day in range(6)]
        old = ("U1.old.xml.pgp", 50, int(now - 95 * DAY))  # at risk: never fetched
        with Ledger(self.state / "ledger.sqlite3") as ledger:
            run = ledger.start_run("fetch", 4242)
            ids = ledger.see_files("s", [*s_files, old])
            for version in s_files[:3]:
                self._keep(ledger, run, ids, "s", version)
            self._keep(ledger, run, ids, "s", s_files[3], archive=False)
            ledger.record_failure("s", s_files[3][0], ids[s_files[3]], run, "archive", "bad")
            ledger.record_failure("s", s_files[3][0], ids[s_files[3]], run, "archive", "bad")
            ledger.record_failure("s", "bad\u202ename.pgp", None, run, "name", "unsafe name")
            ledger.record_failure("s", s_files[4][0], ids[s_files[4]], run, "download", "reset")
            encrypted = self.root / "s" / "enc" / s_files[0][0]
            encrypted.unlink()
            ledger.record_deletion(ids[s_files[0]], run, "local_encrypted", str(encrypted),
                                   "expired")
            ledger.record_hook(ids[s_files[1]], run, succeeded=True, exit_code=0)
            ledger.record_hook(ids[s_files[2]], run, succeeded=False, exit_code=4, reason="4")
            ledger.record_source_run(run, "s", "fetch", 1, {"archived": 3, "failed": 2}, None)
            self.t_file = ("T.1.pgp", 9, int(now - DAY))
            t_ids = ledger.see_files("t", [self.t_file])
            self._keep(ledger, run, t_ids, "t", self.t_file)
            ledger.record_source_run(run, "t", "fetch", 0, {"archived": 1}, None)
            ledger.finish_run(run, 1, {"archived": 4, "failed": 2})
            second = ledger.start_run("fetch", 4243)
            ledger.see_files("s", [*s_files[1:], old])  # the first one is gone from the server
            ledger.acknowledge_lost("s", s_files[5][0])
            ledger.record_source_run(second, "s", "fetch", 1, {"skipped": 4}, "one file failed")
            ledger.record_source_run(second, "t", "fetch", 3, {}, "cannot reach the server")
            ledger.finish_run(second, 3, {"skipped": 4})
            ledger.start_run("retention", 4244)  # one that never finished (killed)

    def reports(self, config: Path) -> tuple[Any, Any]:
        status, verify = self.cli("--json", "status", config=config), \
            self.cli("--json", "verify", config=config)
        assert status.exit_code == 1 and verify.exit_code == 0, (status.stderr, verify.stderr)
        return status.json(), verify.json()

    def counts(self) -> dict[str, int]:
        ledger = open_postgres_ledger(self.database.url(), password=Secret(self.database.password))
        assert ledger is not None
        with ledger:
            return {table: ledger.count(table) for table in TABLES}


@pytest.fixture
def setup(tmp_path: Path, postgres_db: PostgresDatabase) -> Setup:
    made = Setup(tmp_path, postgres_db)
    made.seed()
    return made


def copied(result: CliResult) -> dict[str, tuple[int, int]]:
    assert result.exit_code == 0, result.stderr
    return {table["table"]: (table["copied"], table["already_there"])
            for table in result.result()["tables"]}


def test_status_and_verify_agree_before_and_after_the_move(setup: Setup) -> None:
    before = setup.reports(setup.sqlite_config)
    with Ledger(setup.state / "ledger.sqlite3") as sqlite:
        expected = {table: sqlite.count(table) for table in TABLES}
    result = setup.migrate()
    assert copied(result) == {table: (count, 0) for table, count in expected.items()}
    document = result.result()
    assert document["sources"] == ["s", "t"] and document["forced"] is False
    assert document["target"] == setup.database.url()
    assert setup.counts() == expected
    assert expected["hooks"] == 2
    shared = open_postgres_ledger(setup.database.url(), password=Secret(setup.database.password))
    assert shared is not None
    with shared, Ledger(setup.state / "ledger.sqlite3") as sqlite:
        def hooks(ledger: Ledger) -> list[tuple[str, str, int]]:
            return [(hook.name, hook.state, hook.attempts) for hook in ledger.pending_hooks("s")]
        assert hooks(shared) == hooks(sqlite) == [("U1.2.xml.pgp", "failed", 1)], \
            "the hooks' outcomes moved with their files"
    after = setup.reports(setup.pg_config)
    assert after == before, "status and verify say the same from PostgreSQL"
    text = setup.cli("ledger", "migrate", "--to", setup.database.url(), "--force")
    assert text.exit_code == 0, text.stderr
    assert "remote_files: 0 copied, 8 already there" in text.stdout
    assert f'ledger_url = "{setup.database.url()}"' in text.stdout
    same_shape(documented_json()["ledger migrate"], result.json(), "ledger migrate")


def test_a_database_holding_the_sources_is_refused_and_force_never_doubles(setup: Setup) -> None:
    assert setup.migrate().exit_code == 0
    counts = setup.counts()
    refused = setup.migrate()
    assert refused.exit_code == 2, refused.stderr
    assert "already holds records of s, t" in refused.stderr and "--force" in refused.stderr
    assert setup.counts() == counts, "nothing changed"
    again = setup.migrate("--force")
    assert {table: done for table, (done, _) in copied(again).items()} == dict.fromkeys(TABLES, 0)
    assert {table: there for table, (_, there) in copied(again).items()} == counts
    assert setup.counts() == counts, "--force doubled nothing"
    before = setup.reports(setup.pg_config)
    # the SQLite ledger goes on (a host not yet switched over); a later --force copies the new
    with Ledger(setup.state / "ledger.sqlite3") as ledger:
        run = ledger.start_run("fetch", 5000)
        new = ("T.2.pgp", 7, int(time.time()))
        ids = ledger.see_files("t", [setup.t_file, new])
        setup._keep(ledger, run, ids, "t", new)
        ledger.record_source_run(run, "t", "fetch", 0, {"archived": 1}, None)
        ledger.finish_run(run, 0, {"archived": 1})
    later = copied(setup.migrate("--force"))
    assert later["runs"][0] == 1 and later["remote_files"][0] == 1
    assert later["downloads"][0] == 1 and later["archived"][0] == 1
    assert later["source_runs"][0] == 1 and later["failures"][0] == 0
    assert setup.counts()["remote_files"] == counts["remote_files"] + 1
    status_after, verify_after = setup.reports(setup.pg_config)
    t_before = next(s for s in before[0]["result"]["sources"] if s["name"] == "t")
    t_after = next(s for s in status_after["result"]["sources"] if s["name"] == "t")
    assert (t_before["archived"], t_after["archived"]) == (1, 2)
    assert verify_after["result"]["checked"] == before[1]["result"]["checked"] + 2
    with setup.database.connect() as db:
        imports = db.execute("SELECT forced FROM ledger_imports ORDER BY id").fetchall()
    assert imports == [(0,), (1,), (1,)], "every migration is recorded; the refused one is not"


def test_what_migrate_refuses(setup: Setup, tmp_path: Path) -> None:
    secret = "Pw-in-the-url-77"
    inside = setup.database.url().replace("@", f":{secret}@")
    result = setup.migrate(url=inside)
    assert result.exit_code == 2 and "--to" in result.stderr and "must not hold a password" in \
        result.stderr
    assert secret not in result.stdout + result.stderr
    wrong = setup.cli("--json", "ledger", "migrate", "--to", setup.database.url(),
                      config=write_config(tmp_path / "wrong.toml", {
                          "settings": {"state_dir": str(setup.state),
                                       "ledger_password_env": "RS_TEST_WRONG"}}))
    assert wrong.exit_code == 2, "the variable the config names is not set"
    empty = write_config(tmp_path / "empty.toml",
                         {"settings": {"state_dir": str(tmp_path / "no-state")}})
    missing = setup.cli("ledger", "migrate", "--to", setup.database.url(), config=empty)
    assert missing.exit_code == 2 and "no SQLite ledger" in missing.stderr
    assert setup.counts() == dict.fromkeys(TABLES, 0), "nothing was copied by any of them"


def test_last_sightings_move_with_the_records_and_the_later_one_wins(setup: Setup) -> None:
    """Schema 6 keeps the last sighting of a version still listed as its source's listed_at:
    the migration copies each version's own, and a merge keeps the later of the two sides
    (a version the database saw listed after the SQLite ledger saw it go stays listed)."""
    sqlite_path = setup.state / "ledger.sqlite3"
    with Ledger(sqlite_path) as ledger:
        before = {source: ledger.last_seen(source) for source in ("s", "t")}
        gone = ledger.version_index("s").gone
    assert len(gone) == 1 and copied(setup.migrate())["remote_files"][0] == 8
    target = open_postgres_ledger(setup.database.url(), password=Secret(setup.database.password))
    assert target is not None
    with target:
        assert {source: target.last_seen(source) for source in ("s", "t")} == before
        assert target.version_index("s").gone == gone
    with Ledger(sqlite_path) as ledger:  # the SQLite ledger lists on, then sees one go
        index = ledger.see_listing("s", set(ledger.version_index("s").ids) - gone,
                                   ledger.version_index("s"))
        dropped = sorted(set(index.ids) - gone)[0]
        time.sleep(0.01)
        ledger.see_listing("s", set(index.ids) - gone - {dropped}, index)
        assert ledger.version_index("s").gone == gone | {dropped}
    time.sleep(0.01)
    target = open_postgres_ledger(setup.database.url(), password=Secret(setup.database.password))
    assert target is not None
    with target:  # later, the database's own run lists every one of them
        index = target.version_index("s")
        target.see_listing("s", set(index.ids) - gone, index)
        listed_later = target.last_seen("s")
    assert copied(setup.migrate("--force"))["remote_files"] == (0, 8)
    target = open_postgres_ledger(setup.database.url(), password=Secret(setup.database.password))
    assert target is not None
    with target:
        assert target.version_index("s").gone == gone, \
            f"{dropped[0]} was listed by the database after the SQLite ledger saw it go"
        assert target.last_seen("s") == listed_later, "the later sighting of each version"
        assert target.last_seen("t") == before["t"]
