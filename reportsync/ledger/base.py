"""The ledger: the record of every remote file version seen, fetched, decrypted or failed.

``Ledger`` is what fetch, retention, status, verify and doctor use; they never know which
backend holds it. Its methods are written once, in SQL both backends speak (``schema.py`` says
where the dialects differ), over an ``Engine``: SQLite in the state dir (``sqlite.py``, the
default) or a shared PostgreSQL database (``postgres.py``). ``open_ledger`` (``__init__``) picks
one from the config.

One short transaction per step, so a killed run loses at most the step it was in, and the unique
keys make a repeated step a no-op rather than a duplicate. ``transaction()`` groups several
steps into one commit: the ``record_*`` calls made inside it join it (each in a savepoint, so one
that fails takes only its own writes back).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reportsync.fsutil import ensure_private_dir
from reportsync.ledger.engine import Cursor, Engine, Row, SourceLock
from reportsync.ledger.records import PendingHook, VersionIndex, VersionState, refreshed
from reportsync.ledger.schema import TABLES
from reportsync.lock import LockHolder
from reportsync.transports.base import VersionKey
from reportsync.vocab import Command, DeletionTarget, HookState, Stage

__all__ = ["Cursor", "Engine", "Ledger", "PendingHook", "Row", "SourceLock", "VersionIndex",
           "VersionState", "refreshed"]


_NOTHING_DELETED: frozenset[str] = frozenset()

# Each version with its local copies and the deletions done (one string; the subquery uses the
# index deletions_by_file). Whether its name has an open failure is not asked per row (that was a
# fifth of the query at 50,000 rows): ``_failing_names`` reads the few open failures once.
VERSIONS_QUERY = (
    "SELECT f.id, f.name, f.size, f.mtime, f.gone_at, f.lost_acked_at, "
    "d.local_path, d.sha256 AS download_sha256, a.output_path, a.sha256 AS output_sha256, "
    "(SELECT GROUP_CONCAT(x.target) FROM deletions x WHERE x.file_id = f.id) AS deleted "
    "FROM remote_files f LEFT JOIN downloads d ON d.file_id = f.id "
    "LEFT JOIN archived a ON a.file_id = f.id WHERE f.source = ?")
VERSIONS_ORDER = " ORDER BY f.name, f.mtime"
# ``version_index``: every version of a source in six plain columns, no subquery (the archived
# report's path: a skipped file's outcome names it)
INDEX_QUERY = (
    "SELECT f.name, f.size, f.mtime, f.id, f.gone_at, a.output_path FROM remote_files f "
    "LEFT JOIN archived a ON a.file_id = f.id WHERE f.source = ?")
# A version's last sighting (schema 6): a listing records its time once per source
# (source_listings), and every version still listed (no gone_at) was seen then.
LAST_SEEN = ("CASE WHEN f.gone_at IS NULL AND l.listed_at > f.last_seen THEN l.listed_at "
             "ELSE f.last_seen END")
LAST_SEEN_JOIN = " LEFT JOIN source_listings l ON l.source = f.source"
NAMES_PER_QUERY = 500  # placeholders per statement: well under SQLite's and PostgreSQL's limits


@dataclass(frozen=True)
class _Seen:
    """What ``Ledger._see`` recorded."""

    now: float  # the listing's time: last_seen of every listed version, gone_at of the vanished
    known: Mapping[VersionKey, int]  # the ids of the versions the ledger had before
    new_ids: dict[VersionKey, int]  # the ids of those listed and not in the ledger before
    vanished: set[VersionKey]  # no longer listed (gone_at set now)
    back: set[VersionKey]  # listed again (gone_at cleared)


class Ledger:
    """A connection to the ledger; safe to share between the threads of one run.

    ``Ledger(path)`` is the SQLite ledger at ``path`` (created if missing; None: an empty one in
    memory); ``Ledger(engine=...)`` one over another backend (``open_ledger`` makes them).
    """

    def __init__(self, path: Path | None = None, *, engine: Engine | None = None) -> None:
        if engine is None:
            from reportsync.ledger.sqlite import SqliteEngine

            engine = SqliteEngine(path)
        self._engine = engine
        self._lock = threading.RLock()
        self._depth = 0  # transactions open on this connection: 0, 1, then savepoints

    @classmethod
    def in_state_dir(cls, state_dir: Path, *, create: bool = True) -> Ledger:
        """The state dir's SQLite ledger. ``create`` False (a dry run, which changes nothing
        anywhere): a missing ledger is not created, an empty one in memory stands in for it."""
        from reportsync.ledger.sqlite import LEDGER_FILE

        path = state_dir / LEDGER_FILE
        if not create and not path.exists():
            return cls(None)
        ensure_private_dir(state_dir, "settings.state_dir")
        return cls(path)

    @property
    def path(self) -> Path | None:
        """The SQLite file (None for a ledger in memory or in PostgreSQL)."""
        return self._engine.path

    @property
    def location(self) -> str:
        """Where the ledger is, for messages: its file, or its database's URL (no password)."""
        return self._engine.location

    def close(self) -> None:
        with self._lock:
            self._engine.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction: what is written inside commits together, or not at all.

        ``record_*`` calls inside it join it, each in a savepoint (a call that fails takes back
        only its own writes; the caller decides whether the rest commits). Other threads' calls
        wait until it ends: a transaction belongs to the thread that opened it.
        """
        with self._lock:
            depth = self._depth
            self._depth += 1
            try:
                if depth == 0:
                    self._engine.begin()
                else:
                    self._engine.execute(f"SAVEPOINT ledger_{depth}")
                try:
                    yield
                except BaseException:
                    if depth == 0:
                        self._engine.rollback()
                    else:
                        self._engine.execute(f"ROLLBACK TO SAVEPOINT ledger_{depth}")
                        self._engine.execute(f"RELEASE SAVEPOINT ledger_{depth}")
                    raise
                if depth == 0:
                    self._engine.commit()
                else:
                    self._engine.execute(f"RELEASE SAVEPOINT ledger_{depth}")
            finally:
                self._depth -= 1

    @property
    def schema_version(self) -> int:
        return self._engine.schema_version()

    def integrity_check(self) -> str:
        return self._engine.integrity_check()

    def require_intact(self, *, thorough: bool = False) -> None:
        """Raise LedgerDamagedError (exit 7) unless the database passes its check; every open
        of the SQLite ledger already ran the quick one, ``thorough`` runs the full one."""
        with self._lock:
            self._engine.require_intact(thorough=thorough)

    # --- per-source locks ---------------------------------------------------------------------

    def try_lock_source(self, source: str, *, command: str = "fetch") -> SourceLock | None:
        """The source's lock, or None when another run holds it (``lock_holder`` says who).

        On PostgreSQL a session-level advisory lock on a connection of its own, seen by every
        host; it is released with ``release()``, or when this process or its connection dies.
        On SQLite (one machine, where the state dir's ``RunLock`` already keeps runs apart) a
        lock within this process.
        """
        return self._engine.try_lock_source(source, LockHolder.this_process(command))

    def lock_holder(self, source: str) -> LockHolder | None:
        """Who holds the source's lock now; None when nobody does."""
        return self._engine.lock_holder(source)

    # --- runs ---------------------------------------------------------------------------------

    def start_run(self, command: str, pid: int) -> int:
        with self.transaction():
            return self._engine.insert(
                "INSERT INTO runs (command, started_at, pid) VALUES (?, ?, ?)",
                (command, time.time(), pid))

    def finish_run(self, run_id: int, exit_code: int, counts: dict[str, int]) -> None:
        with self.transaction():
            self._engine.execute(
                "UPDATE runs SET finished_at = ?, exit_code = ?, counts = ? WHERE id = ?",
                (time.time(), exit_code, json.dumps(counts, sort_keys=True), run_id),
            )

    # --- remote files -------------------------------------------------------------------------

    def see_files(self, source: str, versions: Collection[VersionKey],
                  known: Sequence[VersionState] | None = None) -> dict[VersionKey, int]:
        """Record that these versions are listed now; return their ids.

        Versions of this source that are no longer listed get ``gone_at`` (purged by the provider
        or deleted by us); a version listed again loses it. ``known``: the source's versions as
        ``versions(source)`` gave them in this run (under the source's lock, so nobody else
        changed them since); without it the ledger's keys are read here.
        """
        wanted = frozenset(versions)
        if known is None:
            seen = self._see(source, wanted)
        else:
            seen = self._see(source, wanted, {version.version: version.file_id
                                              for version in known},
                             {version.version for version in known
                              if version.gone_at is not None})
        return {key: seen.known[key] for key in wanted if key in seen.known} | seen.new_ids

    def version_index(self, source: str) -> VersionIndex:
        """Every version of this source, compactly (``VersionIndex``): a no-op run's one read of
        the rows it does not act on."""
        rows = self._engine.rows(INDEX_QUERY, (source,))
        return VersionIndex(ids={row[:3]: row[3] for row in rows},
                            gone={row[:3] for row in rows if row[4] is not None},
                            archived={row[:3]: row[5] for row in rows if row[5] is not None})

    def see_listing(self, source: str, listed: Collection[VersionKey],
                    index: VersionIndex) -> VersionIndex:
        """``see_files`` for a run that has read ``index = version_index(source)`` already (under
        the source's lock, so nobody else changed it since): the index as it is after recording
        the listing (new versions added, ``gone`` set and cleared), without reading it again."""
        seen = self._see(source, listed, index.ids, index.gone)
        after = VersionIndex(ids={**index.ids, **seen.new_ids} if seen.new_ids else index.ids,
                             gone=(index.gone - seen.back) | seen.vanished,
                             archived=index.archived)
        return after

    def acting_versions(self, source: str, index: VersionIndex, *,
                        archived_before: float) -> list[VersionState]:
        """The versions of this source a run may act on, in full: every one not archived (new,
        failed, downloaded only, acknowledged), and of the archived ones those whose mtime is
        before ``archived_before`` (retention's bound, ``retention.acting_before``: a younger
        archived file cannot lose a copy; -inf: none, inf: all). ``index``: the source's, as it
        is now (``see_listing``'s); which rows those are is found in it, so a run with every
        file archived asks SQL for none. The rest stay in the index."""
        wanted = [index.ids[key] for key in index.ids.keys() - index.archived.keys()]
        if archived_before == math.inf:
            wanted += (index.ids[key] for key in index.archived)
        elif archived_before > -math.inf:
            # mtimes are whole seconds: before a fractional bound is before its ceiling
            bound = math.ceil(archived_before)
            wanted += (index.ids[key] for key in index.archived if key[2] < bound)
        return self._versions_by_id(source, wanted)

    def last_seen(self, source: str) -> dict[VersionKey, float]:
        """When each version of this source was last listed (``LAST_SEEN``: its ``last_seen``,
        or the source's latest listing if it is still listed)."""
        return {(row[0], row[1], row[2]): float(row[3]) for row in self._engine.rows(
            f"SELECT f.name, f.size, f.mtime, {LAST_SEEN} FROM remote_files f{LAST_SEEN_JOIN} "
            "WHERE f.source = ?", (source,))}

    def archive_counts(self, source: str) -> tuple[int, int, int]:
        """(archived, in_archive, purged) of this source, counted in SQL: as many versions as
        ``VersionState.archived``, ``.in_archive``, and gone without our remote deletion say
        (``status``, without a ``VersionState`` per version)."""
        row = self._engine.execute(
            "SELECT COUNT(a.file_id), "
            "COALESCE(SUM(CASE WHEN a.file_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM "
            "deletions x WHERE x.file_id = f.id AND x.target = ?) THEN 1 ELSE 0 END), 0), "
            "COALESCE(SUM(CASE WHEN f.gone_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM "
            "deletions x WHERE x.file_id = f.id AND x.target = ?) THEN 1 ELSE 0 END), 0) "
            "FROM remote_files f LEFT JOIN archived a ON a.file_id = f.id WHERE f.source = ?",
            (str(DeletionTarget.ARCHIVE), str(DeletionTarget.REMOTE), source)).fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    def _versions_by_id(self, source: str, ids: Collection[int]) -> list[VersionState]:
        found: list[VersionState] = []
        wanted = sorted(ids)
        for start in range(0, len(wanted), NAMES_PER_QUERY):
            chunk = wanted[start:start + NAMES_PER_QUERY]
            found += self._versions(source, VERSIONS_QUERY
                                    + f" AND f.id IN ({', '.join('?' * len(chunk))})",
                                    (source, *chunk))
        found.sort(key=lambda version: (version.name, version.mtime))
        return found

    def _see(self, source: str, listed: Collection[VersionKey],
             known: Mapping[VersionKey, int] | None = None,
             gone: AbstractSet[VersionKey] = frozenset()) -> _Seen:
        """The one owner of what recording a listing writes. Set differences against what the
        ledger holds (``known``: every version's id; ``gone``: those with ``gone_at``; None: read
        here), so a run with nothing new costs one UPDATE at 50,000 files, not an upsert per
        file: the new versions are inserted, the vanished ones get ``gone_at``, the ones listed
        again lose it, and one UPDATE gives every listed version its ``last_seen`` (after the
        others, every version of the source without ``gone_at`` is a listed one)."""
        now = time.time()
        wanted = listed if isinstance(listed, (set, frozenset)) else frozenset(listed)
        db = self._engine
        with self.transaction():
            row = db.execute("SELECT listed_at FROM source_listings WHERE source = ?",
                             (source,)).fetchone()
            previous = float(row[0]) if row is not None else 0.0
            if known is None:
                rows = db.rows("SELECT name, size, mtime, id, gone_at FROM remote_files "
                               "WHERE source = ?", (source,))
                known = {row[:3]: int(row[3]) for row in rows}
                gone = {row[:3] for row in rows if row[4] is not None}
            # set operations in C: nothing per known version in Python
            new = wanted - known.keys()
            back = gone & wanted
            # every known version listed (a nightly run): nothing vanished, no third pass
            vanished = (set() if len(wanted) - len(new) == len(known)
                        else known.keys() - wanted - gone)
            if vanished:
                # their last sighting was the source's previous listing: kept in last_seen, as
                # listed_at moves on
                db.executemany("UPDATE remote_files SET gone_at = ?, last_seen = CASE WHEN "
                               "last_seen < ? THEN ? ELSE last_seen END WHERE id = ?",
                               [(now, previous, previous, file_id) for file_id in sorted(
                                   known[key] for key in vanished)])
            if back:
                db.executemany("UPDATE remote_files SET gone_at = NULL, last_seen = ? "
                               "WHERE id = ?", [(now, file_id) for file_id in sorted(
                                   known[key] for key in back)])
            new_ids: dict[VersionKey, int] = {}
            if new:
                inserted = sorted(new) if self._engine.ordered_upserts else new
                # ON CONFLICT: a version another writer recorded meanwhile keeps its row
                db.executemany(
                    "INSERT INTO remote_files (source, name, size, mtime, first_seen, last_seen) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (source, name, size, mtime) "
                    "DO UPDATE SET last_seen = excluded.last_seen, gone_at = NULL",
                    [(source, name, size, mtime, now, now) for name, size, mtime in inserted],
                )
                new_ids = {
                    (row[1], row[2], row[3]): int(row[0])
                    for row in db.execute("SELECT id, name, size, mtime FROM remote_files "
                                          "WHERE source = ? AND last_seen = ?", (source, now))
                    if (row[1], row[2], row[3]) in new
                }
            # every version listed now has no gone_at: one row says they were seen now
            db.execute("INSERT INTO source_listings (source, listed_at) VALUES (?, ?) "
                       "ON CONFLICT (source) DO UPDATE SET listed_at = excluded.listed_at",
                       (source, now))
        return _Seen(now=now, known=known, new_ids=new_ids, vanished=set(vanished),
                     back=set(back))

    def _failing_names(self, source: str) -> set[str]:
        """The names of this source with an open failure (``VersionState.failing``)."""
        return {row[0] for row in self._engine.execute(
            "SELECT DISTINCT name FROM failures WHERE source = ? AND resolved_at IS NULL",
            (source,))}

    def record_download(self, file_id: int, run_id: int, path: Path, size: int, sha256: str) -> None:
        with self.transaction():
            self._engine.execute(
                "INSERT INTO downloads (file_id, run_id, local_path, bytes, sha256, at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (file_id) DO UPDATE SET "
                "run_id = excluded.run_id, local_path = excluded.local_path, "
                "bytes = excluded.bytes, sha256 = excluded.sha256, at = excluded.at",
                (file_id, run_id, str(path), size, sha256, time.time()),
            )
            self._resolve_failures(file_id, "download")

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
        with self.transaction():
            self._engine.execute(
                "INSERT INTO archived (file_id, run_id, output_path, bytes, sha256, decrypted, "
                "signer, signature, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (file_id) DO NOTHING",
                (file_id, run_id, str(path), size, sha256, int(decrypted), signer, signature,
                 time.time()),
            )
            self._resolve_failures(file_id, None)

    def record_failure(
        self, source: str, name: str, file_id: int | None, run_id: int, stage: str, reason: str
    ) -> int:
        """Record (or count again) an open failure; returns how many attempts it has had."""
        now = time.time()
        with self.transaction():
            self._engine.execute(
                "INSERT INTO failures (file_id, source, name, run_id, stage, reason, first_at, "
                "last_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (source, name, stage) WHERE resolved_at IS NULL DO UPDATE SET "
                "attempts = failures.attempts + 1, reason = excluded.reason, "
                "last_at = excluded.last_at, run_id = excluded.run_id, file_id = excluded.file_id",
                (file_id, source, name, run_id, stage, reason, now, now),
            )
            row = self._engine.execute(
                "SELECT attempts FROM failures WHERE source = ? AND name = ? AND stage = ? "
                "AND resolved_at IS NULL", (source, name, stage)).fetchone()
            return int(row[0])

    def _resolve_failures(self, file_id: int, stage: str | None) -> None:
        db = self._engine
        row = db.execute("SELECT source, name FROM remote_files WHERE id = ?", (file_id,)).fetchone()
        if row is None:
            return
        if stage is None:
            db.execute("UPDATE failures SET resolved_at = ? WHERE source = ? AND name = ? AND "
                       "resolved_at IS NULL", (time.time(), row[0], row[1]))
        else:
            db.execute("UPDATE failures SET resolved_at = ? WHERE source = ? AND name = ? AND "
                       "stage = ? AND resolved_at IS NULL", (time.time(), row[0], row[1], stage))

    # --- on_new_report hooks ---------------------------------------------------------------------

    def record_hook_due(self, file_id: int, run_id: int) -> None:
        """The report of ``file_id`` was archived while its source has a hook: it is due (the
        caller records this in the transaction that records the archive, so a killed run cannot
        lose it). Already known: nothing changes (a hook that succeeded stays succeeded)."""
        with self.transaction():
            self._engine.execute(
                "INSERT INTO hooks (file_id, run_id, state, due_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (file_id) DO NOTHING",
                (file_id, run_id, str(HookState.DUE), time.time()))

    def record_hook(self, file_id: int, run_id: int, *, succeeded: bool,
                    exit_code: int | None = None, reason: str | None = None) -> int:
        """One run of a report's hook; returns how often it has run. A success resolves the
        file's open hook failure; a failure is recorded as the file's failure (stage ``hook``)
        by ``record_failure``, which the caller calls in the same transaction."""
        state = HookState.SUCCEEDED if succeeded else HookState.FAILED
        db = self._engine
        with self.transaction():
            db.execute(
                "INSERT INTO hooks (file_id, run_id, state, attempts, exit_code, reason, due_at, "
                "last_at) VALUES (?, ?, ?, 1, ?, ?, ?, ?) ON CONFLICT (file_id) DO UPDATE SET "
                "run_id = excluded.run_id, state = excluded.state, "
                "attempts = hooks.attempts + 1, exit_code = excluded.exit_code, "
                "reason = excluded.reason, last_at = excluded.last_at",
                (file_id, run_id, str(state), exit_code, reason, time.time(), time.time()))
            if succeeded:
                self._resolve_failures(file_id, str(Stage.HOOK))
            row = db.execute("SELECT attempts FROM hooks WHERE file_id = ?", (file_id,)).fetchone()
            return int(row[0])

    def pending_hooks(self, source: str) -> list[PendingHook]:
        """The source's archived reports whose hook is due or failed, oldest due first."""
        rows = self._engine.execute(
            "SELECT f.id, f.name, f.size, f.mtime, f.lost_acked_at, a.output_path, a.sha256, "
            "h.state, h.attempts, EXISTS (SELECT 1 FROM deletions x WHERE x.file_id = f.id "
            "AND x.target = ?) AS archive_deleted "
            "FROM hooks h JOIN remote_files f ON f.id = h.file_id "
            "JOIN archived a ON a.file_id = f.id "
            "WHERE f.source = ? AND h.state != ? ORDER BY h.due_at, h.id",
            (str(DeletionTarget.ARCHIVE), source, str(HookState.SUCCEEDED))).fetchall()
        return [PendingHook(file_id=int(row[0]), source=source, name=row[1], size=int(row[2]),
                            mtime=int(row[3]), acknowledged=row[4] is not None,
                            output_path=row[5], output_sha256=row[6], state=HookState(row[7]),
                            attempts=int(row[8]), in_archive=not row[9])
                for row in rows]

    def hook_state(self, file_id: int) -> HookState | None:
        """Where the report's hook stands; None: it has none (archived without a hook)."""
        row = self._engine.execute("SELECT state FROM hooks WHERE file_id = ?",
                                   (file_id,)).fetchone()
        return HookState(row[0]) if row is not None else None

    def open_failures(self, source: str | None = None) -> list[dict[str, object]]:
        query = ("SELECT source, name, stage, reason, attempts, first_at, last_at FROM failures "
                 "WHERE resolved_at IS NULL")
        args: tuple[str, ...] = ()
        if source is not None:
            query += " AND source = ?"
            args = (source,)
        return [dict(row) for row in self._engine.execute(query + " ORDER BY source, name", args)]

    def count(self, table: str) -> int:
        if table not in TABLES:
            raise ValueError(table)
        return int(self._engine.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    # --- retention, status, verify --------------------------------------------------------------

    def record_source_run(self, run_id: int, source: str, command: str, exit_code: int,
                          counts: dict[str, int], error: str | None) -> None:
        with self.transaction():
            self._engine.execute(
                "INSERT INTO source_runs (run_id, source, command, finished_at, exit_code, counts, "
                "error) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, source, command, time.time(), exit_code,
                 json.dumps(counts, sort_keys=True), error),
            )

    def last_source_run(self, source: str, command: str = Command.FETCH, *,
                        succeeded: bool = False) -> dict[str, object] | None:
        """The source's last run of ``command``; with ``succeeded``, its last one that exited 0
        (the "last success" monitoring alerts on)."""
        row = self._engine.execute(
            "SELECT run_id, finished_at, exit_code, counts, error FROM source_runs "
            "WHERE source = ? AND command = ?" + (" AND exit_code = 0" if succeeded else "")
            + " ORDER BY finished_at DESC, id DESC LIMIT 1",
            (source, command)).fetchone()
        if row is None:
            return None
        result = dict(row)
        result["counts"] = json.loads(row["counts"] or "{}")
        return result

    def versions_by_key(self, source: str) -> dict[VersionKey, VersionState]:
        """``versions`` keyed by ``VersionState.version``."""
        return {version.version: version for version in self.versions(source)}

    def versions(self, source: str, *, names: Collection[str] | None = None
                 ) -> list[VersionState]:
        """Everything retention and status need to know of each version of this source; with
        ``names``, of the versions of those names only (what a run changed: see ``refreshed``)."""
        query = VERSIONS_QUERY
        if names is None:
            return self._versions(source, query + VERSIONS_ORDER, (source,))
        found: list[VersionState] = []
        wanted = sorted(set(names))
        for start in range(0, len(wanted), NAMES_PER_QUERY):
            chunk = wanted[start:start + NAMES_PER_QUERY]
            found += self._versions(
                source, query + f" AND f.name IN ({', '.join('?' * len(chunk))})", (source, *chunk))
        found.sort(key=lambda version: (version.name, version.mtime))
        return found

    def _versions(self, source: str, query: str, params: Sequence[Any]) -> list[VersionState]:
        # two reads, no transaction: a writer's lock is not taken for a read (status, doctor)
        rows = self._engine.execute(query, params).fetchall()
        failing = self._failing_names(source)
        return [
            VersionState(
                file_id=row[0], source=source, name=row[1], size=row[2], mtime=row[3],
                gone_at=row[4], lost_acked_at=row[5], download_path=row[6],
                download_sha256=row[7], output_path=row[8], output_sha256=row[9],
                deleted=frozenset(row[10].split(",")) - {""} if row[10] else _NOTHING_DELETED,
                failing=row[1] in failing,
            )
            for row in rows
        ]

    def record_deletion(self, file_id: int, run_id: int | None, target: str, path: str,
                        reason: str) -> None:
        with self.transaction():
            self._engine.execute("INSERT INTO deletions (file_id, run_id, target, path, reason, at) "
                                 "VALUES (?, ?, ?, ?, ?, ?)",
                                 (file_id, run_id, target, path, reason, time.time()))

    def acknowledge_lost(self, source: str, name: str) -> int:
        """Mark every version of ``name`` the ledger knows acknowledged (fetch no longer retries
        or reports them; a later version is not covered), and close its open failures (a person
        has dealt with it); returns how many versions the ledger knows by that name (0: nothing
        is changed)."""
        now = time.time()
        db = self._engine
        with self.transaction():
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
