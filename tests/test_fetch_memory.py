"""fetch's executor and retries, fast: the real fetch, ledger and file system against the
in-memory transport, with the faults a real server shows only sometimes injected on demand.

The same behaviours against the real sshd and FTP servers are in test_fetch_e2e.py and the
test_hardening_*.py files; these add the cases a real server cannot be made to show reliably and
run in milliseconds.
"""

from __future__ import annotations

import errno
import hashlib
import threading

import pytest

from reportsync.errors import AuthenticationError, ExitCode, NetworkError
from reportsync.fetch import transfer
from reportsync.fetch.transfer import part_name
from reportsync.ledger import Ledger, VersionIndex, VersionState
from reportsync.transports import RemoteFile
from reportsync.vocab import Action, NoticeKind
from tests.fixtures_memory import MemoryWorkspace
from tests.support import random_plain


def by_name(result_files: list) -> dict:  # type: ignore[type-arg]
    return {outcome.name: outcome for outcome in result_files}


def test_first_run_archives_every_file_and_the_second_transfers_nothing(
        mem: MemoryWorkspace) -> None:
    expected = {f"r{i}.xml": mem.put(f"r{i}.xml", random_plain(1000 + i)) for i in range(5)}
    first = mem.fetch(jobs=3)
    assert first.exit_code == 0 and first.count(Action.ARCHIVED) == 5
    assert first.bytes_transferred == sum(len(data) for data in expected.values())
    assert mem.outputs() == expected and mem.hidden() == []
    before = len(mem.server.operations)
    second = mem.fetch(jobs=3)
    assert second.exit_code == 0 and second.count(Action.SKIPPED) == 5
    assert mem.server.operations[before:] == ["list"], "settled files need no server request"


def test_a_cut_connection_is_resumed_over_a_new_one_in_the_same_run(mem: MemoryWorkspace) -> None:
    data = mem.put("big.xml", random_plain(300_000))
    mem.server.faults.cut_after = 100_000
    mem.server.faults.cut_connections = {1}
    mem.source["retries"] = 2
    result = mem.fetch()
    assert result.exit_code == 0, result.error
    assert mem.outputs() == {"big.xml": data}
    assert mem.downloads() == ["big.xml@0", "big.xml@100000"], "resumed, not restarted"
    assert mem.server.connections == 2
    assert result.files[0].transferred == len(data)
    with mem.ledger() as db:
        assert db.execute("SELECT COUNT(*) FROM failures").fetchone()[0] == 0


def test_without_retries_the_cut_file_fails_alone_and_the_next_run_resumes_its_part(
        mem: MemoryWorkspace) -> None:
    big = mem.put("a-big.xml", random_plain(200_000))
    small = mem.put("b-small.xml", b"<small/>")
    mem.server.faults.cut_after = 50_000
    mem.server.faults.cut_connections = {1}
    first = mem.fetch()
    files = by_name(first.files)
    assert first.exit_code == 1 and first.error is None, "one file failed, the source went on"
    assert files["a-big.xml"].action == Action.FAILED
    assert isinstance(files["a-big.xml"].error, NetworkError)
    assert files["b-small.xml"].action == Action.ARCHIVED, "over a second connection"
    part = mem.download_dir / part_name(RemoteFile("a-big.xml", len(big),
                                                   mem.server.files["a-big.xml"].mtime))
    assert part.stat().st_size == 50_000
    second = mem.fetch()
    assert second.exit_code == 0
    assert by_name(second.files)["a-big.xml"].transferred == len(big) - 50_000
    assert mem.outputs() == {"a-big.xml": big, "b-small.xml": small}


