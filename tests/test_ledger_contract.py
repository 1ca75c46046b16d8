"""The ledger contract: every public method behaves alike on both backends.

Each test runs twice, against a SQLite file in a temp folder and against a fresh database of the
real PostgreSQL server (tests/servers/postgres.py). What fetch, retention, status, verify and
doctor rely on is asserted here, so the core can stay blind to the backend.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reportsync.config import Secret
from reportsync.errors import LedgerVersionError, ReportsyncError
from reportsync.ledger import (
    MIGRATIONS,
    SCHEMA_VERSION,
    TABLES,
    Ledger,
    VersionIndex,
    VersionState,
    open_postgres_ledger,
    refreshed,
)
from reportsync.ledger.schema import POSTGRES_VERSION_TABLE, postgres_migration

A = ("a.pgp", 10, 1_700_000_000)
B = ("b.pgp", 20, 1_700_000_100)
C = ("c.pgp", 30, 1_700_000_200)


@dataclass
class Store:
    """One backend's ledger storage: open a Ledger on it, or reach below the API."""

    kind: str
    open: Callable[[], Ledger]
    query: Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]  # raw SQL, ? placeholders
    script: Callable[[str], None]  # raw DDL/DML script outside the API
    build_at: Callable[[int], None]  # an empty store whose schema is at this version


