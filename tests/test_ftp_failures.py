"""FTP failures explained right (issue 14): servers that really reply so (the lying pyftpdlib
server, tests/servers/hostile_ftpd.py), and what fetch, the transport and doctor's steps say.

* a cleartext login refused because the server wants TLS: exit 2, not retried, `protocol = "ftps"`;
* MLSD answered with 550: LIST instead (a folder that cannot be listed still says so);
* no session left (421 "too many connections"): a typed, retryable error naming the limit;
* a data connection reset mid-transfer: named a reset, not a stall.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest

from reportsync.config import SourceConfig, parse_config
from reportsync.errors import (
    ConfigError,
    ExitCode,
    NetworkError,
    RemoteError,
    TooManyConnectionsError,
)
from reportsync.transports import Transport
from reportsync.transports.base import Check, StepResult
from reportsync.transports.findings import StepFinding
from reportsync.transports.ftp import FtpConnector, open_ftp
from reportsync.vocab import CheckStatus
from tests.servers import LocalServer
from tests.servers.hostile_ftpd import Script, start_hostile_ftpd
from tests.support import PgpIdentity
from tests.test_hardening_support import hostile_workspace

PURE_FTPD_TLS_ONLY = ("421-Sorry, cleartext sessions are not accepted on this server.\r\n"
                      "421 Please reconnect using TLS security mechanisms.")


def source_for(server: LocalServer, tmp_path: Path, **overrides: Any) -> SourceConfig:
    table = {**server.source, "download_dir": str(tmp_path / "d"),
             "output_dir": str(tmp_path / "o"), "timeout": 5.0, **overrides}
    return parse_config({"sources": {"t": table}}).sources["t"]


def doctor_steps(source: SourceConfig) -> dict[Check, StepResult]:
    """doctor's view: every connection step, as doctor runs them (stopping at the first FAIL)."""
    connector = FtpConnector(source)
    results: dict[Check, StepResult] = {}
    try:
        connector.config_checks()
        for step in connector.steps():
            results[step.check] = result = step.run()
            if result.status != CheckStatus.PASS:
                break
    finally:
        connector.close()
    return results


# --- TLS demanded on a cleartext login -----------------------------------------------------------


@pytest.mark.parametrize("reply", [
    PURE_FTPD_TLS_ONLY,  # Pure-FTPd (TLS = 2): 421, which used to be retried as a network glitch
    "530 Non-anonymous sessions must use encryption.",  # vsftpd force_local_logins_ssl
    "534 Request denied for policy reasons.",  # RFC 4217's code: no words needed
    "550 SSL/TLS required on the control channel.",  # ProFTPD, pyftpdlib
])
def test_a_server_demanding_tls_is_a_config_error_naming_ftps(
        hostile: Any, tmp_path: Path, reply: str) -> None:
    script = Script(user_reply=reply)
    source = source_for(hostile(script), tmp_path)
    with pytest.raises(ConfigError) as caught:
        open_ftp(source)
    error = caught.value
    assert error.exit_code == ExitCode.CONFIG and not error.retryable
    assert "sources.t.protocol" in error.message and 'protocol = "ftps"' in error.message
    assert 'protocol = "ftps"' in error.remedy and "[sources.t]" in error.remedy
    assert reply.splitlines()[-1].split(" ", 1)[1].rstrip(".") in error.message  # its words
    auth = doctor_steps(source)[Check.AUTH]
    assert auth.status == CheckStatus.FAIL and auth.finding_id == StepFinding.AUTH_TLS_REQUIRED


def test_fetch_against_a_tls_only_server_exits_2_at_once_without_retrying(
        tmp_path: Path, pgp_identity: PgpIdentity) -> None:
    script = Script(user_reply=PURE_FTPD_TLS_ONLY)
    ws, server = hostile_workspace(tmp_path, pgp_identity, script)
    try:
        ws.write_config(retries=3)
        result = ws.fetch()
    finally:
        server.stop()
    assert result.exit_code == ExitCode.CONFIG, result.stderr
    assert 'protocol = "ftps"' in result.stderr
    assert "usually passes" not in result.stderr.lower()
    assert script.commands.count("USER") == 1, "a configuration problem is not retried"


def test_a_tls_word_in_a_wrong_password_reply_of_an_ftps_source_stays_an_auth_problem(
        hostile: Any, tmp_path: Path) -> None:
    # only a *cleartext* login can be refused for wanting TLS: the same words at an ftp source's
    # 530 mean it, an unrelated 530 (no such words) stays a wrong password
    script = Script(user_reply="530 Login incorrect.")
    source = source_for(hostile(script), tmp_path)
    auth = doctor_steps(source)[Check.AUTH]
    assert auth.finding_id == StepFinding.AUTH_REFUSED
    assert auth.error is not None and auth.error.exit_code == ExitCode.AUTH


