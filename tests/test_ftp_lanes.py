"""FTP's ``download_many`` (issue 13): several files in flight over several control connections,
on real servers (the scripted pyftpdlib of tests/servers/hostile_ftpd.py, the pyftpdlib
variants, the real vsftpd), with its round trips counted and its failures mid-batch; never timed.

The contract is ``Transport.download_many``'s (transports/base.py): each file checked against its
listed version, yielded as it ends; a file's refusal is its own error; a NetworkError ends the
batch after the files that ended; nothing of a file is kept as another version's.
"""

from __future__ import annotations

import io
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from reportsync.config import SourceConfig, parse_config
from reportsync.errors import NetworkError, RemoteChangedError, RemoteError
from reportsync.transports import RemoteFile, Transport, open_transport
from reportsync.transports.base import Download, Downloaded
from reportsync.transports.ftp import open_ftp
from reportsync.transports.ftp.lanes import LANES
from tests.servers import LocalServer
from tests.servers.hostile_ftpd import Script
from tests.servers.vsftpd import start_vsftpd, vsftpd_available
from tests.support import PgpIdentity
from tests.test_hardening_support import files_by_name, hostile_workspace

DAY = 86400
SIZE = 20 * 1024


def source_for(table: dict[str, Any], tmp_path: Path, **overrides: Any) -> SourceConfig:
    return parse_config({"sources": {"t": {**table, "download_dir": str(tmp_path / "d"),
                                           "output_dir": str(tmp_path / "o"),
                                           **overrides}}}).sources["t"]


def content(index: int) -> bytes:
    return bytes([index % 251]) * (SIZE - index) + f"<{index}>".encode()


def put_files(root: Path, count: int) -> dict[str, bytes]:
    files = {}
    stamp = time.time() - DAY
    for index in range(count):
        name = f"r{index:03d}.xml"
        path = root / name
        path.write_bytes(content(index))
        path.chmod(0o644)  # vsftpd's anonymous sessions read as another user
        os.utime(path, (stamp, stamp))
        files[name] = content(index)
    return files


def fetch_all(transport: Transport, listing: list[RemoteFile], offsets: dict[str, int] | None = None
              ) -> tuple[dict[str, Downloaded], dict[str, io.BytesIO]]:
    sinks = {remote.name: io.BytesIO() for remote in listing}
    downloads = [Download(remote, sinks[remote.name], (offsets or {}).get(remote.name, 0))
                 for remote in listing]
    ended = {done.download.remote.name: done for done in transport.download_many(downloads)}
    return ended, sinks


# --- every file, over several connections, each asked as little as its listing allows -----------


@pytest.mark.parametrize("mlsd", [True, False], ids=["mlsd", "list-and-mdtm"])
def test_files_go_over_several_connections_asked_once_after_their_transfer(
        hostile: Any, tmp_path: Path, mlsd: bool) -> None:
    script = Script()
    server = hostile(script, mlsd=mlsd)
    files = put_files(server.remote_root, 10)
    with open_ftp(source_for(server.source, tmp_path)) as transport:
        listing = transport.list_files()
        script.commands.clear()
        ended, sinks = fetch_all(transport, listing)
    assert sorted(ended) == sorted(files)
    assert all(done.error is None and done.written == len(files[name])
               for name, done in ended.items())
    assert {name: sink.getvalue() for name, sink in sinks.items()} == files
    sent = script.commands
    assert sent.count("USER") == LANES - 1, "the listing's session and three more"
    assert sent.count("EPSV") == sent.count("RETR") == 10
    # the listing gave each file's size and time on stat's own clock in this session: only the
    # stat after the transfer is asked (MLST, or SIZE and MDTM)
    if mlsd:
        assert sent.count("MLST") == 10 and "SIZE" not in sent and "MDTM" not in sent
    else:
        assert sent.count("SIZE") == sent.count("MDTM") == 10 and "MLST" not in sent


def test_a_file_the_listing_did_not_describe_is_asked_before_and_after(
        hostile: Any, tmp_path: Path) -> None:
    script = Script()
    server = hostile(script)
    files = put_files(server.remote_root, 3)
    source = source_for(server.source, tmp_path)
    with open_ftp(source) as transport:
        recorded = transport.list_files()  # as an earlier session saw them
    with open_ftp(source) as transport:
        script.commands.clear()
        ended, sinks = fetch_all(transport, recorded)
    assert all(done.error is None for done in ended.values())
    assert {name: sink.getvalue() for name, sink in sinks.items()} == files
    assert script.commands.count("MLST") == 6, "no listing of this session: before and after"


