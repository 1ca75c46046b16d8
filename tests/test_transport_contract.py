"""One contract every transport keeps, run against every real server variant.

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
from tests.servers import LocalServer

# paramiko's prefetch thread used to die with "Socket is closed" when a connection dropped
# under it: no transport test may leave a thread's traceback behind.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

SERVERS = ["sftp_server", "sftp_cert_server", "ftp_server", "ftps_server",
           "ftp_server_no_mlsd", "ftp_server_windows_list"]


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> LocalServer:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


@pytest.fixture
def transport(server: LocalServer, tmp_path: Path) -> Iterator[Transport]:
    source = dict(server.source, download_dir=str(tmp_path / "d"), output_dir=str(tmp_path / "o"),
                  timeout=10)
    config = parse_config({"sources": {"contract": source}})
    with open_transport(config.sources["contract"]) as opened:
        yield opened


def put(server: LocalServer, name: str, data: bytes, mtime: float) -> None:
    path = server.remote_root / name
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


def test_listing_gives_regular_files_with_size_and_mtime(server: LocalServer,
                                                         transport: Transport) -> None:
    delivered = int(time.time()) - 5 * 86400
    put(server, "U1234567.Activity_Daily.20261102.20261102.xml.pgp", b"a" * 1000, delivered)
    put(server, "with space.csv.gpg", b"", delivered - 3600)
    put(server, "old.asc", b"x" * 7, time.time() - 400 * 86400)  # old enough for year-only LIST
    (server.remote_root / "a folder").mkdir()
    listing = {remote.name: remote for remote in transport.list_files()}
    assert set(listing) == {"U1234567.Activity_Daily.20261102.20261102.xml.pgp",
                            "with space.csv.gpg", "old.asc"}
    report = listing["U1234567.Activity_Daily.20261102.20261102.xml.pgp"]
    assert report.size == 1000 and int(report.mtime) == delivered
    assert listing["with space.csv.gpg"].size == 0
    assert int(listing["with space.csv.gpg"].mtime) == delivered - 3600
    assert abs(listing["old.asc"].mtime - (time.time() - 400 * 86400)) < 2


def test_download_whole_and_from_an_offset(server: LocalServer, transport: Transport) -> None:
    data = os.urandom(300_000)
    put(server, "r.pgp", data, time.time())
    whole = io.BytesIO()
    progress: list[int] = []
    assert transport.download("r.pgp", whole, progress=progress.append) == len(data)
    assert whole.getvalue() == data
    assert sum(progress) == len(data)
    tail = io.BytesIO()
    assert transport.download("r.pgp", tail, offset=123_457) == len(data) - 123_457
    assert tail.getvalue() == data[123_457:]


def test_missing_file_is_a_remote_error_and_the_transport_stays_usable(
    server: LocalServer, transport: Transport
) -> None:
    put(server, "there.pgp", b"here", time.time())
    with pytest.raises(RemoteError):
        transport.download("not-there.pgp", io.BytesIO())
    sink = io.BytesIO()
    transport.download("there.pgp", sink)
    assert sink.getvalue() == b"here"


def test_delete_removes_the_file(server: LocalServer, transport: Transport) -> None:
    put(server, "gone.pgp", b"bye", time.time())
    put(server, "stays.pgp", b"hi", time.time())
    transport.delete("gone.pgp")
    assert not (server.remote_root / "gone.pgp").exists()
    assert [remote.name for remote in transport.list_files()] == ["stays.pgp"]


def test_empty_folder_lists_nothing(transport: Transport) -> None:
    assert transport.list_files() == []