# --- MLSD refused with 550 -----------------------------------------------------------------------


def test_mlsd_refused_with_550_falls_back_to_list(hostile: Any, tmp_path: Path) -> None:
    script = Script(mlsd_reply="550 MLSD is not permitted here.")
    server = hostile(script)
    (server.remote_root / "a.xml").write_bytes(b"12345")
    os.utime(server.remote_root / "a.xml", (1_790_000_000, 1_790_000_000))
    with open_ftp(source_for(server, tmp_path)) as transport:
        first = transport.list_files()
        second = transport.list_files()
    assert [(r.name, r.size, r.mtime) for r in first] == [("a.xml", 5, 1_790_000_000.0)]
    assert second == first
    assert script.commands.count("MLSD") == 1, "the refusal is remembered once LIST worked"
    assert script.commands.count("LIST") == 2


def test_a_folder_that_cannot_be_listed_at_all_still_says_so(hostile: Any, tmp_path: Path) -> None:
    script = Script(mlsd_reply="550 No such file or directory.",
                    list_reply="550 No such file or directory.")
    with open_ftp(source_for(hostile(script), tmp_path)) as transport, \
            pytest.raises(RemoteError) as caught:
        transport.list_files()
    assert "listing 'outgoing'" in caught.value.message
    assert "550 No such file or directory" in caught.value.message


# --- no session left ------------------------------------------------------------------------------


def test_one_session_too_many_is_a_typed_retryable_error(hostile: Any, tmp_path: Path) -> None:
    server = hostile(Script(), max_sessions=3)
    source = source_for(server, tmp_path)
    opened: list[Transport] = []
    try:
        opened = [open_ftp(source) for _ in range(3)]
        with pytest.raises(TooManyConnectionsError) as caught:
            open_ftp(source)
        steps = doctor_steps(source)
    finally:
        for transport in opened:
            transport.close()
    error = caught.value
    assert isinstance(error, NetworkError) and error.retryable
    assert error.exit_code == ExitCode.NETWORK and error.limit is None
    assert "421 Too many connections" in error.message and "--jobs" in error.remedy
    assert steps[Check.BANNER].finding_id == StepFinding.BANNER_TOO_MANY_SESSIONS
    with open_ftp(source) as again:  # the sessions are back once the others are closed
        assert again.list_files() == []


def test_proftpd_maximum_clients_at_login_names_the_limit(hostile: Any, tmp_path: Path) -> None:
    script = Script(user_reply="530 Sorry, the maximum number of clients (3) for this user are "
                               "already connected.")
    source = source_for(hostile(script), tmp_path)
    with pytest.raises(TooManyConnectionsError) as caught:
        open_ftp(source)  # not "login refused": the password was never even asked for
    assert caught.value.limit == 3 and "it allows 3" in caught.value.message
    assert doctor_steps(source)[Check.AUTH].finding_id == StepFinding.AUTH_TOO_MANY_SESSIONS


# --- a reset is not a stall ------------------------------------------------------------------------


def test_a_data_connection_reset_mid_transfer_is_named_a_reset(hostile: Any, tmp_path: Path) -> None:
    script = Script(reset_after=64 * 1024)
    server = hostile(script)
    payload = os.urandom(1024 * 1024)
    (server.remote_root / "big.bin").write_bytes(payload)
    with open_ftp(source_for(server, tmp_path)) as transport:
        sink = io.BytesIO()
        with pytest.raises(NetworkError) as caught:
            transport.download("big.bin", sink)
        error = caught.value
        assert error.retryable and "reset" in error.message and "not a timeout" in error.message
        assert "stalled" not in error.message and "firewall does not fix" in error.remedy
        assert payload.startswith(sink.getvalue())  # what arrived is kept for the resume
        script.reset_after = None  # the next attempt logs in again and resumes
        rest = io.BytesIO()
        transport.download("big.bin", rest, offset=len(sink.getvalue()))
    assert sink.getvalue() + rest.getvalue() == payload


def test_fetch_with_more_jobs_than_the_server_allows_goes_on_with_fewer(
        tmp_path: Path, pgp_identity: PgpIdentity) -> None:
    script = Script()
    ws, server = hostile_workspace(tmp_path, pgp_identity, script)
    server.stop()
    server = start_hostile_ftpd(tmp_path / "limited", script, max_sessions=3)
    try:
        ws.server = server
        ws.write_config(retries=2)
        for index in range(24):
            ws.put(f"r{index:02d}.xml", b"<r n='%d'/>" % index)
        result = ws.fetch("--jobs", "8", "--no-decrypt")
    finally:
        server.stop()
    assert result.exit_code == 0, result.stderr
    files = result.result()["sources"][0]["files"]
    assert [entry["action"] for entry in files] == ["downloaded"] * 24
