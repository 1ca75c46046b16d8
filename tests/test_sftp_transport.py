"""The SFTP transport against a real OpenSSH sshd on 127.0.0.1 (see tests/servers/sshd.py)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest

from reportsync.config import SourceConfig, parse_config
from reportsync.errors import (
    AuthenticationError,
    ConfigError,
    ExitCode,
    HostKeyError,
    NetworkError,
    RemoteError,
)
from reportsync.transports import open_transport
from reportsync.transports.sftp import SftpTransport
from tests.servers import LocalServer, free_port

# paramiko's prefetch thread used to die with "Socket is closed" when a connection dropped
# under it: no SFTP test may leave a thread's traceback behind.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

MTIME = 1_767_225_600  # 2026-01-01 00:00:00 UTC


def make_source(server: LocalServer, tmp_path: Path, **overrides: Any) -> SourceConfig:
    """A SourceConfig named "t" for ``server``; an override of None removes the key."""
    table = {**server.source, "download_dir": str(tmp_path / "dl"),
             "output_dir": str(tmp_path / "out"), **overrides}
    table = {key: value for key, value in table.items() if value is not None}
    return parse_config({"sources": {"t": table}}).sources["t"]


def put(server: LocalServer, name: str, data: bytes, mtime: int = MTIME) -> Path:
    path = server.remote_root / name
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


def fetch(transport: SftpTransport, name: str, offset: int = 0) -> bytes:
    sink = io.BytesIO()
    written = transport.download(name, sink, offset=offset)
    assert written == len(sink.getvalue())
    return sink.getvalue()


def connect(source: SourceConfig) -> SftpTransport:
    transport = open_transport(source)
    assert isinstance(transport, SftpTransport)
    return transport


# --- listing and downloading ------------------------------------------------------------------


def test_key_login_lists_and_downloads_byte_identical(sftp_server: LocalServer,
                                                      tmp_path: Path) -> None:
    big = os.urandom(5 * 1024 * 1024 + 123)
    small = b"statement\n" * 10
    put(sftp_server, "U1.Activity.20261102.xml.pgp", small, MTIME)
    put(sftp_server, "big.pgp", big, MTIME + 3600)
    put(sftp_server, "empty.asc", b"", MTIME - 86400)

    progress: list[int] = []
    with connect(make_source(sftp_server, tmp_path)) as transport:
        listing = {item.name: item for item in transport.list_files()}
        assert set(listing) == {"U1.Activity.20261102.xml.pgp", "big.pgp", "empty.asc"}
        assert listing["big.pgp"].size == len(big)
        assert listing["big.pgp"].mtime == float(MTIME + 3600)
        assert listing["U1.Activity.20261102.xml.pgp"].size == len(small)
        assert listing["U1.Activity.20261102.xml.pgp"].version == (
            "U1.Activity.20261102.xml.pgp", len(small), MTIME)
        assert listing["empty.asc"].mtime == float(MTIME - 86400)

        sink = io.BytesIO()
        written = transport.download("big.pgp", sink, progress=progress.append)
        assert written == len(big)
        assert hashlib.sha256(sink.getvalue()).digest() == hashlib.sha256(big).digest()
        assert sum(progress) == len(big) and len(progress) > 1
        assert fetch(transport, "U1.Activity.20261102.xml.pgp") == small
        assert fetch(transport, "empty.asc") == b""


def test_download_with_offset_returns_the_remainder(sftp_server: LocalServer,
                                                    tmp_path: Path) -> None:
    data = os.urandom(300_000)
    put(sftp_server, "part.pgp", data)
    with connect(make_source(sftp_server, tmp_path)) as transport:
        assert fetch(transport, "part.pgp", offset=123_457) == data[123_457:]
        assert fetch(transport, "part.pgp", offset=len(data)) == b""
        assert fetch(transport, "part.pgp", offset=1) == data[1:]


def test_only_regular_files_are_listed(sftp_server: LocalServer, tmp_path: Path) -> None:
    put(sftp_server, "real.pgp", b"x" * 42)
    (sftp_server.remote_root / "subfolder.pgp").mkdir()
    (sftp_server.remote_root / "link-to-folder").symlink_to(sftp_server.remote_root / "subfolder.pgp")
    (sftp_server.remote_root / "link-to-file.pgp").symlink_to(sftp_server.remote_root / "real.pgp")
    (sftp_server.remote_root / "dangling.pgp").symlink_to(sftp_server.remote_root / "gone")
    with connect(make_source(sftp_server, tmp_path)) as transport:
        listing = {item.name: item for item in transport.list_files()}
    assert sorted(listing) == ["link-to-file.pgp", "real.pgp"]
    assert listing["link-to-file.pgp"].size == 42  # the target's size, not the link's


def test_delete_removes_the_remote_file(sftp_server: LocalServer, tmp_path: Path) -> None:
    path = put(sftp_server, "old.pgp", b"old")
    with connect(make_source(sftp_server, tmp_path)) as transport:
        transport.delete("old.pgp")
        assert not path.exists()
        assert transport.list_files() == []
        with pytest.raises(RemoteError) as caught:
            transport.delete("old.pgp")
    assert caught.value.source == "t"
    assert caught.value.path == "old.pgp"


def test_missing_remote_file_is_a_remote_error(sftp_server: LocalServer, tmp_path: Path) -> None:
    with connect(make_source(sftp_server, tmp_path)) as transport, \
            pytest.raises(RemoteError) as caught:
        transport.download("nope.pgp", io.BytesIO())
    assert "nope.pgp" in str(caught.value)
    assert caught.value.source == "t"
    assert not caught.value.retryable


def test_missing_remote_dir_is_a_remote_error_at_open(sftp_server: LocalServer,
                                                      tmp_path: Path) -> None:
    with pytest.raises(RemoteError) as caught:
        connect(make_source(sftp_server, tmp_path, remote_dir="no/such/folder"))
    assert "no/such/folder" in str(caught.value)
    assert caught.value.source == "t"


def test_connection_lost_mid_transfer_is_a_network_error(sftp_server: LocalServer,
                                                         tmp_path: Path) -> None:
    # more than the openssh engine's 64 reads in flight (16 MiB) and the buffers on the way can
    # hold: the cut always lands before the end
    data = os.urandom(64 * 1024 * 1024)
    put(sftp_server, "huge.pgp", data)
    transport = connect(make_source(sftp_server, tmp_path))
    listener = int(sftp_server.extra["pid"])

    def cut_connection(_: int) -> None:
        for pid in _children(listener):
            os.kill(pid, signal.SIGKILL)

    sink = io.BytesIO()
    try:
        with pytest.raises(NetworkError) as caught:
            transport.download("huge.pgp", sink, progress=cut_connection)
    finally:
        transport.close()
    assert caught.value.retryable
    assert caught.value.exit_code == ExitCode.NETWORK
    assert 0 < len(sink.getvalue()) < len(data)
    assert sink.getvalue() == data[: len(sink.getvalue())]  # what was written is a valid prefix


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                found.append(int(entry.name))
    return found


# --- authentication ---------------------------------------------------------------------------


def test_certificate_login(sftp_cert_server: LocalServer, tmp_path: Path) -> None:
    put(sftp_cert_server, "cert.pgp", b"via certificate")
    with connect(make_source(sftp_cert_server, tmp_path)) as transport:
        assert [item.name for item in transport.list_files()] == ["cert.pgp"]
        assert fetch(transport, "cert.pgp") == b"via certificate"


def test_same_key_without_certificate_is_refused_on_cert_server(sftp_cert_server: LocalServer,
                                                                tmp_path: Path) -> None:
    # The certificate lies beside the key as user_rsa-cert.pub: it must not be picked up
    # unless certificate_file says so.
    assert Path(sftp_cert_server.source["key_file"] + "-cert.pub").exists()
    source = make_source(sftp_cert_server, tmp_path, certificate_file=None)
    with pytest.raises(AuthenticationError) as caught:
        connect(source)
    assert "server refused our key" in str(caught.value)
    assert "publickey" in str(caught.value)  # what the server allows
    assert caught.value.exit_code == ExitCode.AUTH
    assert not caught.value.retryable


def test_unknown_user_key_is_refused(sftp_server: LocalServer, tmp_path: Path) -> None:
    source = make_source(sftp_server, tmp_path, key_file=sftp_server.extra["other_user_key"])
    with pytest.raises(AuthenticationError) as caught:
        connect(source)
    assert "server refused our key" in caught.value.message
    assert "ssh-ed25519 SHA256:" in caught.value.message
    assert caught.value.source == "t"


def test_encrypted_key_with_passphrase(sftp_server: LocalServer, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "encrypted_rsa"
    shutil.copy(sftp_server.source["key_file"], key)
    subprocess.run(["ssh-keygen", "-q", "-p", "-N", "s3cret pass", "-f", str(key)], check=True,
                   capture_output=True)
    monkeypatch.setenv("RS_TEST_SSH_PASSPHRASE", "s3cret pass")
    source = make_source(sftp_server, tmp_path, key_file=str(key),
                         key_passphrase_env="RS_TEST_SSH_PASSPHRASE")
    with connect(source) as transport:
        assert transport.list_files() == []

    monkeypatch.setenv("RS_TEST_SSH_PASSPHRASE", "wrong words")
    with pytest.raises(ConfigError) as caught:
        connect(source)
    assert str(key) in str(caught.value)
    assert "passphrase" in str(caught.value)
    assert "wrong words" not in str(caught.value) and "s3cret" not in str(caught.value)

    no_passphrase = make_source(sftp_server, tmp_path, key_file=str(key))
    with pytest.raises(ConfigError, match="encrypted"):
        connect(no_passphrase)


def test_missing_key_file_is_a_config_error(sftp_server: LocalServer, tmp_path: Path) -> None:
    missing = tmp_path / "no_such_key"
    with pytest.raises(ConfigError) as caught:
        connect(make_source(sftp_server, tmp_path, key_file=str(missing)))
    assert str(missing) in str(caught.value)
    assert caught.value.exit_code == ExitCode.CONFIG
    assert caught.value.source == "t"


# --- host keys --------------------------------------------------------------------------------


@pytest.fixture
def auth_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every authentication attempt paramiko is asked to make (credentials or none)."""
    calls: list[str] = []
    for method in ("auth_none", "auth_publickey", "auth_password"):
        original = getattr(paramiko.Transport, method)

        def spy(self: paramiko.Transport, *args: Any, _original: Any = original,
                _method: str = method, **kwargs: Any) -> Any:
            calls.append(_method)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(paramiko.Transport, method, spy)
    return calls


