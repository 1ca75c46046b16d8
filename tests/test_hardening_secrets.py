"""Hardening, issue 6: secrets (items 18, 19).

File permissions are refused the way OpenSSH refuses a private key; secrets are looked for in
everything a run leaves behind: stdout, stderr, --json, the log file at -v and -vv, and the
command line (and environment) of every gpg the run starts.
"""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reportsync import fsutil
from reportsync.config import Secret, parse_config
from reportsync.errors import ConfigError, KeyProblemError
from reportsync.pgp import Gpg
from reportsync.transports import open_transport
from tests.servers import LocalServer
from tests.support import CliResult, PgpIdentity, make_identity, run_cli_inprocess
from tests.test_fetch_e2e import Workspace
from tests.test_hardening_support import gpg_wrapper, wrapper_calls

# --- 18. secrets readable by others are refused ---------------------------------------------------


def test_private_key_readable_by_others_is_refused_like_openssh_before_connecting(
    sftp_server: LocalServer, tmp_path: Path, pgp_identity: PgpIdentity,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Line of defence: sftp.check_secret_files -> fsutil.require_private_file, first thing in
    # SftpTransport.connect (paramiko never checks key permissions).
    key = tmp_path / "id_rsa"
    shutil.copyfile(sftp_server.extra["user_key"], key)
    key.chmod(0o644)
    source = parse_config({"sources": {"t": {**sftp_server.source, "key_file": str(key),
                                             "download_dir": str(tmp_path / "d"),
                                             "output_dir": str(tmp_path / "o")}}}).sources["t"]
    with monkeypatch.context() as patched:
        connections: list[Any] = []
        patched.setattr(socket, "create_connection", lambda *a, **k: connections.append(a))
        with pytest.raises(ConfigError) as caught:
            open_transport(source)
        assert connections == [], "refused before the network"
    assert f"Permissions 0644 for '{key}' are too open." in caught.value.message
    assert caught.value.remedy == f"chmod 600 {key}"
    ws = Workspace(tmp_path / "ws", pgp_identity, sftp_server)
    ws.root.mkdir()
    ws.write_config(key_file=str(key))
    result = ws.fetch()
    assert result.exit_code == 2 and "are too open" in result.stderr
    key.chmod(0o600)
    assert ws.fetch().exit_code == 0


def test_password_bearing_config_and_secret_files_readable_by_others_are_refused(
    ftp_server: LocalServer, tmp_path: Path, pgp_identity: PgpIdentity,
) -> None:
    # Line of defence: config.model._inline_password_in_private_file (inline password in a
    # group/other-readable config), ftp.FtpTransport.connect and Gpg.from_settings (password and
    # passphrase files), all with OpenSSH's "Permissions 0644 for 'PATH' are too open."
    password = ftp_server.extra["password"]
    ws = Workspace(tmp_path, pgp_identity, ftp_server)
    inline = {key: value for key, value in ftp_server.source.items() if key != "password_file"}
    ws.write_config(source=inline, password=password)
    ws.config_path.chmod(0o644)
    result = ws.fetch()
    assert result.exit_code == 2, result.stderr
    assert f"Permissions 0644 for '{ws.config_path}' are too open." in result.stderr
    assert password not in result.stdout + result.stderr

    open_file = tmp_path / "ftp-password"
    open_file.write_text(password + "\n")
    open_file.chmod(0o640)
    ws.write_config(password_file=str(open_file))
    result = ws.fetch()
    assert result.exit_code == 2, result.stderr
    assert f"Permissions 0640 for '{open_file}' are too open." in result.stderr

    ws.write_config()
    ws.put_report("r.xml.pgp", b"<r/>")
    passphrase_file = tmp_path / "gpg-passphrase"
    passphrase_file.write_text("not needed, but configured\n")
    passphrase_file.chmod(0o604)
    ws.config_path.write_text(ws.config_path.read_text().replace(
        "[settings]", f'[settings]\ngpg_passphrase_file = "{passphrase_file}"'))
    result = ws.fetch()
    assert result.exit_code == 6, result.stderr
    assert f"Permissions 0604 for '{passphrase_file}' are too open." in result.stderr
    assert (ws.download_dir / "r.xml.pgp").exists(), "downloads still happen"


def test_the_mode_check_is_skipped_where_permissions_are_not_mode_bits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Line of defence: fsutil.mode_bits_apply, the one place that knows the platform (Windows
    # uses ACLs; its profile folders are private by default).
    secret = tmp_path / "key"
    secret.write_text("x")
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match="are too open"):
        fsutil.require_private_file(secret, "k", "private key")
    monkeypatch.setattr(fsutil, "IS_POSIX", False)
    assert fsutil.mode_bits_apply() is False and fsutil.too_open(secret) is None
    fsutil.require_private_file(secret, "k", "private key")


# --- 19. no secret anywhere -----------------------------------------------------------------------

FTP_PASSWORD_ENV = "RS_HARDENING_FTP_PW"
GPG_PASSPHRASE_ENV = "RS_HARDENING_GPG_PP"
PASSPHRASE = "gpg passphrase Zq8#tango"


@pytest.fixture
def identity_with_passphrase(tmp_path: Path) -> Iterator[PgpIdentity]:
    identity = make_identity(tmp_path / "gpg", "secret@example.com", passphrase=PASSPHRASE)
    yield identity
    identity.stop_agent()


def _everything(result: CliResult, ws: Workspace) -> str:
    log = ws.state_dir / "logs" / "reportsync.log"
    return "\n".join([result.stdout, result.stderr, log.read_text() if log.exists() else ""])


def test_no_password_or_passphrase_in_output_json_logs_or_gpg_command_lines(
    ftp_server: LocalServer, tmp_path: Path, identity_with_passphrase: PgpIdentity,
) -> None:
    # Line of defence: Secret (never shown), the FTP password kept out of messages (ftplib debug
    # off, replies redacted), the passphrase fed to gpg on stdin (pgp.Gpg._run), the variable
    # holding it left out of gpg's environment.
    ws = Workspace(tmp_path, identity_with_passphrase, ftp_server)
    password = ftp_server.extra["password"]
    table = {key: value for key, value in ftp_server.source.items() if key != "password_file"}
    ws.write_config(source=table, password_env=FTP_PASSWORD_ENV)
    wrapper, argv_log = gpg_wrapper(tmp_path / "bin")
    env_dump = tmp_path / "bin" / "gpg-env.log"
    wrapper.write_text(wrapper.read_text().replace(
        "import json, os, sys\n",
        f"import json, os, sys\nopen({str(env_dump)!r}, 'a').write(json.dumps(dict(os.environ)))\n"))
    ws.config_path.write_text(ws.config_path.read_text().replace(
        "[settings]", f'[settings]\ngpg_binary = "{wrapper}"\n'
        f'gpg_passphrase_env = "{GPG_PASSPHRASE_ENV}"'))
    ws.put_report("r.xml.pgp", b"<r/>")
    wrong_passphrase = "wrong passphrase Kx7!"
    wrong_password = "wrong-ftp-password-Vv3"
    runs = [
        (("-vv", "--json", "fetch"), {FTP_PASSWORD_ENV: password,
                                     GPG_PASSPHRASE_ENV: wrong_passphrase}, 6),
        (("-vv", "fetch"), {FTP_PASSWORD_ENV: wrong_password, GPG_PASSPHRASE_ENV: PASSPHRASE}, 4),
        (("-v", "--json", "fetch"), {FTP_PASSWORD_ENV: password, GPG_PASSPHRASE_ENV: PASSPHRASE},
         0),
    ]
    seen = []
    for args, env, code in runs:
        result = run_cli_inprocess("--config", str(ws.config_path), *args, env=env)
        assert result.exit_code == code, result.stderr
        seen.append(_everything(result, ws))
    assert ws.outputs() == {"r.xml": b"<r/>"}
    text = "\n".join(seen)
    for secret in (password, PASSPHRASE, wrong_passphrase, wrong_password):
        assert secret not in text, f"a secret leaked: {secret[:4]}..."
    calls = wrapper_calls(argv_log)
    assert any("--decrypt" in argv for argv in calls)
    for argv in calls:
        joined = json.dumps(argv)
        for secret in (PASSPHRASE, wrong_passphrase):
            assert secret not in joined, "no passphrase on a gpg command line"
    environments = env_dump.read_text()
    assert GPG_PASSPHRASE_ENV not in environments and PASSPHRASE not in environments


def test_passphrases_and_passwords_with_line_breaks_are_refused_before_gpg_or_ftp_run(
    ftp_server: LocalServer, tmp_path: Path, pgp_identity: PgpIdentity,
) -> None:
    # Line of defence: pgp.check_passphrase (before gpg is started at all) and the FTP
    # transport's check before USER/PASS (a line break would start a new command).
    ws = Workspace(tmp_path, pgp_identity, ftp_server)
    wrapper, argv_log = gpg_wrapper(tmp_path / "bin")
    ws.write_config()
    ws.config_path.write_text(ws.config_path.read_text().replace(
        "[settings]", f'[settings]\ngpg_binary = "{wrapper}"\n'
        f'gpg_passphrase_env = "{GPG_PASSPHRASE_ENV}"'))
    ws.put_report("r.xml.pgp", b"<r/>")
    result = run_cli_inprocess("--config", str(ws.config_path), "--json", "fetch",
                     env={GPG_PASSPHRASE_ENV: "first line\nsecond line"})
    assert result.exit_code == 6, result.stderr
    assert "line break" in result.stderr
    assert "first line" not in result.stdout + result.stderr
    assert wrapper_calls(argv_log) == [], "gpg was never started"
    assert (ws.download_dir / "r.xml.pgp").exists(), "the download still happened"

    table = {key: value for key, value in ftp_server.source.items() if key != "password_file"}
    ws.write_config(source=table, password_env=FTP_PASSWORD_ENV)
    injected = ftp_server.extra["password"] + "\r\nDELE r.xml.pgp"
    result = run_cli_inprocess("--config", str(ws.config_path), "fetch", env={FTP_PASSWORD_ENV: injected})
    assert result.exit_code == 2, result.stderr
    assert "line break" in result.stderr and "DELE" not in result.stderr
    assert (ws.server.remote_root / "r.xml.pgp").exists()

    with pytest.raises(KeyProblemError, match="line break") as caught:
        Gpg(binary="gpg", home=tmp_path / "h", passphrase=Secret("a\nb"))
    assert "a\nb" not in str(caught.value) and not (tmp_path / "h").exists()
