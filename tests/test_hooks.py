"""``on_new_report``: a real hook script (written by each test) run by real fetches against the
real FTP server (pyftpdlib) and OpenSSH's sshd, with the real gpg, through the real CLI.

The scripts record what they were given (argv, environment, stdin, working folder) into a file
the test reads back; one fails until a flag file exists; one sleeps after starting a grandchild
that ignores SIGTERM, to show that a timeout stops the hook's whole process group.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from reportsync.config import ConfigError, parse_config
from reportsync.hooks import NewReport, hook_argv, run_hook
from reportsync.ledger import Ledger
from tests.servers import LocalServer
from tests.servers.http_receiver import HttpReceiver
from tests.support import REPO_ROOT, PgpIdentity, run_cli
from tests.test_fetch_e2e import report_xml
from tests.test_notify import Site

REPORT = "U1.Activity.20261102.xml.pgp"
OTHER = "U1.Activity.20261103.xml.pgp"
ARGV_TEMPLATE = ["{path}", "--source={source}", "{remote_name}", "sha={sha256}", '{"not": 1}']


def recording_hook(folder: Path, *, fails_until: Path | None = None, exit_code: int = 3) -> Path:
    """A hook that appends what it was given to ``folder/runs.jsonl``; with ``fails_until``, it
    exits ``exit_code`` (after saying why) until that file exists."""
    script = folder / "record-hook.py"
    script.write_text(f"""#!{sys.executable}
import json, os, sys
record = {{"argv": sys.argv[1:], "env": dict(os.environ), "stdin": sys.stdin.read(),
          "cwd": os.getcwd()}}
with open({str(folder / "runs.jsonl")!r}, "a", encoding="utf-8") as log:
    log.write(json.dumps(record) + "\\n")
flag = {str(fails_until) if fails_until else ""!r}
if flag and not os.path.exists(flag):
    print("loading", *sys.argv[1:2], flush=True)
    print("the accounting database is down", file=sys.stderr)
    sys.exit({exit_code})
