"""fetch's pipeline (issue 13): group commits after batched durability barriers.

The real fetch, ledger and file system over the in-memory transport. What is watched: every
``os.fsync`` (by the inode it flushed), every top-level ledger commit, and the rows each commit
records. The rule of docs/fetch.md ("Batches and power loss"): a commit records a file only after
the file's bytes and its folder were fsynced, and a batch of files costs one commit, not one per
file and step.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from reportsync.errors import TooManyConnectionsError
from reportsync.ledger import Ledger
from reportsync.ledger.sqlite import SqliteEngine
from reportsync.transports.memory import MemoryTransport
from reportsync.vocab import Action
from tests.fixtures_memory import MemoryWorkspace
from tests.support import random_plain

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="watches fsync by inode (folders can be fsynced on Linux)")


class Journal:
    """What happened, in order: ("fsync", inode), ("row", inode of the file, inode of its
    folder), ("commit",)."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def commits(self) -> int:
        return sum(1 for event in self.events if event[0] == "commit")

    def rows_committed_before_durable(self) -> list[tuple[Any, ...]]:
        """Rows whose commit came before an fsync of their file, or of their folder after it."""
        wrong = []
        rows: list[tuple[Any, ...]] = []
        synced: list[int] = []  # inodes, in fsync order
        for event in self.events:
            if event[0] == "fsync":
                synced.append(event[1])
            elif event[0] == "row":
                rows.append((event, len(synced)))
            elif event[0] == "commit":
                for row, _ in rows:
                    _, file_inode, folder_inode = row
                    if file_inode not in synced:
                        wrong.append(row)
                        continue
                    after_file = synced[synced.index(file_inode) + 1:]
                    if folder_inode not in after_file:
                        wrong.append(row)
                rows = []
        return wrong


@pytest.fixture
def journal(monkeypatch: pytest.MonkeyPatch) -> Journal:
    watched = Journal()
    real_fsync, real_commit = os.fsync, SqliteEngine.commit
    real_download, real_archived = Ledger.record_download, Ledger.record_archived

    def fsync(descriptor: int) -> None:
        real_fsync(descriptor)
        watched.events.append(("fsync", os.fstat(descriptor).st_ino))

    def commit(self: SqliteEngine) -> None:
        real_commit(self)
        watched.events.append(("commit",))

    def row(path: Path) -> tuple[Any, ...]:
        return ("row", os.stat(path).st_ino, os.stat(path.parent).st_ino)

    def record_download(self: Ledger, file_id: int, run_id: int, path: Path, *args: Any) -> None:
        watched.events.append(row(path))
        real_download(self, file_id, run_id, path, *args)

    def record_archived(self: Ledger, file_id: int, run_id: int, path: Path, *args: Any,
                        **kwargs: Any) -> None:
        watched.events.append(row(path))
        real_archived(self, file_id, run_id, path, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(SqliteEngine, "commit", commit)
    monkeypatch.setattr(Ledger, "record_download", record_download)
    monkeypatch.setattr(Ledger, "record_archived", record_archived)
    return watched


@linux_only
@pytest.mark.parametrize("jobs", [1, 3])
def test_batches_are_committed_once_each_and_only_after_their_files_are_durable(
        mem: MemoryWorkspace, journal: Journal, jobs: int) -> None:
    expected = {f"r{index:02d}.xml": mem.put(f"r{index:02d}.xml", random_plain(2000 + index))
                for index in range(40)}
    result = mem.fetch(jobs=jobs)
    assert result.exit_code == 0 and result.count(Action.ARCHIVED) == 40
    assert mem.outputs() == expected and mem.hidden() == []
    rows = [event for event in journal.events if event[0] == "row"]
    assert len(rows) == 80, "each download and each report recorded once"
    assert journal.rows_committed_before_durable() == [], \
        "a commit recorded a file before its bytes and its folder were fsynced"
    # one commit per file and step would be 80 and more; batches of up to 32 downloads and
    # groups of reports take a handful (plus the run's own: start, listing, finish)
    assert journal.commits() <= 24, journal.commits()


def test_a_worker_whose_reconnect_is_refused_as_one_session_too_many_gives_its_files_back(
        mem: MemoryWorkspace) -> None:
    # Issue 14: the server allows the two sessions the run opened and no third. The second
    # worker's connection is cut in the middle of its first file; reconnecting, it is refused
    # (421): it retires and gives its files back, and the first worker fetches them, resuming
    # the cut one from its part. Before: the file failed and the source stopped (exit 3).
    expected = {f"r{index:02d}.xml": mem.put(f"r{index:02d}.xml", random_plain(100_000))
                for index in range(12)}
    mem.source["retries"] = 1
    mem.server.faults.cut_after = 50_000
    mem.server.faults.cut_connections = {2}
    real_connect = mem.server.connect

    def two_sessions_at_most(source_name: str = "memory") -> MemoryTransport:
        transport = real_connect(source_name)
        if mem.server.connections == 2:
            mem.server.faults.connect_error = TooManyConnectionsError(
                "the server refused another session: 421 Too many connections", limit=2)
        return transport

    mem.server.connect = two_sessions_at_most  # type: ignore[method-assign]
    result = mem.fetch(jobs=2)
    assert result.exit_code == 0 and result.error is None, [f.error for f in result.files]
    assert [outcome.action for outcome in result.files] == [Action.ARCHIVED] * 12
    assert mem.outputs() == expected
    cut = [operation for operation in mem.server.operations if operation.endswith("@50000")]
    assert len(cut) == 1, "the cut file was resumed from the bytes the retired worker got"
    assert mem.server.connections == 2
