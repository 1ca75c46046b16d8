"""The FTP transport's round trips (issue 13), counted on real servers, never timed.

* What one session sends: FEAT once (no failed MLSD per listing), TYPE I once, per transfer only
  EPSV (REST when resuming) and RETR, ``stat`` as one MLST; no TLS context for plain FTP. (A
  batch, ``download_many``, over several connections: per listed file EPSV, RETR and the stat
  after it only, counted in tests/test_ftp_lanes.py.)
* Exact times for a LIST listing without an MDTM per file: ``recall.exact_times`` alone (the
  argument of its docstring, case by case), then the lying pyftpdlib server (LIST in a zone of the
  test's choosing, MDTM in UTC) and the real vsftpd.
"""

from __future__ import annotations

import ftplib
import io
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reportsync.config import SourceConfig, parse_config
from reportsync.doctor import run_doctor
from reportsync.ledger import Ledger
from reportsync.transports import RemoteFile
from reportsync.transports.ftp import open_ftp
from reportsync.transports.ftp.listing import DAY, MINUTE, ListEntry
from reportsync.transports.ftp.recall import exact_times, zone_offset
from reportsync.vocab import CheckStatus
from tests.servers.hostile_ftpd import Listed, Script, start_hostile_ftpd
from tests.servers.vsftpd import start_vsftpd, vsftpd_available
from tests.support import PgpIdentity
from tests.test_hardening_support import hostile_workspace

HOUR = 3600
BASE = 1_790_000_000  # 2026-09-21 (a whole minute plus 20 s: 1_789_999_980 is the minute)


def listed(name: str, size: int, mtime: float, offset: int = 0, precision: int = MINUTE,
           ) -> ListEntry:
    """The entry LIST shows for a file written at ``mtime`` (UTC) on a server ``offset`` seconds
    east of UTC: its minute (or day) on that wall clock."""
    shown = int(mtime) + offset
    return ListEntry(name, "file", size, float(shown - shown % precision), precision)


class Mdtm:
    """The server's MDTM over a dict of exact times; counts the questions."""

    def __init__(self, exact: dict[str, float | None]) -> None:
        self.exact = exact
        self.asked: list[str] = []

    def __call__(self, name: str) -> float | None:
        self.asked.append(name)
        return self.exact.get(name)


def folder(count: int, *, offset: Callable[[int], int] = lambda _t: 0, step: int = 977,
           ) -> tuple[list[ListEntry], dict[str, float | None], list[tuple[str, int, int]]]:
    """``count`` files written ``step`` seconds apart: their LIST entries, their exact times, and
    the record of them all (as the ledger has it after an earlier run)."""
    entries, exact, known = [], {}, []
    for index in range(count):
        name, mtime = f"f{index:04d}.xml", BASE + index * step
        entries.append(listed(name, 100 + index, mtime, offset(mtime)))
        exact[name] = float(mtime)
        known.append((name, 100 + index, mtime))
    return entries, exact, known


# --- the argument, case by case ------------------------------------------------------------------


def test_without_a_record_every_file_is_asked() -> None:
    entries, exact, _ = folder(5)
    mdtm = Mdtm(exact)
    assert exact_times(entries, (), mdtm) == exact
    assert sorted(mdtm.asked) == sorted(exact)


def test_a_utc_server_with_everything_on_record_costs_two_questions() -> None:
    entries, exact, known = folder(500)
    mdtm = Mdtm(exact)
    assert exact_times(entries, known, mdtm) == exact
    assert len(mdtm.asked) == 2  # the oldest and the newest: they show the zone


def test_a_server_listing_in_local_time_is_recalled_at_its_offset() -> None:
    entries, exact, known = folder(300, offset=lambda _t: 5 * HOUR + 45 * 60)  # Nepal
    mdtm = Mdtm(exact)
    assert exact_times(entries, known, mdtm) == exact
    assert len(mdtm.asked) == 2


def test_a_daylight_saving_change_in_the_listing_is_bisected_and_nothing_is_misread() -> None:
    change = BASE + 137 * 977 + 500
    entries, exact, known = folder(400, offset=lambda t: HOUR if t < change else 2 * HOUR)
    mdtm = Mdtm(exact)
    assert exact_times(entries, known, mdtm) == exact
    assert 3 <= len(mdtm.asked) <= 2 + 10  # ends, then log2(400) to find the change