""", encoding="utf-8")
    script.chmod(0o755)
    return script


def hook_runs(folder: Path) -> list[dict[str, Any]]:
    log = folder / "runs.jsonl"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


def only_file(result: Any) -> dict[str, Any]:
    files: list[dict[str, Any]] = result.result()["sources"][0]["files"]
    assert len(files) == 1, files
    return files[0]


@pytest.fixture
def site(tmp_path: Path, pgp_identity: PgpIdentity, ftp_server: LocalServer) -> Site:
    return Site(tmp_path, pgp_identity, ftp_server)


@pytest.fixture(params=["ftp_server", "sftp_server"])
def any_site(request: pytest.FixtureRequest, tmp_path: Path, pgp_identity: PgpIdentity) -> Site:
    return Site(tmp_path, pgp_identity, request.getfixturevalue(request.param))


# --- what a hook is given -------------------------------------------------------------------------


def test_each_new_report_runs_the_hook_once_with_placeholders_variables_and_empty_stdin(
    any_site: Site,
) -> None:
    site = any_site
    hook = recording_hook(site.root)
    site.write_config(on_new_report=[str(hook), *ARGV_TEMPLATE], hook_timeout=30)
    site.put_report(REPORT, report_xml("U1", "20261102"))
    site.put_report(OTHER, report_xml("U1", "20261103"))

    first = site.fetch()
    assert first.exit_code == 0, first.stderr
    runs = hook_runs(site.root)
    assert len(runs) == 2, "once per new report"
    seen = set()
    for run in runs:
        path = Path(run["argv"][0])
        remote_name = run["argv"][2]
        seen.add(remote_name)
        assert path.parent == site.output_dir and path.name == remote_name.removesuffix(".pgp")
        sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        assert run["argv"] == [str(path), "--source=broker", remote_name, f"sha={sha256}",
                               '{"not": 1}'], "placeholders anywhere in an item; braces kept"
        env = run["env"]
        assert (env["REPORTSYNC_PATH"], env["REPORTSYNC_SOURCE"], env["REPORTSYNC_REMOTE_NAME"],
                env["REPORTSYNC_SHA256"]) == (str(path), "broker", remote_name, sha256)
        assert run["stdin"] == "", "stdin is empty"
        assert Path(run["cwd"]) == site.output_dir
    assert seen == {REPORT, OTHER}
    assert first.result()["sources"][0]["counts"]["archived"] == 2

    again = site.fetch()  # nothing new, every hook succeeded: none runs again
    assert again.exit_code == 0, again.stderr
    assert len(hook_runs(site.root)) == 2
    site.put_report("U1.Activity.20261104.xml.pgp", report_xml("U1", "20261104"))
    third = site.fetch()
    assert third.exit_code == 0, third.stderr
    assert [run["argv"][2] for run in hook_runs(site.root)][2:] == ["U1.Activity.20261104.xml.pgp"]


def test_no_secret_of_reportsync_reaches_the_hook(site: Site, http_receiver: HttpReceiver) -> None:
    hook = recording_hook(site.root)
    ftp_password = Path(site.server.source["password_file"]).read_text().strip()
    ping = http_receiver.ping_url()
    secrets = {"RS_FTP_PASSWORD": ftp_password, "RS_GPG_PASSPHRASE": "gpg-pass-phrase-8812",
               "RS_HC": ping}
    source = {key: value for key, value in site.server.source.items() if key != "password_file"}
    site.write_config(source, password_env="RS_FTP_PASSWORD", on_new_report=[str(hook)],
                      notify={"healthchecks_url_env": "RS_HC"})
    config = site.config_path.read_text()  # the passphrase too, and a variable named like one
    site.config_path.write_text(config.replace(
        "[settings]\n", '[settings]\ngpg_passphrase_env = "RS_GPG_PASSPHRASE"\n', 1))
    site.put_report(REPORT, report_xml("U1", "20261102"))

    result = site.fetch(env={**secrets, "LANG": "C.UTF-8", "REPORTSYNC_EXTRA": "kept out"})
    assert result.exit_code == 0, result.stderr
    assert http_receiver.ping_events(ping) == ["start", "success"], "the secrets were in use"
    (run,) = hook_runs(site.root)
    env = run["env"]
    leaked = [name for name, value in env.items()
              if any(secret in value for secret in secrets.values())]
    assert leaked == [], f"secrets in the hook's environment: {leaked}"
    assert not set(secrets) & set(env), "not even the variables' names"
    assert env.get("LANG") == "C.UTF-8" and "PATH" in env, "the allowlisted ones are there"
    assert "REPORTSYNC_EXTRA" not in env, "only reportsync's own REPORTSYNC_* values"
    assert ping not in json.dumps(run["argv"])


# --- a hook that fails ----------------------------------------------------------------------------


def test_a_failed_hook_fails_its_report_and_runs_again_without_a_download_until_it_succeeds(
    any_site: Site,
) -> None:
    site = any_site
    fixed = site.root / "database-is-up"
    hook = recording_hook(site.root, fails_until=fixed)
    site.write_config(on_new_report=[str(hook), "{path}"])
    site.put_report(REPORT, report_xml("U1", "20261102"))

    first = site.fetch()
    assert first.exit_code == 1, first.stderr
    outcome = only_file(first)
    assert outcome["action"] == "failed" and outcome["output_path"], "archived, then failed"
    assert Path(outcome["output_path"]).exists()
    error = outcome["error"]
    assert "exited with code 3" in error["message"]
    assert "the accounting database is down" in error["message"], "its last output line"
    assert f"reportsync status --source broker --ack {REPORT}" in error["remedy"]
    assert "hook" in first.stderr and "exited with code 3" in first.stderr
    status = site.run("--json", "status")
    failures = [failure for source in status.json()["result"]["sources"]
                for failure in source["failures"]]
    assert [(f["name"], f["stage"], f["attempts"]) for f in failures] == [(REPORT, "hook", 1)]

    second = site.fetch()  # the report is archived: only its hook runs again
    assert second.exit_code == 1, second.stderr
    outcome = only_file(second)
    assert outcome["action"] == "failed" and outcome["bytes_transferred"] == 0
    assert second.result()["sources"][0]["bytes_transferred"] == 0, "no download"
    assert len(hook_runs(site.root)) == 2

    fixed.touch()
    third = site.fetch()
    assert third.exit_code == 0, third.stderr
    assert only_file(third)["action"] == "skipped"
    assert len(hook_runs(site.root)) == 3
    assert site.run("--json", "status").json()["exit_code"] == 0, "its failure is resolved"
    fourth = site.fetch()
    assert fourth.exit_code == 0 and len(hook_runs(site.root)) == 3, "a success is final"
    with Ledger(site.state_dir / "ledger.sqlite3") as ledger:
        (file_id,) = [v.file_id for v in ledger.versions("broker")]
        assert ledger.hook_state(file_id) == "succeeded"


def test_an_acknowledged_hook_failure_is_not_run_again(site: Site) -> None:
    hook = recording_hook(site.root, fails_until=site.root / "never")
    site.write_config(on_new_report=[str(hook)])
    site.put_report(REPORT, report_xml("U1", "20261102"))
    assert site.fetch().exit_code == 1
    acked = site.run("status", "--ack", REPORT)
    assert "acknowledged 1 file version(s)" in acked.stdout, acked.stderr
    after = site.fetch()
    assert after.exit_code == 0, after.stderr
    assert len(hook_runs(site.root)) == 1, "acknowledged: not retried"


def test_a_hook_that_cannot_start_and_one_killed_by_a_signal_are_failures(site: Site) -> None:
    site.write_config(on_new_report=[str(site.root / "no-such-loader"), "{path}"])
    site.put_report(REPORT, report_xml("U1", "20261102"))
    result = site.fetch()
    assert result.exit_code == 1
    assert "could not be started" in only_file(result)["error"]["message"]
    killer = site.root / "self-kill.py"
    killer.write_text(f"#!{sys.executable}\nimport os, signal\nos.kill(os.getpid(), "
                      "signal.SIGKILL)\n")
    killer.chmod(0o755)
    site.write_config(on_new_report=[str(killer)])
    again = site.fetch()
    assert again.exit_code == 1
    assert "ended by signal 9" in only_file(again)["error"]["message"]


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie nobody has reaped yet counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return True
    return state != "Z"


@pytest.mark.skipif(os.name != "posix", reason="process groups and SIGTERM are POSIX")
def test_a_hook_past_its_timeout_is_stopped_with_every_process_it_started(site: Site) -> None:
    pid_file = site.root / "grandchild.pid"
    hook = site.root / "slow-hook.py"
    hook.write_text(f"""#!{sys.executable}
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
                          "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                          "time.sleep(300)"])