def test_a_short_transfer_is_retried_from_where_it_ended_then_fails_keeping_its_part(
        mem: MemoryWorkspace) -> None:
    data = mem.put("r.xml", random_plain(10_000))
    mem.server.files["r.xml"].served = data[:6_000]  # the server ends each transfer early
    mem.source["retries"] = 2
    result = mem.fetch()
    outcome = result.files[0]
    assert outcome.action == Action.FAILED
    assert outcome.error is not None and "transfer incomplete: got 6000 of 10000" in \
        outcome.error.message
    assert mem.downloads() == ["r.xml@0", "r.xml@6000", "r.xml@6000"]
    assert not (mem.download_dir / "r.xml").exists()
    assert [name for name in mem.hidden() if name.endswith(".part")], "kept for a resume"
    mem.server.files["r.xml"].served = None
    assert mem.fetch().exit_code == 0
    assert mem.outputs() == {"r.xml": data}


def test_more_bytes_than_listed_fail_at_once_without_a_retry_and_nothing_is_kept(
        mem: MemoryWorkspace) -> None:
    data = mem.put("r.xml", b"<report/>" * 100)
    mem.server.files["r.xml"].served = data + b"<extra/>" * 1000
    mem.source["retries"] = 3
    result = mem.fetch()
    assert result.files[0].action == Action.FAILED
    assert result.files[0].error is not None
    assert "more than the 900 bytes" in result.files[0].error.message
    assert mem.downloads() == ["r.xml@0"], "a server that lies is not asked again this run"
    assert mem.hidden() == [] and not (mem.download_dir / "r.xml").exists()


def test_a_file_the_provider_rewrites_during_its_download_is_pending_and_fetched_next_run(
        mem: MemoryWorkspace) -> None:
    mem.put("grows.xml", b"<first part/>")
    steady = mem.put("steady.xml", b"<steady/>")

    def provider_appends(request: str) -> None:
        grows = mem.server.files["grows.xml"]
        if request == "download grows.xml@0" and not grows.data.endswith(b"<second/>"):
            grows.data += b"<second/>"

    mem.server.faults.on_request = provider_appends
    first = mem.fetch()
    files = by_name(first.files)
    assert first.exit_code == 0
    assert files["grows.xml"].action == Action.PENDING
    assert files["grows.xml"].error is not None
    assert "changed on the server" in files["grows.xml"].error.message
    assert files["steady.xml"].action == Action.ARCHIVED
    assert mem.hidden() == [], "the mixed bytes are not kept"
    with mem.ledger() as db:
        assert db.execute("SELECT COUNT(*) FROM failures").fetchone()[0] == 0
    mem.server.faults.on_request = None
    assert mem.fetch().exit_code == 0
    assert mem.outputs() == {"grows.xml": b"<first part/><second/>", "steady.xml": steady}


def test_connections_refused_for_a_while_are_retried_and_a_refused_login_is_not(
        mem: MemoryWorkspace) -> None:
    mem.put("r.xml", b"<r/>")
    mem.source["retries"] = 2
    mem.server.faults.refuse_connects = 2
    assert mem.fetch().exit_code == 0
    assert mem.server.connections == 1
    mem.put("s.xml", b"<s/>")
    mem.server.faults.connect_error = AuthenticationError("login refused")
    refused = mem.fetch()
    assert refused.exit_code == ExitCode.AUTH
    assert isinstance(refused.error, AuthenticationError)
    assert mem.server.connect_attempts == 4, "3 refusals and 1 connection, then 1 login: no retry"


def test_a_server_gone_for_good_stops_the_source_and_the_untried_files_are_pending(
        mem: MemoryWorkspace) -> None:
    for name in ("a.xml", "b.xml", "c.xml", "d.xml"):
        mem.put(name, random_plain(1000))
    mem.source["retries"] = 1

    def server_dies(request: str) -> None:
        if request == "download b.xml@0":
            mem.server.drop_connections()
            mem.server.faults.connect_error = NetworkError("connection refused")

    mem.server.faults.on_request = server_dies
    result = mem.fetch()
    files = by_name(result.files)
    assert result.exit_code == ExitCode.NETWORK
    assert isinstance(result.error, NetworkError)
    assert files["a.xml"].action == Action.ARCHIVED
    assert files["b.xml"].action == Action.FAILED
    assert [files[name].action for name in ("c.xml", "d.xml")] == [Action.PENDING] * 2
    assert mem.downloads() == ["a.xml@0", "b.xml@0"], "no file after the server went away"
    assert mem.server.connect_attempts == 3, "one reconnect and its retry, then no more"


