"""The ledger: SQLite record of every remote file version seen, fetched, decrypted or failed.

WAL journal and ``synchronous=FULL``: a record, once committed, survives a killed process or a
power cut. The schema version lives in ``PRAGMA user_version``; ``MIGRATIONS[n]`` takes a
database from version n to n+1. One short transaction per step, so a killed run loses at most the
step it was in, and the unique keys make a repeated step a no-op rather than a duplicate.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from reportsync.errors import StorageError
from reportsync.fsutil import ensure_private_dir, make_private
from reportsync.vocab import DeletionTarget

LEDGER_FILE = "ledger.sqlite3"
IN_MEMORY = ":memory:"

MIGRATIONS: tuple[str, ...] = (
    # 0 → 1
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        command TEXT NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL,
        exit_code INTEGER,
        counts TEXT,
        pid INTEGER NOT NULL
    );
    CREATE TABLE remote_files (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        name TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime INTEGER NOT NULL,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        gone_at REAL,
        UNIQUE (source, name, size, mtime)
    );
    CREATE INDEX remote_files_by_name ON remote_files (source, name);
    CREATE TABLE downloads (
        id INTEGER PRIMARY KEY,
        file_id INTEGER NOT NULL UNIQUE REFERENCES remote_files (id),
        run_id INTEGER REFERENCES runs (id),
        local_path TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE TABLE archived (
        id INTEGER PRIMARY KEY,
        file_id INTEGER NOT NULL UNIQUE REFERENCES remote_files (id),
        run_id INTEGER REFERENCES runs (id),
        output_path TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        decrypted INTEGER NOT NULL,
        signer TEXT,
        at REAL NOT NULL
    );
    CREATE TABLE failures (
        id INTEGER PRIMARY KEY,
        file_id INTEGER REFERENCES remote_files (id),
        source TEXT NOT NULL,
        name TEXT NOT NULL,
        run_id INTEGER REFERENCES runs (id),
        stage TEXT NOT NULL,
        reason TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 1,
        first_at REAL NOT NULL,
        last_at REAL NOT NULL,
        resolved_at REAL
    );
    CREATE UNIQUE INDEX failures_open ON failures (source, name, stage) WHERE resolved_at IS NULL;
    CREATE TABLE deletions (
        id INTEGER PRIMARY KEY,
        file_id INTEGER REFERENCES remote_files (id),
        run_id INTEGER REFERENCES runs (id),
        target TEXT NOT NULL,
        path TEXT NOT NULL,
        reason TEXT NOT NULL,
        at REAL NOT NULL
    );
    """,
    # 1 → 2: per-source results of each run (for `status`), acknowledged lost files
    """
    CREATE TABLE source_runs (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs (id),
        source TEXT NOT NULL,
        command TEXT NOT NULL,
        finished_at REAL NOT NULL,
        exit_code INTEGER NOT NULL,
        counts TEXT,
        error TEXT
    );
    CREATE INDEX source_runs_by_source ON source_runs (source, finished_at);
    ALTER TABLE remote_files ADD COLUMN lost_acked_at REAL;
    """,
    # 2 → 3: `versions` looks up deletions and failures per file
    """
    CREATE INDEX deletions_by_file ON deletions (file_id);
    CREATE INDEX failures_by_name ON failures (source, name);
    """,
    # 3 → 4: how each decrypted report was signed (pgp.SIGNATURE_STATES; NULL: not a PGP
    # message). Schema 3 kept a signer only for a good signature; other rows stay unknown.
    """
    ALTER TABLE archived ADD COLUMN signature TEXT;
    UPDATE archived SET signature = 'good' WHERE signer IS NOT NULL;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class VersionState:
    """One remote file version with its local copies and what retention already did to it."""

    file_id: int
    source: str
    name: str
    size: int
    mtime: int
    gone_at: float | None  # no longer listed by the server
    lost_acked_at: float | None
    download_path: str | None
    download_sha256: str | None
    output_path: str | None
    output_sha256: str | None
    deleted: frozenset[str]  # deletion targets already carried out: local_encrypted, archive, remote
    failing: bool = False  # an open failure is recorded for this file name

    @property
    def archived(self) -> bool:
        return self.output_path is not None

    @property
    def acknowledged(self) -> bool:
        """A person acknowledged this version's failure or loss (``status --ack``): fetch does
        not retry it and it is no longer reported; a new version of the name is not covered."""
        return self.lost_acked_at is not None

    @property
    def in_archive(self) -> bool:
        """Its report is in ``output_dir`` now: archived, and not deleted since (archive_days)."""
        return self.output_path is not None and "archive" not in self.deleted

    @property
    def has_local_copy(self) -> bool:
        """An encrypted copy was downloaded and not deleted: the purge cannot take it from us."""
        return self.download_path is not None and DeletionTarget.LOCAL_ENCRYPTED not in self.deleted


class Ledger:
    """A connection to the ledger; safe to share between the threads of one run."""

    def __init__(self, path: Path | None) -> None:
        """The ledger at ``path``, created if missing; None: an empty one in memory."""
        self.path = path if path is not None else Path(IN_MEMORY)
        if path is not None:
            ensure_private_dir(path.parent)
        try:
            self._db = sqlite3.connect(path if path is not None else IN_MEMORY, timeout=30,
                                       check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the ledger {path}: {exc}", path=str(path)) from None
        if path is not None:
            make_private(path)
        self._lock = threading.RLock()
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StorageError(
                f"the ledger {path} is damaged or not a ledger: {exc}",
                path=str(path),
                remedy="Move the file aside and run again (the archive is kept; files are "
                "re-checked against it), or restore it from a backup.",
            ) from None

    @classmethod
    def in_state_dir(cls, state_dir: Path, *, create: bool = True) -> Ledger:
        """The state dir's ledger. ``create`` False (a dry run, which changes nothing anywhere):
        a missing ledger is not created, an empty one in memory stands in for it."""
        path = state_dir / LEDGER_FILE
        if not create and not path.exists():
            return cls(None)
        return cls(path)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"the ledger {self.path} was written by a newer reportsync (schema {version})",
                path=str(self.path),
                remedy="Upgrade reportsync on this machine.",
            )
        for target in range(version, SCHEMA_VERSION):
            # one script, so the schema change and its version number commit together
            script = f"BEGIN IMMEDIATE;{MIGRATIONS[target]};PRAGMA user_version = {target + 1};COMMIT;"
            with self._lock:
                try:
                    self._db.executescript(script)
                except sqlite3.Error:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    # --- runs ---------------------------------------------------------------------------------

    def start_run(self, command: str, pid: int) -> int:
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO runs (command, started_at, pid) VALUES (?, ?, ?)",
                (command, time.time(), pid),
            )
            return int(cursor.lastrowid or 0)

    def finish_run(self, run_id: int, exit_code: int, counts: dict[str, int]) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET finished_at = ?, exit_code = ?, counts = ? WHERE id = ?",
                (time.time(), exit_code, json.dumps(counts, sort_keys=True), run_id),
            )

    # --- remote files -------------------------------------------------------------------------

    def see_files(self, source: str,
                  versions: list[tuple[str, int, int]]) -> dict[tuple[str, int, int], int]:
        """Record that these (name, size, mtime) versions are listed now; return their ids.

        Versions of this source that are no longer listed get ``gone_at`` (purged by the provider
        or deleted by us); a version listed again loses it.
        """
        now = time.time()
        wanted = set(versions)
        with self._transaction() as db:
            # set-based, not row by row: a run with nothing new must stay cheap at 50,000 files
            db.executemany(
                "INSERT INTO remote_files (source, name, size, mtime, first_seen, last_seen) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (source, name, size, mtime) "
                "DO UPDATE SET last_seen = excluded.last_seen, gone_at = NULL",
                [(source, name, size, mtime, now, now) for name, size, mtime in wanted],
            )
            ids = {
                (row[1], row[2], row[3]): int(row[0])
                for row in db.execute("SELECT id, name, size, mtime FROM remote_files "
                                      "WHERE source = ? AND last_seen = ?", (source, now))
                if (row[1], row[2], row[3]) in wanted
            }
            db.execute("UPDATE remote_files SET gone_at = ? WHERE source = ? AND gone_at IS NULL "
                       "AND last_seen != ?", (now, source, now))
        return ids

    def record_download(self, file_id: int, run_id: int, path: Path, size: int, sha256: str) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO downloads (file_id, run_id, local_path, bytes, sha256, at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (file_id) DO UPDATE SET "
                "run_id = excluded.run_id, local_path = excluded.local_path, "
                "bytes = excluded.bytes, sha256 = excluded.sha256, at = excluded.at",
                (file_id, run_id, str(path), size, sha256, time.time()),
            )
            self._resolve_failures(db, file_id, "download")

    def record_archived(
        self,
        file_id: int,
        run_id: int,
        path: Path,
        size: int,
        sha256: str,
        *,
        decrypted: bool,
        signer: str | None,
        signature: str | None = None,
    ) -> None:
        """``signature``: how a decrypted report was signed (good, unsigned, no-public-key, ...),
        ``signer`` the signing key's fingerprint or key ID; both None for a file that is not PGP."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO archived (file_id, run_id, output_path, bytes, sha256, decrypted, "
                "signer, signature, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (file_id) DO NOTHING",
                (file_id, run_id, str(path), size, sha256, int(decrypted), signer, signature,
                 time.time()),
            )
            self._resolve_failures(db, file_id, None)

    def record_failure(
        self, source: str, name: str, file_id: int | None, run_id: int, stage: str, reason: str
    ) -> int:
        """Record (or count again) an open failure; returns how many attempts it has had."""
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO failures (file_id, source, name, run_id, stage, reason, first_at, "
                "last_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (source, name, stage) WHERE resolved_at IS NULL DO UPDATE SET "
                "attempts = attempts + 1, reason = excluded.reason, last_at = excluded.last_at, "
                "run_id = excluded.run_id, file_id = excluded.file_id",
                (file_id, source, name, run_id, stage, reason, now, now),
            )
            row = db.execute(
                "SELECT attempts FROM failures WHERE source = ? AND name = ? AND stage = ? "
                "AND resolved_at IS NULL", (source, name, stage)).fetchone()
            return int(row[0])

    def _resolve_failures(self, db: sqlite3.Connection, file_id: int, stage: str | None) -> None:
        row = db.execute("SELECT source, name FROM remote_files WHERE id = ?", (file_id,)).fetchone()
        if row is None:
            return
        if stage is None:
            db.execute("UPDATE failures SET resolved_at = ? WHERE source = ? AND name = ? AND "
                       "resolved_at IS NULL", (time.time(), row[0], row[1]))
        else:
            db.execute("UPDATE failures SET resolved_at = ? WHERE source = ? AND name = ? AND "
                       "stage = ? AND resolved_at IS NULL", (time.time(), row[0], row[1], stage))

    def open_failures(self, source: str | None = None) -> list[dict[str, object]]:
        query = ("SELECT source, name, stage, reason, attempts, first_at, last_at FROM failures "
                 "WHERE resolved_at IS NULL")
        args: tuple[str, ...] = ()
        if source is not None:
            query += " AND source = ?"
            args = (source,)
        return [dict(row) for row in self._db.execute(query + " ORDER BY source, name", args)]

    def count(self, table: str) -> int:
        if table not in ("runs", "remote_files", "downloads", "archived", "failures", "deletions",
                         "source_runs"):
            raise ValueError(table)
        return int(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    # --- retention, status, verify --------------------------------------------------------------

    def record_source_run(self, run_id: int, source: str, command: str, exit_code: int,
                          counts: dict[str, int], error: str | None) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO source_runs (run_id, source, command, finished_at, exit_code, counts, "
                "error) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, source, command, time.time(), exit_code,
                 json.dumps(counts, sort_keys=True), error),
            )

    def last_source_run(self, source: str, command: str = "fetch", *,
                        succeeded: bool = False) -> dict[str, object] | None:
        """The source's last run of ``command``; with ``succeeded``, its last one that exited 0
        (the "last success" monitoring alerts on)."""
        row = self._db.execute(
            "SELECT run_id, finished_at, exit_code, counts, error FROM source_runs "
            "WHERE source = ? AND command = ?" + (" AND exit_code = 0" if succeeded else "")
            + " ORDER BY finished_at DESC, id DESC LIMIT 1",
            (source, command)).fetchone()
        if row is None:
            return None
        result = dict(row)
        result["counts"] = json.loads(row["counts"] or "{}")
        return result

    def versions_by_key(self, source: str) -> dict[tuple[str, int, int], VersionState]:
        """``versions`` keyed by (name, size, mtime), the identity of a remote file version."""
        return {(version.name, version.size, version.mtime): version
                for version in self.versions(source)}

    def versions(self, source: str) -> list[VersionState]:
        """Everything retention and status need to know of each version of this source."""
        rows = self._db.execute(
            "SELECT f.id, f.name, f.size, f.mtime, f.gone_at, f.lost_acked_at, "
            "d.local_path, d.sha256 AS download_sha256, a.output_path, a.sha256 AS output_sha256, "
            "(SELECT GROUP_CONCAT(x.target) FROM deletions x WHERE x.file_id = f.id) AS deleted, "
            "EXISTS (SELECT 1 FROM failures y WHERE y.source = f.source AND y.name = f.name "
            "AND y.resolved_at IS NULL) AS failing "
            "FROM remote_files f LEFT JOIN downloads d ON d.file_id = f.id "
            "LEFT JOIN archived a ON a.file_id = f.id WHERE f.source = ? ORDER BY f.name, f.mtime",
            (source,)).fetchall()
        return [
            VersionState(
                file_id=row["id"], source=source, name=row["name"], size=row["size"],
                mtime=row["mtime"], gone_at=row["gone_at"], lost_acked_at=row["lost_acked_at"],
                download_path=row["local_path"], download_sha256=row["download_sha256"],
                output_path=row["output_path"], output_sha256=row["output_sha256"],
                deleted=frozenset((row["deleted"] or "").split(",")) - {""},
                failing=bool(row["failing"]),
            )
            for row in rows
        ]

    def record_deletion(self, file_id: int, run_id: int | None, target: str, path: str,
                        reason: str) -> None:
        with self._transaction() as db:
            db.execute("INSERT INTO deletions (file_id, run_id, target, path, reason, at) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       (file_id, run_id, target, path, reason, time.time()))

    def acknowledge_lost(self, source: str, name: str) -> int:
        """Mark every version of ``name`` the ledger knows acknowledged (fetch no longer retries
        or reports them; a later version is not covered), and close its open failures (a person
        has dealt with it); returns how many versions the ledger knows by that name (0: nothing
        is changed)."""
        now = time.time()
        with self._transaction() as db:
            known = db.execute("SELECT COUNT(*) FROM remote_files WHERE source = ? AND name = ?",
                               (source, name)).fetchone()[0]
            if not known:
                return 0
            db.execute(
                "UPDATE remote_files SET lost_acked_at = ? WHERE source = ? AND name = ? "
                "AND lost_acked_at IS NULL", (now, source, name))
            db.execute("UPDATE failures SET resolved_at = ? WHERE source = ? AND name = ? "
                       "AND resolved_at IS NULL", (now, source, name))
            return int(known)  # acknowledging again is harmless, not an error

    def integrity_check(self) -> str:
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])