def test_a_new_name_a_new_size_and_a_new_minute_are_asked_the_rest_recalled() -> None:
    entries, exact, known = folder(50)
    known = [k for k in known if k[0] != "f0010.xml"]  # new name
    entries[20] = listed("f0020.xml", 999, exact["f0020.xml"] or 0)  # same name, other size
    exact["f0030.xml"] = float(BASE + 30 * 977 + 3 * HOUR)  # replaced, same size, hours later
    entries[30] = listed("f0030.xml", 130, exact["f0030.xml"] or 0)
    mdtm = Mdtm(exact)
    times = exact_times(entries, known, mdtm)
    assert times == exact  # the replaced file has its new time, not the recorded one
    assert {"f0010.xml", "f0020.xml", "f0030.xml"} <= set(mdtm.asked)
    assert len(mdtm.asked) == 5


def test_a_same_size_replacement_within_the_recorded_minute_is_what_it_cannot_see() -> None:
    # The one case the module's docstring (and docs/fetch.md) names: a version of the same size
    # written in the same minute as the recorded one is taken for it.
    entries, exact, known = folder(10)
    exact["f0005.xml"] = float(BASE + 5 * 977 + 25)  # 25 s later, still the recorded minute
    times = exact_times(entries, known, Mdtm(exact))
    assert times["f0005.xml"] == BASE + 5 * 977  # the recorded time, not the new one


def test_day_precision_times_are_always_asked() -> None:
    entries, exact, known = folder(6)
    entries = [ListEntry(e.name, e.kind, e.size, e.mtime, DAY) for e in entries]
    mdtm = Mdtm(exact)
    assert exact_times(entries, known, mdtm) == exact
    assert len(mdtm.asked) == 6


def test_listed_minutes_that_fit_no_zone_fall_back_to_asking_everything() -> None:
    # a server that rounds to the nearest minute (or whose year ls guessed wrong) shows no
    # quarter-hour offset: slower, never wrong
    entries, exact, known = folder(40, step=61)
    shifted = [ListEntry(e.name, e.kind, e.size, (e.mtime or 0) + 37 * 60, MINUTE)
               for e in entries]
    mdtm = Mdtm(exact)
    assert exact_times(shifted, known, mdtm) == exact
    assert len(mdtm.asked) == 40


def test_without_mdtm_nothing_is_recalled_and_the_caller_keeps_the_listed_time() -> None:
    entries, _, known = folder(8)
    mdtm = Mdtm({})
    assert exact_times(entries, known, mdtm) == {entry.name: None for entry in entries}


def test_two_recorded_versions_in_one_minute_are_ambiguous_and_asked() -> None:
    entries, exact, known = folder(10)
    known.append(("f0004.xml", 104, BASE + 4 * 977 + 1))  # seconds apart, same size
    mdtm = Mdtm(exact)
    assert exact_times(entries, known, mdtm) == exact
    assert "f0004.xml" in mdtm.asked


def test_zone_offset_is_a_quarter_hour_within_the_zones_that_exist() -> None:
    assert zone_offset(BASE - BASE % 60 + 2 * HOUR, BASE) == 2 * HOUR
    assert zone_offset(BASE - BASE % 60 - 9 * HOUR - 30 * 60, BASE) == -(9 * HOUR + 30 * 60)
    assert zone_offset(BASE - BASE % 60 + 7 * 60, BASE) is None  # not a quarter hour
    assert zone_offset(BASE - BASE % 60 + 15 * HOUR, BASE) is None  # no such zone


# --- on real servers -----------------------------------------------------------------------------


def source_for(table: dict[str, Any], tmp_path: Path) -> SourceConfig:
    return parse_config({"sources": {"t": {**table, "download_dir": str(tmp_path / "d"),
                                           "output_dir": str(tmp_path / "o")}}}).sources["t"]


def record(listing: list[RemoteFile]) -> list[tuple[str, int, int]]:
    return [(remote.name, remote.size, int(remote.mtime)) for remote in listing]