def test_a_dry_run_lists_plans_and_writes_nothing_anywhere(mem: MemoryWorkspace) -> None:
    mem.put("r.xml", b"<r/>")
    mem.put("../escape.xml", b"<x/>")
    result = mem.fetch(dry_run=True)
    assert sorted((outcome.name, outcome.action) for outcome in result.files) == [
        ("'../escape.xml'", Action.REFUSED), ("r.xml", Action.WOULD_FETCH)]
    assert result.exit_code == 1, "a refused name counts in a dry run too"
    assert not mem.download_dir.exists() and not mem.output_dir.exists()
    assert not (mem.state_dir / "ledger.sqlite3").exists()
    assert mem.downloads() == [] and mem.server.operations == ["list"]


def test_parallel_workers_each_use_their_own_connection_and_fetch_everything(
        mem: MemoryWorkspace) -> None:
    expected = {f"r{i:02d}.xml": mem.put(f"r{i:02d}.xml", random_plain(500)) for i in range(12)}
    result = mem.fetch(jobs=4)
    assert result.exit_code == 0
    assert mem.outputs() == expected
    assert mem.server.connections == 4, "the listing's connection and three more"
    assert [outcome.name for outcome in result.files] == sorted(expected), "in listing order"


def test_a_fetch_reads_the_sources_ledger_rows_once_and_retention_sees_what_it_wrote(
        mem: MemoryWorkspace, monkeypatch: pytest.MonkeyPatch) -> None:
    # One read of every row per source and run, compactly (issue 13: a no-op over 50,000 files
    # read them twice, then once as 50,000 VersionStates): the listing, the plan and retention
    # share the index; in full only the versions that can act, and what the jobs wrote, by name.
    reads: list[tuple[str, object]] = []
    real_versions, real_index = Ledger.versions, Ledger.version_index
    real_acting = Ledger.acting_versions

    def counted(self: Ledger, source: str, **kwargs: object) -> list[VersionState]:
        reads.append(("versions", kwargs.get("names")))
        return real_versions(self, source, **kwargs)  # type: ignore[arg-type]

    def indexed(self: Ledger, source: str) -> VersionIndex:
        reads.append(("index", None))
        return real_index(self, source)

    def acting(self: Ledger, source: str, index: VersionIndex, *,
               archived_before: float) -> list[VersionState]:
        found = real_acting(self, source, index, archived_before=archived_before)
        reads.append(("acting", sorted(version.name for version in found)))
        return found

    monkeypatch.setattr(Ledger, "versions", counted)
    monkeypatch.setattr(Ledger, "version_index", indexed)
    monkeypatch.setattr(Ledger, "acting_versions", acting)
    mem.put("old.xml", b"<old/>", age_days=95)  # at risk until it is archived
    mem.put("new.xml", b"<new/>")
    first = mem.fetch()
    assert first.count(Action.ARCHIVED) == 2
    assert first.notices == [], "retention sees the files this run archived"
    assert reads == [("index", None), ("acting", ["new.xml", "old.xml"]),
                     ("versions", {"old.xml", "new.xml"})]
    reads.clear()
    second = mem.fetch()
    assert second.count(Action.SKIPPED) == 2 and second.notices == []
    assert second.files == [] and len(second.skipped) == 2, "no outcome object per skipped file"
    assert reads == [("index", None), ("acting", [])], \
        "a no-op run reads the source's rows once, and none of them in full"
    reads.clear()
    del mem.server.files["old.xml"]
    mem.put("third.xml", b"<third/>", age_days=96)
    mem.server.faults.cut_after = 0  # its download fails: still at risk, and retention says so
    third = mem.fetch()
    assert third.count(Action.FAILED) == 1
    assert [(n.kind, n.name) for n in third.notices] == [(NoticeKind.AT_RISK, "third.xml")]