def test_a_same_size_change_since_the_listing_is_seen_and_not_kept(
        hostile: Any, tmp_path: Path) -> None:
    # the stat before the transfer compared only sizes (MDTM or MLST against the listing's
    # clock): a file replaced by one of the same size after the listing was fetched as if it
    # were the listed version. The listing's own facts, on stat's clock, see the new time.
    script = Script()
    server = hostile(script)
    files = put_files(server.remote_root, 4)
    with open_ftp(source_for(server.source, tmp_path)) as transport:
        listing = transport.list_files()
        replaced = server.remote_root / "r001.xml"
        replaced.write_bytes(b"x" * len(files["r001.xml"]))  # the provider's new version
        stamp = time.time() - 100
        os.utime(replaced, (stamp, stamp))
        ended, sinks = fetch_all(transport, listing)
    changed = ended["r001.xml"].error
    assert isinstance(changed, RemoteChangedError), changed
    assert "changed on the server" in changed.message
    for name in ("r000.xml", "r002.xml", "r003.xml"):
        assert ended[name].error is None and sinks[name].getvalue() == files[name]


def test_a_file_that_grows_during_its_transfer_is_seen(hostile: Any, tmp_path: Path) -> None:
    script = Script()
    server = hostile(script)
    put_files(server.remote_root, 4)
    growing = server.remote_root / "r002.xml"

    def provider_appends(command: str, argument: str) -> None:
        if command == "RETR" and argument == "r002.xml":
            with growing.open("ab") as handle:
                handle.write(b"<more/>")

    script.on_command = provider_appends
    with open_ftp(source_for(server.source, tmp_path)) as transport:
        listing = transport.list_files()
        ended, _ = fetch_all(transport, listing)
    assert isinstance(ended["r002.xml"].error, RemoteChangedError)
    assert all(ended[name].error is None for name in ("r000.xml", "r001.xml", "r003.xml"))


def test_a_refused_file_is_its_own_error_and_the_others_go_on(
        hostile: Any, tmp_path: Path) -> None:
    script = Script()
    server = hostile(script)
    files = put_files(server.remote_root, 5)
    with open_ftp(source_for(server.source, tmp_path)) as transport:
        listing = transport.list_files()
        (server.remote_root / "r003.xml").unlink()  # gone after the listing
        ended, sinks = fetch_all(transport, listing)
        again, _ = fetch_all(transport, [remote for remote in listing
                                         if remote.name != "r003.xml"])
    assert isinstance(ended["r003.xml"].error, RemoteError)
    for name in ("r000.xml", "r001.xml", "r002.xml", "r004.xml"):
        assert ended[name].error is None and sinks[name].getvalue() == files[name]
    assert all(done.error is None for done in again.values()), "the lanes stay usable"


def test_a_resume_sends_rest_and_takes_the_bytes_from_the_offset(
        hostile: Any, tmp_path: Path) -> None:
    script = Script()
    server = hostile(script)
    files = put_files(server.remote_root, 3)
    with open_ftp(source_for(server.source, tmp_path)) as transport:
        listing = transport.list_files()
        script.commands.clear()
        ended, sinks = fetch_all(transport, listing, {"r001.xml": 1000})
    assert sinks["r001.xml"].getvalue() == files["r001.xml"][1000:]
    assert ended["r001.xml"].written == len(files["r001.xml"]) - 1000
    assert script.commands.count("REST") == 1


def test_a_server_that_allows_two_sessions_gets_two_lanes_and_every_file(
        hostile: Any, tmp_path: Path) -> None:
    script = Script()
    server = hostile(script, max_sessions=2)
    files = put_files(server.remote_root, 8)
    with open_ftp(source_for(server.source, tmp_path)) as transport:
        listing = transport.list_files()
        ended, sinks = fetch_all(transport, listing)
        second, _ = fetch_all(transport, listing)  # the refusal is not asked again
    assert all(done.error is None for done in ended.values()) and len(ended) == 8
    assert {name: sink.getvalue() for name, sink in sinks.items()} == files
    assert all(done.error is None for done in second.values())
    assert script.commands.count("USER") == 2, "one refused greeting, then no further attempt"


