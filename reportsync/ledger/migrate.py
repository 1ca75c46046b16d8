"""``reportsync ledger migrate --to URL``: copy the SQLite ledger into a shared PostgreSQL one.

Everything is copied in one PostgreSQL transaction, under an advisory lock (two migrations into
one database wait for each other), with the state dir's run lock held (no fetch writes to the
SQLite ledger meanwhile): a migration that fails leaves the target as it was.

Ids differ between the two databases, so rows are matched by what they are, never by id:

- remote files by (source, name, size, mtime); one already in the target is merged (the earliest
  ``first_seen``, the latest ``last_seen`` and the ``gone_at`` that goes with it, an
  acknowledgement kept from either side);
- downloads and archived reports by their file (one each; the target's is kept);
- open failures by (source, name, stage), resolved ones by (source, name, stage, first_at);
- deletions by (file, target, path, at); runs by (command, started_at, pid); per-source runs by
  (run, source, command, finished_at).

So a second ``--force`` run into the same database copies nothing again: every row it finds is
reported as already there. Each migration is recorded in ``ledger_imports``.

A target that already holds records of the ledger's sources is refused unless ``force``: merging
two ledgers is allowed, but only when asked for.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from reportsync.config import Config
from reportsync.errors import ExitCode, UsageError
from reportsync.ledger import (
    LEDGER_FILE,
    TABLES,
    Ledger,
    ledger_password,
    open_postgres_ledger,
    postgres_driver,
)
from reportsync.ledger.base import LAST_SEEN, LAST_SEEN_JOIN, Engine
from reportsync.lock import RunLock

TARGET_KEY = "--to"


@dataclass(frozen=True)
class TableCopy:
    """One table: rows copied, and rows the target already had (matched, not doubled)."""

    table: str
    copied: int
    already_there: int


@dataclass(frozen=True)
class LedgerMigration:
    """``ledger migrate``: what was copied from which ledger into which database."""

    ledger: Path  # the SQLite ledger copied
    target: str  # the database URL (it holds no password: one is refused)
    sources: tuple[str, ...]
    forced: bool
    tables: tuple[TableCopy, ...]
    exit_code: ClassVar[ExitCode] = ExitCode.OK

    @property
    def copied(self) -> int:
        return sum(table.copied for table in self.tables)


def migrate_to_postgres(config: Config, url: str, *, force: bool = False) -> LedgerMigration:
    """Copy the state dir's SQLite ledger into the PostgreSQL database at ``url``."""
    settings = config.settings
    path = settings.state_dir / LEDGER_FILE
    if not path.is_file():
        raise UsageError(f"there is no SQLite ledger at {path}: nothing to migrate",
                         remedy="Run it on the machine that fetched so far, with its config "
                         "(the ledger is settings.state_dir/ledger.sqlite3).", path=str(path))
    postgres = postgres_driver(TARGET_KEY)  # before anything else: the driver may be missing
    password = ledger_password(settings, config.environ)
    with RunLock(settings.state_dir, "ledger migrate"), Ledger(path) as sqlite:
        target = open_postgres_ledger(url, password=password, environ=config.environ,
                                      config_key=TARGET_KEY)
        assert target is not None
        with target:
            copy = _Copy(sqlite._engine, target._engine)  # the backends' own business
            with target.transaction():
                target._engine.execute("SELECT pg_advisory_xact_lock(?)",
                                       (postgres.IMPORT_LOCK_KEY,))
                held = copy.sources_in_target()
                if held and not force:
                    raise UsageError(
                        f"the ledger database at {url} already holds records of "
                        f"{', '.join(held)}: refusing to merge without --force",
                        remedy="Check that this is the right database; to merge this ledger "
                        "into it, run again with --force (no record is doubled).")
                tables = copy.run()
                target._engine.insert(
                    "INSERT INTO ledger_imports (origin, host, at, forced, counts) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (str(path), socket.gethostname(), time.time(), int(force),
                     json.dumps({t.table: t.copied for t in tables}, sort_keys=True)))
    return LedgerMigration(ledger=path, target=url, sources=tuple(copy.sources), forced=force,
                           tables=tables)


