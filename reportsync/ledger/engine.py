"""The seam between ``Ledger`` and a database: an ``Engine`` runs the SQL (SQLite or PostgreSQL),
a ``Cursor`` is what a statement returns, a ``SourceLock`` a held per-source lock."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from reportsync.errors import LedgerDamagedError
from reportsync.lock import LockHolder

Row = Any
"""A result row: indexable by position and by column name (``sqlite3.Row`` or its like)."""


class Cursor(Protocol):
    """What a statement returns (a DB-API cursor of either driver)."""

    def fetchone(self) -> Row: ...  # None when there is no row

    def fetchall(self) -> list[Row]: ...

    def __iter__(self) -> Iterator[Row]: ...


class SourceLock:
    """A source's lock, held until ``release()`` (or the end of a ``with`` block, or the end of
    the holder's connection or process). Releasing twice is harmless."""

    def __init__(self, source: str, release: Any) -> None:
        self.source = source
        self._release = release
        self._held = True

    @property
    def held(self) -> bool:
        return self._held

    def release(self) -> None:
        if self._held:
            self._held = False
            self._release()

    def __enter__(self) -> SourceLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class Engine(ABC):
    """One backend: runs the ledger's SQL (written with ``?`` placeholders) on its database."""

    location: str  # for messages: the file, or the database URL (never with a password)
    path: Path | None = None  # the SQLite file; None in memory or for PostgreSQL
    # upserts of many rows in one statement take row locks in the order given: two hosts
    # writing one source in different orders could deadlock, so a shared database sorts them
    ordered_upserts: bool = False

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    @abstractmethod
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Every row of a query as a plain tuple: for a big read of a few columns (a source's
        50,000 versions), where a row object with names per row is most of the cost."""
        return [tuple(row) for row in self.execute(sql, params).fetchall()]

    @abstractmethod
    def insert(self, sql: str, params: Sequence[Any]) -> int:
        """Run an INSERT of one row into a table with an ``id``; its id."""

    @abstractmethod
    def begin(self) -> None: ...

    @abstractmethod
    def commit(self) -> None: ...

    @abstractmethod
    def rollback(self) -> None: ...

    @abstractmethod
    def schema_version(self) -> int: ...

    @abstractmethod
    def integrity_check(self) -> str:
        """"ok", or what is wrong with the database."""

    def require_intact(self, *, thorough: bool = False) -> None:
        """Raise LedgerDamagedError unless ``integrity_check`` says "ok". ``thorough``: check
        everything the backend can, however long it takes (``verify``); else what is cheap
        enough for every open (SQLite overrides this with its quick check)."""
        result = self.integrity_check()
        if result != "ok":
            raise LedgerDamagedError(f"the ledger {self.location} is damaged: {result}",
                                     path=self.location)

    @abstractmethod
    def try_lock_source(self, source: str, holder: LockHolder) -> SourceLock | None: ...

    @abstractmethod
    def lock_holder(self, source: str) -> LockHolder | None: ...

    @abstractmethod
    def close(self) -> None: ...