@pytest.mark.parametrize("zone", ["utc", "local-with-dst"])
def test_list_server_no_op_listing_asks_no_mdtm_per_file(tmp_path: Path, zone: str) -> None:
    now = time.time()
    change = now - 20 * 86400
    script = Script(listing=[Listed(f"r{index:03d}.xml", 1000 + index, now - index * 50_000)
                             for index in range(60)])  # 35 days: the change is among them
    if zone != "utc":
        script.list_offset = lambda t: HOUR if t < change else 2 * HOUR
    server = start_hostile_ftpd(tmp_path / "srv", script, mlsd=False)
    try:
        source = source_for(server.source, tmp_path)
        with open_ftp(source) as transport:
            first = transport.list_files()
            asked_first = script.commands.count("MDTM")
            script.commands.clear()
            again = transport.list_files_knowing(record(first))
            asked_again = script.commands.count("MDTM")
    finally:
        server.stop()
    exact = {entry.name: (entry.size, int(entry.mtime)) for entry in script.listing or []}
    assert {r.name: (r.size, int(r.mtime)) for r in first} == exact
    assert {r.name: (r.size, int(r.mtime)) for r in again} == exact
    assert asked_first == 60 and "SIZE" not in script.commands  # LIST's sizes are exact
    assert asked_again <= (2 if zone == "utc" else 2 + 7)


def test_list_server_a_changed_file_is_seen_with_the_record_given(tmp_path: Path) -> None:
    now = time.time()
    script = Script(listing=[Listed(f"r{index}.xml", 500, now - index * 4000)
                             for index in range(20)])
    server = start_hostile_ftpd(tmp_path / "srv", script, mlsd=False)
    try:
        with open_ftp(source_for(server.source, tmp_path)) as transport:
            known = record(transport.list_files())
            assert script.listing is not None
            script.listing[7] = Listed("r7.xml", 500, now - 7 * 4000 + 600)  # same size, new time
            script.listing[9] = Listed("r9.xml", 501, now - 9 * 4000)  # one byte more
            again = {r.name: r for r in transport.list_files_knowing(known)}
    finally:
        server.stop()
    assert int(again["r7.xml"].mtime) == int(now - 7 * 4000 + 600)
    assert again["r9.xml"].size == 501 and int(again["r9.xml"].mtime) == int(now - 9 * 4000)


@pytest.mark.skipif(not vsftpd_available(), reason="vsftpd is not installed")
def test_vsftpd_no_op_listing_asks_two_mdtm_not_one_per_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = start_vsftpd(tmp_path / "vsftpd")
    stamp = time.time() - 86400
    for index in range(200):
        path = server.remote_root / f"n{index:04d}.xml"
        path.write_bytes(b"x" * index)
        stamp_index = stamp - index * 613
        os.utime(path, (stamp_index, stamp_index))
    sent: list[str] = []
    real_putcmd = ftplib.FTP.putcmd

    def spy(self: ftplib.FTP, line: str) -> None:
        sent.append(line.split(" ", 1)[0])
        real_putcmd(self, line)

    monkeypatch.setattr(ftplib.FTP, "putcmd", spy)
    try:
        with open_ftp(source_for(server.source, tmp_path)) as transport:
            first = transport.list_files()
            first_mdtm = sent.count("MDTM")
            sent.clear()
            again = transport.list_files_knowing(record(first))
    finally:
        server.stop()
    assert record(again) == record(first)
    assert first_mdtm == 200 and "SIZE" not in sent
    assert sent.count("MDTM") == 2
    assert "MLSD" not in sent  # FEAT said vsftpd has none: no failed attempt per listing


# --- what one session sends ------------------------------------------------------------------------


def test_plain_ftp_makes_no_tls_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[object] = []
    real = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        made.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    server = start_hostile_ftpd(tmp_path / "srv", Script())
    try:
        with open_ftp(source_for(server.source, tmp_path)) as transport:
            assert transport.list_files() == []
    finally:
        server.stop()
    assert made == [], "loading the CA store costs ~17 ms a connection, for nothing in plain FTP"


def test_a_session_asks_feat_once_and_a_transfer_is_epsv_and_retr(tmp_path: Path) -> None:
    script = Script()
    server = start_hostile_ftpd(tmp_path / "srv", script)
    (server.remote_root / "a.bin").write_bytes(b"0123456789")
    try:
        with open_ftp(source_for(server.source, tmp_path)) as transport:
            login = list(script.commands)
            script.commands.clear()
            transport.download("a.bin", io.BytesIO())
            whole = list(script.commands)
            script.commands.clear()
            sink = io.BytesIO()
            transport.download("a.bin", sink, offset=4)
            resumed = list(script.commands)
            script.commands.clear()
            assert transport.stat("a.bin") is not None
            stat = list(script.commands)
    finally:
        server.stop()
    assert login.count("FEAT") == 1 and login.count("TYPE") == 1
    assert whole == ["EPSV", "RETR"] and resumed == ["EPSV", "REST", "RETR"]
    assert sink.getvalue() == b"456789"
    assert stat == ["MLST"], "one round trip where SIZE and MDTM are two"


