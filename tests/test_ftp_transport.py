"""The FTP/FTPS transport: listing parsers, and real pyftpdlib servers (plus a few fake ones)."""

from __future__ import annotations

import contextlib
import dataclasses
import ftplib
import io
import ipaddress
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from reportsync.config import SourceConfig, parse_config
from reportsync.errors import (
    AuthenticationError,
    ConfigError,
    ExitCode,
    NetworkError,
    RemoteError,
    StorageError,
    TlsError,
)
from reportsync.transports import open_transport
from reportsync.transports.ftp import (
    Client,
    FtpTransport,
    ListEntry,
    open_ftp,
    parse_ftp_time,
    parse_list,
    parse_list_line,
    parse_mlsd_line,
    parse_unix_list_line,
    parse_windows_list_line,
)
from reportsync.transports.ftp.listing import DAY, MINUTE
from tests.servers import LocalServer, free_port


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
        ) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc).timestamp()


NOW = utc(2026, 11, 21, 6, 0)

# --- parsers -----------------------------------------------------------------------------------


class TestUnixList:
    def test_time_form_is_this_year(self) -> None:
        entry = parse_unix_list_line(
            "-rw-r--r--   1 owner    group        1234 Nov 02 12:00 U1.Activity.xml.pgp", NOW)
        assert entry == ListEntry("U1.Activity.xml.pgp", "file", 1234, utc(2026, 11, 2, 12, 0),
                                 MINUTE)

    def test_time_form_in_the_future_is_last_year(self) -> None:
        entry = parse_unix_list_line("-rw-r--r-- 1 o g 5 Dec 30 23:59 late.pgp", utc(2026, 1, 5))
        assert entry is not None and entry.mtime == utc(2025, 12, 30, 23, 59)

    def test_time_form_tolerates_a_day_of_clock_skew(self) -> None:
        entry = parse_unix_list_line("-rw-r--r-- 1 o g 5 Nov 21 20:00 x", NOW)
        assert entry is not None and entry.mtime == utc(2026, 11, 21, 20, 0)

    def test_year_form(self) -> None:
        entry = parse_unix_list_line("-rw-r--r--   1 ftp ftp  99 Nov  2  2025 old.pgp", NOW)
        assert entry == ListEntry("old.pgp", "file", 99, utc(2025, 11, 2), DAY)

    def test_names_with_spaces_are_kept_whole(self) -> None:
        entry = parse_unix_list_line("-rw-r--r-- 1 o g 7 Jan  5 09:03 my  report 1.pgp", NOW)
        assert entry is not None and entry.name == "my  report 1.pgp"
        assert entry.mtime == utc(2026, 1, 5, 9, 3)

    def test_without_group_column(self) -> None:
        entry = parse_unix_list_line("-rw-r--r-- 1 ftp 2048 Mar 10 2024 nogroup.pgp", NOW)
        assert entry == ListEntry("nogroup.pgp", "file", 2048, utc(2024, 3, 10), DAY)

    def test_directories_and_links_are_marked(self) -> None:
        folder = parse_unix_list_line("drwxr-xr-x 2 o g 4096 Nov 02 12:00 archive", NOW)
        link = parse_unix_list_line("lrwxrwxrwx 1 o g 11 Nov 02 12:00 latest -> U1.xml.pgp", NOW)
        assert folder is not None and folder.kind == "dir"
        assert link is not None and (link.kind, link.name) == ("link", "latest")

    def test_acl_marker_after_mode(self) -> None:
        entry = parse_unix_list_line("-rw-r--r--+ 1 o g 3 Nov 02 12:00 acl.pgp", NOW)
        assert entry is not None and entry.name == "acl.pgp"

    def test_not_unix(self) -> None:
        assert parse_unix_list_line("11-02-26  12:00PM  1234 name", NOW) is None
        assert parse_unix_list_line("-rw-r--r-- 1 o g 5 Foo 02 12:00 x", NOW) is None


