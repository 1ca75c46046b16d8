"""pytest fixtures for the real pyftpdlib FTP/FTPS servers (see tests/servers/ftpd.py).

One server per variant runs for the whole session; every test gets its own empty folder on it
(``remote_root``) with the source's ``remote_dir`` pointing there, so tests never see each other's
files.
"""

from __future__ import annotations

import dataclasses
import itertools
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import LocalServer
from tests.servers.ftpd import start_ftpd
from tests.servers.hostile_ftpd import Script, start_hostile_ftpd

_VARIANTS: dict[str, dict[str, Any]] = {
    "ftp": {},
    "ftps": {"tls": True},
    "no_mlsd": {"mlsd": False},
    # IIS has MLSD too, but then LIST would never be read: this variant makes clients parse it.
    "windows_list": {"list_style": "windows", "mlsd": False},
}
_counter = itertools.count(1)


class _FtpServers:
    """Starts each variant the first time a test asks for it; stops them all at the end."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.running: dict[str, LocalServer] = {}

    def get(self, variant: str) -> LocalServer:
        if variant not in self.running:
            self.running[variant] = start_ftpd(self.base / variant, **_VARIANTS[variant])
        return self.running[variant]

    def stop_all(self) -> None:
        for server in self.running.values():
            server.stop()
        self.running.clear()


@pytest.fixture(scope="session")
def _ftp_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_FtpServers]:
    servers = _FtpServers(tmp_path_factory.mktemp("ftpd"))
    yield servers
    servers.stop_all()


def _per_test(server: LocalServer) -> Iterator[LocalServer]:
    """The shared server, seen through a fresh empty folder for this test."""
    home: Path = server.extra["home"]
    folder_name = f"t{next(_counter):04d}"
    remote_root = home / folder_name / "outgoing"
    remote_root.mkdir(parents=True)
    source = dict(server.source, remote_dir=f"{folder_name}/outgoing")
    yield dataclasses.replace(server, remote_root=remote_root, source=source,
                              extra=dict(server.extra))
    shutil.rmtree(home / folder_name, ignore_errors=True)


def _fixture(variant: str) -> Callable[..., Iterator[LocalServer]]:
    def fixture(_ftp_servers: _FtpServers) -> Iterator[LocalServer]:
        yield from _per_test(_ftp_servers.get(variant))

    fixture.__name__ = f"{variant}_server"
    fixture.__doc__ = f"A real pyftpdlib server ({variant}) with an empty remote folder."
    return fixture


ftp_server = pytest.fixture(_fixture("ftp"), name="ftp_server")
ftps_server = pytest.fixture(_fixture("ftps"), name="ftps_server")
ftp_server_no_mlsd = pytest.fixture(_fixture("no_mlsd"), name="ftp_server_no_mlsd")
ftp_server_windows_list = pytest.fixture(_fixture("windows_list"), name="ftp_server_windows_list")


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[Callable[..., LocalServer]]:
    """``hostile(script, **options)``: a scripted FTP server of the test's own
    (``tests/servers/hostile_ftpd.py``), each stopped after the test."""
    started: list[LocalServer] = []

    def start(script: Script, **options: Any) -> LocalServer:
        server = start_hostile_ftpd(tmp_path / f"srv{len(started)}", script, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
