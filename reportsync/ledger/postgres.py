"""The shared ledger: a PostgreSQL database several hosts use at once (psycopg 3).

The same tables, keys and SQL as the SQLite ledger (``schema.py``), in autocommit mode with
explicit transactions, so a connection never sits idle inside one. The schema version is the one
row of ``reportsync_schema``; the first run of a new version creates or migrates the schema in one
transaction, under a transaction-level advisory lock, so two hosts starting at once do not both
migrate (the second waits, then finds the work done).

Per-source locks are session-level advisory locks on a connection of their own (opened on the
first lock): the server drops them when that connection ends, so a killed host's locks go with it.
Who holds each is upserted into ``source_locks`` after acquiring, and read back only joined with
``pg_locks``, so the row of a holder that died is never reported.

No password appears in a message: psycopg's errors can carry connection details, and every
message built from one goes through ``scrub``. The password reaches libpq as a keyword argument,
never in a URL, argv or the environment.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import tuple_row

from reportsync.config import Secret
from reportsync.errors import (
    AuthenticationError,
    ConfigError,
    InternalError,
    LedgerVersionError,
    NetworkError,
    Problem,
    ReportsyncError,
    StorageError,
)
from reportsync.ledger.base import Cursor, Engine, SourceLock
from reportsync.ledger.schema import (
    POSTGRES_VERSION_TABLE,
    SCHEMA_VERSION,
    TABLES,
    postgres_migration,
    postgres_sql,
)
from reportsync.lock import LockHolder

CONNECT_TIMEOUT = 10  # seconds, unless the URL says otherwise: cron must not hang on a dead host
APPLICATION_NAME = "reportsync"  # how its sessions show in pg_stat_activity
DEFAULT_PORT = 5432
PASSWORD_REMEDY = ("Check the role in settings.ledger_url and the password in "
                   "ledger_password_env / ledger_password_file (or ~/.pgpass).")


def advisory_key(text: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``text`` (the same on every host and
    version: computed here, not by a server function that may change between releases)."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def source_lock_key(source: str) -> int:
    return advisory_key(f"reportsync:source:{source}")


SCHEMA_LOCK_KEY = advisory_key("reportsync:schema")
IMPORT_LOCK_KEY = advisory_key("reportsync:import")


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without any password: the ones given, ``password=...`` and ``user:pw@``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = re.sub(r"(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", text)
    return re.sub(r"(://[^:/@\s]*):[^@\s]*@", r"\1:***@", text)


# --- where to connect ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresTarget:
    """A database to connect to: its URL (no password in it: the config refuses one), the
    password if one is configured, and the key the URL came from (for messages)."""

    url: str
    password: Secret | None = field(default=None, repr=False)
    passfile: str | None = None  # PGPASSFILE of the environment the run was given
    config_key: str = "settings.ledger_url"

    @property
    def params(self) -> dict[str, Any]:
        try:
            return dict(conninfo_to_dict(self.url))
        except psycopg.Error as exc:
            raise ConfigError([Problem(self.config_key, "is not a connection URL libpq takes: "
                                       f"{scrub(str(exc), self._secrets())}")]) from None

    @property
    def where(self) -> str:
        """``host:port`` for messages (libpq's defaults when the URL names none)."""
        params = self.params
        host = str(params.get("host") or params.get("hostaddr") or "localhost")
        return f"{host}:{params.get('port') or DEFAULT_PORT}"

    @property
    def user(self) -> str | None:
        user = self.params.get("user")
        return str(user) if user else None

    def _secrets(self) -> list[str]:
        return [self.password.reveal()] if self.password is not None else []

    def scrub(self, text: str) -> str:
        return scrub(text, self._secrets())

    def connect(self, *, autocommit: bool = True) -> psycopg.Connection[Any]:
        options: dict[str, Any] = {}
        params = self.params
        if "connect_timeout" not in params:
            options["connect_timeout"] = CONNECT_TIMEOUT
        if "application_name" not in params:
            options["application_name"] = APPLICATION_NAME
        if self.password is not None:
            options["password"] = self.password.reveal()
        elif self.passfile and "passfile" not in params:
            options["passfile"] = self.passfile
        try:
            return psycopg.connect(self.url, autocommit=autocommit, row_factory=_row_factory,
                                   **options)
        except psycopg.Error as exc:
            raise self.connect_error(exc) from None

    def connect_error(self, exc: psycopg.Error) -> ReportsyncError:
        """What a failed connection means for the person, in words without the password.

        libpq reports no SQLSTATE for a failed connection, so what it is comes from what libpq
        knows (whether the server asked for a password, and whether one was sent) and, where
        that is not enough, from the server's (English) message.
        """
        text = str(exc)
        reason = _reason(self.scrub(text))
        pgconn = getattr(exc, "pgconn", None)
        # libpq's PQconnectionNeedsPassword: the server wanted one and none was available;
        # PQconnectionUsedPassword: the server asked for one (so it was reached)
        missing = bool(pgconn is not None and pgconn.needs_password)
        asked = bool(pgconn is not None and pgconn.used_password)
        database = self.params.get("dbname")
        if _DATABASE_MISSING.search(text):
            return ConfigError([Problem(self.config_key, f"the database {database!r} does not "
                                        f"exist on the server at {self.where}")],
                               remedy="Create it (createdb, or CREATE DATABASE owned by the "
                               "ledger's role), or fix the database name in the URL.")
        if missing:
            return AuthenticationError(
                f"the ledger database at {self.where} asks for a password and none is "
                "configured", remedy="Set settings.ledger_password_env or "
                "ledger_password_file, or add the database to ~/.pgpass (mode 0600).")
        if _TRANSIENT.search(text):
            return NetworkError(f"the ledger database at {self.where} cannot take the "
                                f"connection now: {reason}")
        if asked or _AUTH_REFUSED.search(text):
            role = f" for role {self.user!r}" if self.user else ""
            return AuthenticationError(f"the ledger database at {self.where} refused the "
                                       f"login{role}: {reason}", remedy=PASSWORD_REMEDY)
        return NetworkError(
            f"cannot reach the ledger database at {self.where}: {reason}",
            remedy=f"Check the host and port in {self.config_key}, that PostgreSQL runs there "
            "and that no firewall is in the way; then run `reportsync doctor`.")


_DATABASE_MISSING = re.compile(r'database "[^"]*" does not exist')
_AUTH_REFUSED = re.compile(r"authentication failed|no pg_hba\.conf entry|role \"[^\"]*\" does "
                           r"not exist|not permitted to log in")
_TRANSIENT = re.compile(r"too many connections|starting up|shutting down|in recovery mode|"
                        r"remaining connection slots")


def _reason(text: str) -> str:
    """libpq's message without its preamble (the host and port are named by the caller)."""
    text = re.sub(r"^connection failed:\s*", "", text.strip())
    text = re.sub(r'^connection to server at "[^"]*"(?: \([^)]*\))?, port \d+ failed:\s*', "",
                  text)
    text = re.sub(r"^(FATAL|ERROR):\s+", "", text)
    return " ".join(text.split())


def _scalar(cursor: Any) -> Any:
    """The first column of the first row (None without a row)."""
    row = cursor.fetchone()
    return row[0] if row is not None else None


# --- rows ------------------------------------------------------------------------------------------


class PgRow:
    """A row by position and by column name, like ``sqlite3.Row`` (``dict(row)`` works)."""

    __slots__ = ("_index", "_values")

    def __init__(self, values: Sequence[Any], index: dict[str, int]) -> None:
        self._values = values
        self._index = index

    def __getitem__(self, key: int | str) -> Any:
        return self._values[key if isinstance(key, int) else self._index[key]]

    def keys(self) -> list[str]:
        return list(self._index)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], PgRow]:
    index = {column.name: number for number, column in enumerate(cursor.description or ())}
    return lambda values: PgRow(values, index)