def test_unknown_host_key_is_refused_with_the_line_to_add(
        sftp_server: LocalServer, tmp_path: Path, auth_calls: list[str]) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyError) as caught:
        connect(make_source(sftp_server, tmp_path, known_hosts=str(empty)))
    message = caught.value.message
    assert sftp_server.extra["host_key_fingerprint"] in message
    assert f"[127.0.0.1]:{sftp_server.port} ssh-ed25519 AAAA" in message
    assert caught.value.exit_code == ExitCode.HOST_KEY
    assert auth_calls == []  # nothing was sent to the unverified server


def test_changed_host_key_is_refused(sftp_server: LocalServer, tmp_path: Path,
                                     auth_calls: list[str]) -> None:
    source = make_source(sftp_server, tmp_path, known_hosts=sftp_server.extra["wrong_known_hosts"])
    with pytest.raises(HostKeyError) as caught:
        connect(source)
    assert "CHANGED" in caught.value.message.upper()
    assert "intercept" in caught.value.message
    assert sftp_server.extra["host_key_fingerprint"] in caught.value.message
    assert auth_calls == []


@pytest.mark.parametrize("variant", ["known_hosts_rsa_only", "known_hosts_hashed"])
def test_known_hosts_variants_are_accepted(sftp_server: LocalServer, tmp_path: Path,
                                           variant: str) -> None:
    # rsa_only: the server also has an ed25519 key (paramiko's first choice); it must be asked
    # for the RSA key on record instead of reporting a changed key.
    put(sftp_server, "a.pgp", b"a")
    source = make_source(sftp_server, tmp_path, known_hosts=sftp_server.extra[variant])
    with connect(source) as transport:
        assert [item.name for item in transport.list_files()] == ["a.pgp"]


