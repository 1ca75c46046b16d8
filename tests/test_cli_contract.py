"""The cron contract, command by command.

Under cron or a systemd timer there is no terminal and stdin is /dev/null (or closed). Every
command must then finish or fail with a clear message within its timeout, never wait for input;
``--quiet`` prints nothing on success; the log file in the state dir rotates; ``--version`` names
the libraries. Each run here is a real subprocess in a session of its own (so no controlling
terminal either) with stdin from /dev/null.
"""

from __future__ import annotations

import io
import json
import logging
import logging.handlers
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from reportsync import cli as cli_module
from reportsync import cli_app
from reportsync.sshkeys import generate_ssh_key
from tests.servers import LocalServer, free_port
from tests.support import REPO_ROOT, CliResult, PgpIdentity, run_cli_inprocess, write_config
from tests.test_fetch_e2e import Workspace, report_xml

UNATTENDED_TIMEOUT = 60  # seconds; a command that waits for input never gets there


def run_unattended(*args: str, env: dict[str, str] | None = None,
                   timeout: float = UNATTENDED_TIMEOUT, close_stdin: bool = False) -> CliResult:
    """``python -m reportsync ARGS`` as cron runs it: no controlling terminal (a new session),
    stdin from /dev/null, or (``close_stdin``) no stdin at all."""
    command = [sys.executable, "-m", "reportsync", *args]
    if close_stdin:
        command = ["/bin/sh", "-c", 'exec "$0" "$@" <&-', *command]
    completed = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               env={**os.environ, **(env or {})}, cwd=REPO_ROOT, timeout=timeout,
                               start_new_session=True)
    return CliResult(completed.returncode, completed.stdout, completed.stderr)


@dataclass
class Offline:
    """A valid config whose one source points at a port where nothing listens."""

    root: Path
    config_path: Path
    identity: PgpIdentity
    ssh_key: Path
    public_pgp_key: Path
    not_a_backup: Path


@pytest.fixture
def offline(tmp_path: Path, pgp_identity: PgpIdentity) -> Offline:
    ssh_key = tmp_path / "id_ed25519"
    generate_ssh_key(ssh_key, key_type="ed25519", comment="contract")
    public = tmp_path / "public.asc"
    public.write_text(pgp_identity.gpg().export_keys(pgp_identity.fingerprint))
    junk = tmp_path / "junk.rsbackup"
    junk.write_bytes(b"not a backup")
    config = write_config(tmp_path / "config.toml", {
        "settings": {"state_dir": str(tmp_path / "state"), "gnupg_home": str(pgp_identity.home)},
        "sources": {"broker": {
            "protocol": "sftp", "host": "127.0.0.1", "port": free_port(), "username": "u",
            "key_file": str(ssh_key), "known_hosts": str(tmp_path / "known_hosts"),
            "download_dir": str(tmp_path / "enc"), "output_dir": str(tmp_path / "out"),
            "timeout": 2, "retries": 0}},
    })
    return Offline(tmp_path, config, pgp_identity, ssh_key, public, junk)


@dataclass(frozen=True)
class Case:
    command: str  # the command path, as `reportsync COMMAND --help` names it
    args: Callable[[Offline], list[str]]
    exit_code: int
    says: str  # text the output (stdout + stderr) must hold


NO_TERMINAL = "no terminal to ask on"