with open({str(pid_file)!r}, "w") as out:
    out.write(str(child.pid))
time.sleep(300)
""")
    hook.chmod(0o755)
    site.write_config(on_new_report=[str(hook)], hook_timeout=1)
    site.put_report(REPORT, report_xml("U1", "20261102"))
    started = time.monotonic()
    result = site.fetch()
    assert time.monotonic() - started < 120, "the run did not wait for the hook's 300 s"
    assert result.exit_code == 1, result.stderr
    assert "ran past hook_timeout (1 s)" in only_file(result)["error"]["message"]
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = _alive(grandchild)
    if alive:
        os.kill(grandchild, 9)
    assert not alive, "the hook's grandchild (which ignores SIGTERM) was stopped with it"


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL of the parent")
def test_a_run_killed_while_its_hook_runs_runs_that_hook_again(site: Site) -> None:
    """A report's hook is due in the ledger (recorded with its archive) before it runs: a run
    killed during the hook (here by the hook itself, the first time) leaves it due, and the next
    run runs it, where a list of this run's new reports kept in memory would have lost it."""
    marker = site.root / "killed-once"
    hook = site.root / "kill-parent-once.py"
    hook.write_text(f"""#!{sys.executable}
import os, signal, sys
with open({str(site.root / "runs.jsonl")!r}, "a") as log:
    log.write('{{"argv": [], "env": {{}}, "stdin": "", "cwd": ""}}\\n')
if not os.path.exists({str(marker)!r}):
    open({str(marker)!r}, "w").close()
    os.kill(os.getppid(), signal.SIGKILL)
""")
    hook.chmod(0o755)
    site.write_config(on_new_report=[str(hook)])
    site.put_report(REPORT, report_xml("U1", "20261102"))
    killed = run_cli("--config", str(site.config_path), "fetch")
    assert killed.exit_code == -9, killed.stderr
    with Ledger(site.state_dir / "ledger.sqlite3") as ledger:
        (version,) = ledger.versions("broker")
        assert version.archived and ledger.hook_state(version.file_id) == "due"
    again = site.fetch()
    assert again.exit_code == 0, again.stderr
    assert only_file(again)["action"] == "skipped"
    assert len(hook_runs(site.root)) == 2, "run again, without a download"
    with Ledger(site.state_dir / "ledger.sqlite3") as ledger:
        assert ledger.hook_state(version.file_id) == "succeeded"


# --- when no hook runs ------------------------------------------------------------------------------


