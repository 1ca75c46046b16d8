"""reportsync against the real vsftpd (tests/servers/vsftpd.py): an FTP server without MLSD.

The pyftpdlib variants cover the protocol paths; this checks the same code against a server
written by someone else, the one the benchmarks' no-MLSD rows use.
"""

from __future__ import annotations

import ftplib
import hashlib
import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reportsync.config import SourceConfig, parse_config
from reportsync.transports import open_transport
from tests.servers import LocalServer
from tests.servers.vsftpd import start_vsftpd, vsftpd_available
from tests.support import PgpIdentity, run_cli, write_config

pytestmark = pytest.mark.skipif(not vsftpd_available(),
                                reason="vsftpd is not installed (apt-get install vsftpd)")

DAY = 86400


@pytest.fixture(scope="module")
def vsftpd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    server = start_vsftpd(tmp_path_factory.mktemp("vsftpd"))
    yield server
    server.stop()


@pytest.fixture
def server(vsftpd_server: LocalServer) -> Iterator[LocalServer]:
    """The module's server with an empty ``outgoing`` folder for this test."""
    for path in vsftpd_server.remote_root.iterdir():
        if path.is_dir():
            for inner in path.iterdir():
                inner.unlink()
            path.rmdir()
        else:
            path.unlink()
    yield vsftpd_server


def make_source(server: LocalServer, tmp_path: Path, **overrides: Any) -> SourceConfig:
    table = {**server.source, "download_dir": str(tmp_path / "dl"),
             "output_dir": str(tmp_path / "out"), **overrides}
    return parse_config({"sources": {"t": table}}).sources["t"]


def put(server: LocalServer, name: str, data: bytes, mtime: float) -> Path:
    path = server.remote_root / name
    path.write_bytes(data)
    path.chmod(0o644)  # anonymous sessions read as the unprivileged ftp user
    os.utime(path, (mtime, mtime))
    return path


def test_vsftpd_has_no_mlsd(server: LocalServer) -> None:
    """What the no-MLSD benchmark rows rely on: vsftpd refuses MLSD, so clients use LIST."""
    client = ftplib.FTP()
    client.connect(server.host, server.port, timeout=10)
    try:
        client.login(server.source["username"], server.extra["password"])
        with pytest.raises(ftplib.error_perm, match=r"^500"):
            client.sendcmd("MLSD")
    finally:
        client.close()


def test_lists_exact_sizes_and_times_without_mlsd(server: LocalServer, tmp_path: Path) -> None:
    # Times with seconds, which LIST (minutes at best) cannot give: MDTM must have been asked.
    old = time.time() - 3 * DAY - 17
    new = time.time() - DAY + 41
    put(server, "U1.Activity.20261102.xml.pgp", b"a" * 1234, old)
    put(server, "U1.Activity.20261103.xml.pgp", b"b" * 7, new)
    (server.remote_root / "archive").mkdir(mode=0o755)

    with open_transport(make_source(server, tmp_path)) as transport:
        listed = sorted((item.name, item.size, item.mtime) for item in transport.list_files())

    assert listed == [("U1.Activity.20261102.xml.pgp", 1234, float(int(old))),
                      ("U1.Activity.20261103.xml.pgp", 7, float(int(new)))]


def test_downloads_byte_identical(server: LocalServer, tmp_path: Path) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 5)  # more than one data-socket read
    put(server, "big.gpg", payload, time.time() - DAY)

    sink = io.BytesIO()
    with open_transport(make_source(server, tmp_path)) as transport:
        written = transport.download("big.gpg", sink)

    assert written == len(payload)
    assert hashlib.sha256(sink.getvalue()).digest() == hashlib.sha256(payload).digest()


def test_cli_fetch_archives_then_skips(server: LocalServer, tmp_path: Path,
                                       pgp_identity: PgpIdentity) -> None:
    plaintext = b"<FlexQueryResponse account='U1'/>\n"
    put(server, "U1.Activity.xml.gpg", pgp_identity.encrypt(plaintext), time.time() - DAY)
    table = {**server.source, "download_dir": str(tmp_path / "dl"),
             "output_dir": str(tmp_path / "out"), "retries": 0}
    config = write_config(tmp_path / "config.toml", {
        "settings": {"state_dir": str(tmp_path / "state"), "gnupg_home": str(pgp_identity.home)},
        "sources": {"broker": table},
    })

    first = run_cli("--config", str(config), "--json", "fetch")
    again = run_cli("--config", str(config), "--json", "fetch")

    assert first.exit_code == 0, first.stderr
    assert (tmp_path / "out" / "U1.Activity.xml").read_bytes() == plaintext
    assert first.result()["sources"][0]["counts"]["archived"] == 1
    assert again.exit_code == 0, again.stderr
    assert again.result()["sources"][0]["counts"]["skipped"] == 1
    assert again.result()["sources"][0]["bytes_transferred"] == 0