def test_the_data_connection_goes_to_the_control_peer_not_the_address_pasv_names(
        hostile: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script()
    server = hostile(script, without=("EPSV",))
    files = put_files(server.remote_root, 4)
    import pyftpdlib.handlers as handlers  # the server names an address nobody listens on

    monkeypatch.setattr(handlers.FTPHandler, "masquerade_address", "10.255.255.1")
    monkeypatch.setattr(handlers.FTPHandler, "masquerade_address_map", {})
    with open_ftp(source_for(server.source, tmp_path)) as transport:
        listing = transport.list_files()
        ended, sinks = fetch_all(transport, listing)
        named = transport.pasv_named_host  # type: ignore[attr-defined]
    assert all(done.error is None for done in ended.values())
    assert {name: sink.getvalue() for name, sink in sinks.items()} == files
    assert named == "10.255.255.1" and script.commands.count("PASV") >= 4


def test_further_connections_closed_while_idle_are_replaced_not_a_failure(
        hostile: Any, tmp_path: Path) -> None:
    script = Script()
    server = hostile(script)
    files = put_files(server.remote_root, 8)
    with open_ftp(source_for(server.source, tmp_path)) as transport:
        listing = transport.list_files()
        first, _ = fetch_all(transport, listing[:4])
        for spare in transport._spares:  # type: ignore[attr-defined]
            spare.sock.shutdown(socket.SHUT_WR)  # the server sees the session end, and ends it
        time.sleep(0.3)
        second, sinks = fetch_all(transport, listing[4:])
    assert all(done.error is None for done in [*first.values(), *second.values()])
    assert {name: sink.getvalue() for name, sink in sinks.items()} == \
        {name: files[name] for name in sinks}


# --- a connection cut while several files are in flight ----------------------------------------


BIG = 2 * 1024 * 1024


def cut_once(script: Script, name: str) -> None:
    """Reset the data connection of the first RETR of ``name`` after 1 MB: only the big file
    gets that far, whichever others are in flight meanwhile."""
    def hook(command: str, argument: str) -> None:
        if command == "RETR" and argument == name:
            script.reset_after = 1_000_000 if script.retr_count.get(name, 0) == 0 else None

    script.on_command = hook


def test_a_reset_mid_batch_ends_it_after_the_files_that_ended_and_nothing_is_lost(
        hostile: Any, tmp_path: Path) -> None:
    script = Script()
    server = hostile(script)
    files = put_files(server.remote_root, 12)
    big = server.remote_root / "r004.xml"
    big.write_bytes(os.urandom(BIG))
    os.utime(big, (time.time() - DAY,) * 2)
    files["r004.xml"] = big.read_bytes()
    cut_once(script, "r004.xml")
    ended: dict[str, Downloaded] = {}
    sinks = {name: io.BytesIO() for name in files}
    with open_ftp(source_for(server.source, tmp_path)) as transport:
        listing = transport.list_files()
        with pytest.raises(NetworkError) as raised:
            for done in transport.download_many([Download(remote, sinks[remote.name])
                                                 for remote in listing]):
                ended[done.download.remote.name] = done
        rest = [remote for remote in listing if remote.name not in ended]
        resumed = {remote.name: len(sinks[remote.name].getvalue()) for remote in rest}
        after, rest_sinks = fetch_all(transport, rest, resumed)
    assert "reset" in raised.value.message
    assert "r004.xml" not in ended and 0 < resumed["r004.xml"] < BIG
    assert len(ended) >= 3, "the files on the other lanes went on"
    for name, done in ended.items():  # what ended before the error, ended whole
        assert done.error is None and sinks[name].getvalue() == files[name]
    for name in resumed:  # the rest: resumed from what they got, on a connection made anew
        assert after[name].error is None
        assert sinks[name].getvalue() + rest_sinks[name].getvalue() == files[name]


def test_a_fetch_with_a_reset_mid_batch_archives_every_file(
        tmp_path: Path, pgp_identity: PgpIdentity) -> None:
    script = Script()
    ws, server = hostile_workspace(tmp_path, pgp_identity, script)
    try:
        files = {f"r{index:03d}.xml": content(index) for index in range(12)}
        files["r005.xml"] = os.urandom(BIG)
        for name, data in files.items():
            ws.put(name, data)
        cut_once(script, "r005.xml")
        ws.write_config(retries=2)
        result = ws.fetch()
    finally:
        server.stop()
    assert result.exit_code == 0, result.stderr
    assert all(entry["action"] == "archived" for entry in files_by_name(result).values())
    assert ws.outputs() == files
    assert script.retr_count["r005.xml"] == 2, "cut once, then resumed"


# --- the real vsftpd (no MLSD, no MLST) and the pyftpdlib variants ------------------------------


@pytest.mark.skipif(not vsftpd_available(), reason="vsftpd is not installed")
def test_vsftpd_every_file_over_several_lanes(tmp_path: Path) -> None:
    server = start_vsftpd(tmp_path / "vsftpd")
    try:
        files = put_files(server.remote_root, 9)
        with open_transport(source_for(server.source, tmp_path)) as transport:
            listing = transport.list_files()
            ended, sinks = fetch_all(transport, listing)
    finally:
        server.stop()
    assert all(done.error is None for done in ended.values()) and len(ended) == 9
    assert {name: sink.getvalue() for name, sink in sinks.items()} == files


@pytest.mark.parametrize("variant", ["ftp_server", "ftp_server_no_mlsd", "ftps_server"])
def test_pyftpdlib_variants_every_file(request: pytest.FixtureRequest, tmp_path: Path,
                                       variant: str) -> None:
    server: LocalServer = request.getfixturevalue(variant)  # ftps: one file after the other
    files = put_files(server.remote_root, 6)
    with open_transport(source_for(server.source, tmp_path)) as transport:
        listing = transport.list_files()
        ended, sinks = fetch_all(transport, listing)
    assert all(done.error is None for done in ended.values()) and len(ended) == 6
    assert {name: sink.getvalue() for name, sink in sinks.items()} == files
