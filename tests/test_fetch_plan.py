"""fetch's plan, on its own: listing + the ledger's versions + options → outcomes and jobs.

Pure data in and out: no server, no ledger file, no file system (the one local question, whether
a kept copy is intact, is answered by the function each test passes).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from reportsync import fetch as package
from reportsync.config import parse_config
from reportsync.errors import UnsafeNameError
from reportsync.fetch import FileOutcome, plan_source, select_files
from reportsync.ledger import VersionState
from reportsync.transports import RemoteFile
from reportsync.vocab import Action, DeletionTarget

T = 1_780_000_000  # a delivery time


def version(file_id: int, name: str, size: int = 10, mtime: int = T, *, download: str | None = None,
            output: str | None = None, acked: bool = False, deleted: frozenset[str] = frozenset(),
            gone: bool = False) -> VersionState:
    return VersionState(file_id=file_id, source="s", name=name, size=size, mtime=mtime,
                        gone_at=T + 1.0 if gone else None, lost_acked_at=T + 2.0 if acked else None,
                        download_path=download, download_sha256="d" if download else None,
                        output_path=output, output_sha256="o" if output else None,
                        deleted=frozenset(deleted))


def never(path: Path, size: int) -> bool:
    raise AssertionError(f"the plan asked about {path} although no kept copy needed checking")


def actions(outcomes: list[FileOutcome]) -> list[tuple[str, str]]:
    return [(outcome.name, outcome.action) for outcome in outcomes]


def test_archived_and_acknowledged_versions_are_settled_and_the_rest_become_jobs() -> None:
    listing = [RemoteFile("a.xml", 10, T), RemoteFile("b.xml", 10, T), RemoteFile("c.xml", 10, T),
               RemoteFile("d.xml", 10, T + 0.9)]  # d: the same whole second as its record
    versions = {v.version: v for v in [
        version(1, "a.xml", output="/out/a.xml"),
        version(2, "b.xml", download="/enc/b.xml", acked=True),
        version(3, "c.xml", download="/enc/c.xml"),
        version(4, "d.xml"),
    ]}
    plan = plan_source(listing, [], versions, decrypt=True, dry_run=False, copy_intact=never)
    assert actions(plan.in_order()) == [("a.xml", Action.SKIPPED), ("b.xml", Action.ACKNOWLEDGED)]
    assert plan.skipped == [("a.xml", 10, int(T), "/out/a.xml")], "skipped: plain tuples"
    assert actions(plan.outcomes) == [("b.xml", Action.ACKNOWLEDGED)]
    assert plan.in_order()[0].output_path == "/out/a.xml"
    assert plan.outcomes[0].local_path == "/enc/b.xml", "an acknowledged file shows its kept copy"
    assert [(job.remote.name, job.file_id, job.kept_copy) for job in plan.jobs] == [
        ("c.xml", 3, Path("/enc/c.xml")), ("d.xml", 4, None)]


def test_a_dry_run_plans_no_job_and_shows_would_fetch_in_listing_order() -> None:
    listing = [RemoteFile("a.xml", 10, T), RemoteFile("b.xml", 10, T), RemoteFile("c.xml", 5, T)]
    versions = {v.version: v for v in [version(2, "b.xml", output="/out/b.xml"),
                                       version(9, "c.xml", size=4, output="/out/c.xml")]}
    plan = plan_source(listing, [], versions, decrypt=True, dry_run=True, copy_intact=never)
    assert plan.jobs == []
    assert actions(plan.in_order()) == [("a.xml", Action.WOULD_FETCH), ("b.xml", Action.SKIPPED),
                                        ("c.xml", Action.WOULD_FETCH)], "c changed: a new version"


def test_archived_versions_known_only_by_their_report_path_are_skipped() -> None:
    """A run passes the versions that can act in full and the archived rest as report paths
    (``VersionIndex.archived``): those are skipped, in the listing's order, with no record."""
    listing = [RemoteFile("a.xml", 10, T), RemoteFile("b.xml", 10, T), RemoteFile("c.xml", 10, T)]
    acting = {v.version: v for v in [version(2, "b.xml", download="/enc/b.xml", acked=True)]}
    archived = {("a.xml", 10, int(T)): "/out/a.xml", ("c.xml", 10, int(T)): "/out/c.xml"}
    for dry_run in (False, True):
        plan = plan_source(listing, [], acting, archived=archived, decrypt=True,
                           dry_run=dry_run, copy_intact=never)
        assert plan.jobs == []
        assert [(o.name, o.action, o.output_path) for o in plan.in_order()] == [
            ("a.xml", Action.SKIPPED, "/out/a.xml"), ("b.xml", Action.ACKNOWLEDGED, None),
            ("c.xml", Action.SKIPPED, "/out/c.xml")]


