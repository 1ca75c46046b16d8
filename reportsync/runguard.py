"""Which runs may work on what at the same time: the one owner of that decision.

With the embedded ledger (SQLite in ``state_dir``) a run takes the state dir's ``RunLock`` for the
whole command: a second run on the machine stops at once with exit 75. With a shared ledger
(``settings.ledger_url``) there is no state-dir lock (each host has a state dir of its own);
instead each source is fetched, or its retention applied, under that source's lock in the ledger
(``Ledger.try_lock_source``), taken before connecting to its server. A source another run holds is
skipped, naming the holder; the run goes on with the rest, and exits 75 only when it could process
none of its sources (``all_held``). The per-source lock is taken with SQLite too, where it is an
in-process lock that the run lock already makes uncontested: fetch and retention do not branch on
the backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from reportsync.config import Settings
from reportsync.errors import ReportsyncError
from reportsync.ledger import Ledger, LockHolder
from reportsync.lock import RunLock


@contextmanager
def run_lock(settings: Settings, command: str) -> Iterator[bool]:
    """The lock a whole run holds: the state dir's ``RunLock`` for the embedded ledger (raises
    ``LockHeldError``, exit 75, when another run holds it); nothing for a shared ledger, whose
    runs are kept apart per source. The block gets whether it holds the whole run."""
    if settings.ledger_url is not None:
        yield False
        return
    with RunLock(settings.state_dir, command):
        yield True


@dataclass(frozen=True)
class SourceTurn:
    """What ``source_turn`` gives the block: ``holder`` is None when this run holds the source's
    lock (work on it), else who does (skip it); ``error`` when the lock could not even be asked
    for (the ledger database went away): the source fails with it."""

    holder: LockHolder | None = None
    error: ReportsyncError | None = None

    @property
    def ours(self) -> bool:
        return self.holder is None and self.error is None


@contextmanager
def source_turn(ledger: Ledger, source: str, command: str) -> Iterator[SourceTurn]:
    """The source's lock for the block, released at its end (and by the server, should this
    process die: the lock lives on the ledger connection)."""
    try:
        lock = ledger.try_lock_source(source, command=command)
    except ReportsyncError as error:
        yield SourceTurn(error=error.with_context(source=source))
        return
    if lock is None:
        try:
            holder = ledger.lock_holder(source)
        except ReportsyncError:
            holder = None
        # released between the two questions: still skipped this run, its holder unknown
        yield SourceTurn(holder=holder if holder is not None else LockHolder(None, None))
        return
    with lock:
        yield SourceTurn()


def all_held(holders: Iterable[LockHolder | None]) -> bool:
    """Whether a run could process none of its sources (every one skipped, held elsewhere):
    then, and only then, it exits 75."""
    seen = list(holders)
    return bool(seen) and all(holder is not None for holder in seen)