def test_a_dry_run_and_reports_archived_before_the_hook_was_configured_run_no_hook(
    site: Site,
) -> None:
    hook = recording_hook(site.root)
    site.write_config()
    site.put_report(REPORT, report_xml("U1", "20261102"))
    assert site.fetch().exit_code == 0  # archived while no hook was configured
    site.write_config(on_new_report=[str(hook)])
    site.put_report(OTHER, report_xml("U1", "20261103"))
    dry = site.fetch("--dry-run")
    assert dry.exit_code == 0 and hook_runs(site.root) == [], "a dry run runs none"
    real = site.fetch()
    assert real.exit_code == 0, real.stderr
    assert [run["argv"] for run in hook_runs(site.root)] == [[]], "only the new report's"
    assert hook_runs(site.root)[0]["env"]["REPORTSYNC_REMOTE_NAME"] == OTHER


def test_the_documented_hook_loads_each_new_report(site: Site) -> None:
    """docs/monitoring.md's example hook, as printed there, run by a real fetch."""
    text = (REPO_ROOT / "docs" / "monitoring.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(#!/usr/bin/env python3\n.*?)```", text, re.DOTALL)
    assert code is not None
    hook = site.root / "load-statement"
    hook.write_text(code.group(1).replace("#!/usr/bin/env python3", f"#!{sys.executable}", 1))
    hook.chmod(0o755)
    home = site.root / "home"
    home.mkdir()
    site.write_config(on_new_report=[str(hook), "{path}"])
    trades = "".join(f"<Trade symbol='SYM{i}' quantity='{i * 10}'/>" for i in range(3))
    site.put_report(REPORT, f"<FlexQueryResponse>{trades}</FlexQueryResponse>\n".encode())
    result = site.fetch(env={"HOME": str(home)})
    assert result.exit_code == 0, result.stderr
    with sqlite3.connect(home / "accounting" / "trades.sqlite3") as db:
        rows = db.execute("SELECT symbol, quantity FROM trades ORDER BY symbol").fetchall()
    assert rows == [("SYM0", 0.0), ("SYM1", 10.0), ("SYM2", 20.0)]
    assert f"loaded 3 trades from {REPORT}" in site.log_file.read_text()


# --- config and the hook runner alone ------------------------------------------------------------


SOURCE = {"protocol": "ftp", "host": "h", "username": "u", "password_env": "X",
          "download_dir": "d", "output_dir": "o"}


def test_on_new_report_and_hook_timeout_are_checked_like_every_key() -> None:
    config = parse_config({"sources": {"a": dict(SOURCE, on_new_report=["load", "{path}"],
                                                 hook_timeout=60)}})
    source = config.sources["a"]
    assert (source.on_new_report, source.hook_timeout) == (("load", "{path}"), 60)
    defaults = parse_config({"sources": {"a": SOURCE}}).sources["a"]
    assert (defaults.on_new_report, defaults.hook_timeout) == ((), 300)
    with pytest.raises(ConfigError) as caught:
        parse_config({"sources": {
            "a": dict(SOURCE, on_new_report=["load", "{pth}"], hook_timeout=0),
            "b": dict(SOURCE, on_new_report=["", "{path}"]),
            "c": dict(SOURCE, on_new_report="load {path}")}})
    lines = [str(problem) for problem in caught.value.problems]
    assert "sources.a.on_new_report: has an unknown placeholder {pth} (known: {path} {source} " \
        "{remote_name} {sha256})" in lines
    assert "sources.a.hook_timeout: must be between 1 and 86400" in lines
    assert "sources.b.on_new_report: its first item (the program to run) is empty" in lines
    assert "sources.c.on_new_report: must be a list of strings" in lines, "an argv, not a shell line"


def test_a_name_from_the_server_never_becomes_a_command(tmp_path: Path) -> None:
    """The report's name goes into one argv item as it is: no shell splits or expands it."""
    hook = recording_hook(tmp_path)
    report = NewReport(source="s", remote_name="x; touch pwned; $(id).pgp",
                       path=tmp_path / "x; touch pwned", sha256="ab" * 32)
    assert hook_argv(["{remote_name}"], report) == ["x; touch pwned; $(id).pgp"]
    result = run_hook([str(hook), "{remote_name}"], report, timeout=30)
    assert result.ok, result.problem
    assert hook_runs(tmp_path)[0]["argv"] == ["x; touch pwned; $(id).pgp"]
    assert not (tmp_path / "pwned").exists()
