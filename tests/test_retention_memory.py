"""Retention's remote side, fast, over the in-memory transport: what is deleted on the server,
over which connection, and that the listing and deletions are retried like fetch's."""

from __future__ import annotations

from reportsync.vocab import DeletionTarget
from tests.fixtures_memory import MemoryWorkspace
from tests.support import random_plain


def test_fetch_deletes_what_it_archived_over_the_listings_connection(
        mem: MemoryWorkspace) -> None:
    mem.retention["remote"] = "delete-after-fetch"
    mem.put("a.xml", random_plain(100))
    mem.put("b.xml", random_plain(100))
    result = mem.fetch()
    assert result.exit_code == 0
    assert sorted((d.deletion.target, d.deletion.name, d.done) for d in result.deletions) == [
        (DeletionTarget.REMOTE, "a.xml", True), (DeletionTarget.REMOTE, "b.xml", True)]
    assert mem.server.files == {}
    assert mem.server.connections == 1, "no second connection for the deletions"


def test_retention_lists_and_deletes_with_retries_and_spares_what_is_not_archived(
        mem: MemoryWorkspace) -> None:
    mem.put("archived.xml", b"<a/>", age_days=20)
    assert mem.fetch().exit_code == 0
    mem.put("new.xml", b"<n/>", age_days=1)
    mem.retention["remote"] = "delete-after-fetch"
    mem.source["retries"] = 2
    mem.server.faults.refuse_connects = 2  # the server is restarting when retention starts
    dry = mem.retention_run(dry_run=True)
    assert [(d.target, d.name) for d in dry.sources[0].planned] == [
        (DeletionTarget.REMOTE, "archived.xml")]
    assert sorted(mem.server.files) == ["archived.xml", "new.xml"], "a dry run deletes nothing"
    result = mem.retention_run()
    assert result.exit_code == 0, result.sources[0].error
    assert [(o.deletion.name, o.done) for o in result.sources[0].outcomes] == [
        ("archived.xml", True)]
    assert sorted(mem.server.files) == ["new.xml"]


def test_a_deletion_cut_off_by_a_lost_connection_is_retried_over_a_new_one(
        mem: MemoryWorkspace) -> None:
    mem.put("r.xml", b"<r/>")
    assert mem.fetch().exit_code == 0
    mem.retention["remote"] = "delete-after-fetch"
    mem.source["retries"] = 1
    lost: list[str] = []

    def lost_as_the_delete_arrives(request: str) -> None:
        if request == "delete r.xml" and not lost:
            lost.append(request)
            mem.server.drop_connections()

    mem.server.faults.on_request = lost_as_the_delete_arrives
    result = mem.retention_run()
    assert result.exit_code == 0, result.sources[0].error
    assert [(o.deletion.name, o.done) for o in result.sources[0].outcomes] == [("r.xml", True)]
    assert lost and mem.server.connections == 3 and mem.server.files == {}