class TestWindowsList:
    def test_pm(self) -> None:
        entry = parse_windows_list_line("11-02-26  01:30PM                 1234 U1.Activity.pgp")
        assert entry == ListEntry("U1.Activity.pgp", "file", 1234, utc(2026, 11, 2, 13, 30), MINUTE)

    def test_noon_and_midnight(self) -> None:
        noon = parse_windows_list_line("11-02-26  12:00PM  1 a")
        midnight = parse_windows_list_line("11-02-26  12:05AM  1 b")
        assert noon is not None and noon.mtime == utc(2026, 11, 2, 12, 0)
        assert midnight is not None and midnight.mtime == utc(2026, 11, 2, 0, 5)

    def test_dir_entry(self) -> None:
        entry = parse_windows_list_line("03-15-25  09:00AM       <DIR>          archive")
        assert entry == ListEntry("archive", "dir", None, utc(2025, 3, 15, 9, 0), MINUTE)

    def test_names_with_spaces_and_four_digit_year(self) -> None:
        entry = parse_windows_list_line("11-02-2026  11:59PM   77 a report (1).pgp")
        assert entry == ListEntry("a report (1).pgp", "file", 77, utc(2026, 11, 2, 23, 59), MINUTE)

    def test_24_hour_clock(self) -> None:
        entry = parse_windows_list_line("11-02-26  17:45  77 x.pgp")
        assert entry is not None and entry.mtime == utc(2026, 11, 2, 17, 45)

    def test_not_windows(self) -> None:
        assert parse_windows_list_line("-rw-r--r-- 1 o g 5 Nov 02 12:00 x") is None
        assert parse_windows_list_line("13-45-26  12:00PM  1 bad-date") is None


class TestParseList:
    def test_mixed_listing(self) -> None:
        lines = [
            "total 12",
            "drwxr-xr-x 2 o g 4096 Nov 02 12:00 .",
            "drwxr-xr-x 2 o g 4096 Nov 02 12:00 ..",
            "-rw-r--r-- 1 o g 10 Nov 02 12:00 a.pgp\r",
            "",
            "11-02-26  12:00PM  20 b.pgp",
        ]
        entries = parse_list(lines, NOW)
        assert entries is not None
        assert [(e.name, e.size) for e in entries] == [("a.pgp", 10), ("b.pgp", 20)]

    def test_one_unreadable_line_rejects_the_listing(self) -> None:
        assert parse_list(["-rw-r--r-- 1 o g 10 Nov 02 12:00 a.pgp", "a.pgp"], NOW) is None

    def test_parse_list_line_tries_both_styles(self) -> None:
        unix = parse_list_line("-rw-r--r-- 1 o g 10 Nov 02 12:00 a.pgp", NOW)
        windows = parse_list_line("11-02-26  12:00PM  20 b.pgp", NOW)
        assert unix is not None and windows is not None
        assert parse_list_line("garbage", NOW) is None


class TestMlsdAndTimes:
    def test_file(self) -> None:
        entry = parse_mlsd_line("type=file;size=12;modify=20261102120034;perm=r; my file.pgp")
        assert entry == ListEntry("my file.pgp", "file", 12, utc(2026, 11, 2, 12, 0, 34))

    def test_dirs_and_links(self) -> None:
        assert parse_mlsd_line("type=cdir;modify=20261102120000; .").kind == "dir"  # type: ignore[union-attr]
        assert parse_mlsd_line("Type=DIR;Modify=20261102120000; sub").kind == "dir"  # type: ignore[union-attr]
        link = parse_mlsd_line("type=OS.unix=slink:/x;size=1; lnk")
        assert link is not None and link.kind == "link"

    def test_missing_facts(self) -> None:
        assert parse_mlsd_line("type=file; bare") == ListEntry("bare", "file", None, None)
        assert parse_mlsd_line("no-name-here") is None

    def test_ftp_time(self) -> None:
        assert parse_ftp_time("20261102120034") == utc(2026, 11, 2, 12, 0, 34)
        assert parse_ftp_time("20261102120034.250") == utc(2026, 11, 2, 12, 0, 34) + 0.25
        assert parse_ftp_time("20261302120034") is None
        assert parse_ftp_time("191261102120034") is None  # the old Y2K "19126" bug


# --- helpers -------------------------------------------------------------------------------------

ALL_SERVERS = ["ftp_server", "ftps_server", "ftp_server_no_mlsd", "ftp_server_windows_list"]


