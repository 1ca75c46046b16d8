"""The embedded ledger: one SQLite file in the state dir (the default).

WAL journal and ``synchronous=FULL``: a record, once committed, survives a killed process or a
power cut. The schema version lives in ``PRAGMA user_version``. Writers take ``BEGIN IMMEDIATE``,
so two processes never both hold a read snapshot they then fail to upgrade. SQLite serves one
machine: the state dir's ``RunLock`` keeps its runs apart, and the per-source locks are locks
within this process.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from reportsync.errors import LedgerDamagedError, LedgerVersionError, StorageError
from reportsync.fsutil import ensure_private_dir, make_private, storage_error
from reportsync.ledger.base import Cursor, Engine, Row, SourceLock
from reportsync.ledger.schema import MIGRATIONS, SCHEMA_VERSION
from reportsync.lock import LockHolder
from reportsync.units import MiB

LEDGER_FILE = "ledger.sqlite3"
IN_MEMORY = ":memory:"

# The per-source locks of this process, by (ledger, source): a second try_lock_source for a held
# source gets None, whichever Ledger object of this process asks.
_local_locks: dict[tuple[str, str], LockHolder] = {}
_local_locks_guard = threading.Lock()

# SQLite's primary result codes (sqlite3.h) that say what is wrong with the file or its disk,
# not with the SQL: each is said as what it is, the damage apart from a full disk
SQLITE_PERM, SQLITE_READONLY, SQLITE_IOERR, SQLITE_CORRUPT = 3, 8, 10, 11
SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_NOTADB = 13, 14, 26
# What the same codes say in words (Python < 3.11 has no ``sqlite_errorcode``).
_CODE_WORDS = ((SQLITE_CORRUPT, "malformed"), (SQLITE_NOTADB, "not a database"),
               (SQLITE_FULL, "disk is full"), (SQLITE_IOERR, "disk i/o error"),
               (SQLITE_READONLY, "readonly"), (SQLITE_CANTOPEN, "unable to open"))
# SQLite reports a write the disk refused as SQLITE_FULL, but an -shm or -wal file it could not
# grow as a plain I/O error: with less than this free on the ledger's disk, that is a full disk.
IOERR_FULL_BELOW = 1 * MiB
# How many problems the check on open reports (the first few say enough; it stops there).
QUICK_CHECK_PROBLEMS = 3


def result_code(exc: sqlite3.Error) -> int | None:
    """The primary SQLite result code of ``exc``, or None when it names none of the above."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF  # the primary code under an extended one (SQLITE_IOERR_WRITE, ...)
    words = str(exc).lower()
    return next((code for code, phrase in _CODE_WORDS if phrase in words), None)


def damaged(location: str, detail: str) -> LedgerDamagedError:
    """The one error (and remedy) for a damaged SQLite ledger: the check on open, a malformed
    page met by a read, ``verify``'s full check and doctor's all say it in these words."""
    return LedgerDamagedError(f"the ledger {location} is damaged: {detail}", path=location)


def not_a_ledger(location: str, exc: sqlite3.Error) -> LedgerDamagedError:
    """A file that is no SQLite database, or one whose tables are not a ledger's."""
    return LedgerDamagedError(f"the ledger {location} is damaged or not a ledger: {exc}",
                              path=location)


def ledger_fault(exc: sqlite3.Error, path: Path | None) -> StorageError | None:
    """What a failed SQLite call means for the person: the ledger damaged, the disk under it
    full, its folder not writable, a disk I/O error; None for anything else (a defect in the
    SQL, a busy database), which the caller lets through as it is."""
    location = str(path) if path is not None else IN_MEMORY
    code = result_code(exc)
    if code == SQLITE_CORRUPT:
        return damaged(location, str(exc))
    if code == SQLITE_NOTADB:
        return not_a_ledger(location, exc)
    if path is None:
        return None if code is None else StorageError(f"the ledger in memory failed: {exc}")
    if code == SQLITE_FULL or (code == SQLITE_IOERR and _nearly_full(path.parent)):
        return storage_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), path)
    if code in (SQLITE_PERM, SQLITE_READONLY, SQLITE_CANTOPEN):
        return storage_error(OSError(errno.EACCES, str(exc)), path)
    if code == SQLITE_IOERR:
        return StorageError(
            f"the disk failed a read or write of the ledger {path} ({exc})", path=location,
            remedy="Check the disk and its file system (the system log names the device); "
            "the ledger itself may be fine: run again once the disk is healthy.")
    return None


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < IOERR_FULL_BELOW
    except OSError:
        return False