def _sqlite_store(path: Path) -> Store:
    def query(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with sqlite3.connect(path) as db:
            return [tuple(row) for row in db.execute(sql, params)]

    def script(text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path)
        try:
            db.executescript(text)
        finally:
            db.close()

    def build_at(version: int) -> None:
        script("".join(MIGRATIONS[:version]) + f";PRAGMA user_version = {version};")

    return Store("sqlite", lambda: Ledger(path), query, script, build_at)


def _postgres_store(database: Any) -> Store:
    def open_ledger() -> Ledger:
        ledger = open_postgres_ledger(database.url(), password=Secret(database.password))
        assert ledger is not None
        return ledger

    def query(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with database.connect(autocommit=True) as db:
            return [tuple(row) for row in db.execute(sql.replace("?", "%s"), params)]

    def script(text: str) -> None:
        with database.connect(autocommit=False) as db:
            db.execute(text)

    def build_at(version: int) -> None:
        script(POSTGRES_VERSION_TABLE + ";" + "".join(postgres_migration(step)
                                                      for step in range(version))
               + f";INSERT INTO reportsync_schema (version) VALUES ({version})")

    return Store("postgres", open_ledger, query, script, build_at)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        return _sqlite_store(tmp_path / "state" / "ledger.sqlite3")
    return _postgres_store(request.getfixturevalue("postgres_db"))


@pytest.fixture
def ledger(store: Store) -> Iterator[Ledger]:
    with store.open() as opened:
        yield opened


# --- schema ----------------------------------------------------------------------------------------


def test_a_new_ledger_has_the_current_schema_and_no_records(store: Store, ledger: Ledger) -> None:
    assert ledger.schema_version == SCHEMA_VERSION
    assert ledger.integrity_check() == "ok"
    assert {table: ledger.count(table) for table in TABLES} == dict.fromkeys(TABLES, 0)
    with pytest.raises(ValueError):
        ledger.count("sqlite_master; DROP TABLE runs")
    with store.open() as again:  # opening an up-to-date ledger changes nothing
        assert again.schema_version == SCHEMA_VERSION


def test_schema_3_is_migrated_on_first_use(store: Store) -> None:
    store.build_at(3)
    store.script("INSERT INTO runs (command, started_at, pid) VALUES ('fetch', 1.5, 7);"
                 "INSERT INTO remote_files (source, name, size, mtime, first_seen, last_seen) "
                 "VALUES ('s', 'a.pgp', 10, 100, 1.5, 1.5), ('s', 'b.pgp', 20, 200, 1.5, 1.5);"
                 "INSERT INTO archived (file_id, run_id, output_path, bytes, sha256, decrypted, "
                 "signer, at) SELECT id, 1, '/out/' || name, 5, 'ab', 1, "
                 "CASE name WHEN 'a.pgp' THEN 'F00D' END, 2.5 FROM remote_files")
    with store.open() as ledger:
        assert ledger.schema_version == SCHEMA_VERSION
        assert ledger.count("archived") == 2 and ledger.count("runs") == 1, "records kept"
    # schema 3 kept a signer only for a good signature: 3 → 4 says so; the rest stays unknown
    rows = store.query("SELECT f.name, a.signature FROM archived a JOIN remote_files f "
                       "ON f.id = a.file_id ORDER BY f.name", ())
    assert rows == [("a.pgp", "good"), ("b.pgp", None)]


def test_schema_4_is_migrated_keeping_its_rows_and_gains_hooks(store: Store) -> None:
    previous = 4
    assert MIGRATIONS[previous].count("CREATE TABLE hooks") == 1, "4 -> 5 adds the hooks table"
    store.build_at(previous)
    store.script("INSERT INTO runs (command, started_at, pid) VALUES ('fetch', 1.5, 7);"
                 "INSERT INTO remote_files (source, name, size, mtime, first_seen, last_seen) "
                 "VALUES ('s', 'a.pgp', 10, 100, 1.5, 1.5), ('s', 'b.pgp', 20, 200, 1.5, 1.5);"
                 "INSERT INTO archived (file_id, run_id, output_path, bytes, sha256, decrypted, "
                 "signer, signature, at) SELECT id, 1, '/out/' || name, 5, 'ab', 1, NULL, "
                 "'unsigned', 2.5 FROM remote_files;"
                 "INSERT INTO failures (file_id, source, name, run_id, stage, reason, first_at, "
                 "last_at) VALUES (1, 's', 'a.pgp', 1, 'archive', 'bad', 1.5, 1.5)")
    with store.open() as ledger:
        assert ledger.schema_version == SCHEMA_VERSION
        assert {table: ledger.count(table) for table in TABLES} == {
            "runs": 1, "remote_files": 2, "downloads": 0, "archived": 2, "failures": 1,
            "deletions": 0, "source_runs": 0, "hooks": 0}, "every record kept, no hook invented"
        # a report archived before the migration has no hook: nothing runs for it
        assert ledger.pending_hooks("s") == []
        a = ledger.versions_by_key("s")[("a.pgp", 10, 100)]
        assert ledger.hook_state(a.file_id) is None
        ledger.record_hook_due(a.file_id, 1)  # the new table takes rows at once
        assert [hook.name for hook in ledger.pending_hooks("s")] == ["a.pgp"]
    rows = store.query("SELECT f.name, a.signature FROM archived a JOIN remote_files f "
                       "ON f.id = a.file_id ORDER BY f.name", ())
    assert rows == [("a.pgp", "unsigned"), ("b.pgp", "unsigned")], "4 -> 5 leaves them alone"


def test_hooks_are_due_then_fail_then_succeed_once(ledger: Ledger, tmp_path: Path) -> None:
    run = ledger.start_run("fetch", 1)
    ids = ledger.see_files("s", [A, B, C])
    ledger.see_files("t", [A])
    for version in (A, B):
        ledger.record_archived(ids[version], run, tmp_path / version[0], 5, "e" * 64,
                               decrypted=True, signer=None, signature="unsigned")
        ledger.record_hook_due(ids[version], run)
    pending = ledger.pending_hooks("s")
    assert [(hook.version, hook.state, hook.attempts) for hook in pending] == [
        (A, "due", 0), (B, "due", 0)], "oldest due first"
    first = pending[0]
    assert (first.file_id, first.source, first.output_path, first.output_sha256) == (
        ids[A], "s", str(tmp_path / "a.pgp"), "e" * 64)
    assert first.in_archive and not first.acknowledged
    assert ledger.pending_hooks("t") == [], "sources are independent"

    with ledger.transaction():  # as the Recorder writes a failed hook
        assert ledger.record_hook(ids[A], run, succeeded=False, exit_code=3,
                                  reason="exited with 3") == 1
        ledger.record_failure("s", "a.pgp", ids[A], run, "hook", "exited with 3")
    assert ledger.record_hook(ids[A], run, succeeded=False, reason="timed out") == 2
    assert ledger.hook_state(ids[A]) == "failed"
    assert [f["stage"] for f in ledger.open_failures("s")] == ["hook"]
    assert ledger.versions_by_key("s")[A].failing
    ledger.record_hook_due(ids[A], run)  # archived again (a repeated step): still failed, counted
    assert next((h.state, h.attempts) for h in ledger.pending_hooks("s")) == ("failed", 2)

    assert ledger.record_hook(ids[A], run, succeeded=True, exit_code=0) == 3
    assert ledger.hook_state(ids[A]) == "succeeded"
    assert ledger.open_failures("s") == [], "its hook failure is resolved"
    ledger.record_hook_due(ids[A], run)
    assert [hook.version for hook in ledger.pending_hooks("s")] == [B], "a success is final"
    assert ledger.hook_state(ids[C]) is None
    assert ledger.count("hooks") == 2


def test_pending_hooks_say_acknowledged_and_gone_from_the_archive(ledger: Ledger,
                                                                   tmp_path: Path) -> None:
    run = ledger.start_run("fetch", 1)
    ids = ledger.see_files("s", [A, B])
    for version in (A, B):
        ledger.record_archived(ids[version], run, tmp_path / version[0], 5, "e" * 64,
                               decrypted=False, signer=None)
        ledger.record_hook(ids[version], run, succeeded=False, exit_code=1, reason="exit 1")
    ledger.acknowledge_lost("s", "a.pgp")
    ledger.record_deletion(ids[B], run, "archive", str(tmp_path / "b.pgp"), "archive_days")
    by_name = {hook.name: hook for hook in ledger.pending_hooks("s")}
    assert by_name["a.pgp"].acknowledged and by_name["a.pgp"].in_archive
    assert not by_name["b.pgp"].acknowledged and not by_name["b.pgp"].in_archive


def test_a_schema_newer_than_this_version_is_refused_naming_both(store: Store) -> None:
    with store.open():
        pass
    newer = SCHEMA_VERSION + 3
    if store.kind == "sqlite":
        store.script(f"PRAGMA user_version = {newer}")
    else:
        store.script(f"UPDATE reportsync_schema SET version = {newer}")
    with pytest.raises(LedgerVersionError) as refused:
        store.open()
    assert refused.value.exit_code == 2
    assert f"schema {newer}" in refused.value.message
    assert f"this version reads schema {SCHEMA_VERSION}" in refused.value.message
    assert "newer reportsync" in refused.value.message


# --- runs and remote files -------------------------------------------------------------------------


def test_runs_are_numbered_and_finished(store: Store, ledger: Ledger) -> None:
    first = ledger.start_run("fetch", 11)
    second = ledger.start_run("retention", 12)
    assert second > first > 0
    ledger.finish_run(first, 1, {"archived": 2, "failed": 1})
    rows = store.query("SELECT id, command, pid, exit_code, counts, finished_at IS NOT NULL "
                       "FROM runs ORDER BY id", ())
    assert rows == [(first, "fetch", 11, 1, '{"archived": 2, "failed": 1}', True),
                    (second, "retention", 12, None, None, False)]


def test_see_files_gives_stable_ids_and_marks_what_is_no_longer_listed(ledger: Ledger) -> None:
    ids = ledger.see_files("s", [A, B])
    assert set(ids) == {A, B} and len(set(ids.values())) == 2
    ledger.see_files("other", [A])  # another source's file of that name is another file
    again = ledger.see_files("s", [A, C])
    assert again[A] == ids[A], "a version keeps its id"
    assert set(again) == {A, C}
    assert ledger.count("remote_files") == 4
    versions = ledger.versions_by_key("s")
    assert versions[B].gone_at is not None, "no longer listed: gone"
    assert versions[A].gone_at is None and versions[C].gone_at is None
    ledger.see_files("s", [A, B, C])
    assert ledger.versions_by_key("s")[B].gone_at is None, "listed again: not gone"
    assert ledger.versions_by_key("other")[A].gone_at is None, "sources are independent"
    assert ledger.see_files("s", []) == {}
    assert all(v.gone_at is not None for v in ledger.versions("s")), "an empty listing: all gone"


def _index_of(versions: list[VersionState]) -> VersionIndex:
    """What ``version_index`` must say, made from ``versions`` (the full read)."""
    return VersionIndex(ids={v.version: v.file_id for v in versions},
                        gone={v.version for v in versions if v.gone_at is not None},
                        archived={v.version: v.output_path for v in versions
                                  if v.output_path is not None})


def test_see_listing_records_what_see_files_records_and_gives_the_index_after(
        store: Store, ledger: Ledger, tmp_path: Path) -> None:
    """The one-read path of a fetch: the index it returns is exactly what ``version_index``
    reads afterwards (and agrees with ``versions``), and the rows are what ``see_files`` writes
    (last_seen of every listed version, gone_at of the vanished ones, cleared for one listed
    again)."""
    run = ledger.start_run("fetch", 1)
    ids = ledger.see_files("s", [A, B, C])
    ledger.record_download(ids[A], run, tmp_path / "a.pgp", 10, "d" * 64)
    ledger.record_archived(ids[A], run, tmp_path / "a", 10, "e" * 64, decrypted=True, signer=None)
    ledger.record_failure("s", "d.pgp", None, run, "download", "reset")  # a name's open failure
    ledger.see_files("s", [A, B])  # C vanishes
    D = ("d.pgp", 40, 1_700_000_300)
    known = ledger.version_index("s")
    assert known == _index_of(ledger.versions("s")), "the compact read says what the full one does"
    assert known.archived == {A: str(tmp_path / "a")} and known.gone == {C}
    before = {key[0]: seen for key, seen in ledger.last_seen("s").items()}
    after = ledger.see_listing("s", {A, C, D}, known)  # B vanishes, C is back, D is new
    assert after == ledger.version_index("s") == _index_of(ledger.versions("s")), \
        "the index after, without reading it again"
    assert list(sorted(after.ids)) == [A, B, C, D]
    assert after.gone == {B}, "B vanished, C is back"
    assert after.ids[D] not in ids.values()
    assert ledger.versions_by_key("s")[D].failing
    assert after.ids[A] == ids[A] and after.ids[C] == ids[C], "ids are stable"
    assert known.gone == {C} and D not in known.ids, "the index read before is left as it was"
    rows = {key[0]: seen for key, seen in ledger.last_seen("s").items()}
    assert rows["a.pgp"] > before["a.pgp"] and rows["c.pgp"] > before["c.pgp"], \
        "every listed version's last sighting moves, the known ones' too"
    assert rows["b.pgp"] == before["b.pgp"], "a vanished version keeps its last sighting"
    assert rows["d.pgp"] == rows["a.pgp"]
    # nothing new, nothing vanished: still the same state, and ids from what was known
    raw = dict(store.query("SELECT name, last_seen FROM remote_files WHERE source = 's'", ()))
    again = ledger.see_listing("s", {A, C, D}, after)
    assert again == ledger.version_index("s") == after
    assert dict(store.query("SELECT name, last_seen FROM remote_files WHERE source = 's'",
                            ())) == raw, "a listing writes one row, not one per version"
    assert all(seen > rows["a.pgp"] for key, seen in ledger.last_seen("s").items()
               if key != B), "yet every listed version was seen again"
    seen_again = ledger.last_seen("s")[C]
    time.sleep(0.01)
    ledger.see_listing("s", {A, D}, again)  # C vanishes: its last sighting is the one before
    sightings = ledger.last_seen("s")
    assert sightings[C] == seen_again < sightings[A] == sightings[D], \
        "a vanished version keeps the listing that saw it last"
    assert ledger.see_files("s", [A, D], known=ledger.versions("s")) == {A: ids[A],
                                                                         D: after.ids[D]}
    assert ledger.versions_by_key("s")[C].gone_at is not None
    assert ledger.version_index("other") == VersionIndex(), "sources are independent"


def test_acting_versions_are_the_unarchived_ones_and_the_archived_ones_old_enough(
        ledger: Ledger, tmp_path: Path) -> None:
    """What a run reads in full: every version not archived (new, failed, downloaded only,
    acknowledged), and the archived ones whose mtime is before the bound, as ``versions``
    gives them."""
    run = ledger.start_run("fetch", 1)
    ids = ledger.see_files("s", [A, B, C])
    for key in (A, B):
        ledger.record_archived(ids[key], run, tmp_path / key[0], 1, "e" * 64, decrypted=True,
                               signer=None)
    ledger.record_download(ids[C], run, tmp_path / "c.pgp", 30, "d" * 64)
    full = ledger.versions_by_key("s")

    index = ledger.version_index("s")

    def acting(bound: float) -> list[tuple[str, int, int]]:
        found = ledger.acting_versions("s", index, archived_before=bound)
        assert all(version == full[version.version] for version in found), "as versions says"
        return [version.version for version in found]

    assert acting(-math.inf) == [C], "no archived one: only the version not archived"
    assert acting(math.inf) == [A, B, C]
    assert acting(B[2]) == [A, C], "archived before the bound: A (B's mtime is not before it)"
    assert acting(B[2] + 0.5) == [A, B, C], "a fraction past B's whole second takes B too"
    assert acting(A[2] - 1) == [C]
    assert ledger.acting_versions("other", ledger.version_index("other"),
                                  archived_before=math.inf) == []


def test_schema_5_is_migrated_keeping_every_last_sighting(store: Store) -> None:
    """5 -> 6 adds source_listings: the last_seen of schema 5 stays every version's last
    sighting, and the first listing after it moves them by one row."""
    assert SCHEMA_VERSION == 6 and "CREATE TABLE source_listings" in MIGRATIONS[5]
    store.build_at(5)
    store.script("INSERT INTO remote_files (source, name, size, mtime, first_seen, last_seen, "
                 "gone_at) VALUES ('s', 'a.pgp', 10, 1700000000, 1.5, 9.5, NULL), "
                 "('s', 'b.pgp', 20, 1700000100, 1.5, 4.5, 5.5), "
                 "('t', 'a.pgp', 10, 1700000000, 2.5, 8.5, NULL)")
    with store.open() as ledger:
        assert ledger.schema_version == SCHEMA_VERSION
        assert ledger.last_seen("s") == {A: 9.5, B: 4.5} and ledger.last_seen("t") == {A: 8.5}
        index = ledger.version_index("s")
        assert index.gone == {B}
        ledger.see_listing("s", {A}, index)
        assert ledger.last_seen("s")[A] > 1_000_000 and ledger.last_seen("s")[B] == 4.5
        assert ledger.last_seen("t") == {A: 8.5}, "another source's listing is its own"
    assert store.query("SELECT source FROM source_listings", ()) == [("s",)]


def test_versions_of_some_names_and_refreshed_replace_only_those(ledger: Ledger,
                                                                 tmp_path: Path) -> None:
    run = ledger.start_run("fetch", 1)
    old_a = ("a.pgp", 5, 1_600_000_000)
    ids = ledger.see_files("s", [old_a, A, B, C])
    known = ledger.versions("s")
    ledger.record_archived(ids[A], run, tmp_path / "a", 5, "e" * 64, decrypted=True, signer=None)
    ledger.record_failure("s", "c.pgp", ids[C], run, "download", "reset")
    some = ledger.versions("s", names={"a.pgp", "c.pgp"})
    assert [v.version for v in some] == [old_a, A, C], "every version of those names, in order"
    assert some == [v for v in ledger.versions("s") if v.name in {"a.pgp", "c.pgp"}]
    assert ledger.versions("s", names=set()) == []
    assert ledger.versions("s", names=[f"x{n}" for n in range(1200)]) == [], \
        "more names than one statement takes"
    assert refreshed(known, some) == ledger.versions("s")
    assert refreshed([], some) == some


def test_versions_tell_retention_and_status_everything(ledger: Ledger, tmp_path: Path) -> None:
    run = ledger.start_run("fetch", 1)
    ids = ledger.see_files("s", [A, B, C])
    ledger.record_download(ids[A], run, tmp_path / "a.pgp", 10, "d" * 64)
    ledger.record_archived(ids[A], run, tmp_path / "a", 5, "e" * 64, decrypted=True,
                           signer="F00D", signature="good")
    ledger.record_download(ids[B], run, tmp_path / "b.pgp", 20, "f" * 64)
    ledger.record_deletion(ids[A], run, "local_encrypted", str(tmp_path / "a.pgp"), "expired")
    ledger.record_deletion(ids[A], None, "remote", "a.pgp", "expired")
    ledger.record_failure("s", "c.pgp", ids[C], run, "download", "timed out")
    versions = ledger.versions("s")
    assert [(v.name, v.size, v.mtime) for v in versions] == [A, B, C], "ordered by name, mtime"
    a, b, c = versions
    assert (a.file_id, a.source) == (ids[A], "s")
    assert (a.download_path, a.download_sha256) == (str(tmp_path / "a.pgp"), "d" * 64)
    assert (a.output_path, a.output_sha256) == (str(tmp_path / "a"), "e" * 64)
    assert a.archived and not a.has_local_copy, "its encrypted copy was deleted"
    assert a.in_archive and not b.in_archive
    assert a.deleted == {"local_encrypted", "remote"} and not a.failing
    assert b.has_local_copy and not b.archived and b.deleted == frozenset()
    assert c.failing and not c.archived and c.download_path is None
    ledger.record_deletion(ids[A], run, "archive", str(tmp_path / "a"), "archive_days")
    assert not ledger.versions_by_key("s")[A].in_archive, "archived, then deleted from it"
    assert not any(v.acknowledged for v in versions)
    assert ledger.versions("nobody") == []


# --- downloads, archive, failures ------------------------------------------------------------------


def test_recording_twice_never_doubles_a_record(ledger: Ledger, tmp_path: Path) -> None:
    run = ledger.start_run("fetch", 1)
    file_id = ledger.see_files("s", [A])[A]
    ledger.record_download(file_id, run, tmp_path / "old", 10, "0" * 64)
    ledger.record_download(file_id, run, tmp_path / "new", 10, "1" * 64)
    assert ledger.count("downloads") == 1
    assert ledger.versions_by_key("s")[A].download_path == str(tmp_path / "new"), "the last copy"
    ledger.record_archived(file_id, run, tmp_path / "first", 5, "2" * 64, decrypted=True,
                           signer=None)
    ledger.record_archived(file_id, run, tmp_path / "second", 6, "3" * 64, decrypted=False,
                           signer=None)
    assert ledger.count("archived") == 1
    assert ledger.versions_by_key("s")[A].output_path == str(tmp_path / "first"), \
        "an archived report's record is never replaced"


def test_failures_count_attempts_and_are_resolved_by_success(ledger: Ledger,
                                                             tmp_path: Path) -> None:
    run = ledger.start_run("fetch", 1)
    ids = ledger.see_files("s", [A, B])
    assert ledger.record_failure("s", "a.pgp", ids[A], run, "download", "timed out") == 1
    assert ledger.record_failure("s", "a.pgp", ids[A], run, "download", "reset") == 2
    assert ledger.record_failure("s", "a.pgp", ids[A], run, "archive", "bad packet") == 1
    assert ledger.record_failure("s", "b.pgp", None, run, "name", "unsafe") == 1
    assert ledger.record_failure("t", "x.pgp", None, run, "name", "unsafe") == 1
    failures = ledger.open_failures("s")
    assert sorted((f["name"], f["stage"], f["attempts"], f["reason"]) for f in failures) == [
        ("a.pgp", "archive", 1, "bad packet"), ("a.pgp", "download", 2, "reset"),
        ("b.pgp", "name", 1, "unsafe")]
    assert [f["name"] for f in failures] == ["a.pgp", "a.pgp", "b.pgp"], "ordered by name"
    assert set(failures[0]) == {"source", "name", "stage", "reason", "attempts", "first_at",
                                "last_at"}
    assert [f["source"] for f in ledger.open_failures()] == ["s", "s", "s", "t"], \
        "all sources, ordered"
    ledger.record_download(ids[A], run, tmp_path / "a.pgp", 10, "0" * 64)
    assert sorted(f["stage"] for f in ledger.open_failures("s") if f["name"] == "a.pgp") == \
        ["archive"], "a download resolves the download failures only"
    ledger.record_archived(ids[A], run, tmp_path / "a", 5, "1" * 64, decrypted=True, signer=None)
    assert [f["name"] for f in ledger.open_failures("s")] == ["b.pgp"], \
        "archiving resolves every failure of the name"
    assert ledger.record_failure("s", "a.pgp", ids[A], run, "download", "again") == 1, \
        "a failure after a resolved one starts counting anew"
    assert ledger.count("failures") == 5, "resolved failures stay on record"


def test_acknowledging_covers_the_known_versions_and_closes_failures(ledger: Ledger) -> None:
    run = ledger.start_run("fetch", 1)
    old = ("a.pgp", 10, 1)
    ledger.see_files("s", [old])
    ids = ledger.see_files("s", [A])
    ledger.record_failure("s", "a.pgp", ids[A], run, "archive", "bad")
    assert ledger.acknowledge_lost("s", "a.pgp") == 2
    assert all(v.acknowledged for v in ledger.versions("s"))
    assert ledger.open_failures("s") == []
    assert ledger.acknowledge_lost("s", "a.pgp") == 2, "again: harmless"
    assert ledger.acknowledge_lost("s", "nothing.pgp") == 0
    newer = ("a.pgp", 11, 1_800_000_000)
    ledger.see_files("s", [A, newer])
    assert not ledger.versions_by_key("s")[newer].acknowledged, "a new version is not covered"


def test_source_runs_give_the_last_run_per_source_and_command(ledger: Ledger) -> None:
    first = ledger.start_run("fetch", 1)
    ledger.record_source_run(first, "s", "fetch", 0, {"archived": 2}, None)
    time.sleep(0.01)
    second = ledger.start_run("fetch", 1)
    ledger.record_source_run(second, "s", "fetch", 3, {"failed": 1}, "cannot reach the server")
    ledger.record_source_run(second, "s", "retention", 0, {}, None)
    last = ledger.last_source_run("s")
    assert last is not None
    assert (last["run_id"], last["exit_code"], last["counts"], last["error"]) == (
        second, 3, {"failed": 1}, "cannot reach the server")
    assert isinstance(last["finished_at"], float)
    success = ledger.last_source_run("s", succeeded=True)
    assert success is not None and success["run_id"] == first, "the last run that exited 0"
    assert ledger.last_source_run("s", "retention", succeeded=True) is not None
    retention = ledger.last_source_run("s", "retention")
    assert retention is not None and retention["counts"] == {}
    assert ledger.last_source_run("t") is None
    assert ledger.count("source_runs") == 3


def test_records_survive_reopening(store: Store, tmp_path: Path) -> None:
    with store.open() as ledger:
        run = ledger.start_run("fetch", 1)
        file_id = ledger.see_files("s", [A])[A]
        ledger.record_archived(file_id, run, tmp_path / "a", 5, "1" * 64, decrypted=True,
                               signer=None)
    with store.open() as again:
        assert again.versions_by_key("s")[A].archived


# --- transactions (group commits) ------------------------------------------------------------------


def test_a_transaction_commits_its_records_together(store: Store, ledger: Ledger,
                                                    tmp_path: Path) -> None:
    run = ledger.start_run("fetch", 1)
    ids = ledger.see_files("s", [A, B])
    with store.open() as observer:
        with ledger.transaction():
            ledger.record_download(ids[A], run, tmp_path / "a", 10, "0" * 64)
            ledger.record_download(ids[B], run, tmp_path / "b", 20, "1" * 64)
            assert ledger.count("downloads") == 2, "this connection sees its own writes"
            assert observer.count("downloads") == 0, "nobody else sees them before the commit"
        assert observer.count("downloads") == 2
    with pytest.raises(RuntimeError), ledger.transaction():
        ledger.record_archived(ids[A], run, tmp_path / "a.out", 5, "2" * 64, decrypted=True,
                               signer=None)
        raise RuntimeError("the caller gives up")
    assert ledger.count("archived") == 0, "an abandoned transaction leaves nothing"


def test_a_failing_record_inside_a_transaction_takes_back_only_its_own_writes(
        ledger: Ledger, tmp_path: Path) -> None:
    run = ledger.start_run("fetch", 1)
    file_id = ledger.see_files("s", [A])[A]
    with ledger.transaction():
        ledger.record_download(file_id, run, tmp_path / "a", 10, "0" * 64)
        with pytest.raises((sqlite3.Error, ReportsyncError)):
            ledger.record_download(file_id + 1000, run, tmp_path / "x", 1, "1" * 64)  # no file
        ledger.record_failure("s", "a.pgp", file_id, run, "archive", "bad")
    assert ledger.count("downloads") == 1 and ledger.count("failures") == 1


def test_another_thread_waits_for_an_open_transaction(ledger: Ledger, tmp_path: Path) -> None:
    run = ledger.start_run("fetch", 1)
    file_id = ledger.see_files("s", [A])[A]
    order: list[str] = []
    started = threading.Event()

    def other() -> None:
        started.set()
        ledger.record_failure("s", "b.pgp", None, run, "name", "unsafe")
        order.append("other")

    with ledger.transaction():
        ledger.record_download(file_id, run, tmp_path / "a", 10, "0" * 64)
        thread = threading.Thread(target=other)
        thread.start()
        started.wait(5)
        time.sleep(0.2)
        order.append("transaction")
    thread.join(10)
    assert order == ["transaction", "other"]
    assert ledger.count("failures") == 1


# --- per-source locks ------------------------------------------------------------------------------


def test_a_source_lock_is_held_once_and_names_its_holder(store: Store, ledger: Ledger) -> None:
    import os
    import socket

    assert ledger.lock_holder("s") is None
    lock = ledger.try_lock_source("s", command="fetch")
    assert lock is not None and lock.held
    assert ledger.try_lock_source("s") is None, "held: a second try is refused"
    with store.open() as other:
        assert other.try_lock_source("s") is None, "also through another connection"
        holder = other.lock_holder("s")
        assert holder is not None
        assert (holder.host, holder.pid, holder.command) == (socket.gethostname(), os.getpid(),
                                                             "fetch")
        assert f"pid {os.getpid()} on {socket.gethostname()}" in holder.describe()
        other_lock = other.try_lock_source("t")
        assert other_lock is not None, "another source is free"
        other_lock.release()
    lock.release()
    lock.release()  # harmless
    assert not lock.held and ledger.lock_holder("s") is None
    with ledger.try_lock_source("s") as again:  # type: ignore[union-attr]
        assert again.held
    assert ledger.lock_holder("s") is None, "released at the end of the with block"


def test_status_from_the_index_says_what_the_full_read_says(ledger: Ledger,
                                                           tmp_path: Path) -> None:
    """``status`` reads every version compactly and in full only those that can act; the
    counts, notices and window it reports are what the full read (``versions``) gives."""
    from reportsync import retention
    from reportsync.config.loader import parse_config
    from reportsync.status import delivery_window, status

    now = time.time()

    def key(name: str, age_days: float) -> tuple[str, int, int]:
        return (name, 7, int(now - age_days * 86400))

    young, old, dropped = key("young.xml", 1), key("old.xml", 120), key("dropped.xml", 40)
    at_risk, lost, acked = key("risk.xml", 95), key("lost.xml", 30), key("acked.xml", 30)
    failing, remote_gone = key("failing.xml", 3), key("taken.xml", 20)
    versions = [young, old, dropped, at_risk, lost, acked, failing, remote_gone]
    run = ledger.start_run("fetch", 1)
    ids = ledger.see_files("s", versions)
    for archived in (young, old, dropped, remote_gone):
        ledger.record_download(ids[archived], run, tmp_path / f"{archived[0]}.pgp", 7, "d" * 64)
        ledger.record_archived(ids[archived], run, tmp_path / archived[0], 7, "e" * 64,
                               decrypted=True, signer=None)
    ledger.record_deletion(ids[dropped], run, "archive", str(tmp_path / "dropped.xml"), "old")
    ledger.record_deletion(ids[remote_gone], run, "remote", "taken.xml", "fetched")
    ledger.record_download(ids[failing], run, tmp_path / "failing.xml.pgp", 7, "f" * 64)
    ledger.record_failure("s", "failing.xml", ids[failing], run, "decrypt", "bad key")
    ledger.acknowledge_lost("s", "acked.xml")
    ledger.see_files("s", [young, old, dropped, at_risk, failing])  # lost, acked, taken: gone
    config = parse_config({
        "retention": {"local_encrypted": "expire", "archive_days": 60},
        "sources": {"s": {"protocol": "ftp", "host": "127.0.0.1", "username": "u",
                          "password_env": "RS_UNUSED", "remote_dir": "out",
                          "download_dir": str(tmp_path / "d"), "output_dir": str(tmp_path / "o"),
                          "expect_every_days": 2}}})
    source, policy = config.sources["s"], config.retention

    report = status(config, ledger, now=now).sources[0]

    full = ledger.versions("s")
    planned = retention.plan(source, policy, full, None, now)
    assert report.notices == planned.notices
    assert {notice.name for notice in report.notices} >= {"risk.xml", "lost.xml"}
    assert report.archived == sum(version.archived for version in full) == 4
    assert report.in_archive == sum(version.in_archive for version in full) == 3
    assert report.purged == sum(version.gone_at is not None and "remote" not in version.deleted
                                for version in full) == 2
    assert report.window == delivery_window(full, planned.notices, policy, now)
    assert sum(day.archived for day in report.window.days) == 3, "old.xml: before the window"