class _Copy:
    """One migration's copy, table by table, mapping the SQLite ids to the target's."""

    def __init__(self, source: Engine, target: Engine) -> None:
        self.source = source
        self.target = target
        self.rows = {table: [dict(row) for row in source.execute(
            f"SELECT * FROM {table} ORDER BY id")] for table in TABLES}
        # each version's last sighting as a value of its own (schema 6 keeps the one of the
        # versions still listed as their source's listed_at): the merge compares them
        sightings = {int(row[0]): row[1] for row in source.rows(
            f"SELECT f.id, {LAST_SEEN} FROM remote_files f{LAST_SEEN_JOIN}")}
        for row in self.rows["remote_files"]:
            row["last_seen"] = sightings[int(row["id"])]
        self.sources = sorted({str(row["source"]) for table in ("remote_files", "failures",
                                                                "source_runs")
                               for row in self.rows[table]})
        self.run_ids: dict[int, int] = {}
        self.file_ids: dict[int, int] = {}

    def _target_rows(self, sql: str) -> list[Any]:
        """Rows of the target for this ledger's sources (``sql`` filters with ``= ANY(?)``)."""
        return list(self.target.execute(sql, (self.sources,)))

    def sources_in_target(self) -> list[str]:
        held = {str(row[0]) for table in ("remote_files", "failures", "source_runs")
                for row in self._target_rows(
                    f"SELECT DISTINCT source FROM {table} WHERE source = ANY(?)")}
        return sorted(held)

    def run(self) -> tuple[TableCopy, ...]:
        return (self._runs(), self._remote_files(), self._downloads("downloads"),
                self._downloads("archived"), self._failures(), self._deletions(),
                self._source_runs(), self._hooks())

    def _insert_missing(self, table: str, rows: Iterable[dict[str, Any]],
                        key: Callable[[dict[str, Any]], Hashable], present: set[Hashable],
                        columns: tuple[str, ...], *, on_conflict: str = "") -> TableCopy:
        """Insert the rows whose key the target lacks (ids mapped beforehand)."""
        missing, seen = [], 0
        for row in rows:
            seen += 1
            if key(row) in present:
                continue
            present.add(key(row))
            missing.append(tuple(row[column] for column in columns))
        if missing:
            self.target.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                f"({', '.join('?' for _ in columns)}){on_conflict}", missing)
        return TableCopy(table, len(missing), seen - len(missing))

    def _runs(self) -> TableCopy:
        present = {(row[1], row[2], row[3]): int(row[0]) for row in self.target.execute(
            "SELECT id, command, started_at, pid FROM runs")}
        copied = 0
        for row in self.rows["runs"]:
            natural = (row["command"], row["started_at"], row["pid"])
            if natural not in present:
                present[natural] = self.target.insert(
                    "INSERT INTO runs (command, started_at, finished_at, exit_code, counts, pid) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (row["command"], row["started_at"], row["finished_at"], row["exit_code"],
                     row["counts"], row["pid"]))
                copied += 1
            self.run_ids[int(row["id"])] = present[natural]
        return TableCopy("runs", copied, len(self.rows["runs"]) - copied)

    def _run(self, run_id: Any) -> int | None:
        return self.run_ids.get(int(run_id)) if run_id is not None else None

    def _remote_files(self) -> TableCopy:
        # the target's last sightings of these sources as values of their own too, before the
        # merge compares them (its listed_at would otherwise vouch for versions it never saw)
        self.target.execute(
            "UPDATE remote_files SET last_seen = l.listed_at FROM source_listings l "
            "WHERE l.source = remote_files.source AND remote_files.gone_at IS NULL "
            "AND l.listed_at > remote_files.last_seen AND remote_files.source = ANY(?)",
            (self.sources,))
        self.target.execute("DELETE FROM source_listings WHERE source = ANY(?)", (self.sources,))
        select = ("SELECT id, source, name, size, mtime FROM remote_files "
                  "WHERE source = ANY(?)")
        before = {(row[1], row[2], row[3], row[4]) for row in self._target_rows(select)}
        rows = sorted(self.rows["remote_files"],  # row-lock order: see Engine.ordered_upserts
                      key=lambda r: (r["source"], r["name"], r["size"], r["mtime"]))
        self.target.executemany(
            "INSERT INTO remote_files (source, name, size, mtime, first_seen, last_seen, "
            "gone_at, lost_acked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (source, name, size, mtime) DO UPDATE SET "
            "first_seen = LEAST(remote_files.first_seen, excluded.first_seen), "
            "last_seen = GREATEST(remote_files.last_seen, excluded.last_seen), "
            "gone_at = CASE WHEN excluded.last_seen > remote_files.last_seen "
            "THEN excluded.gone_at ELSE remote_files.gone_at END, "
            "lost_acked_at = COALESCE(remote_files.lost_acked_at, excluded.lost_acked_at)",
            [(r["source"], r["name"], r["size"], r["mtime"], r["first_seen"], r["last_seen"],
              r["gone_at"], r["lost_acked_at"]) for r in rows])
        ids = {(row[1], row[2], row[3], row[4]): int(row[0]) for row in self._target_rows(select)}
        for row in rows:
            self.file_ids[int(row["id"])] = ids[(row["source"], row["name"], row["size"],
                                                 row["mtime"])]
        present = sum((r["source"], r["name"], r["size"], r["mtime"]) in before for r in rows)
        return TableCopy("remote_files", len(rows) - present, present)

    def _mapped(self, table: str) -> list[dict[str, Any]]:
        """The table's rows with the target's file and run ids."""
        mapped = []
        for row in self.rows[table]:
            row = dict(row, run_id=self._run(row.get("run_id")))
            if row.get("file_id") is not None:
                row["file_id"] = self.file_ids[int(row["file_id"])]
            mapped.append(row)
        return mapped

    def _downloads(self, table: str) -> TableCopy:
        present: set[Hashable] = {int(row[0]) for row in self._target_rows(
            f"SELECT t.file_id FROM {table} t JOIN remote_files f ON f.id = t.file_id "
            "WHERE f.source = ANY(?)")}
        columns = ("file_id", "run_id", "local_path", "bytes", "sha256", "at") \
            if table == "downloads" else \
            ("file_id", "run_id", "output_path", "bytes", "sha256", "decrypted", "signer",
             "signature", "at")
        return self._insert_missing(table, self._mapped(table), lambda row: row["file_id"],
                                    present, columns, on_conflict=" ON CONFLICT (file_id) "
                                    "DO NOTHING")

    def _failures(self) -> TableCopy:
        present: set[Hashable] = set()
        for source, name, stage, first_at, resolved_at in self._target_rows(
                "SELECT source, name, stage, first_at, resolved_at FROM failures "
                "WHERE source = ANY(?)"):
            present.add((source, name, stage, first_at if resolved_at is not None else "open"))

        def key(row: dict[str, Any]) -> Hashable:
            return (row["source"], row["name"], row["stage"],
                    row["first_at"] if row["resolved_at"] is not None else "open")

        return self._insert_missing(
            "failures", self._mapped("failures"), key, present,
            ("file_id", "source", "name", "run_id", "stage", "reason", "attempts", "first_at",
             "last_at", "resolved_at"),
            on_conflict=" ON CONFLICT (source, name, stage) WHERE resolved_at IS NULL DO NOTHING")

    def _deletions(self) -> TableCopy:
        present: set[Hashable] = {tuple(row) for row in self._target_rows(
            "SELECT d.file_id, d.target, d.path, d.at FROM deletions d "
            "JOIN remote_files f ON f.id = d.file_id WHERE f.source = ANY(?)")}
        return self._insert_missing(
            "deletions", self._mapped("deletions"),
            lambda row: (row["file_id"], row["target"], row["path"], row["at"]), present,
            ("file_id", "run_id", "target", "path", "reason", "at"))

    def _source_runs(self) -> TableCopy:
        present: set[Hashable] = {tuple(row) for row in self._target_rows(
            "SELECT run_id, source, command, finished_at FROM source_runs WHERE source = ANY(?)")}
        return self._insert_missing(
            "source_runs", self._mapped("source_runs"),
            lambda row: (row["run_id"], row["source"], row["command"], row["finished_at"]),
            present, ("run_id", "source", "command", "finished_at", "exit_code", "counts",
                      "error"))

    def _hooks(self) -> TableCopy:
        present: set[Hashable] = {int(row[0]) for row in self._target_rows(
            "SELECT h.file_id FROM hooks h JOIN remote_files f ON f.id = h.file_id "
            "WHERE f.source = ANY(?)")}
        return self._insert_missing(
            "hooks", self._mapped("hooks"), lambda row: row["file_id"], present,
            ("file_id", "run_id", "state", "attempts", "exit_code", "reason", "due_at",
             "last_at"), on_conflict=" ON CONFLICT (file_id) DO NOTHING")