@pytest.mark.parametrize("engine", ["openssh", "paramiko"])
def test_pinned_fingerprint(sftp_server: LocalServer, tmp_path: Path,
                            auth_calls: list[str], engine: str) -> None:
    pinned = make_source(sftp_server, tmp_path, known_hosts=None, ssh_engine=engine,
                         host_key_fingerprint=sftp_server.extra["host_key_fingerprint"])
    with connect(pinned) as transport:
        assert transport.list_files() == []
        assert transport.session.engine == engine
    # paramiko logged in (openssh: ssh did, KnownHostsCommand vouching for the pinned key)
    assert ("auth_publickey" in auth_calls) == (engine == "paramiko")

    auth_calls.clear()
    wrong = make_source(sftp_server, tmp_path, known_hosts=None, ssh_engine=engine,
                        host_key_fingerprint="SHA256:" + "A" * 43)
    with pytest.raises(HostKeyError) as caught:
        connect(wrong)
    assert "CHANGED" in caught.value.message.upper()
    assert sftp_server.extra["host_key_fingerprint"] in caught.value.message
    assert auth_calls == []


# --- network ----------------------------------------------------------------------------------


def test_nothing_listening_is_a_network_error(sftp_server: LocalServer, tmp_path: Path) -> None:
    source = make_source(sftp_server, tmp_path, port=free_port())
    with pytest.raises(NetworkError) as caught:
        connect(source)
    assert "refused" in caught.value.message
    assert caught.value.retryable
    assert caught.value.exit_code == ExitCode.NETWORK
    assert caught.value.source == "t"