def test_temp_names_are_derived_only_when_a_temp_file_is_there(
        mem: MemoryWorkspace, monkeypatch: pytest.MonkeyPatch) -> None:
    # A run after a clean one finds no .rs-*.part: it hashes no version into a part name (issue
    # 13: 50,000 names hashed for nothing on every no-op run); a leftover part still gets them
    # all, and the one no listed version can resume is removed
    from reportsync.fetch import transfer

    for index in range(3):
        mem.put(f"r{index}.xml", b"<r/>")
    assert mem.fetch().count(Action.ARCHIVED) == 3
    derived: list[str] = []
    real_part_name = transfer.part_name

    def counted(remote: RemoteFile) -> str:
        derived.append(remote.name)
        return real_part_name(remote)

    monkeypatch.setattr(transfer, "part_name", counted)
    assert mem.fetch().count(Action.SKIPPED) == 3
    assert derived == [], "no temp file: no temp name derived"
    stale = mem.download_dir / part_name(RemoteFile("gone.xml", 5, 1.0))
    stale.write_bytes(b"half")
    assert mem.fetch().count(Action.SKIPPED) == 3
    assert sorted(derived) == ["r0.xml", "r1.xml", "r2.xml"]
    assert not stale.exists(), "a part no listed version can resume is removed"


# --- big parts: hashed and flushed to disk behind the transfer -------------------------------


def _part_flush_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name == "part-flush"]


def test_a_big_part_is_hashed_and_flushed_behind_its_transfer_in_a_batch_and_on_resume(
        mem: MemoryWorkspace, monkeypatch: pytest.MonkeyPatch) -> None:
    flushed: list[int] = []
    real_sync = transfer.sync_data

    def counting_sync(descriptor: int) -> None:
        flushed.append(threading.get_ident())
        real_sync(descriptor)

    monkeypatch.setattr(transfer, "SYNC_EVERY", 64 * 1024)  # a 1 MiB part takes many steps
    monkeypatch.setattr(transfer, "sync_data", counting_sync)
    whole = mem.put("whole.xml", random_plain(1_000_000))
    resumed = mem.put("resumed.xml", random_plain(900_000))
    mem.server.faults.cut_after = 400_000  # the batch's transfer of resumed.xml is cut ...
    mem.server.faults.cut_connections = {1}
    mem.source["retries"] = 1  # ... and the one-file path resumes it from its part
    result = mem.fetch()
    assert result.exit_code == 0, result.error
    assert mem.outputs() == {"resumed.xml": resumed, "whole.xml": whole}
    assert any(name.startswith("resumed.xml@") and not name.endswith("@0")
               for name in mem.downloads()), "resumed, not restarted"
    with mem.ledger() as db:
        recorded = dict(db.execute(
            "SELECT r.name, d.sha256 FROM downloads d JOIN remote_files r ON r.id = d.file_id"))
    assert recorded == {"whole.xml": hashlib.sha256(whole).hexdigest(),
                        "resumed.xml": hashlib.sha256(resumed).hexdigest()}
    assert flushed and threading.get_ident() not in flushed, "flushed by the helper thread"
    assert _part_flush_threads() == [], "no helper thread outlives its part"


def test_a_failed_flush_behind_a_big_part_fails_that_file_and_keeps_nothing(
        mem: MemoryWorkspace, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(transfer, "SYNC_EVERY", 64 * 1024)
    monkeypatch.setattr(transfer, "sync_data", full_disk)
    mem.put("big.xml", random_plain(500_000))
    result = mem.fetch()
    files = by_name(result.files)
    assert files["big.xml"].action == Action.FAILED, "a later fsync's success is not trusted"
    assert "disk full" in str(files["big.xml"].error)
    assert mem.outputs() == {}
    assert mem.hidden() == [] and not any(mem.download_dir.iterdir()), "no part is kept"
    with mem.ledger() as db:
        assert db.execute("SELECT COUNT(*) FROM downloads").fetchone()[0] == 0
    assert _part_flush_threads() == []