CASES: tuple[Case, ...] = (
    Case("init", lambda o: ["--config", str(o.root / "new.toml"), "init", "--provider",
                            "ibkr-ftp"], 0, "wrote"),
    Case("init", lambda o: ["--config", str(o.config_path), "init"], 2, "not overwriting"),
    Case("schedule", lambda o: ["--config", str(o.config_path), "schedule"], 0, "* * *"),
    Case("schedule", lambda o: ["--config", str(o.config_path), "schedule", "--systemd"], 0,
         "[Timer]"),
    Case("fetch", lambda o: ["--config", str(o.config_path), "fetch"], 3, "refused"),
    Case("fetch", lambda o: ["--config", str(o.config_path), "fetch", "--dry-run"], 3, "refused"),
    Case("retention", lambda o: ["--config", str(o.config_path), "retention"], 3, "refused"),
    Case("status", lambda o: ["--config", str(o.config_path), "status"], 0, "no fetch recorded"),
    Case("verify", lambda o: ["--config", str(o.config_path), "verify"], 0, "checked 0 file"),
    Case("doctor", lambda o: ["--config", str(o.config_path), "doctor"], 1, "FAIL"),
    Case("ledger migrate", lambda o: ["--config", str(o.config_path), "ledger", "migrate", "--to",
                                      f"postgresql://rs@127.0.0.1:{free_port()}/rs"], 2,
         "no SQLite ledger"),
    Case("keys pgp generate", lambda o: ["--config", str(o.config_path), "keys", "pgp", "generate",
                                         "--name", "N", "--email", "n@example.com"], 2, NO_TERMINAL),
    Case("keys pgp list", lambda o: ["--config", str(o.config_path), "keys", "pgp", "list"], 0,
         "client@example.com"),
    Case("keys pgp export-public", lambda o: ["--config", str(o.config_path), "keys", "pgp",
                                              "export-public"], 0, "BEGIN PGP PUBLIC KEY BLOCK"),
    Case("keys pgp import", lambda o: ["--config", str(o.config_path), "keys", "pgp", "import",
                                       str(o.public_pgp_key)], 0, "imported"),
    Case("keys ssh generate", lambda o: ["keys", "ssh", "generate", "--out",
                                         str(o.root / "new_key")], 2, NO_TERMINAL),
    Case("keys ssh show", lambda o: ["keys", "ssh", "show", str(o.ssh_key)], 0, "ED25519"),
    Case("keys backup", lambda o: ["--config", str(o.config_path), "keys", "backup", "--out",
                                   str(o.root / "b.rsbackup")], 2, NO_TERMINAL),
    Case("keys verify-backup", lambda o: ["keys", "verify-backup", str(o.not_a_backup)], 2,
         NO_TERMINAL),
    Case("keys restore", lambda o: ["--config", str(o.root / "restored.toml"), "keys", "restore",
                                    str(o.not_a_backup)], 2, NO_TERMINAL),
)


def leaf_commands(group: click.Group = cli_module.cli, prefix: str = "") -> Iterator[str]:
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            yield from leaf_commands(command, path + " ")
        else:
            yield path


def test_every_command_has_an_unattended_case() -> None:
    assert sorted(set(leaf_commands())) == sorted({case.command for case in CASES})


@pytest.mark.parametrize("case", CASES, ids=[f"{c.command}-{i}" for i, c in enumerate(CASES)])
def test_no_terminal_and_no_stdin_never_waits(case: Case, offline: Offline) -> None:
    result = run_unattended(*case.args(offline))  # TimeoutExpired would mean it waited
    output = result.stdout + result.stderr
    assert result.exit_code == case.exit_code, output
    assert case.says in output
    if case.exit_code not in (0, 1):
        assert "error" in result.stderr and "Traceback" not in output
    assert not (offline.root / "new_key").exists() and not (offline.root / "b.rsbackup").exists()


def test_a_closed_stdin_is_no_terminal_either(offline: Offline) -> None:
    for args in (["--config", str(offline.config_path), "keys", "backup", "--out",
                  str(offline.root / "b.rsbackup")],
                 ["keys", "ssh", "generate", "--out", str(offline.root / "k")]):
        result = run_unattended(*args, close_stdin=True)
        assert result.exit_code == 2 and NO_TERMINAL in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_version_and_help_need_no_config(tmp_path: Path) -> None:
    elsewhere = {"REPORTSYNC_CONFIG": str(tmp_path / "none.toml")}
    assert run_unattended("--help", env=elsewhere).exit_code == 0
    version = run_unattended("--version", env=elsewhere)
    assert version.exit_code == 0 and version.stderr == ""
    names = [line.split()[0] for line in version.stdout.splitlines()]
    assert names == ["reportsync", "python", "paramiko", "cryptography", "python-gnupg", "sftp",
                     "gpg"]
    assert "gpg (GnuPG)" in version.stdout.splitlines()[-1]
    assert "not installed" not in version.stdout
    without_gpg = run_unattended("--version", env={"PATH": str(tmp_path)})
    assert without_gpg.stdout.splitlines()[-1].split(None, 1) == ["gpg", "not found"]