def make_source(server: LocalServer, tmp_path: Path, **overrides: Any) -> SourceConfig:
    table = {**server.source, "download_dir": str(tmp_path / "dl"),
             "output_dir": str(tmp_path / "out"), **overrides}
    return parse_config({"sources": {"t": table}}).sources["t"]


def put(server: LocalServer, name: str, data: bytes, mtime: float | None = None) -> Path:
    path = server.remote_root / name
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


@pytest.fixture(params=ALL_SERVERS)
def any_server(request: pytest.FixtureRequest) -> LocalServer:
    server: LocalServer = request.getfixturevalue(request.param)
    return server


def password_file(tmp_path: Path, password: str) -> str:
    path = tmp_path / "pw"
    path.write_text(password + "\n")
    path.chmod(0o600)
    return str(path)


# --- against real servers ------------------------------------------------------------------------


def test_list_and_download_byte_identical(any_server: LocalServer, tmp_path: Path) -> None:
    big = os.urandom(5 * 1024 * 1024)
    small = b"-----BEGIN PGP MESSAGE-----\nsmall\n"
    put(any_server, "U1234567.Activity_Daily.20261102.20261102.xml.pgp", big)
    put(any_server, "with space.asc", small)
    put(any_server, "empty.gpg", b"")
    with open_transport(make_source(any_server, tmp_path)) as transport:
        assert isinstance(transport, FtpTransport)
        listing = {item.name: item for item in transport.list_files()}
        assert sorted(listing) == ["U1234567.Activity_Daily.20261102.20261102.xml.pgp",
                                   "empty.gpg", "with space.asc"]
        for name, expected in [("U1234567.Activity_Daily.20261102.20261102.xml.pgp", big),
                               ("with space.asc", small), ("empty.gpg", b"")]:
            assert listing[name].size == len(expected)
            sink = io.BytesIO()
            chunks: list[int] = []
            written = transport.download(name, sink, progress=chunks.append)
            assert written == len(expected) == sum(chunks)
            assert sink.getvalue() == expected


def test_sizes_and_mtimes_at_whole_seconds(any_server: LocalServer, tmp_path: Path) -> None:
    now = time.time()
    recent = int(now) - 3 * 86400 + 37  # LIST shows "Mon DD HH:MM": seconds only from MDTM
    old = int(now) - 400 * 86400 + 11  # LIST shows a year instead of a time
    put(any_server, "recent.pgp", b"r" * 1000, recent)
    put(any_server, "old.pgp", b"o" * 12345, old)
    with open_ftp(make_source(any_server, tmp_path)) as transport:
        listing = {item.name: item for item in transport.list_files()}
    assert (listing["recent.pgp"].size, int(listing["recent.pgp"].mtime)) == (1000, recent)
    assert (listing["old.pgp"].size, int(listing["old.pgp"].mtime)) == (12345, old)
    assert listing["recent.pgp"].version == ("recent.pgp", 1000, recent)


