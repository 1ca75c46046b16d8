"""Retention: the pure plan with an injected "now", and apply against real files and a real server."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reportsync import retention
from reportsync.config import RetentionPolicy, SourceConfig, parse_config
from reportsync.ledger import Ledger
from reportsync.transports import RemoteFile, open_transport
from reportsync.vocab import NoticeKind
from tests.servers import LocalServer

DAY = 86400
NOW = 1_800_000_000.0  # a fixed "now": nothing here reads the clock


def source_config(tmp_path: Path, **overrides: Any) -> SourceConfig:
    table = {"protocol": "ftp", "host": "127.0.0.1", "username": "u", "password_env": "X",
             "download_dir": str(tmp_path / "enc"), "output_dir": str(tmp_path / "out")}
    table.update(overrides)
    return parse_config({"sources": {"s": table}}).sources["s"]


@dataclass
class Archive:
    """A ledger and folders with files in the states a run leaves them in."""

    tmp_path: Path
    ledger: Ledger
    source: SourceConfig

    def remote(self, name: str, age_days: float, size: int = 100) -> RemoteFile:
        return RemoteFile(name, size, NOW - age_days * DAY)

    def seen(self, *files: RemoteFile) -> dict[str, int]:
        ids = self.ledger.see_files("s", [(f.name, f.size, int(f.mtime)) for f in files])
        return {name: file_id for (name, _, _), file_id in ids.items()}

    def fetched(self, remote: RemoteFile, file_id: int, *, archived: bool = True) -> tuple[Path, Path]:
        encrypted = self.source.download_dir / remote.name
        encrypted.parent.mkdir(parents=True, exist_ok=True)
        encrypted.write_bytes(b"ciphertext of " + remote.name.encode())
        self.ledger.record_download(file_id, 1, encrypted, encrypted.stat().st_size,
                                    hashlib.sha256(encrypted.read_bytes()).hexdigest())
        report = self.source.output_dir / remote.name.removesuffix(".pgp")
        if archived:
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_bytes(b"statement " + remote.name.encode())
            self.ledger.record_archived(file_id, 1, report, report.stat().st_size,
                                        hashlib.sha256(report.read_bytes()).hexdigest(),
                                        decrypted=True, signer=None)
        return encrypted, report

    def plan(self, policy: RetentionPolicy, listing: list[RemoteFile] | None,
             **source_overrides: Any) -> retention.RetentionPlan:
        source = source_config(self.tmp_path, **source_overrides) if source_overrides else self.source
        return retention.plan(source, policy, self.ledger.versions("s"), listing, NOW)


@pytest.fixture
def archive(tmp_path: Path) -> Any:
    with Ledger(tmp_path / "state" / "ledger.sqlite3") as ledger:
        ledger.start_run("fetch", 1)
        yield Archive(tmp_path, ledger, source_config(tmp_path))


def test_unfetched_files_are_at_risk_then_lost_until_acknowledged(archive: Archive) -> None:
    fresh, risky, gone = (archive.remote("fresh.pgp", 30), archive.remote("risky.pgp", 95),
                          archive.remote("gone.pgp", 101))
    archive.seen(fresh, risky, gone)
    result = archive.plan(RetentionPolicy(), [fresh, risky, gone])
    at_risk = {notice.name: notice.days for notice in result.of_kind("at-risk")}
    assert at_risk == {"risky.pgp": 5.0}
    assert [notice.name for notice in result.of_kind("lost")] == ["gone.pgp"]
    assert result.deletions == []
    assert archive.ledger.acknowledge_lost("s", "gone.pgp") == 1
    assert archive.plan(RetentionPolicy(), [fresh, risky, gone]).of_kind("lost") == []


def test_every_at_risk_file_is_announced_warn_days_before_purge(archive: Archive) -> None:
    policy = RetentionPolicy(days=100, warn_days=10)
    for age in range(0, 100):
        remote = archive.remote(f"r{age:03d}.pgp", age + 0.5)
        archive.seen(remote)
        notices = retention.plan(archive.source, policy, archive.ledger.versions("s"), [remote],
                                 NOW).of_kind("at-risk")
        expected = age + 0.5 > policy.days - policy.warn_days
        assert bool(notices) == expected, age


def test_a_file_that_vanished_unarchived_is_lost_and_an_old_replaced_version_is_not(
    archive: Archive,
) -> None:
    vanished = archive.remote("vanished.pgp", 20)
    old = archive.remote("same.pgp", 40, size=10)
    new = archive.remote("same.pgp", 3, size=20)
    ids = archive.seen(vanished, old)
    new_ids = archive.ledger.see_files("s", [(new.name, new.size, int(new.mtime))])
    new_id = new_ids[(new.name, new.size, int(new.mtime))]
    archive.fetched(new, new_id)
    assert ids
    lost = archive.plan(RetentionPolicy(), [new]).of_kind("lost")
    assert [notice.name for notice in lost] == ["vanished.pgp"]
    gone = {version.name for version in archive.ledger.versions("s") if version.gone_at}
    assert gone == {"vanished.pgp", "same.pgp"}, "vanished versions are recorded as gone"


def test_old_encrypted_copy_expires_and_the_report_is_kept(archive: Archive) -> None:
    old, young = archive.remote("old.xml.pgp", 101), archive.remote("young.xml.pgp", 50)
    ids = archive.seen(old, young)
    old_encrypted, old_report = archive.fetched(old, ids["old.xml.pgp"])
    young_encrypted, _ = archive.fetched(young, ids["young.xml.pgp"])
    planned = archive.plan(RetentionPolicy(local_encrypted="expire"), [old, young])
    assert [(d.target, d.name) for d in planned.deletions] == [("local_encrypted", "old.xml.pgp")]
    outcomes = retention.apply(planned, archive.ledger, 1, None)
    assert [outcome.done for outcome in outcomes] == [True]
    assert not old_encrypted.exists() and old_report.exists() and young_encrypted.exists()
    assert archive.ledger.count("deletions") == 1
    again = archive.plan(RetentionPolicy(local_encrypted="expire"), [old, young])
    assert again.deletions == [], "a deletion is recorded and not planned twice"
    keep = archive.plan(RetentionPolicy(local_encrypted="keep"), [old, young])
    assert keep.deletions == []


def test_archive_days_expires_decrypted_reports(archive: Archive) -> None:
    old, young = archive.remote("old.xml.pgp", 400), archive.remote("young.xml.pgp", 20)
    ids = archive.seen(old, young)
    _, old_report = archive.fetched(old, ids["old.xml.pgp"])
    _, young_report = archive.fetched(young, ids["young.xml.pgp"])
    policy = RetentionPolicy(archive_days=365, local_encrypted="keep")
    planned = archive.plan(policy, [young])
    assert [(d.target, d.name) for d in planned.deletions] == [("archive", "old.xml.pgp")]
    retention.apply(planned, archive.ledger, 1, None)
    assert not old_report.exists() and young_report.exists()
    assert archive.plan(RetentionPolicy(archive_days=0), [young]).deletions == []


def test_nothing_is_deleted_when_the_archive_is_missing_altered_or_a_symlink(
    archive: Archive,
) -> None:
    files = [archive.remote(f"f{i}.xml.pgp", 150) for i in range(3)]
    ids = archive.seen(*files)
    pairs = [archive.fetched(remote, ids[remote.name]) for remote in files]
    pairs[0][1].unlink()
    pairs[1][1].write_bytes(b"altered after archiving")
    pairs[2][1].unlink()
    pairs[2][1].symlink_to(pairs[1][1])
    fresh = archive.remote("fresh.xml.pgp", 1)  # the folder is not wholly expired
    planned = archive.plan(RetentionPolicy(local_encrypted="expire"), [*files, fresh])
    assert len(planned.deletions) == 3
    outcomes = retention.apply(planned, archive.ledger, 1, None)
    assert [outcome.done for outcome in outcomes] == [False, False, False]
    assert "missing" in outcomes[0].detail and "hash" in outcomes[1].detail
    assert "symlink" in outcomes[2].detail
    assert all(encrypted.exists() for encrypted, _ in pairs), "the only copies stay"
    assert archive.ledger.count("deletions") == 0


def _archived_files(archive: Archive, count: int, age_days: float) -> list[RemoteFile]:
    files = [archive.remote(f"f{i:03d}.xml.pgp", age_days + i / 10) for i in range(count)]
    fresh = archive.remote("today.xml.pgp", 1)
    ids = archive.seen(*files, fresh)
    for remote in [*files, fresh]:
        archive.fetched(remote, ids[remote.name])
    return [*files, fresh]


def test_ordinary_expiry_is_never_held_back_by_a_cap(archive: Archive) -> None:
    """Issue 11: with a cap of 10 % of the archive, 13 archived files lost their copies two a
    run, with a warning to check the clock. Ordinary expiry is done in one run."""
    listing = _archived_files(archive, 13, age_days=101)
    planned = archive.plan(RetentionPolicy(local_encrypted="expire", remote="delete-expired"),
                           listing)
    assert planned.held_back == [] and planned.withheld == []
    assert {(d.target, d.name) for d in planned.deletions} == {
        (target, f"f{i:03d}.xml.pgp") for i in range(13) for target in ("local_encrypted", "remote")}
    assert planned.cap == 50 and planned.notices == []


def test_the_cap_is_max_deletions_files_a_run_and_the_rest_follow(archive: Archive) -> None:
    listing = _archived_files(archive, 60, age_days=150)
    policy = RetentionPolicy(local_encrypted="expire")
    first = archive.plan(policy, listing)
    assert first.cap == 50
    assert len(first.deletions) == 50 and len(first.held_back) == 10
    assert all(outcome.done for outcome in retention.apply(first, archive.ledger, 1, None))
    second = archive.plan(policy, listing)
    assert [d.name for d in second.deletions] == [f"f{i:03d}.xml.pgp" for i in range(50, 60)]
    assert second.held_back == []
    assert sorted(p.name for p in archive.source.download_dir.iterdir()) == [
        "f050.xml.pgp", "f051.xml.pgp", "f052.xml.pgp", "f053.xml.pgp", "f054.xml.pgp",
        "f055.xml.pgp", "f056.xml.pgp", "f057.xml.pgp", "f058.xml.pgp", "f059.xml.pgp",
        "today.xml.pgp"]
    assert [d.name for d in archive.plan(RetentionPolicy(max_deletions=0), listing).held_back]


def test_a_folder_whose_newest_file_looks_expired_gets_no_deletions_and_says_why(
    archive: Archive,
) -> None:
    files = [archive.remote(f"f{i}.xml.pgp", 200 + i) for i in range(5)]
    ids = archive.seen(*files)
    for remote in files:
        archive.fetched(remote, ids[remote.name])
    policy = RetentionPolicy(local_encrypted="expire", remote="delete-expired",
                             archive_days=150)
    planned = archive.plan(policy, files)
    assert planned.deletions == [] and planned.held_back == []
    assert len(planned.withheld) == 15, "every copy of every file waits"
    [notice] = planned.of_kind(NoticeKind.DELETIONS_WITHHELD)
    assert "newest file on the server is 200 days old" in notice.reason
    assert "clock" in notice.reason and "15 deletion(s)" in notice.reason
    newer = archive.remote("new.xml.pgp", 99)
    archive.seen(*files, newer)
    assert len(archive.plan(policy, [*files, newer]).deletions) == 15, \
        "one file younger than days is enough: the clock is believable again"
    assert archive.plan(RetentionPolicy(local_encrypted="keep"), files).of_kind(
        NoticeKind.DELETIONS_WITHHELD) == [], \
        "nothing due: nothing to warn about"


def test_stale_feed(archive: Archive) -> None:
    archive.seen(archive.remote("last.pgp", 9))
    stale = archive.plan(RetentionPolicy(), None, expect_every_days=7).of_kind("stale")
    assert len(stale) == 1 and "9 days old" in stale[0].reason
    assert archive.plan(RetentionPolicy(), None, expect_every_days=10).of_kind("stale") == []
    assert archive.plan(RetentionPolicy(), None).of_kind("stale") == []


@pytest.mark.parametrize("mode", ["delete-expired", "delete-after-fetch"])
def test_remote_deletion_on_a_real_server_spares_what_is_not_archived(
    tmp_path: Path, sftp_server: LocalServer, mode: str
) -> None:
    now = time.time()
    for name, age in (("archived-old.xml.pgp", 120), ("failed-old.xml.pgp", 120),
                      ("archived-new.xml.pgp", 10)):
        path = sftp_server.remote_root / name
        path.write_bytes(b"x" * 100)
        os.utime(path, (now - age * DAY, now - age * DAY))
    table = dict(sftp_server.source, download_dir=str(tmp_path / "enc"),
                 output_dir=str(tmp_path / "out"))
    source = parse_config({"sources": {"s": table}}).sources["s"]
    with Ledger(tmp_path / "ledger.sqlite3") as ledger, open_transport(source) as transport:
        ledger.start_run("fetch", 1)
        listing = transport.list_files()
        ids = ledger.see_files("s", [(f.name, f.size, int(f.mtime)) for f in listing])
        helper = Archive(tmp_path, ledger, source)
        by_name = {name: file_id for (name, _, _), file_id in ids.items()}
        helper.fetched(next(f for f in listing if f.name == "archived-old.xml.pgp"),
                       by_name["archived-old.xml.pgp"])
        helper.fetched(next(f for f in listing if f.name == "archived-new.xml.pgp"),
                       by_name["archived-new.xml.pgp"])
        helper.fetched(next(f for f in listing if f.name == "failed-old.xml.pgp"),
                       by_name["failed-old.xml.pgp"], archived=False)
        policy = RetentionPolicy(remote=mode, local_encrypted="keep")
        planned = retention.plan(source, policy, ledger.versions("s"), listing, now)
        retention.apply(planned, ledger, 1, transport)
        left = sorted(remote.name for remote in transport.list_files())
    expected = {"delete-expired": ["archived-new.xml.pgp", "failed-old.xml.pgp"],
                "delete-after-fetch": ["failed-old.xml.pgp"]}[mode]
    assert left == expected