def test_shell_completion_is_clicks(tmp_path: Path) -> None:
    for shell, marker in (("bash", "complete -o nosort -F"), ("zsh", "compdef"),
                          ("fish", "complete --no-files --command reportsync")):
        script = run_unattended(env={"_REPORTSYNC_COMPLETE": f"{shell}_source"})
        assert script.exit_code == 0 and marker in script.stdout, (shell, script.stdout)
    words = run_unattended(env={"_REPORTSYNC_COMPLETE": "bash_complete",
                                "COMP_WORDS": "reportsync sch", "COMP_CWORD": "1"})
    assert "plain,schedule" in words.stdout.split()


# --- --quiet, --json and the log, against a real sshd ---------------------------------------------


@pytest.fixture
def ws(tmp_path: Path, pgp_identity: PgpIdentity, sftp_server: LocalServer) -> Workspace:
    workspace = Workspace(tmp_path, pgp_identity, sftp_server)
    workspace.write_config(expect_every_days=30)
    return workspace


def test_quiet_success_prints_nothing_for_every_cron_command(ws: Workspace) -> None:
    ws.put_report("U1.Activity.20261102.xml.pgp", report_xml("U1", "20261102"))
    config = ["--config", str(ws.config_path), "-q"]
    for args in (["fetch"], ["fetch"], ["fetch", "--dry-run"], ["status"], ["verify"],
                 ["retention"], ["retention", "--dry-run"]):
        result = run_unattended(*config, *args)
        assert (result.exit_code, result.stdout, result.stderr) == (0, "", ""), (args, result)
    doctor = run_unattended(*config, "doctor")
    assert doctor.exit_code == 0 and doctor.stdout == "", doctor.stderr
    for line in doctor.stderr.splitlines():
        assert line.startswith(("WARN ", "  what to do:")), line
    loud = run_unattended("--config", str(ws.config_path), "status")
    assert loud.exit_code == 0 and "broker: OK" in loud.stdout


def test_quiet_still_reports_problems_on_stderr(ws: Workspace) -> None:
    ws.put("broken.xml.pgp", b"not really encrypted")
    result = run_unattended("--config", str(ws.config_path), "-q", "fetch")
    assert result.exit_code != 0 and result.stdout == ""
    assert "broken.xml.pgp" in result.stderr


def test_every_json_result_names_its_command_and_exit_code(ws: Workspace) -> None:
    ws.put_report("U1.Activity.20261102.xml.pgp", report_xml("U1", "20261102"))
    config = ["--config", str(ws.config_path), "--json"]
    for args, command in ((["fetch"], "fetch"), (["status"], "status"), (["verify"], "verify"),
                          (["retention", "--dry-run"], "retention"), (["doctor"], "doctor"),
                          (["schedule"], "schedule"), (["keys", "pgp", "list"], "keys pgp list")):
        result = run_unattended(*config, *args)
        payload = json.loads(result.stdout)
        assert payload["command"] == command and payload["exit_code"] == result.exit_code == 0
    failed = run_unattended("--config", str(ws.root / "missing.toml"), "--json", "status")
    error = json.loads(failed.stdout)
    assert failed.exit_code == error["exit_code"] == 2
    assert error["error"]["error"] == "ConfigError" and error["error"]["remedy"]