@pytest.fixture
def banner_server() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server on 127.0.0.1 that greets like FTP (``banners[0]``), or stays silent."""
    banners: list[bytes] = [b"220 FTP ready\r\n"]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(0.2)
                if banners[0]:
                    conn.sendall(banners[0])
                deadline = time.monotonic() + 5
                while not stop.is_set() and time.monotonic() < deadline:
                    try:
                        if not conn.recv(1024):
                            break
                    except TimeoutError:
                        continue
                    except OSError:
                        break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1]), banners
    stop.set()
    thread.join(timeout=5)
    listener.close()


def test_ftp_server_on_the_port_is_named(sftp_server: LocalServer, tmp_path: Path,
                                         banner_server: tuple[int, list[bytes]]) -> None:
    port, _ = banner_server
    with pytest.raises(NetworkError) as caught:  # paramiko's banner step, as doctor runs it
        connect(make_source(sftp_server, tmp_path, port=port, ssh_engine="paramiko"))
    assert "FTP" in caught.value.message
    assert "not an SSH server" in caught.value.message
    assert caught.value.source == "t"
    # ssh only sees the connection closed before an SSH greeting (a dropped connection reads
    # the same, and is not worth a second connection): retryable, and doctor named
    with pytest.raises(NetworkError) as caught:
        connect(make_source(sftp_server, tmp_path, port=port, ssh_engine="openssh"))
    assert "closed the connection before the SSH greeting" in caught.value.message
    assert caught.value.retryable and "reportsync doctor" in (caught.value.remedy or "")


def test_non_ssh_banner_is_named(sftp_server: LocalServer, tmp_path: Path,
                                 banner_server: tuple[int, list[bytes]]) -> None:
    port, banners = banner_server
    banners[0] = b"HTTP/1.1 400 Bad Request\r\n\r\n"
    with pytest.raises(NetworkError) as caught:
        connect(make_source(sftp_server, tmp_path, port=port, timeout=1.0))
    assert "not an SSH server" in caught.value.message


def test_silent_server_times_out(sftp_server: LocalServer, tmp_path: Path,
                                 banner_server: tuple[int, list[bytes]]) -> None:
    port, banners = banner_server
    banners[0] = b""
    started = time.monotonic()
    with pytest.raises(NetworkError) as caught:
        # 1 s: the smallest timeout a config allows (docs/configuration.md)
        connect(make_source(sftp_server, tmp_path, port=port, timeout=1.0))
    assert time.monotonic() - started < 5
    assert caught.value.retryable
    assert caught.value.source == "t"


def test_password_only_where_the_server_allows_keys_only(sftp_server: LocalServer,
                                                         tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RS_TEST_SFTP_PASSWORD", "hunter2-not-logged")
    source = make_source(sftp_server, tmp_path, key_file=None,
                         password_env="RS_TEST_SFTP_PASSWORD")
    with pytest.raises(AuthenticationError) as caught:
        connect(source)
    assert "the server allows: publickey" in caught.value.message
    assert "hunter2" not in str(caught.value) and "hunter2" not in repr(caught.value.to_dict())


def test_unset_password_env_is_a_config_error_naming_the_source(
        sftp_server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RS_TEST_SFTP_PASSWORD", raising=False)
    source = make_source(sftp_server, tmp_path, password_env="RS_TEST_SFTP_PASSWORD")
    with pytest.raises(ConfigError) as caught:
        connect(source)
    assert "RS_TEST_SFTP_PASSWORD" in str(caught.value)
    assert caught.value.source == "t"


def test_a_name_reply_is_read_as_paramiko_reads_it_and_a_cut_one_is_an_error() -> None:
    # wire._name_entries reads NAME replies with struct (issue 13: paramiko's Message made the
    # 50,000-file listing CPU bound); each entry must be what SFTPAttributes._from_msg reads
    import random
    import struct

    from paramiko.message import Message

    from reportsync.transports.sftp.wire import _name_entries

    rnd = random.Random(13)

    def fields(attrs: paramiko.SFTPAttributes) -> dict[str, Any]:
        # paramiko stores extended pairs value -> key (it evaluates the value first): not compared
        return {key: value for key, value in vars(attrs).items() if key != "attr"}

    for _ in range(200):
        message = Message()
        count = rnd.randint(0, 20)
        message.add_int(count)
        for _ in range(count):
            message.add_string(rnd.choice([b".", b"..", b"r\xff.xml",
                                           bytes(rnd.randint(33, 126) for _ in range(9))]))
            message.add_string(b"-rw-r--r-- 1 u g 5 Jan 1 00:00 x")
            attrs = paramiko.SFTPAttributes()
            if rnd.random() < 0.9:
                attrs.st_size = rnd.randint(0, 2**63)
            if rnd.random() < 0.5:
                attrs.st_uid, attrs.st_gid = rnd.randint(0, 2**32 - 1), rnd.randint(0, 2**32 - 1)
            if rnd.random() < 0.9:
                attrs.st_mode = rnd.randint(0, 2**32 - 1)
            if rnd.random() < 0.9:
                attrs.st_atime, attrs.st_mtime = rnd.randint(0, 2**32 - 1), rnd.randint(0, 2**32 - 1)
            if rnd.random() < 0.2:
                attrs.attr = {"ext@example.com": "data"}
            attrs._pack(message)  # type: ignore[attr-defined]
        data = message.asbytes()
        expected = []
        reader = Message(data)
        for _ in range(reader.get_int()):
            raw = reader.get_string()
            reader.get_string()
            parsed = paramiko.SFTPAttributes._from_msg(reader)  # type: ignore[attr-defined]
            name = raw.decode("utf-8", "surrogateescape")
            if name not in (".", ".."):
                expected.append((name, fields(parsed)))
        assert [(name, fields(attrs)) for name, attrs in _name_entries(data)] == expected
        if count:
            with pytest.raises(struct.error):
                _name_entries(data[:-1] if data[-1:] else data[:5])
