"""The openssh engine (``transports/sftp/openssh.py``): OpenSSH's ``ssh -s sftp`` against the real
sshd, its refusals mapped to our exit codes, its choice (``ssh_engine``), and what it is handed.

The transport contract (tests/test_transport_contract.py) runs on this engine too; here is what
only this engine does.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from reportsync.config import parse_config
from reportsync.config.model import SourceConfig
from reportsync.errors import (
    AuthenticationError,
    ConfigError,
    ExitCode,
    HostKeyError,
    NetworkError,
)
from reportsync.transports import open_transport
from reportsync.transports.openssh_program import find_ssh
from reportsync.transports.sftp import SftpTransport
from reportsync.transports.sftp.engine import choose_engine
from reportsync.transports.sftp.openssh import OpenSshSession
from reportsync.vocab import SshEngine
from tests.servers import LocalServer
from tests.support import PgpIdentity, random_plain, run_cli_inprocess
from tests.test_fetch_e2e import Workspace

pytestmark = pytest.mark.skipif(find_ssh() is None or not find_ssh().usable,  # type: ignore[union-attr]
                                reason="needs OpenSSH's ssh >= 8.5")


def make_source(server: LocalServer, tmp_path: Path, **overrides: Any) -> SourceConfig:
    table = {**server.source, "download_dir": str(tmp_path / "d"),
             "output_dir": str(tmp_path / "o"), "timeout": 5, "ssh_engine": "openssh",
             **overrides}
    table = {key: value for key, value in table.items() if value is not None}
    return parse_config({"sources": {"t": table}}).sources["t"]


class SshdLog:
    """What sshd logged since this object was made (``LogLevel VERBOSE``: every key offered)."""

    def __init__(self, server: LocalServer) -> None:
        self.path = Path(server.extra["log"])
        self.start = self.path.stat().st_size

    def since(self) -> str:
        time.sleep(0.3)  # sshd's child writes its last lines as the connection ends
        with self.path.open("rb") as log:
            log.seek(self.start)
            return log.read().decode("utf-8", "replace")


def assert_no_credential_offered(text: str) -> None:
    assert "Connection from" in text or "connection from" in text.lower(), text
    for word in ("publickey", "Accepted", "Failed", "Postponed", "password"):
        assert word not in text, f"sshd saw a login attempt: {text}"


# --- host keys: refused before any credential ------------------------------------------------


def test_unknown_host_key_is_refused_with_exit_5_and_no_credential_offered(
        sftp_server: LocalServer, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    log = SshdLog(sftp_server)
    with pytest.raises(HostKeyError) as caught:
        open_transport(make_source(sftp_server, tmp_path, known_hosts=str(empty)))
    assert caught.value.exit_code == ExitCode.HOST_KEY == 5
    # the paramiko path's words: the key offered, and the line to add
    assert "unknown host key" in caught.value.message
    assert f"[127.0.0.1]:{sftp_server.port} ssh-" in caught.value.message
    assert_no_credential_offered(log.since())


def test_changed_host_key_is_refused_with_exit_5_and_no_credential_offered(
        sftp_server: LocalServer, tmp_path: Path) -> None:
    log = SshdLog(sftp_server)
    with pytest.raises(HostKeyError) as caught:
        open_transport(make_source(sftp_server, tmp_path,
                                   known_hosts=sftp_server.extra["wrong_known_hosts"]))
    assert caught.value.exit_code == ExitCode.HOST_KEY
    assert "HOST KEY CHANGED" in caught.value.message
    assert caught.value.remedy and "another channel" in caught.value.remedy
    assert_no_credential_offered(log.since())


def test_revoked_host_keys_are_refused(sftp_server: LocalServer, tmp_path: Path) -> None:
    lines = Path(sftp_server.source["known_hosts"]).read_text().splitlines()
    revoked = tmp_path / "known_hosts"
    revoked.write_text("".join(f"@revoked {line}\n" for line in lines if line.startswith("[")))
    log = SshdLog(sftp_server)
    with pytest.raises(HostKeyError) as caught:
        open_transport(make_source(sftp_server, tmp_path, known_hosts=str(revoked)))
    assert caught.value.exit_code == ExitCode.HOST_KEY
    assert "@revoked" in caught.value.message
    assert_no_credential_offered(log.since())


def test_a_wrong_pin_is_refused_without_a_credential(sftp_server: LocalServer,
                                                     tmp_path: Path) -> None:
    log = SshdLog(sftp_server)
    with pytest.raises(HostKeyError):
        open_transport(make_source(sftp_server, tmp_path, known_hosts=None,
                                   host_key_fingerprint="SHA256:" + "B" * 43))
    assert_no_credential_offered(log.since())


# --- login ----------------------------------------------------------------------------------


def test_a_wrong_key_is_an_auth_error_tried_once(sftp_server: LocalServer, tmp_path: Path,
                                                 pgp_identity: PgpIdentity) -> None:
    source = make_source(sftp_server, tmp_path, key_file=sftp_server.extra["other_user_key"])
    with pytest.raises(AuthenticationError) as caught:
        open_transport(source)
    assert caught.value.exit_code == ExitCode.AUTH and not caught.value.retryable
    assert "server refused our key (ssh-ed25519 SHA256:" in caught.value.message
    assert "the server allows: publickey" in caught.value.message

    ws = Workspace(tmp_path / "ws", pgp_identity, sftp_server)
    ws.root.mkdir()
    ws.write_config(key_file=sftp_server.extra["other_user_key"], retries=3,
                    ssh_engine="openssh")
    log = SshdLog(sftp_server)
    result = ws.fetch()
    assert result.exit_code == ExitCode.AUTH, result.stderr
    assert log.since().count("Connection from") == 1, "an auth refusal is not retried"


def test_certificate_login(sftp_cert_server: LocalServer, tmp_path: Path) -> None:
    with open_transport(make_source(sftp_cert_server, tmp_path)) as transport:
        assert isinstance(transport, SftpTransport)
        assert transport.session.engine is SshEngine.OPENSSH
        assert transport.list_files() == []
    # the same key without its certificate is refused: ssh is not handed KEY-cert.pub, which
    # lies beside the key, since the config does not name it
    with pytest.raises(AuthenticationError):
        open_transport(make_source(sftp_cert_server, tmp_path, certificate_file=None))


# --- the network ------------------------------------------------------------------------------


def test_a_server_that_never_speaks_is_a_network_error_bounded_by_the_timeout(
        sftp_server: LocalServer, tmp_path: Path, silent_port: int) -> None:
    started = time.monotonic()
    with pytest.raises(NetworkError) as caught:
        open_transport(make_source(sftp_server, tmp_path, port=silent_port, timeout=2))
    elapsed = time.monotonic() - started
    assert caught.value.retryable
    # ssh's ConnectTimeout (2 s), then paramiko's banner step names the silence (2 s more)
    assert elapsed < 3 * 2 + 3, elapsed
    assert "silent" in caught.value.message or "no answer" in caught.value.message or \
        "within 2s" in caught.value.message, caught.value.message


def test_nothing_listening_is_the_dialers_refusal(sftp_server: LocalServer,
                                                  tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with pytest.raises(NetworkError) as caught:
        open_transport(make_source(sftp_server, tmp_path, port=port))
    assert f"connection to 127.0.0.1:{port} refused" in caught.value.message


def test_ssh_killed_mid_download_is_a_network_error_and_a_retry_resumes(
        sftp_server: LocalServer, tmp_path: Path) -> None:
    data = random_plain(8_000_000)
    (sftp_server.remote_root / "big.bin").write_bytes(data)
    kept = bytearray()
    with open_transport(make_source(sftp_server, tmp_path)) as transport:
        assert isinstance(transport, SftpTransport)
        session = transport.session
        assert isinstance(session, OpenSshSession)

        class KillingSink:
            def write(self, chunk: bytes, /) -> int:
                kept.extend(chunk)
                if len(kept) > 1_000_000 and session.child.poll() is None:
                    session.child.kill()
                return len(chunk)

        with pytest.raises(NetworkError) as caught:
            transport.download("big.bin", KillingSink())
        assert caught.value.retryable
        assert not transport.session.is_active()
    assert 1_000_000 < len(kept) < len(data)
    with open_transport(make_source(sftp_server, tmp_path)) as again:
        rest = bytearray()

        class Sink:
            def write(self, chunk: bytes, /) -> int:
                rest.extend(chunk)
                return len(chunk)

        again.download("big.bin", Sink(), offset=len(kept))
    assert bytes(kept) + bytes(rest) == data


# --- the engine chosen ------------------------------------------------------------------------


def test_auto_chooses_openssh_for_a_key_and_paramiko_for_a_password(
        sftp_server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert choose_engine(make_source(sftp_server, tmp_path, ssh_engine="auto")).engine \
        is SshEngine.OPENSSH
    monkeypatch.setenv("RS_TEST_SFTP_PASSWORD", "not-used")
    with_password = make_source(sftp_server, tmp_path, ssh_engine="auto",
                                password_env="RS_TEST_SFTP_PASSWORD")
    choice = choose_engine(with_password)
    assert choice.engine is SshEngine.PARAMIKO and "password" in choice.why


def test_openssh_asked_for_a_password_source_is_a_config_error(
        sftp_server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RS_TEST_SFTP_PASSWORD", "not-used")
    source = make_source(sftp_server, tmp_path, password_env="RS_TEST_SFTP_PASSWORD")
    with pytest.raises(ConfigError) as caught:
        open_transport(source)
    assert caught.value.exit_code == ExitCode.CONFIG == 2
    assert "sources.t.ssh_engine" in caught.value.message
    assert "password" in caught.value.message


def test_the_ssh_child_gets_no_secret_in_argv_or_environment(
        sftp_server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cret-" + os.urandom(6).hex()
    monkeypatch.setenv("RS_TEST_LEDGER_PASSWORD", secret)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    with open_transport(make_source(sftp_server, tmp_path)) as transport:
        assert isinstance(transport, SftpTransport)
        session = transport.session
        assert isinstance(session, OpenSshSession)
        pid = session.child.pid
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert secret.encode() not in cmdline and secret.encode() not in environ
    names = {entry.split(b"=", 1)[0].decode() for entry in environ.split(b"\0") if entry}
    assert "RS_TEST_LEDGER_PASSWORD" not in names and "AWS_SECRET_ACCESS_KEY" not in names
    assert b"-F\0none" in cmdline and b"IdentityAgent=none" in cmdline


def test_version_names_the_engine() -> None:
    result = run_cli_inprocess("--version")
    assert result.exit_code == 0
    assert "sftp engine" in result.stdout and "openssh (OpenSSH_" in result.stdout


def test_paths_with_a_space_reach_ssh_whole_and_a_percent_goes_to_paramiko(
        sftp_server: LocalServer, tmp_path: Path) -> None:
    spaced = tmp_path / "a folder"
    spaced.mkdir()
    known = spaced / "known hosts"
    known.write_bytes(Path(sftp_server.source["known_hosts"]).read_bytes())
    key = spaced / "the key"
    key.write_bytes(Path(sftp_server.source["key_file"]).read_bytes())
    key.chmod(0o600)
    with open_transport(make_source(sftp_server, tmp_path, known_hosts=str(known),
                                    key_file=str(key))) as transport:
        assert isinstance(transport, SftpTransport)
        assert transport.session.engine is SshEngine.OPENSSH
        assert transport.list_files() == []
    percent = tmp_path / "50%d"
    percent.write_bytes(known.read_bytes())
    choice = choose_engine(make_source(sftp_server, tmp_path, known_hosts=str(percent),
                                       ssh_engine="auto"))
    assert choice.engine is SshEngine.PARAMIKO and "%" in choice.why