def test_kept_copies_of_versions_gone_from_the_server_are_archived_without_a_transfer() -> None:
    checked: list[Path] = []

    def intact(path: Path, size: int) -> bool:
        checked.append(path)
        return path.name != "broken.xml" and size == 10

    versions = {v.version: v for v in [
        version(1, "kept.xml", download="/enc/kept.xml", gone=True),  # --no-decrypt, then purged
        version(2, "broken.xml", download="/enc/broken.xml", gone=True),  # its copy is damaged
        version(3, "acked.xml", download="/enc/acked.xml", acked=True, gone=True),
        version(4, "done.xml", download="/enc/done.xml", output="/out/done.xml", gone=True),
        version(5, "expired.xml", download="/enc/expired.xml", gone=True,
                deleted=frozenset({DeletionTarget.LOCAL_ENCRYPTED})),
    ]}
    plan = plan_source([], [], versions, decrypt=True, dry_run=False, copy_intact=intact)
    assert [(job.remote.version, job.file_id, job.kept_copy) for job in plan.jobs] == [
        (("kept.xml", 10, T), 1, Path("/enc/kept.xml"))]
    assert checked == [Path("/enc/kept.xml"), Path("/enc/broken.xml")]
    assert plan.outcomes == []
    for decrypt, dry_run in ((False, False), (True, True)):  # --no-decrypt, and a dry run
        assert plan_source([], [], versions, decrypt=decrypt, dry_run=dry_run,
                           copy_intact=never).jobs == []


def test_refused_names_come_first_shown_escaped_and_unmatched_files_are_in_no_list() -> None:
    source = parse_config({"sources": {"s": {
        "protocol": "ftp", "host": "127.0.0.1", "username": "u", "password_env": "RS_UNUSED",
        "remote_dir": "out", "download_dir": "/tmp/d", "output_dir": "/tmp/o",
        "include": ["*.xml"]}}}).sources["s"]
    listing = [RemoteFile("b.xml", 1, T), RemoteFile("evil\x1b[31m.xml", 2, T),
               RemoteFile("a.xml", 3, T), RemoteFile("notes.txt", 4, T),
               RemoteFile("../up.xml", 5, T)]
    candidates, refused = select_files(source, listing)
    assert [remote.name for remote in candidates] == ["a.xml", "b.xml"]
    assert [(outcome.name, outcome.action) for outcome in refused] == [
        ("'../up.xml'", Action.REFUSED), ("'evil\\x1b[31m.xml'", Action.REFUSED)]
    assert all(isinstance(outcome.error, UnsafeNameError) for outcome in refused)
    plan = plan_source(candidates, refused, {}, archived={("b.xml", 1, int(T)): "/out/b.xml"},
                       decrypt=True, dry_run=True, copy_intact=never)
    assert actions(plan.in_order()) == [("'../up.xml'", Action.REFUSED),
                                      ("'evil\\x1b[31m.xml'", Action.REFUSED),
                                      ("a.xml", Action.WOULD_FETCH), ("b.xml", Action.SKIPPED)]


def test_json_lists_every_skipped_file_in_the_listing_order_with_the_others() -> None:
    """The skipped files are plain tuples in a run's result (a no-op over 50,000 files makes no
    outcome object each), yet ``--json`` shows each, in its place and shape."""
    from reportsync.fetch import FetchResult, SourceResult
    from reportsync.render.envelope import to_json

    listing = [RemoteFile(name, 10, T) for name in ("a.xml", "b.xml", "c.xml", "d.xml")]
    acting = {v.version: v for v in [version(2, "b.xml", download="/enc/b.xml", acked=True),
                                      version(4, "d.xml")]}
    archived = {("a.xml", 10, T): "/out/a.xml", ("c.xml", 10, T): "/out/c.xml"}
    refused = [FileOutcome("'..'", 1, T, Action.REFUSED)]
    plan = plan_source(listing, refused, acting, archived=archived, decrypt=True, dry_run=False,
                       copy_intact=never)
    source = SourceResult(name="s", protocol="sftp", files=list(plan.outcomes),
                          skipped=list(plan.skipped), refused=plan.refused,
                          listed_end=len(plan.outcomes))
    source.files.append(FileOutcome("d.xml", 10, T, Action.ARCHIVED, output_path="/out/d.xml"))
    assert source.count(Action.SKIPPED) == 2 and source.count("archived") == 1
    document = to_json(FetchResult(sources=[source], dry_run=False))
    files = document["sources"][0]["files"]
    assert [(f["name"], f["action"]) for f in files] == [
        ("'..'", "refused"), ("a.xml", "skipped"), ("b.xml", "acknowledged"),
        ("c.xml", "skipped"), ("d.xml", "archived")]
    assert files[1] == {"name": "a.xml", "size": 10, "mtime": T, "action": "skipped",
                        "local_path": None, "output_path": "/out/a.xml", "bytes_transferred": 0,
                        "decrypted": False, "error": None}
    assert document["sources"][0]["counts"]["skipped"] == 2
    assert FetchResult(sources=[source], dry_run=False).counts() == {
        "refused": 1, "acknowledged": 1, "archived": 1, "skipped": 2}


def test_every_public_name_of_the_fetch_package_loads_from_its_module() -> None:
    # reportsync.fetch names its public names twice (``__all__`` and the module each loads from,
    # PEP 562): the two lists must agree, and each name must be where the package says
    assert sorted(package.__all__) == sorted(package._ROOM_OF)
    for name, room in package._ROOM_OF.items():
        module = importlib.import_module(f"reportsync.fetch.{room}")
        assert getattr(package, name) is getattr(module, name), name
