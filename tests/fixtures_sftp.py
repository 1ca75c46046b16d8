"""pytest fixtures for the real OpenSSH sshd (see tests/servers/sshd.py).

One sshd per login mode per test session (key generation and startup cost about a second);
each test gets its own empty remote folder on it: ``remote_dir = "tNNNN/outgoing"``, and
``LocalServer.remote_root`` is that folder on disk.
"""

from __future__ import annotations

import copy
import itertools
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.servers import LocalServer
from tests.servers.sshd import sshd_available, start_sshd

_folders = itertools.count(1)


def _require_sshd() -> None:
    if not sshd_available():
        pytest.skip("OpenSSH sshd or ssh-keygen is not installed (apt-get install openssh-server)")


@pytest.fixture(scope="session")
def _sshd_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sshd-keys")


def _session_server(login: str, tmp_path_factory: pytest.TempPathFactory,
                    keys: Path) -> Iterator[LocalServer]:
    _require_sshd()
    server = start_sshd(tmp_path_factory.mktemp(f"sshd-{login}"), login=login, keys_dir=keys)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _sshd_key_login(tmp_path_factory: pytest.TempPathFactory,
                    _sshd_keys: Path) -> Iterator[LocalServer]:
    yield from _session_server("key", tmp_path_factory, _sshd_keys)


@pytest.fixture(scope="session")
def _sshd_cert_login(tmp_path_factory: pytest.TempPathFactory,
                     _sshd_keys: Path) -> Iterator[LocalServer]:
    yield from _session_server("cert", tmp_path_factory, _sshd_keys)


def _fresh_folder(server: LocalServer) -> LocalServer:
    """The shared server, seen through a new empty remote folder of this test's own."""
    name = f"t{next(_folders):04d}"
    sftp_root: Path = server.extra["sftp_root"]
    remote_root = sftp_root / name / "outgoing"
    remote_root.mkdir(parents=True)
    source = copy.deepcopy(server.source)
    source["remote_dir"] = f"{name}/outgoing"
    return replace(server, remote_root=remote_root, source=source, extra=dict(server.extra),
                   stop=lambda: None)


@pytest.fixture
def sftp_server(_sshd_key_login: LocalServer) -> LocalServer:
    """A real sshd; the user logs in with ``key_file`` (listed in its AuthorizedKeysFile)."""
    return _fresh_folder(_sshd_key_login)


@pytest.fixture
def sftp_cert_server(_sshd_cert_login: LocalServer) -> LocalServer:
    """A real sshd that accepts only a certificate signed by its user CA (no authorized keys)."""
    return _fresh_folder(_sshd_cert_login)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join()
    for sock in accepted:
        sock.close()
    listener.close()