def test_stat_without_mlst_is_size_and_mdtm(tmp_path: Path) -> None:
    script = Script()
    server = start_hostile_ftpd(tmp_path / "srv", script, mlsd=False)
    path = server.remote_root / "a.bin"
    path.write_bytes(b"abc")
    os.utime(path, (1_790_000_000, 1_790_000_000))
    try:
        with open_ftp(source_for(server.source, tmp_path)) as transport:
            script.commands.clear()
            first = transport.stat("a.bin")
            second = transport.stat("a.bin")
            sent = list(script.commands)
    finally:
        server.stop()
    assert first == second == RemoteFile("a.bin", 3, 1_790_000_000.0)
    assert sent == ["SIZE", "MDTM", "SIZE", "MDTM"], "FEAT said: no MLST to try"


@pytest.mark.parametrize("has_mlsd", [True, False])
def test_a_server_without_feat_is_tried_and_what_it_lacks_remembered(
        tmp_path: Path, has_mlsd: bool) -> None:
    script = Script()
    without = ("FEAT",) if has_mlsd else ("FEAT", "MLSD", "MLST")
    server = start_hostile_ftpd(tmp_path / "srv", script, without=without)
    path = server.remote_root / "a.bin"
    path.write_bytes(b"abc")
    os.utime(path, (1_790_000_000, 1_790_000_000))
    try:
        with open_ftp(source_for(server.source, tmp_path)) as transport:
            listings = [transport.list_files() for _ in range(3)]
            stats = [transport.stat("a.bin") for _ in range(2)]
    finally:
        server.stop()
    assert all(listing == [RemoteFile("a.bin", 3, 1_790_000_000.0)] for listing in listings)
    assert stats == [RemoteFile("a.bin", 3, 1_790_000_000.0)] * 2
    if has_mlsd:
        assert script.commands.count("MLSD") == 3 and "LIST" not in script.commands
        assert script.commands.count("MLST") == 2 and "SIZE" not in script.commands
    else:
        assert script.commands.count("MLSD") == 1 and script.commands.count("LIST") == 3
        assert script.commands.count("MLST") == 1, "refused once, then SIZE and MDTM"
        assert script.commands.count("SIZE") == 2


def test_doctor_lists_a_list_server_with_the_ledgers_times(
        tmp_path: Path, pgp_identity: PgpIdentity) -> None:
    now = time.time()
    script = Script(listing=[Listed(f"r{index:02d}.xml", 300 + index, now - 3600 - index * 9000)
                             for index in range(40)])
    ws, server = hostile_workspace(tmp_path, pgp_identity, script, mlsd=False)
    try:
        with Ledger.in_state_dir(ws.state_dir) as ledger:
            ledger.see_files("broker", [(entry.name, entry.size, int(entry.mtime))
                                        for entry in script.listing or []])
        report = run_doctor(ws.config_path, ["broker"])
    finally:
        server.stop()
    listing = next(f for f in report.findings if f.check == "listing")
    assert listing.status == CheckStatus.PASS and "40 file(s) listed" in listing.finding
    assert script.commands.count("MDTM") == 2, "the ledger's times, not a question per file"


def test_a_no_op_fetch_from_a_list_server_asks_no_mdtm_per_file(
        tmp_path: Path, pgp_identity: PgpIdentity) -> None:
    # fetch hands the ledger's versions to the listing (Transport.list_files_knowing): a run that
    # finds everything archived asks the two MDTM the recall needs, not one per file
    script = Script()
    ws, server = hostile_workspace(tmp_path, pgp_identity, script, mlsd=False)
    try:
        for index in range(12):
            ws.put_report(f"r{index:02d}.xml.pgp", b"<r n='%d'/>" % index,
                          age_days=1 + index * 0.37)
        first = ws.fetch()
        asked_first = script.commands.count("MDTM")
        script.commands.clear()
        again = ws.fetch()
    finally:
        server.stop()
    assert first.exit_code == 0, first.stderr
    assert again.exit_code == 0, again.stderr
    assert [f["action"] for f in again.result()["sources"][0]["files"]] == ["skipped"] * 12
    assert asked_first >= 12, "nothing on record yet: every file asked"
    assert script.commands.count("MDTM") <= 2, script.commands
    assert "RETR" not in script.commands