def test_download_from_offset_returns_the_rest(any_server: LocalServer, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    put(any_server, "resume.pgp", data)
    with open_ftp(make_source(any_server, tmp_path)) as transport:
        sink = io.BytesIO()
        written = transport.download("resume.pgp", sink, offset=123_456)
    assert written == len(data) - 123_456
    assert sink.getvalue() == data[123_456:]


def test_directories_are_not_listed(any_server: LocalServer, tmp_path: Path) -> None:
    (any_server.remote_root / "archive.pgp").mkdir()
    put(any_server, "archive.pgp/inner.pgp", b"x")
    put(any_server, "file.pgp", b"abc")
    with open_ftp(make_source(any_server, tmp_path)) as transport:
        assert [item.name for item in transport.list_files()] == ["file.pgp"]


def test_delete(any_server: LocalServer, tmp_path: Path) -> None:
    put(any_server, "gone.pgp", b"abc")
    put(any_server, "stays.pgp", b"abc")
    with open_ftp(make_source(any_server, tmp_path)) as transport:
        transport.delete("gone.pgp")
        assert [item.name for item in transport.list_files()] == ["stays.pgp"]
        with pytest.raises(RemoteError) as caught:
            transport.delete("gone.pgp")
    assert not (any_server.remote_root / "gone.pgp").exists()
    assert caught.value.path == "gone.pgp" and caught.value.source == "t"


def test_missing_file_is_a_remote_error_and_session_goes_on(ftp_server: LocalServer,
                                                            tmp_path: Path) -> None:
    put(ftp_server, "there.pgp", b"123")
    with open_ftp(make_source(ftp_server, tmp_path)) as transport:
        with pytest.raises(RemoteError) as caught:
            transport.download("not-there.pgp", io.BytesIO())
        assert caught.value.path == "not-there.pgp"
        assert "550" in caught.value.message
        sink = io.BytesIO()
        assert transport.download("there.pgp", sink) == 3


def test_empty_folder_lists_nothing(any_server: LocalServer, tmp_path: Path) -> None:
    with open_ftp(make_source(any_server, tmp_path)) as transport:
        assert transport.list_files() == []


def test_passive_uses_epsv_then_and_active_mode_works(ftp_server: LocalServer,
                                                      tmp_path: Path) -> None:
    put(ftp_server, "a.pgp", b"active")
    with open_ftp(make_source(ftp_server, tmp_path)) as transport:
        assert isinstance(transport, FtpTransport)
        transport.list_files()
        assert transport.data_command == "EPSV"
    with open_ftp(make_source(ftp_server, tmp_path, passive=False)) as transport:
        assert isinstance(transport, FtpTransport)
        sink = io.BytesIO()
        transport.download("a.pgp", sink)
        assert sink.getvalue() == b"active"
        assert transport.data_command == "PORT"


@pytest.mark.parametrize("fixture", ["ftp_server_no_mlsd", "ftp_server_windows_list"])
def test_mlsd_absence_is_read_from_feat_and_list_is_parsed(
        fixture: str, request: pytest.FixtureRequest, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    server: LocalServer = request.getfixturevalue(fixture)
    put(server, "a.pgp", b"a")
    commands: list[str] = []
    original = Client.ntransfercmd

    def spy(self: Client, cmd: str, rest: int | str | None = None) -> Any:
        commands.append(cmd.split()[0])
        return original(self, cmd, rest)

    monkeypatch.setattr(Client, "ntransfercmd", spy)
    with open_ftp(make_source(server, tmp_path)) as transport:
        for _ in range(3):
            assert [item.name for item in transport.list_files()] == ["a.pgp"]
    # FEAT lists no MLST, so MLSD is never tried (it would cost a data connection every time);
    # no NLST: the LIST format was understood
    assert commands == ["LIST", "LIST", "LIST"]


def test_unreadable_list_falls_back_to_nlst(ftp_server_no_mlsd: LocalServer, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    put(ftp_server_no_mlsd, "a b.pgp", b"12345", utc(2026, 1, 2, 3, 4, 5))
    (ftp_server_no_mlsd.remote_root / "folder").mkdir()
    monkeypatch.setattr("reportsync.transports.ftp.transport.parse_list", lambda lines, now=None: None)
    with open_ftp(make_source(ftp_server_no_mlsd, tmp_path)) as transport:
        listing = transport.list_files()
    assert [(f.name, f.size, f.mtime) for f in listing] == [
        ("a b.pgp", 5, utc(2026, 1, 2, 3, 4, 5))]


def test_ftps_reuses_the_tls_session_that_the_server_requires(
        ftps_server: LocalServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    put(ftps_server, "a.pgp", b"secret")
    # The test server refuses data connections without session reuse, as vsftpd does:
    stock = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=ftps_server.source["ca_file"]),
                           timeout=10)
    stock.connect(ftps_server.host, ftps_server.port)
    stock.login(ftps_server.source["username"], ftps_server.extra["password"])
    stock.prot_p()
    stock.cwd(ftps_server.source["remote_dir"])
    with pytest.raises(ftplib.error_perm, match="522"):
        stock.nlst()
    stock.close()

    caplog.set_level(logging.DEBUG, logger="reportsync.transports.ftp")
    with open_ftp(make_source(ftps_server, tmp_path)) as transport:
        sink = io.BytesIO()
        transport.download("a.pgp", sink)
    assert sink.getvalue() == b"secret"
    assert "TLS session reused: True" in caplog.text


def test_wrong_ca_is_a_tls_error(ftps_server: LocalServer, tmp_path: Path) -> None:
    source = make_source(ftps_server, tmp_path, ca_file=ftps_server.extra["wrong_ca_file"])
    with pytest.raises(TlsError) as caught:
        open_ftp(source)
    assert caught.value.exit_code == ExitCode.HOST_KEY
    assert "certificate" in caught.value.message and caught.value.source == "t"


def test_unreadable_ca_file_is_a_config_error_naming_the_key(ftps_server: LocalServer,
                                                              tmp_path: Path) -> None:
    source = make_source(ftps_server, tmp_path, ca_file=str(tmp_path / "missing-ca.pem"))
    with pytest.raises(ConfigError) as caught:
        open_ftp(source)
    assert caught.value.exit_code == ExitCode.CONFIG
    assert "sources.t.ca_file" in caught.value.message and "missing-ca.pem" in caught.value.message


def test_plain_ftp_to_a_tls_only_server_says_use_ftps(ftps_server: LocalServer,
                                                      tmp_path: Path) -> None:
    table = {key: value for key, value in ftps_server.source.items() if key != "ca_file"}
    source = parse_config({"sources": {"t": {**table, "protocol": "ftp",
                                             "download_dir": str(tmp_path / "d"),
                                             "output_dir": str(tmp_path / "o")}}}).sources["t"]
    with pytest.raises(ConfigError) as caught:  # SPEC: a configuration problem, exit 2
        open_ftp(source)
    error = caught.value
    assert error.exit_code == ExitCode.CONFIG and not error.retryable
    assert 'protocol = "ftps"' in error.message and 'protocol = "ftps"' in error.remedy
    assert "sources.t.protocol" in error.message


def test_wrong_password(ftp_server: LocalServer, tmp_path: Path,
                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-password-4711"
    source = make_source(ftp_server, tmp_path, password_file=password_file(tmp_path, wrong))
    with pytest.raises(AuthenticationError) as caught:
        open_ftp(source)
    error = caught.value
    assert "login refused (530)" in error.message
    assert error.exit_code == ExitCode.AUTH and not error.retryable and error.source == "t"
    assert wrong not in str(error) and wrong not in error.remedy
    assert wrong not in caplog.text


def test_password_never_logged_in_a_session(ftp_server: LocalServer, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    put(ftp_server, "a.pgp", b"x")
    with open_ftp(make_source(ftp_server, tmp_path)) as transport:
        transport.list_files()
        transport.download("a.pgp", io.BytesIO())
    assert "logged in" in caplog.text  # the debug log did run
    assert ftp_server.extra["password"] not in caplog.text


def test_missing_remote_dir(ftp_server: LocalServer, tmp_path: Path) -> None:
    with pytest.raises(RemoteError) as caught:
        open_ftp(make_source(ftp_server, tmp_path, remote_dir="no/such/folder"))
    assert "no/such/folder" in caught.value.message and caught.value.source == "t"


def test_nothing_listening(tmp_path: Path) -> None:
    server = LocalServer("ftp", "127.0.0.1", free_port(), tmp_path, {}, stop=lambda: None)
    source = make_source(server, tmp_path, protocol="ftp", host="127.0.0.1", port=server.port,
                         username="u", password_file=password_file(tmp_path, "pw"))
    with pytest.raises(NetworkError) as caught:
        open_ftp(source)
    assert "refused" in caught.value.message
    assert caught.value.retryable and caught.value.exit_code == ExitCode.NETWORK


def test_dns_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    server = LocalServer("ftp", "x", 21, tmp_path, {}, stop=lambda: None)
    source = make_source(server, tmp_path, protocol="ftp", host="ftp.example.invalid",
                         username="u", password_file=password_file(tmp_path, "pw"))
    with pytest.raises(NetworkError) as caught:
        open_ftp(source)
    assert "ftp.example.invalid" in caught.value.message and "resolve" in caught.value.message


def test_local_write_failure_then_the_session_recovers(ftp_server: LocalServer,
                                                       tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024)
    put(ftp_server, "big.pgp", data)

    class DiskFull(io.BytesIO):
        def write(self, chunk: Any) -> int:
            if self.tell() > 100_000:
                raise OSError(28, "No space left on device")
            return super().write(chunk)

    with open_ftp(make_source(ftp_server, tmp_path)) as transport:
        with pytest.raises(StorageError) as caught:
            transport.download("big.pgp", DiskFull())
        assert caught.value.path == "big.pgp"
        # The aborted transfer left the control connection out of step; the next call works.
        assert [item.name for item in transport.list_files()] == ["big.pgp"]
        sink = io.BytesIO()
        assert transport.download("big.pgp", sink) == len(data)
        assert sink.getvalue() == data


def test_close_never_raises_and_later_calls_fail_cleanly(ftp_server: LocalServer,
                                                         tmp_path: Path) -> None:
    transport = open_ftp(make_source(ftp_server, tmp_path))
    transport.close()
    transport.close()
    with pytest.raises(NetworkError):
        transport.list_files()


# --- fake servers: what pyftpdlib will not do --------------------------------------------------


class FakeFtpServer:
    """A scripted FTP server on 127.0.0.1 whose PASV replies name ``pasv_host``.

    ``data``: "ok" serves ``payload``; "refuse" names a port nobody listens on; "stall" sends half
    the payload and then nothing.
    """

    def __init__(self, *, pasv_host: str = "10.255.255.1", data: str = "ok",
                 payload: bytes = b"", epsv: bool = False) -> None:
        self.pasv_host = pasv_host
        self.data = data
        self.payload = payload
        self.epsv = epsv
        self.commands: list[str] = []
        self.stopping = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)  # accept() is not interrupted by close() from elsewhere
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        self.listener.close()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(10)
            with conn, contextlib.suppress(OSError):
                self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        def send(line: str) -> None:
            conn.sendall(line.encode() + b"\r\n")

        send("220 fake FTP")
        data_listener: socket.socket | None = None
        rest = 0
        for raw in conn.makefile("rb"):
            command, _, argument = raw.decode().strip().partition(" ")
            command = command.upper()
            self.commands.append(command)
            if command == "USER":
                send("331 password please")
            elif command == "PASS":
                send("230 logged in")
            elif command in ("TYPE", "OPTS"):
                send("200 ok")
            elif command == "CWD":
                send("250 ok")
            elif command == "EPSV" and not self.epsv:
                send("500 EPSV not understood")
            elif command == "PASV":
                data_listener = socket.create_server(("127.0.0.1", 0))
                port = data_listener.getsockname()[1]
                if self.data == "refuse":
                    data_listener.close()
                    data_listener = None
                host = self.pasv_host.replace(".", ",")
                send(f"227 Entering Passive Mode ({host},{port >> 8},{port & 255}).")
            elif command == "REST":
                rest = int(argument)
                send("350 restarting")
            elif command == "RETR" and data_listener is not None:
                send("150 opening data connection")
                data_listener.settimeout(10)
                data_conn, _ = data_listener.accept()
                data_listener.close()
                data_listener = None
                with data_conn:
                    payload = self.payload[rest:]
                    rest = 0
                    if self.data == "stall":
                        data_conn.sendall(payload[: len(payload) // 2])
                        self.stopping.wait(30)
                        return
                    data_conn.sendall(payload)
                send("226 transfer complete")
            elif command == "QUIT":
                send("221 bye")
                return
            else:
                send("502 not implemented")


@pytest.fixture
def fake_ftp() -> Iterator[list[FakeFtpServer]]:
    started: list[FakeFtpServer] = []
    yield started
    for server in started:
        server.stop()


def fake_source(server_port: int, tmp_path: Path, **overrides: Any) -> SourceConfig:
    table = {"protocol": "ftp", "host": "127.0.0.1", "port": server_port, "username": "u",
             "password_file": password_file(tmp_path, "pw"), "remote_dir": "outgoing",
             "timeout": 2.0, "download_dir": str(tmp_path / "d"), "output_dir": str(tmp_path / "o"),
             **overrides}
    return parse_config({"sources": {"t": table}}).sources["t"]


@pytest.fixture
def only_loopback(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail the test if anything connects outside 127.0.0.0/8."""
    contacted: list[str] = []
    real = socket.create_connection
    loopback = ipaddress.ip_network("127.0.0.0/8")

    def guarded(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        contacted.append(address[0])
        if ipaddress.ip_address(address[0]) not in loopback:
            raise AssertionError(f"connection attempted to {address}")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)
    return contacted


def test_pasv_address_is_ignored_data_goes_to_control_host(
        fake_ftp: list[FakeFtpServer], tmp_path: Path, only_loopback: list[str],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="reportsync.transports.ftp")
    payload = os.urandom(200_000)
    server = FakeFtpServer(pasv_host="10.255.255.1", payload=payload)
    fake_ftp.append(server)
    with open_ftp(fake_source(server.port, tmp_path)) as transport:
        sink = io.BytesIO()
        assert transport.download("U1.xml.pgp", sink) == len(payload)
        sink2 = io.BytesIO()
        assert transport.download("U1.xml.pgp", sink2, offset=1000) == len(payload) - 1000
        assert isinstance(transport, FtpTransport)
        assert transport.pasv_named_host == "10.255.255.1"
        assert transport.data_command == "PASV"
    assert sink.getvalue() == payload and sink2.getvalue() == payload[1000:]
    assert "EPSV" in server.commands and "PASV" in server.commands
    assert server.commands.count("EPSV") == 1  # the refusal is remembered
    assert only_loopback and all(host.startswith("127.") for host in only_loopback)
    assert "NAT hint" in caplog.text


def test_data_port_refused_names_the_firewall_remedy(fake_ftp: list[FakeFtpServer],
                                                     tmp_path: Path) -> None:
    server = FakeFtpServer(pasv_host="127.0.0.1", data="refuse", payload=b"x")
    fake_ftp.append(server)
    with open_ftp(fake_source(server.port, tmp_path)) as transport, pytest.raises(NetworkError) as caught:
        transport.download("x.pgp", io.BytesIO())
    assert "data connection" in caught.value.message
    assert "passive" in caught.value.remedy and "1024" in caught.value.remedy
    assert "antivirus" in caught.value.remedy


def test_stalled_transfer_is_a_network_error_not_a_hang(fake_ftp: list[FakeFtpServer],
                                                        tmp_path: Path) -> None:
    payload = os.urandom(100_000)
    server = FakeFtpServer(pasv_host="127.0.0.1", data="stall", payload=payload)
    fake_ftp.append(server)
    transport = open_ftp(fake_source(server.port, tmp_path, timeout=1.0))
    sink = io.BytesIO()
    started = time.monotonic()
    with pytest.raises(NetworkError) as caught:
        transport.download("x.pgp", sink)
    transport.close()
    assert time.monotonic() - started < 8
    assert caught.value.retryable
    assert sink.getvalue() == payload[: len(payload) // 2]  # kept for a resume


def test_ssh_server_on_the_port(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def banner() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
            conn.settimeout(5)
            with contextlib.suppress(OSError):
                conn.recv(100)

    thread = threading.Thread(target=banner, daemon=True)
    thread.start()
    try:
        with pytest.raises(NetworkError) as caught:
            open_ftp(fake_source(port, tmp_path))
    finally:
        thread.join(timeout=10)
        listener.close()
    assert "SSH" in caught.value.message
    assert "sftp" in caught.value.remedy


def test_open_ftp_refuses_sftp_sources(ftp_server: LocalServer, tmp_path: Path) -> None:
    source = dataclasses.replace(make_source(ftp_server, tmp_path), protocol="sftp")
    with pytest.raises(ValueError):
        open_ftp(source)


def test_windows_list_server_really_speaks_iis(ftp_server_windows_list: LocalServer) -> None:
    put(ftp_server_windows_list, "a b.pgp", b"12345", utc(2026, 11, 2, 13, 30, 59))
    (ftp_server_windows_list.remote_root / "sub").mkdir()
    client = ftplib.FTP(timeout=10)
    client.connect(ftp_server_windows_list.host, ftp_server_windows_list.port)
    client.login(ftp_server_windows_list.source["username"],
                 ftp_server_windows_list.extra["password"])
    client.cwd(ftp_server_windows_list.source["remote_dir"])
    lines: list[str] = []
    client.retrlines("LIST", lines.append)
    client.quit()
    assert [parse_windows_list_line(line) for line in lines] == [
        ListEntry("a b.pgp", "file", 5, utc(2026, 11, 2, 13, 30), MINUTE),
        ListEntry("sub", "dir", None,
                  parse_windows_list_line(lines[1]).mtime, MINUTE),  # type: ignore[union-attr]
    ]