# --- the engine -----------------------------------------------------------------------------------


class PostgresEngine(Engine):
    ordered_upserts = True

    def __init__(self, target: PostgresTarget) -> None:
        self._target = target
        self.location = target.url
        self._db = target.connect()
        self._lock_db: psycopg.Connection[Any] | None = None  # holds the source locks
        self._held: set[str] = set()
        self._guard = threading.Lock()

    @property
    def target(self) -> PostgresTarget:
        return self._target

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """psycopg's errors as the person's: a dropped connection is a network error, a
        refused write a storage one; the message names the database, never the password."""
        try:
            yield
        except psycopg.Error as exc:
            raise self._translated(exc) from None

    def _translated(self, exc: psycopg.Error) -> ReportsyncError:
        where = self._target.where
        reason = _reason(self._target.scrub(str(exc)))
        state = exc.sqlstate or ""
        if state == "42501" or state.startswith(("53", "40")):
            # no privilege; disk full or out of memory there; a deadlock or serialization failure
            return StorageError(f"the ledger database at {where} refused a write: {reason}",
                                remedy="Check that the ledger's role may write its tables and "
                                "that the database server has disk space; then run again.")
        if isinstance(exc, psycopg.OperationalError) or state.startswith(("08", "57")):
            return NetworkError(f"the connection to the ledger database at {where} failed: "
                                f"{reason}", remedy="Run again once the database is reachable; "
                                "what was recorded before the failure is kept.")
        return InternalError(f"the ledger database at {where} refused a statement "
                             f"(SQLSTATE {state or 'unknown'}): {reason}")

    # --- the schema -------------------------------------------------------------------------

    def prepare(self, *, create: bool) -> bool:
        """Bring the schema to this version (creating it with ``create``); False when there is
        none and ``create`` is False. A newer schema is refused, naming both versions."""
        with self.errors():
            version = self._read_version()
            if version is not None:
                self._refuse_newer(version)
                if version == SCHEMA_VERSION:
                    return True
            elif not create:
                return False
            self._db.execute("BEGIN")
            try:
                self._db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
                self._db.execute(POSTGRES_VERSION_TABLE)
                row = self._db.execute("SELECT version FROM reportsync_schema").fetchone()
                version = int(row[0]) if row is not None else 0
                self._refuse_newer(version)
                for step in range(version, SCHEMA_VERSION):
                    self._db.execute(postgres_migration(step))
                if row is None:
                    self._db.execute("INSERT INTO reportsync_schema (version) VALUES (%s)",
                                     (SCHEMA_VERSION,))
                else:
                    self._db.execute("UPDATE reportsync_schema SET version = %s",
                                     (SCHEMA_VERSION,))
            except BaseException:
                self.rollback()
                raise
            self._db.execute("COMMIT")
        return True

    def _read_version(self) -> int | None:
        if not _scalar(self._db.execute("SELECT to_regclass('reportsync_schema') IS NOT NULL")):
            return None
        row = self._db.execute("SELECT version FROM reportsync_schema").fetchone()
        return int(row[0]) if row is not None else None

    def _refuse_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise LedgerVersionError(
                f"the ledger database at {self._target.where} was written by a newer reportsync "
                f"(schema {version}; this version reads schema {SCHEMA_VERSION})",
                path=self.location)

    def schema_version(self) -> int:
        with self.errors():
            return self._read_version() or 0

    def integrity_check(self) -> str:
        """PostgreSQL keeps its own pages consistent; what can be wrong is a table missing."""
        with self.errors():
            missing = [table for table in TABLES
                       if not _scalar(self._db.execute("SELECT to_regclass(%s) IS NOT NULL",
                                                       (table,)))]
        return f"missing tables: {', '.join(missing)}" if missing else "ok"

    # --- statements -------------------------------------------------------------------------

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        with self.errors():
            return self._db.execute(postgres_sql(sql), params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.errors(), self._db.cursor() as cursor:
            cursor.executemany(postgres_sql(sql), rows)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.errors(), self._db.cursor(row_factory=tuple_row) as cursor:
            return cursor.execute(postgres_sql(sql), params).fetchall()

    def insert(self, sql: str, params: Sequence[Any]) -> int:
        with self.errors():
            row = self._db.execute(postgres_sql(sql + " RETURNING id"), params).fetchone()
        assert row is not None
        return int(row[0])

    def begin(self) -> None:
        with self.errors():
            self._db.execute("BEGIN")

    def commit(self) -> None:
        with self.errors():
            self._db.execute("COMMIT")

    def rollback(self) -> None:
        # after a dropped connection there is nothing to roll back: the server already did
        if not self._db.closed and not self._db.broken:
            with contextlib.suppress(psycopg.Error):
                self._db.execute("ROLLBACK")

    # --- per-source locks -------------------------------------------------------------------

    def _lock_connection(self) -> psycopg.Connection[Any]:
        if self._lock_db is None or self._lock_db.closed or self._lock_db.broken:
            self._lock_db = self._target.connect()
            self._held.clear()  # a lost connection lost its locks with it
        return self._lock_db

    def try_lock_source(self, source: str, holder: LockHolder) -> SourceLock | None:
        key = source_lock_key(source)
        with self._guard:
            if source in self._held:
                return None
            db = self._lock_connection()
            with self.errors():
                if not _scalar(db.execute("SELECT pg_try_advisory_lock(%s)", (key,))):
                    return None
                try:
                    db.execute(
                        "INSERT INTO source_locks (source, host, pid, command, since, "
                        "backend_pid) VALUES (%s, %s, %s, %s, %s, pg_backend_pid()) "
                        "ON CONFLICT (source) DO UPDATE SET host = excluded.host, "
                        "pid = excluded.pid, command = excluded.command, since = excluded.since, "
                        "backend_pid = excluded.backend_pid",
                        (source, holder.host, holder.pid, holder.command, holder.since))
                except BaseException:
                    with contextlib.suppress(psycopg.Error):
                        db.execute("SELECT pg_advisory_unlock(%s)", (key,))
                    raise
            self._held.add(source)

        def release() -> None:
            with self._guard:
                self._held.discard(source)
                if db.closed or db.broken:
                    return  # the server released it when the connection ended
                with contextlib.suppress(psycopg.Error):
                    db.execute("DELETE FROM source_locks WHERE source = %s "
                               "AND backend_pid = pg_backend_pid()", (source,))
                    db.execute("SELECT pg_advisory_unlock(%s)", (key,))

        return SourceLock(source, release)

    def lock_holder(self, source: str) -> LockHolder | None:
        unsigned = source_lock_key(source) & 0xFFFF_FFFF_FFFF_FFFF
        with self.errors():
            row = self._db.execute(
                # a bigint advisory key shows in pg_locks as classid (high half), objid (low)
                "SELECT h.host, h.pid, h.command, h.since FROM pg_locks l "
                "LEFT JOIN source_locks h ON h.source = %s AND h.backend_pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND l.classid::bigint = %s AND l.objid::bigint = %s LIMIT 1",
                (source, unsigned >> 32, unsigned & 0xFFFF_FFFF)).fetchone()
        if row is None:
            return None
        return LockHolder(host=row[0], pid=row[1], command=row[2], since=row[3])

    # --- the end ----------------------------------------------------------------------------

    def close(self) -> None:
        with self._guard:
            for connection in (self._lock_db, self._db):
                if connection is not None and not connection.closed:
                    with contextlib.suppress(psycopg.Error):
                        connection.close()
            self._held.clear()


def open_postgres(target: PostgresTarget, *, create: bool = True) -> PostgresEngine | None:
    """The engine over ``target``, its schema brought to this version; None when ``create`` is
    False and the database holds no ledger yet."""
    engine = PostgresEngine(target)
    try:
        if engine.prepare(create=create):
            return engine
    except BaseException:
        engine.close()
        raise
    engine.close()
    return None