def test_each_run_logs_to_a_private_file_in_the_state_dir(ws: Workspace) -> None:
    ws.put_report("U1.Activity.20261102.xml.pgp", report_xml("U1", "20261102"))
    assert run_unattended("--config", str(ws.config_path), "-q", "fetch").exit_code == 0
    log = ws.state_dir / "logs" / "reportsync.log"
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert "U1.Activity.20261102.xml.pgp" in log.read_text()


def test_the_log_file_rotates(tmp_path: Path) -> None:
    root = logging.getLogger("reportsync")
    level, before = root.level, list(root.handlers)
    for handler in before:  # add_log_file adds one only where none is yet
        root.removeHandler(handler)
    root.setLevel(logging.DEBUG)  # as the CLI sets it
    try:
        cli_app.add_log_file(tmp_path)
        added = [handler for handler in root.handlers if handler not in before]
        assert len(added) == 1 and isinstance(added[0], logging.handlers.RotatingFileHandler)
        handler = added[0]
        assert (handler.maxBytes, handler.backupCount) == (1_000_000, 5)
        handler.maxBytes = 10_000  # the same rollover, sooner
        for number in range(200):
            root.info("line %d %s", number, "x" * 200)
        logs = tmp_path / "logs"
        assert (logs / "reportsync.log").exists() and (logs / "reportsync.log.1").exists()
        assert not (logs / "reportsync.log.6").exists(), "at most backupCount old files"
        assert sorted(path.name for path in logs.iterdir())[-1] == "reportsync.log.5"
        assert all(path.stat().st_size <= 10_500 for path in logs.iterdir())
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in before:
            root.addHandler(handler)
        root.setLevel(level)


# --- main() in-process: the environment it is given is the run's environment ----------------------


def test_main_runs_in_process_with_the_environment_it_is_given(
    tmp_path: Path, pgp_identity: PgpIdentity,
) -> None:
    """The config is found through the given REPORTSYNC_CONFIG, a secret the config names is read
    from the given variables, gpg is looked up on the given PATH, and gpg gets its environment
    from the given one (allowlisted): none of them is in this process's os.environ."""
    from tests.test_gpg_hardening import recorded, recording_gpg

    wrapper, log = recording_gpg(tmp_path / "bin")
    config = write_config(tmp_path / "config.toml", {"settings": {
        "state_dir": str(tmp_path / "state"), "gnupg_home": str(pgp_identity.home),
        "gpg_binary": "gpg", "gpg_passphrase_env": "RS_INPROC_GPG_PP"}})
    env = {**os.environ, "REPORTSYNC_CONFIG": str(config), "TZ": "RS/Marker-Tz",
           "PATH": f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}",
           "RS_INPROC_GPG_PP": "in-process passphrase", "RS_INPROC_BK": "a long backup passphrase"}
    for name in ("REPORTSYNC_CONFIG", "RS_INPROC_GPG_PP", "RS_INPROC_BK"):
        assert name not in os.environ
    assert os.environ.get("TZ") != env["TZ"]
    stdout, stderr = io.StringIO(), io.StringIO()
    code = cli_module.main(["--json", "keys", "backup", "--out", str(tmp_path / "k.rsbak"),
                            "--passphrase-env", "RS_INPROC_BK"], env, stdout, stderr)
    assert code == 0, stderr.getvalue()
    document = json.loads(stdout.getvalue())
    assert (document["version"], document["command"], document["exit_code"]) == \
        (1, "keys backup", 0)
    assert document["result"]["path"] == str(tmp_path / "k.rsbak")
    calls = recorded(log)
    assert calls, "gpg was found on the PATH given to main"
    for call in calls:
        assert call["env"]["TZ"] == "RS/Marker-Tz", "the child's environment comes from main's"
        assert "RS_INPROC_GPG_PP" not in call["env"] and "RS_INPROC_BK" not in call["env"]
    assert (tmp_path / "state" / "logs" / "reportsync.log").exists(), "it logged to its state dir"
    pgp_identity.stop_agent()


