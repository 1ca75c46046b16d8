"""The embedded ledger: one SQLite file in the state dir (the default).

WAL journal and ``synchronous=FULL``: a record, once committed, survives a killed process or a
power cut. The schema version lives in ``PRAGMA user_version``. Writers take ``BEGIN IMMEDIATE``,
so two processes never both hold a read snapshot they then fail to upgrade. SQLite serves one
machine: the state dir's ``RunLock`` keeps its runs apart, and the per-source locks are locks
within this process.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from reportsync.errors import LedgerVersionError, StorageError
from reportsync.fsutil import ensure_private_dir, make_private
from reportsync.ledger.base import Cursor, Engine, SourceLock
from reportsync.ledger.schema import MIGRATIONS, SCHEMA_VERSION
from reportsync.lock import LockHolder

LEDGER_FILE = "ledger.sqlite3"
IN_MEMORY = ":memory:"

# The per-source locks of this process, by (ledger, source): a second try_lock_source for a held
# source gets None, whichever Ledger object of this process asks.
_local_locks: dict[tuple[str, str], LockHolder] = {}
_local_locks_guard = threading.Lock()


class SqliteEngine(Engine):
    def __init__(self, path: Path | None) -> None:
        """The ledger at ``path``, created if missing; None: an empty one in memory."""
        self.path = path
        self.location = str(path) if path is not None else IN_MEMORY
        # one file however its path is spelled; every ledger in memory is a ledger of its own
        self._lock_scope = os.path.realpath(path) if path is not None else f"{IN_MEMORY}{id(self)}"
        if path is not None:
            ensure_private_dir(path.parent)
        try:
            self._db = sqlite3.connect(path if path is not None else IN_MEMORY, timeout=30,
                                       check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the ledger {path}: {exc}", path=str(path)) from None
        if path is not None:
            make_private(path)
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
        except LedgerVersionError:
            self._db.close()
            raise

    def _migrate(self) -> None:
        version = self.schema_version()
        if version > SCHEMA_VERSION:
            raise LedgerVersionError(
                f"the ledger {self.location} was written by a newer reportsync (schema "
                f"{version}; this version reads schema {SCHEMA_VERSION})",
                path=self.location)
        for target in range(version, SCHEMA_VERSION):
            # one script, so the schema change and its version number commit together
            script = f"BEGIN IMMEDIATE;{MIGRATIONS[target]};PRAGMA user_version = {target + 1};COMMIT;"
            try:
                self._db.executescript(script)
            except sqlite3.Error:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self._db.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._db.executemany(sql, rows)

    def insert(self, sql: str, params: Sequence[Any]) -> int:
        return int(self._db.execute(sql, params).lastrowid or 0)

    def begin(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error:
            if self._db.in_transaction:  # a failed COMMIT leaves the transaction open
                self._db.execute("ROLLBACK")
            raise

    def rollback(self) -> None:
        self._db.execute("ROLLBACK")

    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def integrity_check(self) -> str:
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    def try_lock_source(self, source: str, holder: LockHolder) -> SourceLock | None:
        key = (self._lock_scope, source)
        with _local_locks_guard:
            if key in _local_locks:
                return None
            _local_locks[key] = holder

        def release() -> None:
            with _local_locks_guard:
                _local_locks.pop(key, None)

        return SourceLock(source, release)

    def lock_holder(self, source: str) -> LockHolder | None:
        with _local_locks_guard:
            return _local_locks.get((self._lock_scope, source))

    def close(self) -> None:
        self._db.close()