class _Rows:
    """A cursor whose rows, read lazily, fail in the person's words as every call does."""

    __slots__ = ("_cursor", "_path")

    def __init__(self, cursor: sqlite3.Cursor, path: Path | None) -> None:
        self._cursor = cursor
        self._path = path

    def fetchone(self) -> Row:
        with translated(self._path):
            return self._cursor.fetchone()

    def fetchall(self) -> list[Row]:
        with translated(self._path):
            return self._cursor.fetchall()

    def __iter__(self) -> Iterator[Row]:
        with translated(self._path):
            yield from self._cursor

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid


@contextlib.contextmanager
def translated(path: Path | None) -> Iterator[None]:
    """SQLite's errors about the file or its disk as ``ledger_fault`` says them."""
    try:
        yield
    except sqlite3.Error as exc:
        fault = ledger_fault(exc, path)
        if fault is None:
            raise
        raise fault from None


class SqliteEngine(Engine):
    def __init__(self, path: Path | None) -> None:
        """The ledger at ``path``, created if missing; None: an empty one in memory."""
        self.path = path
        self.location = str(path) if path is not None else IN_MEMORY
        # one file however its path is spelled; every ledger in memory is a ledger of its own
        self._lock_scope = os.path.realpath(path) if path is not None else f"{IN_MEMORY}{id(self)}"
        if path is not None:
            ensure_private_dir(path.parent)
        with translated(path):
            self._db = sqlite3.connect(path if path is not None else IN_MEMORY, timeout=30,
                                       check_same_thread=False, isolation_level=None)
        try:
            with translated(path):
                if path is not None:
                    make_private(path)
                self._db.row_factory = sqlite3.Row
                # before anything writes to it: a damaged file is said so and left as it is
                self.require_intact()
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.execute("PRAGMA foreign_keys=ON")
                self._migrate()
        except sqlite3.DatabaseError as exc:  # not the disk, nor the file: its tables do not fit
            self._db.close()
            raise not_a_ledger(self.location, exc) from None
        except BaseException:
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
        with translated(self.path):
            return _Rows(self._db.execute(sql, params), self.path)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with translated(self.path):
            self._db.executemany(sql, rows)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with translated(self.path):
            cursor = self._db.cursor()
            cursor.row_factory = None  # plain tuples, made in C
            return cursor.execute(sql, params).fetchall()

    def insert(self, sql: str, params: Sequence[Any]) -> int:
        with translated(self.path):
            return int(self._db.execute(sql, params).lastrowid or 0)

    def begin(self) -> None:
        with translated(self.path):
            self._db.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        with translated(self.path):
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error:
                if self._db.in_transaction:  # a failed COMMIT leaves the transaction open
                    self._db.execute("ROLLBACK")
                raise

    def rollback(self) -> None:
        with translated(self.path):
            # SQLite may already have rolled back itself (a full disk, say): nothing is open
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")

    def schema_version(self) -> int:
        with translated(self.path):
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def integrity_check(self, *, quick: bool = False) -> str:
        """SQLite's own check of every page: "ok", or its first findings, one a line.
        ``quick`` is ``PRAGMA quick_check``: each page's structure, without comparing every
        index with its table; it reads the whole file once (about 60 ms for a ledger of 50,000
        file versions, docs/troubleshooting.md), cheap enough for every open."""
        pragma = "quick_check" if quick else "integrity_check"
        with translated(self.path):
            rows = self._db.execute(f"PRAGMA {pragma}({QUICK_CHECK_PROBLEMS})").fetchall()
        return "\n".join(str(row[0]) for row in rows)

    def require_intact(self, *, thorough: bool = False) -> None:
        """Raise LedgerDamagedError unless SQLite's check passes (``thorough``: the full
        ``integrity_check``, else ``quick_check``)."""
        result = self.integrity_check(quick=not thorough)
        if result != "ok":
            raise damaged(self.location, f"SQLite's {'integrity' if thorough else 'quick'} "
                          f"check found: {_first_finding(result)}")

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


def _first_finding(result: str) -> str:
    """SQLite's first finding, without its "*** in database main ***" heading."""
    lines = [line for line in result.splitlines() if line.strip() and not line.startswith("***")]
    return lines[0] if lines else result
