"""One contract every transport keeps, run against every real server variant and the in-memory
transport the fast fetch and retention tests use.

fetch, retention and doctor rely on exactly these behaviours and never ask which protocol
they talk to (the rclone ``fstests`` idea).
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reportsync.config import parse_config
from reportsync.errors import RemoteError
from reportsync.transports import Transport, open_transport
from reportsync.transports.memory import MemoryServer
from reportsync.transports.sftp import SftpTransport
from tests.servers import LocalServer

# paramiko's prefetch thread used to die with "Socket is closed" when a connection dropped
# under it: no transport test may leave a thread's traceback behind.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

SERVERS = ["sftp_server", "sftp_cert_server", "ftp_server", "ftps_server",
           "ftp_server_no_mlsd", "ftp_server_windows_list"]
SSH_ENGINES = {"sftp_server": ("openssh", "paramiko"), "sftp_cert_server": ("openssh", "paramiko")}
"""Both SSH engines pass the whole contract (issue 13): each SFTP server once per engine."""
CASES = [f"{server}:{engine}" if engine else server
         for server in SERVERS for engine in SSH_ENGINES.get(server, ("",))]


class Folder:
    """The remote folder as a test arranges it: on a real server's disk, or in memory."""

    def __init__(self, server: LocalServer | None = None, memory: MemoryServer | None = None,
                 ssh_engine: str = ""):
        self.server = server
        self.memory = memory
        self.ssh_engine = ssh_engine

    def put(self, name: str, data: bytes, mtime: float) -> None:
        if self.memory is not None:
            self.memory.put(name, data, mtime)
            return
        assert self.server is not None
        path = self.server.remote_root / name
        path.write_bytes(data)
        os.utime(path, (mtime, mtime))

    def mkdir(self, name: str) -> None:
        if self.memory is not None:
            self.memory.folders.add(name)
        else:
            assert self.server is not None
            (self.server.remote_root / name).mkdir()

    def exists(self, name: str) -> bool:
        if self.memory is not None:
            return name in self.memory.files or name in self.memory.folders
        assert self.server is not None
        return (self.server.remote_root / name).exists()


@pytest.fixture(params=[*CASES, "memory"])
def folder(request: pytest.FixtureRequest) -> Folder:
    if request.param == "memory":
        return Folder(memory=MemoryServer())
    server, _, engine = str(request.param).partition(":")
    return Folder(server=request.getfixturevalue(server), ssh_engine=engine)


@pytest.fixture
def transport(folder: Folder, tmp_path: Path) -> Iterator[Transport]:
    if folder.memory is not None:
        with folder.memory.connect("contract") as opened:
            yield opened
        return
    assert folder.server is not None
    source = dict(folder.server.source, download_dir=str(tmp_path / "d"),
                  output_dir=str(tmp_path / "o"), timeout=10)
    if folder.ssh_engine:
        source["ssh_engine"] = folder.ssh_engine
    config = parse_config({"sources": {"contract": source}})
    with open_transport(config.sources["contract"]) as opened:
        if folder.ssh_engine:  # the engine asked for is the one speaking
            assert isinstance(opened, SftpTransport)
            assert opened.session.engine == folder.ssh_engine
        yield opened


def test_listing_gives_regular_files_with_size_and_mtime(folder: Folder,
                                                         transport: Transport) -> None:
    delivered = int(time.time()) - 5 * 86400
    folder.put("U1234567.Activity_Daily.20261102.20261102.xml.pgp", b"a" * 1000, delivered)
    folder.put("with space.csv.gpg", b"", delivered - 3600)
    folder.put("old.asc", b"x" * 7, time.time() - 400 * 86400)  # old enough for year-only LIST
    folder.mkdir("a folder")
    listing = {remote.name: remote for remote in transport.list_files()}
    assert set(listing) == {"U1234567.Activity_Daily.20261102.20261102.xml.pgp",
                            "with space.csv.gpg", "old.asc"}
    report = listing["U1234567.Activity_Daily.20261102.20261102.xml.pgp"]
    assert report.size == 1000 and int(report.mtime) == delivered
    assert listing["with space.csv.gpg"].size == 0
    assert int(listing["with space.csv.gpg"].mtime) == delivered - 3600
    assert abs(listing["old.asc"].mtime - (time.time() - 400 * 86400)) < 2


def test_a_listing_of_many_replies_gives_every_file_once_and_the_session_stays_usable(
        folder: Folder, transport: Transport) -> None:
    # OpenSSH answers a READDIR with up to 100 names: 1,234 files are 13 replies; a stat after
    # shows nothing of the listing was left unread on the session
    delivered = time.time() - 86400
    names = {f"U{index:05d}.xml.pgp" for index in range(1234)}
    for name in names:
        folder.put(name, name.encode(), delivered)
    listing = transport.list_files()
    assert sorted(remote.name for remote in listing) == sorted(names)
    assert all(remote.size == len(remote.name) for remote in listing)
    assert sorted(remote.name for remote in transport.list_files()) == sorted(names)
    there = transport.stat("U00007.xml.pgp")
    assert there is not None and there.size == len("U00007.xml.pgp")


def test_download_whole_and_from_an_offset(folder: Folder, transport: Transport) -> None:
    data = os.urandom(300_000)
    folder.put("r.pgp", data, time.time())
    whole = io.BytesIO()
    progress: list[int] = []
    assert transport.download("r.pgp", whole, progress=progress.append) == len(data)
    assert whole.getvalue() == data
    assert sum(progress) == len(data)
    tail = io.BytesIO()
    assert transport.download("r.pgp", tail, offset=123_457) == len(data) - 123_457
    assert tail.getvalue() == data[123_457:]


def test_missing_file_is_a_remote_error_and_the_transport_stays_usable(
    folder: Folder, transport: Transport
) -> None:
    folder.put("there.pgp", b"here", time.time())
    with pytest.raises(RemoteError):
        transport.download("not-there.pgp", io.BytesIO())
    sink = io.BytesIO()
    transport.download("there.pgp", sink)
    assert sink.getvalue() == b"here"


def test_delete_removes_the_file(folder: Folder, transport: Transport) -> None:
    folder.put("gone.pgp", b"bye", time.time())
    folder.put("stays.pgp", b"hi", time.time())
    transport.delete("gone.pgp")
    assert not folder.exists("gone.pgp")
    assert [remote.name for remote in transport.list_files()] == ["stays.pgp"]


def test_empty_folder_lists_nothing(transport: Transport) -> None:
    assert transport.list_files() == []


def test_stat_asks_the_server_now_not_the_listing(folder: Folder, transport: Transport) -> None:
    delivered = int(time.time()) - 2 * 86400
    folder.put("r.pgp", b"x" * 10, delivered)
    [listed] = transport.list_files()
    now = transport.stat("r.pgp")
    assert now is not None and now.size == 10
    if transport.stat_mtime_matches_listing:
        assert int(now.mtime) == int(listed.mtime) == delivered
    folder.put("r.pgp", b"y" * 25, delivered + 60)  # the provider replaces it after the listing
    again = transport.stat("r.pgp")
    assert again is not None and again.size == 25
