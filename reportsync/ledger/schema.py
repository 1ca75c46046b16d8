"""The ledger's schema, once, and the few words PostgreSQL spells differently.

``MIGRATIONS[n]`` takes a ledger from schema version n to n+1. It is written in SQLite's dialect,
and PostgreSQL runs the same text through ``postgres_ddl``: the tables, keys, indexes (the partial
unique index of open failures included) and data changes are one definition for both backends,
so they cannot drift. The differences are type names only:

- ``INTEGER PRIMARY KEY`` (SQLite's rowid) is ``BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY``;
- ``INTEGER`` is ``BIGINT`` (SQLite's integers are 64-bit; PostgreSQL's ``integer`` is 32-bit and
  a file size or an mtime after 2038 would not fit);
- ``REAL`` is ``DOUBLE PRECISION`` (PostgreSQL's ``real`` is 4 bytes: a timestamp would lose its
  seconds).

Statements (``postgres_sql``) differ in their placeholders (``?`` → ``%s``) and in
``GROUP_CONCAT(x)`` → ``string_agg(x, ',')``; ``ON CONFLICT``, partial-index conflict targets,
``EXISTS`` and the rest are the same text. PostgreSQL has a few tables of its own
(``POSTGRES_ONLY``): the schema version (SQLite keeps it in ``PRAGMA user_version``), who holds
each source's lock, and which SQLite ledgers were imported.
"""

from __future__ import annotations

import functools
import re

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
    # 4 → 5: the on_new_report hook of each report archived while one was configured
    # (vocab.HookState: due, failed, succeeded); a report archived before has no row and no hook
    """
    CREATE TABLE hooks (
        id INTEGER PRIMARY KEY,
        file_id INTEGER NOT NULL UNIQUE REFERENCES remote_files (id),
        run_id INTEGER REFERENCES runs (id),
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        exit_code INTEGER,
        reason TEXT,
        due_at REAL NOT NULL,
        last_at REAL
    );
    CREATE INDEX hooks_by_state ON hooks (state);
    """,
    # 5 → 6: when each source was last listed. A listing moves this one row instead of
    # remote_files.last_seen of every version still listed (50,000 rows written on every no-op
    # run): every version of the source without gone_at was listed then, so its last sighting
    # is the later of its last_seen and listed_at (``base.LAST_SEEN``). A source with no row
    # yet: last_seen says it all, as in schema 5.
    """
    CREATE TABLE source_listings (
        source TEXT PRIMARY KEY,
        listed_at REAL NOT NULL
    );
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)

TABLES = ("runs", "remote_files", "downloads", "archived", "failures", "deletions", "source_runs",
          "hooks")
"""The ledger's record tables, in the order their rows can be copied (referenced ones first)."""

# The version table is created before any migration (it says which one to run next).
POSTGRES_VERSION_TABLE = """
    CREATE TABLE IF NOT EXISTS reportsync_schema (
        singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
        version INTEGER NOT NULL
    )
"""

# PostgreSQL-only tables, created by the migration to the version named (the shared ledger
# arrived with schema 4, so a PostgreSQL ledger gets them on its way there).
POSTGRES_ONLY: dict[int, str] = {
    4: """
    CREATE TABLE source_locks (
        source TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        command TEXT NOT NULL,
        since REAL NOT NULL,
        backend_pid INTEGER NOT NULL
    );
    CREATE TABLE ledger_imports (
        id INTEGER PRIMARY KEY,
        origin TEXT NOT NULL,
        host TEXT NOT NULL,
        at REAL NOT NULL,
        forced INTEGER NOT NULL,
        counts TEXT NOT NULL
    );
    """,
}

_TYPES = (
    (re.compile(r"\bINTEGER PRIMARY KEY\b"), "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
)
_GROUP_CONCAT = re.compile(r"\bGROUP_CONCAT\(([^()]*)\)")


def postgres_ddl(script: str) -> str:
    """A schema script of ``MIGRATIONS`` (SQLite's types) in PostgreSQL's types."""
    for pattern, replacement in _TYPES:
        script = pattern.sub(replacement, script)
    return script


def postgres_migration(version: int) -> str:
    """The PostgreSQL script that takes a ledger from ``version`` to ``version + 1``."""
    return postgres_ddl(MIGRATIONS[version] + POSTGRES_ONLY.get(version + 1, ""))


@functools.lru_cache(maxsize=256)
def postgres_sql(statement: str) -> str:
    """A statement written for SQLite (``?`` placeholders) as psycopg takes it (``%s``)."""
    statement = statement.replace("%", "%%").replace("?", "%s")
    return _GROUP_CONCAT.sub(r"string_agg(\1, ',')", statement)