def test_main_in_process_leaves_no_log_handler_behind(tmp_path: Path) -> None:
    """Each in-process run logs to its own state dir: the handlers it added are gone after it."""
    root = logging.getLogger("reportsync")
    before = list(root.handlers)
    for name in ("one", "two"):
        config = write_config(tmp_path / f"{name}.toml", {"settings": {
            "state_dir": str(tmp_path / name), "gnupg_home": str(tmp_path / "g")}})
        result = run_cli_inprocess("-v", "--config", str(config), "schedule")
        assert result.exit_code == 0, result.stderr
        assert root.handlers == before
    assert (tmp_path / "one" / "logs" / "reportsync.log").exists()
    assert (tmp_path / "two" / "logs" / "reportsync.log").exists()


def test_usage_errors_and_help_go_to_the_streams_given_and_json_gets_an_envelope() -> None:
    result = run_cli_inprocess("--json", "status", "--bogus")
    assert result.exit_code == 2 and "No such option" in result.stderr
    document = result.json()
    assert (document["version"], document["command"], document["exit_code"]) == (1, "status", 2)
    assert document["error"]["error"] == "UsageError" and "--bogus" in document["error"]["message"]
    shown = run_cli_inprocess("keys", "--help")
    assert shown.exit_code == 0 and "Generate, export, back up" in shown.stdout


def test_a_source_that_stops_says_run_doctor_once_naming_the_source(
    tmp_path: Path, offline: Offline,
) -> None:
    for args in (["fetch"], ["retention"]):
        result = run_cli_inprocess("--config", str(offline.config_path), *args)
        assert result.exit_code == 3, result.stderr
        assert result.stderr.count("reportsync doctor") == 1, result.stderr
        assert "`reportsync doctor --source broker`" in result.stderr


def test_the_envelope_is_made_by_one_function_for_results_and_errors() -> None:
    from reportsync import render
    from reportsync.config import Secret
    from reportsync.errors import StorageError
    from reportsync.pgpkeys import ImportReport

    report = ImportReport(origin="k.asc", fingerprints=("AB" * 20,), secret_imported=0,
                          public_imported=1, unchanged=0, warnings=("Invalid Certificate",))
    document = render.envelope("keys pgp import", result=report)
    assert document == {"version": 1, "command": "keys pgp import", "exit_code": 0, "result": {
        "origin": "k.asc", "fingerprints": ["AB" * 20], "secret_imported": 0,
        "public_imported": 1, "unchanged": 0, "warnings": ["Invalid Certificate"]}}
    assert render.import_text(report).stderr == ["warning: Invalid Certificate"]
    failed = render.envelope("fetch", error=StorageError("disk full", path="/s"))
    assert failed["exit_code"] == 7 and failed["error"]["error"] == "StorageError"
    assert "result" not in failed
    assert render.to_json({"days": float("inf"), "at": Path("/x")}) == {"days": None, "at": "/x"}
    with pytest.raises(TypeError):
        render.to_json({"password": Secret("hunter2")})  # a secret has no JSON form at all


def test_the_cli_loads_no_heavy_module_a_command_does_not_use() -> None:
    # start-up is paid by every cron run (issue 13): the backup's crypto, HTTP for pings, the
    # PostgreSQL driver, Apprise, python-gnupg and paramiko load when a command needs them, and
    # paramiko without the task runner `invoke` it imports for a feature reportsync never uses
    heavy = ["reportsync.backup", "http.client", "urllib.request", "psycopg", "apprise",
             "gnupg", "paramiko", "invoke"]
    script = ("import sys, json\n"
              "import reportsync.cli\n"
              f"heavy = {heavy!r}\n"
              "at_start = [m for m in heavy if m in sys.modules]\n"
              "import reportsync.transports.sftp\n"
              "print(json.dumps([at_start, 'invoke' in sys.modules]))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=60, check=True)
    at_start, invoke_loaded = json.loads(done.stdout)
    assert at_start == [], "loaded by `import reportsync.cli` alone"
    assert invoke_loaded is False, "paramiko's import pulled in invoke"
