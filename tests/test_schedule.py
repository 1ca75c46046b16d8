"""`reportsync schedule`: the crontab line runs like cron runs it; the systemd units verify.

The crontab line is parsed (five time fields and a command), its program must exist, and it is
then run the way cron runs it (``sh -c``, an almost empty environment, started in $HOME) against a
real sshd: it must fetch and print nothing. The systemd units go through ``systemd-analyze verify``
where that exists, and through a structural check everywhere.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from datetime import time
from pathlib import Path

import pytest

from reportsync.config import parse_config
from reportsync.schedule import (
    cron_schedule,
    reportsync_command,
    systemd_schedule,
    writable_paths,
)
from tests.servers import LocalServer
from tests.support import PgpIdentity, run_cli_inprocess
from tests.test_fetch_e2e import Workspace, report_xml

CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


@pytest.fixture
def ws(tmp_path: Path, pgp_identity: PgpIdentity, sftp_server: LocalServer) -> Workspace:
    workspace = Workspace(tmp_path, pgp_identity, sftp_server)
    workspace.write_config()
    return workspace


def crontab_entry(text: str) -> tuple[list[str], str]:
    """The one non-comment line of a crontab fragment: its 5 time fields and its command."""
    entries = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(entries) == 1, text
    fields = entries[0].split(None, 5)
    assert len(fields) == 6, f"5 time fields and a command: {entries[0]!r}"
    for field, (low, high) in zip(fields[:5], CRON_RANGES, strict=True):
        assert field == "*" or (field.isdigit() and low <= int(field) <= high), entries[0]
    # cron turns an unescaped % into a newline and \% into %
    assert "%" not in fields[5].replace("\\%", "")
    return fields[:5], fields[5].replace("\\%", "%")


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd unit file → {section: {key: [values]}}; keys may repeat."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"a key before any section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {line!r}"
        current.setdefault(key, []).append(value)
    return sections


def exec_words(value: str) -> list[str]:
    """An ExecStart= value as systemd splits it (quotes; %% unescaped, and $$ in arguments)."""
    program, *arguments = (word.replace("%%", "%") for word in shlex.split(value))
    return [program, *(word.replace("$$", "$") for word in arguments)]


def test_cron_line_parses_names_an_executable_and_fetches_as_cron_runs_it(ws: Workspace) -> None:
    plaintext = ws.put_report("U1.Activity.20261102.xml.pgp", report_xml("U1", "20261102"))
    result = run_cli_inprocess("--config", str(ws.config_path), "schedule", "--cron")
    assert result.exit_code == 0, result.stderr
    fields, command_line = crontab_entry(result.stdout)
    assert fields == ["15", "7", "*", "*", "*"]
    words = shlex.split(command_line)
    assert os.path.isabs(words[0]) and os.access(words[0], os.X_OK), words[0]
    assert words[-4:] == ["--config", str(ws.config_path), "--quiet", "fetch"]
    assert any(line.startswith("# ") for line in result.stdout.splitlines()), "a comment says why"

    home = ws.root / "home"
    home.mkdir()
    cron_environment = {"HOME": str(home), "LOGNAME": "cron", "SHELL": "/bin/sh",
                        "PATH": "/usr/bin:/bin"}
    ran = subprocess.run(["/bin/sh", "-c", command_line], env=cron_environment, cwd=home,
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
                         start_new_session=True)
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "", ""), "cron mails only on trouble"
    assert (ws.output_dir / "U1.Activity.20261102.xml").read_bytes() == plaintext


def test_cron_time_is_chosen_with_at_and_bad_times_are_usage_errors(ws: Workspace) -> None:
    late = run_cli_inprocess("--config", str(ws.config_path), "schedule", "--at", "22:05")
    assert crontab_entry(late.stdout)[0] == ["5", "22", "*", "*", "*"]
    bad = run_cli_inprocess("--config", str(ws.config_path), "schedule", "--at", "25:00")
    assert bad.exit_code == 2 and "not a time of day" in bad.stderr
    no_config = run_cli_inprocess("--config", str(ws.root / "missing.toml"), "schedule")
    assert no_config.exit_code == 2 and "reportsync init" in no_config.stderr
    wrong = run_cli_inprocess("--config", str(ws.config_path), "schedule", "--cron", "--out-dir",
                    str(ws.root / "units"))
    assert wrong.exit_code == 2 and "--systemd" in wrong.stderr


def test_cron_words_are_quoted_for_sh_and_percent_is_escaped() -> None:
    config = parse_config({"sources": {"a": {
        "protocol": "ftp", "host": "h", "username": "u", "password_env": "RS_FTP_PW",
        "download_dir": "/r/enc", "output_dir": "/r/out"}}})
    program = ("/opt/my tools/100%/reportsync",)
    schedule = cron_schedule(config, Path("/etc/it's here/config.toml"), at=time(6, 0),
                             program=program)
    fields, command_line = crontab_entry(schedule.text())
    assert fields == ["0", "6", "*", "*", "*"]
    assert shlex.split(command_line) == [*program, "--config", "/etc/it's here/config.toml",
                                         "--quiet", "fetch"]
    assert "RS_FTP_PW" in schedule.text() and schedule.secret_env == ("RS_FTP_PW",)


def test_systemd_units_are_hardened_and_verify(ws: Workspace, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    ws.write_config(password_env="RS_SECRET_PW")
    monkeypatch.setenv("RS_SECRET_PW", "hunter2-never-in-a-unit")
    units = tmp_path / "units"
    result = run_cli_inprocess("--config", str(ws.config_path), "schedule", "--systemd", "--out-dir",
                     str(units), env={"RS_SECRET_PW": "hunter2-never-in-a-unit"})
    assert result.exit_code == 0, result.stderr
    assert "do not exist yet" in result.stderr and str(ws.output_dir) in result.stderr
    service_path, timer_path = units / "reportsync.service", units / "reportsync.timer"
    service_text, timer_text = service_path.read_text(), timer_path.read_text()
    assert "hunter2" not in service_text + timer_text

    service, timer = parse_unit(service_text), parse_unit(timer_text)
    assert list(service) == ["Unit", "Service"] and list(timer) == ["Unit", "Timer", "Install"]
    body = service["Service"]
    assert body["Type"] == ["oneshot"]
    words = exec_words(body["ExecStart"][0])
    assert os.path.isabs(words[0]) and os.access(words[0], os.X_OK)
    assert words[-4:] == ["--config", str(ws.config_path), "--quiet", "fetch"]
    for key, value in (("NoNewPrivileges", "yes"), ("PrivateTmp", "yes"),
                       ("ProtectSystem", "strict"), ("ProtectHome", "read-only"),
                       ("UMask", "0077")):
        assert body[key] == [value], key
    writable = [Path(word) for value in body["ReadWritePaths"] for word in shlex.split(value)
                if not word.startswith("-")]
    for needed in (ws.state_dir, ws.identity.home, ws.download_dir, ws.output_dir):
        assert any(needed == path or path in needed.parents for path in writable), needed
    assert "RS_SECRET_PW" in service_text and body["EnvironmentFile"] == [
        str(ws.config_path.parent / "reportsync.env")]
    assert timer["Timer"] == {"OnCalendar": ["*-*-* 07:15:00"], "Persistent": ["true"],
                              "RandomizedDelaySec": ["10min"]}
    assert timer["Install"] == {"WantedBy": ["timers.target"]}

    ws.download_dir.mkdir(parents=True)
    ws.output_dir.mkdir(parents=True)
    again = run_cli_inprocess("--config", str(ws.config_path), "schedule", "--systemd")
    assert again.exit_code == 0 and "do not exist yet" not in again.stderr
    assert again.stdout.startswith("# ==> reportsync.service <==")
    assert "# ==> reportsync.timer <==" in again.stdout
    systemd_analyze_verify(service_path, timer_path)


def systemd_analyze_verify(*units: Path) -> None:
    analyzer = shutil.which("systemd-analyze")
    if analyzer is None:
        return  # the structural checks above stand in for it
    checked = subprocess.run([analyzer, "verify", *map(str, units)], capture_output=True,
                             text=True, timeout=60, stdin=subprocess.DEVNULL)
    complaints = [line for line in checked.stderr.splitlines()
                  if any(unit.name in line for unit in units)]
    assert checked.returncode == 0 and not complaints, checked.stderr


def test_systemd_quotes_paths_with_spaces_percent_and_dollar(tmp_path: Path) -> None:
    folder = tmp_path / "my $bin 100%"
    folder.mkdir()
    program = folder / "reportsync"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    data = tmp_path / "re ports 5%"
    config = parse_config({
        "settings": {"state_dir": str(data / "state"), "gnupg_home": str(data / "gnupg")},
        "sources": {"a": {"protocol": "ftp", "host": "h", "username": "u", "password_env": "P",
                          "download_dir": str(data / "enc"), "output_dir": str(data / "out")}}})
    config_path = tmp_path / "$HOME's con fig.toml"
    schedule = systemd_schedule(config, config_path, program=(str(program),))
    service = parse_unit(schedule.files["reportsync.service"])["Service"]
    assert exec_words(service["ExecStart"][0]) == [
        str(program), "--config", str(config_path), "--quiet", "fetch"]
    writable = [word.replace("%%", "%") for word in shlex.split(service["ReadWritePaths"][0])]
    assert writable == [str(data / name) for name in ("enc", "gnupg", "out", "state")]
    units = tmp_path / "units"
    units.mkdir()
    for name, text in schedule.files.items():
        (units / name).write_text(text)
    systemd_analyze_verify(units / "reportsync.service", units / "reportsync.timer")


def test_writable_paths_are_absolute_and_not_nested() -> None:
    config = parse_config({
        "settings": {"state_dir": "/srv/rs/state", "gnupg_home": "/srv/rs/gnupg"},
        "sources": {
            "a": {"protocol": "ftp", "host": "h", "username": "u", "password_env": "P",
                  "download_dir": "/srv/rs/state/enc", "output_dir": "/data/a"},
            "b": {"protocol": "ftp", "host": "h", "username": "u", "password_env": "P",
                  "download_dir": "/data/a", "output_dir": "/data/b"},
        }})
    assert writable_paths(config) == (Path("/data/a"), Path("/data/b"), Path("/srv/rs/gnupg"),
                                      Path("/srv/rs/state"))


def test_the_command_is_this_installation(tmp_path: Path) -> None:
    script = tmp_path / "bin" / "reportsync"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    never: dict[str, str | None] = {}
    assert reportsync_command(str(script), which=never.get) == (str(script),), "sys.argv[0] first"
    relative = os.path.relpath(script)
    assert reportsync_command(relative, which=never.get) == (str(script),), "made absolute"
    python = tmp_path / "bin" / "python3"
    assert reportsync_command("/x/reportsync/__main__.py", executable=str(python),
                              which=never.get) == (str(script),), "the script beside python"
    elsewhere = tmp_path / "other" / "python3"
    assert reportsync_command(None, executable=str(elsewhere),
                              which=lambda name: str(script)) == (str(script),), "then PATH"
    fallback = reportsync_command("/x/reportsync/__main__.py", executable=sys.executable,
                                  which=never.get)
    if fallback != (str(Path(sys.executable).parent / "reportsync"),):
        assert fallback[-3:] == (sys.executable, "-m", "reportsync")
        assert os.access(fallback[0], os.X_OK)
