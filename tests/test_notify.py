"""Monitoring of ``fetch`` against real receivers: healthchecks pings and Apprise ``json://``
webhooks to a real HTTP server, Apprise ``mailto://`` mail to a real SMTP server (aiosmtpd), the
metrics file read back with prometheus_client's text parser; the fetch itself against a real FTP
server and the real gpg, through the real CLI (in-process).
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import stat
import threading
import time
import zipfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from reportsync.config import (
    ConfigError,
    Secret,
    parse_config,
    secret_values,
    split_urls,
    starter_config,
)
from reportsync.config.tomlio import tomllib
from reportsync.expiry import PGP, SSH_CERTIFICATE, CredentialExpiry
from reportsync.lock import LockState, RunLock, lock_state
from reportsync.notify.events import RunOutcome
from reportsync.notify.healthchecks import BODY_LIMIT, PingPolicy, ping, ping_url
from reportsync.notify.metrics import collect, metrics_text
from reportsync.render.notify import ping_body
from tests.servers import LocalServer, free_port
from tests.servers.http_receiver import HttpReceiver
from tests.servers.smtp_receiver import SmtpReceiver, apprise_mailto_url
from tests.support import CliResult, PgpIdentity, run_cli_inprocess, write_config
from tests.test_fetch_e2e import Workspace, report_xml

HOST = socket.gethostname()


class Site(Workspace):
    """A fetch workspace (state dir, folders, a real FTP server) with a ``[notify]`` table."""

    def write_config(self, source: dict[str, Any] | None = None, **overrides: Any) -> Path:
        notify = overrides.pop("notify", None)
        table = dict(source if source is not None else self.server.source)
        table.update({"download_dir": str(self.download_dir), "output_dir": str(self.output_dir),
                      "include": ["*.pgp", "*.xml"], "timeout": 5, "retries": 0})
        table.update(overrides)
        document: dict[str, Any] = {
            "settings": {"state_dir": str(self.state_dir), "gnupg_home": str(self.identity.home)},
            "sources": {"broker": table},
        }
        if notify is not None:
            document["notify"] = notify
        return write_config(self.config_path, document)

    @property
    def log_file(self) -> Path:
        return self.state_dir / "logs" / "reportsync.log"

    @property
    def metrics_file(self) -> Path:
        return self.root / "textfile" / "reportsync.prom"

    def run(self, *args: str, env: dict[str, str] | None = None) -> CliResult:
        return run_cli_inprocess("--config", str(self.config_path), *args, env=env)


@pytest.fixture
def site(tmp_path: Path, pgp_identity: PgpIdentity, ftp_server: LocalServer) -> Site:
    workspace = Site(tmp_path, pgp_identity, ftp_server)
    (tmp_path / "textfile").mkdir()
    return workspace


def private_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def metrics(path: Path) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Family name → (sorted labels → value), parsed with Prometheus' own text parser."""
    parsed: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(path.read_text(encoding="utf-8")):
        assert family.type == "gauge", family.name
        for sample in family.samples:
            parsed.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return parsed


BROKER = (("source", "broker"),)


# --- the config --------------------------------------------------------------------------------


def test_notify_section_loads_with_its_defaults_and_urls_split(tmp_path: Path) -> None:
    urls = private_file(tmp_path / "notify.urls",
                        "# mail and chat\njson://127.0.0.1:9/a, mailto://127.0.0.1:25?to=a@x.example"
                        ",b@x.example\n\nslack://T0/B0/C0\n")
    config = parse_config({
        "sources": {"a": {"protocol": "ftp", "host": "h", "username": "u", "password_env": "X",
                          "download_dir": "d", "output_dir": "o"}},
        "notify": {"healthchecks_url_env": "RS_HC", "urls_file": str(urls),
                   "metrics_file": str(tmp_path / "m.prom")},
    }, environ={"RS_HC": "https://hc.example/ping/hc-token-1"})
    notify = config.notify
    assert notify.on == ("fail", "warn") and notify.metrics_file == tmp_path / "m.prom"
    assert notify.healthchecks_url.env == "RS_HC" and notify.urls.file == urls
    resolved = notify.urls.resolve()
    assert resolved is not None
    # a comma inside a URL (mailto's list of recipients) stays in its URL
    assert split_urls(resolved.reveal()) == [
        "json://127.0.0.1:9/a", "mailto://127.0.0.1:25?to=a@x.example,b@x.example",
        "slack://T0/B0/C0"]
    # every URL is a secret of its own, so one printed alone is scrubbed too
    assert {"https://hc.example/ping/hc-token-1", "json://127.0.0.1:9/a",
            "slack://T0/B0/C0"} <= set(secret_values(config))


def test_notify_keys_are_checked_like_every_key(tmp_path: Path) -> None:
    source = {"protocol": "ftp", "host": "h", "username": "u", "password_env": "X",
              "download_dir": "d", "output_dir": "o"}
    with pytest.raises(ConfigError) as caught:
        parse_config({"sources": {"a": source},
                      "notify": {"on": ["fail", "sometimes"], "urls_env": "A", "urls_file": "f",
                                 "metrics_file": str(tmp_path), "healthchecks_url": "x"}},
                     file_is_private=False)
    lines = [str(problem) for problem in caught.value.problems]
    assert "notify.on: may hold fail, warn, new, success, not 'sometimes'" in lines
    assert "notify.urls: set only one of notify.urls_env, notify.urls_file" in lines
    assert f"notify.metrics_file: {tmp_path} is a folder; name the file to write" in lines
    assert any(line.startswith("notify.healthchecks_url: An inline ping URL is accepted only if")
               for line in lines), lines
    assert not any(line.rsplit(" ", 1)[-1] == "x" for line in lines), "no URL in a message"


def test_init_writes_notify_commented_out_with_examples_that_load() -> None:
    text = starter_config("broker")
    assert "\n# [notify]\n" in text and "\n[notify]\n" not in text
    assert '# healthchecks_url_env = "REPORTSYNC_HC_URL"' in text
    assert '# metrics_file = "/var/lib/prometheus/node-exporter/reportsync.prom"' in text
    assert parse_config(tomllib.loads(text)).notify.configured is False
    # uncommenting the section and its lines that show an example gives a working [notify]
    lines = text.splitlines()
    start = lines.index("# [notify]")
    enabled = lines[:start] + [
        line[2:] for line in lines[start:]
        if line == "# [notify]" or (line.startswith("# ") and " = " in line
                                    and '= ""' not in line)]
    notify = parse_config(tomllib.loads("\n".join(enabled))).notify
    assert notify.configured and notify.healthchecks_url.env == "REPORTSYNC_HC_URL"
    assert notify.urls.file is not None and notify.urls.file.name == "notify.urls"
    assert notify.on == ("fail", "warn")


def test_a_notify_secret_file_others_can_read_stops_the_run_with_exit_2(
        site: Site, http_receiver: HttpReceiver) -> None:
    site.put_report("U1.Activity.20261102.xml.pgp", report_xml("U1", "20261102"))
    urls = private_file(site.root / "notify.urls", http_receiver.apprise_json_url("/hook") + "\n",
                        mode=0o644)
    site.write_config(notify={"urls_file": str(urls), "on": ["fail", "warn", "new", "success"]})

    result = site.fetch()

    assert result.exit_code == 2, result.stderr
    assert "notify.urls_file: Permissions 0644" in result.stderr and "chmod 600" in result.stderr
    assert not site.output_dir.exists(), "nothing fetched"
    assert http_receiver.requests == [], "nothing sent"
    ping_file = private_file(site.root / "hc.url", http_receiver.ping_url(), mode=0o640)
    site.write_config(notify={"healthchecks_url_file": str(ping_file)})
    again = site.fetch()
    assert again.exit_code == 2 and "notify.healthchecks_url_file: Permissions 0640" in \
        again.stderr
    assert http_receiver.requests == []


def test_a_url_that_cannot_be_used_is_exit_2_naming_the_key_not_the_url(
        site: Site, http_receiver: HttpReceiver) -> None:
    good = http_receiver.apprise_json_url("/hook/good-token-77")
    site.write_config(notify={"urls_env": "RS_URLS"})
    result = site.fetch(env={"RS_URLS": f"{good} nosuchscheme://bad-token-88/x"})
    assert result.exit_code == 2
    assert "notify.urls_env: URL 2 of 2 (nosuchscheme://) is not one Apprise can send to" in \
        result.stderr
    assert "good-token-77" not in result.stderr + result.stdout
    assert "bad-token-88" not in result.stderr + result.stdout
    site.write_config(notify={"healthchecks_url_env": "RS_HC"})
    ftp_ping = site.fetch(env={"RS_HC": "ftp://hc.example/ping-token-99"})
    assert ftp_ping.exit_code == 2 and "notify.healthchecks_url_env: is not an http:// or " \
        "https:// URL" in ftp_ping.stderr
    assert "ping-token-99" not in ftp_ping.stderr
    unset = site.fetch()
    assert unset.exit_code == 2 and "environment variable RS_HC is not set" in unset.stderr
    assert http_receiver.requests == []


# --- healthchecks pings ------------------------------------------------------------------------


def test_pings_start_then_success_with_the_summary_and_this_runs_log(
        site: Site, http_receiver: HttpReceiver) -> None:
    check = http_receiver.ping_url()
    site.write_config(notify={"healthchecks_url_env": "RS_HC"})
    site.put_report("U1.Activity.20261101.xml.pgp", report_xml("U1", "20261101"))
    first = site.fetch(env={"RS_HC": check})
    assert first.exit_code == 0, first.stderr
    http_receiver.clear()
    site.put_report("U1.Activity.20261102.xml.pgp", report_xml("U1", "20261102"))

    result = site.fetch(env={"RS_HC": check + "/"})  # a trailing slash is the same check

    assert result.exit_code == 0, result.stderr
    assert http_receiver.ping_events(check) == ["start", "success"]
    start, success = http_receiver.requests
    assert start.method == success.method == "POST"
    assert start.query["rid"] == success.query["rid"], "healthchecks pairs them by run id"
    assert f"reportsync fetch started on {HOST}: broker" in start.text()
    body = success.text()
    assert body.startswith(f"reportsync fetch on {HOST}: exit 0")
    assert "broker: 1 archived, 1 already archived" in body
    assert "archived 'U1.Activity.20261102.xml.pgp'" in body, "the log lines of this run"
    assert "U1.Activity.20261101" not in body, "not the lines of an earlier run"
    assert "U1.Activity.20261101" in site.log_file.read_text(), "(which the log file holds)"
    assert len(success.body) <= BODY_LIMIT
    assert [d["target"] for d in result.result()["monitoring"]] == [
        "healthchecks ping 'start'", "healthchecks ping 'success'"]
    assert result.stderr == ""


def test_a_failed_run_pings_fail_with_the_remedy(
        site: Site, http_receiver: HttpReceiver, other_pgp_identity: PgpIdentity) -> None:
    check = http_receiver.ping_url()
    site.write_config(notify={"healthchecks_url_env": "RS_HC"})
    site.put("U1.Activity.20261102.xml.pgp", other_pgp_identity.encrypt(b"<x/>"))

    result = site.fetch(env={"RS_HC": check})

    assert result.exit_code == 1
    assert http_receiver.ping_events(check) == ["start", "fail"]
    body = http_receiver.requests[-1].text()
    assert f"reportsync fetch on {HOST}: exit 1" in body
    assert "U1.Activity.20261102.xml.pgp" in body and "what to do:" in body

    http_receiver.clear()
    site.write_config(notify={"healthchecks_url_env": "RS_HC"}, port=free_port())  # nobody there
    down = site.fetch(env={"RS_HC": check})
    assert down.exit_code == 3
    assert http_receiver.ping_events(check) == ["start", "fail"]
    assert "cannot connect" in http_receiver.requests[-1].text().lower() or \
        "refused" in http_receiver.requests[-1].text().lower()


def test_a_dry_run_and_a_run_that_finds_the_lock_held_send_and_write_nothing(
        site: Site, http_receiver: HttpReceiver) -> None:
    site.write_config(notify={"healthchecks_url_env": "RS_HC", "urls_env": "RS_URLS",
                              "on": ["fail", "warn", "new", "success"],
                              "metrics_file": str(site.metrics_file)})
    site.put_report("U1.Activity.20261102.xml.pgp", report_xml("U1", "20261102"))
    env = {"RS_HC": http_receiver.ping_url(), "RS_URLS": http_receiver.apprise_json_url("/n")}

    dry = site.fetch("--dry-run", env=env)
    assert dry.exit_code == 0 and dry.result()["monitoring"] == []
    with RunLock(site.state_dir, "fetch"):
        locked = site.fetch(env=env)
    assert locked.exit_code == 75, locked.stderr

    assert http_receiver.requests == []
    assert not site.metrics_file.exists()


def test_a_dead_receiver_never_changes_the_exit_code(
        site: Site, http_receiver: HttpReceiver) -> None:
    check = http_receiver.ping_url()
    http_receiver.respond(check.split(str(http_receiver.port), 1)[1], status=503)
    site.write_config(notify={"healthchecks_url_env": "RS_HC"})
    site.put_report("U1.Activity.20261102.xml.pgp", report_xml("U1", "20261102"))

    result = site.fetch(env={"RS_HC": check})

    assert result.exit_code == 0
    assert http_receiver.ping_events(check) == ["start"] * 3 + ["success"] * 3, "3 tries each"
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: monitoring: healthchecks ping '{event}' failed after 3 tries: the receiver "
        "answered HTTP 503; the run's exit code is unchanged; check notify.healthchecks_url_env "
        "and the receiver (docs/monitoring.md)" for event in ("start", "success")]
    assert check not in result.stderr + result.stdout
    assert site.outputs(), "the fetch itself went on"


def test_the_start_ping_is_sent_only_once_the_run_holds_the_lock(
        site: Site, http_receiver: HttpReceiver) -> None:
    """A run that checked the lock, pinged /start and only then took the lock could lose it to
    a run starting in between, and exit 75 after telling healthchecks it started. The receiver
    holds the /start ping's answer while the test looks: the run already holds the lock."""
    check = http_receiver.ping_url()
    http_receiver.respond(urlsplit(check).path + "/start", delay=2.0)
    site.write_config(notify={"healthchecks_url_env": "RS_HC"})
    site.put_report("U1.Activity.20261101.xml.pgp", report_xml("U1", "20261101"))
    results: list[CliResult] = []
    run = threading.Thread(target=lambda: results.append(site.fetch(env={"RS_HC": check})))
    run.start()
    try:
        (start,) = http_receiver.wait_for(1, timeout=60)
        held_while_starting = lock_state(site.state_dir) is LockState.HELD
    finally:
        run.join(120)
    assert start.path.endswith("/start")
    assert held_while_starting, "/start was sent before the run took the lock"
    assert results[0].exit_code == 0, results[0].stderr
    assert http_receiver.ping_events(check) == ["start", "success"]


def test_a_hung_or_dropping_receiver_is_given_up_within_the_deadline(
        http_receiver: HttpReceiver) -> None:
    check = http_receiver.ping_url()
    path = check.split(str(http_receiver.port), 1)[1]
    http_receiver.respond(path + "/start", delay=30)
    http_receiver.respond(path + "/fail", close=True)
    policy = PingPolicy(attempts=3, timeout=0.5, deadline=1.5, backoff=0.1)
    url = Secret(check)

    hung = ping(url, "start", "body", run_id="r", key="notify.healthchecks_url", policy=policy)
    dropped = ping(url, "fail", "body", run_id="r", key="notify.healthchecks_url", policy=policy)
    recovered = ping(url, "success", "body", run_id="r", key="notify.healthchecks_url",
                     policy=policy)

    assert not hung.ok and "no answer within" in hung.detail and 1 <= hung.tries <= 3
    assert not dropped.ok and dropped.tries == 3 and "broke" in dropped.detail
    assert recovered.ok and recovered.tries == 1
    events = http_receiver.ping_events(check)
    assert events.count("fail") == 3 and 1 <= events.count("start") <= 3


def test_a_ping_url_keeps_its_query_and_gets_the_run_id() -> None:
    assert ping_url("https://hc.example/ping/key/slug?create=1", "fail", "r1") == \
        "https://hc.example/ping/key/slug/fail?create=1&rid=r1"
    assert ping_url("https://hc.example/abc", "success", "r2") == "https://hc.example/abc?rid=r2"


def test_the_ping_body_keeps_the_newest_log_lines_within_100_kb() -> None:
    lines = [f"2026-12-01 INFO reportsync: line {i:06d} " + "x" * 80 for i in range(5000)]
    body = ping_body(["reportsync fetch on h: exit 0", "broker: 1 archived"], lines, BODY_LIMIT)
    assert len(body.encode("utf-8")) <= BODY_LIMIT
    assert body.startswith("reportsync fetch on h: exit 0\nbroker: 1 archived\n")
    assert body.rstrip().endswith("line 004999 " + "x" * 80), "the newest line is kept"
    assert "line 000000" not in body
    assert ping_body(["s"], [], BODY_LIMIT) == "s\n"


# --- Apprise notifications ---------------------------------------------------------------------


def test_a_failure_notifies_once_naming_host_source_files_and_remedy(
        site: Site, http_receiver: HttpReceiver, other_pgp_identity: PgpIdentity) -> None:
    site.write_config(notify={"urls_env": "RS_URLS"})  # on = ["fail", "warn"]
    site.put("U1.Activity.20261102.xml.pgp", other_pgp_identity.encrypt(b"<x/>"))
    site.put_report("U1.Activity.20261103.xml.pgp", report_xml("U1", "20261103"))

    result = site.fetch(env={"RS_URLS": http_receiver.apprise_json_url("/hooks/ops")})

    assert result.exit_code == 1
    (request,) = http_receiver.wait_for(1)
    assert request.path == "/hooks/ops"
    payload = request.json()
    assert payload["type"] == "failure"
    assert payload["title"] == f"reportsync on {HOST}: FAILED (exit 1): broker"
    message = payload["message"]
    assert message.startswith("FAILED:\nfailed: source 'broker', U1.Activity.20261102.xml.pgp:")
    assert "what to do:" in message
    assert "SUMMARY:" in message and "broker: 1 archived" in message
    assert "NEW REPORTS" not in message, "new is not in `on`"
    assert result.result()["monitoring"][0]["ok"] is True


def test_new_reports_are_mailed_listing_them(site: Site, smtp_receiver: SmtpReceiver) -> None:
    urls = private_file(site.root / "notify.urls",
                        apprise_mailto_url(smtp_receiver, format="text") + "\n")
    site.write_config(notify={"urls_file": str(urls), "on": ["new"]})
    site.put_report("U1.Activity.20261102.xml.pgp", report_xml("U1", "20261102"))
    site.put_report("U2.Activity.20261102.xml.pgp", report_xml("U2", "20261102"))

    result = site.fetch()

    assert result.exit_code == 0, result.stderr
    (mail,) = smtp_receiver.wait_for(1)
    assert mail.subject == f"reportsync on {HOST}: 2 new reports: broker"
    assert "NEW REPORTS (2):" in mail.body
    for name in ("U1.Activity.20261102.xml", "U2.Activity.20261102.xml"):
        assert f"broker: {site.output_dir / name}" in mail.body
    site.put_report("U3.Activity.20261103.xml.pgp", report_xml("U3", "20261103"))
    assert site.fetch().exit_code == 0
    assert len(smtp_receiver.wait_for(2)) == 2 and "U3.Activity" in smtp_receiver.messages[1].body
    assert site.fetch().exit_code == 0  # nothing new: no mail
    time.sleep(0.5)
    assert len(smtp_receiver.messages) == 2


def test_nothing_is_sent_when_no_configured_event_happened(
        site: Site, http_receiver: HttpReceiver) -> None:
    site.write_config(notify={"urls_env": "RS_URLS"})  # fail, warn: a clean run is neither
    site.put_report("U1.Activity.20261102.xml.pgp", report_xml("U1", "20261102"))
    result = site.fetch(env={"RS_URLS": http_receiver.apprise_json_url("/n")})
    assert result.exit_code == 0 and result.result()["monitoring"] == []
    assert http_receiver.requests == []


def test_warnings_and_success_in_one_message(site: Site, http_receiver: HttpReceiver) -> None:
    # the newest file is 3 days old and the feed should deliver daily: a stale feed
    site.write_config(notify={"urls_env": "RS_URLS", "on": ["warn", "success"]},
                      expect_every_days=1)
    site.put_report("U1.Activity.20261102.xml.pgp", report_xml("U1", "20261102"), age_days=3)
    second = http_receiver.apprise_json_url("/second")

    result = site.fetch(env={"RS_URLS": f"{http_receiver.apprise_json_url('/first')}, {second}"})

    assert result.exit_code == 0
    requests = http_receiver.wait_for(2)
    assert sorted(request.path for request in requests) == ["/first", "/second"]
    payload = requests[0].json()
    assert payload["type"] == "warning"
    assert payload["title"] == f"reportsync on {HOST}: needs attention: broker"
    assert "NEEDS ATTENTION:\nwarning: source 'broker':" in payload["message"]
    assert "stale" in payload["message"] or "newest file" in payload["message"]


def test_a_dead_apprise_receiver_is_a_warning_not_an_exit_code(
        site: Site, http_receiver: HttpReceiver) -> None:
    http_receiver.respond("/hook", status=500)
    site.write_config(notify={"urls_env": "RS_URLS", "on": ["success"]})
    site.put_report("U1.Activity.20261102.xml.pgp", report_xml("U1", "20261102"))

    result = site.fetch(env={"RS_URLS": http_receiver.apprise_json_url("/hook/t")})

    assert result.exit_code == 0
    assert len(http_receiver.requests_to("/hook/t")) == 2, "tried twice"
    assert ("warning: monitoring: Apprise notification to URL 1 of 1 (json://) failed after 2 "
            "tries: the service refused it or could not be reached; the run's exit code is "
            "unchanged; check notify.urls_env") in result.stderr


# --- the metrics file --------------------------------------------------------------------------


def test_metrics_after_a_success_then_a_failure_keep_the_last_success_from_the_ledger(
        site: Site) -> None:
    site.write_config(notify={"metrics_file": str(site.metrics_file)})
    site.put_report("U1.Activity.20261102.xml.pgp", report_xml("U1", "20261102"))
    before = time.time()
    assert site.fetch().exit_code == 0
    first = metrics(site.metrics_file)
    assert stat.S_IMODE(site.metrics_file.stat().st_mode) == 0o644
    assert sorted(path.name for path in site.metrics_file.parent.iterdir()) == [
        "reportsync.prom"], "no temp file left"
    assert first["reportsync_last_run_exit_code"] == {BROKER: 0}
    assert first["reportsync_last_run_archived_files"] == {BROKER: 1}
    assert first["reportsync_last_run_transferred_bytes"][BROKER] > 0
    assert first["reportsync_archived_reports"] == {BROKER: 1}
    assert first["reportsync_failing_files"] == {BROKER: 0}
    assert first["reportsync_at_risk_files"] == {BROKER: 0}
    assert first["reportsync_last_run_duration_seconds"][BROKER] >= 0
    success = first["reportsync_last_success_timestamp_seconds"][BROKER]
    assert before <= success == first["reportsync_last_run_timestamp_seconds"][BROKER]

    site.metrics_file.unlink()  # the last success comes from the ledger, not this file
    site.write_config(notify={"metrics_file": str(site.metrics_file)}, port=free_port())
    assert site.fetch().exit_code == 3
    second = metrics(site.metrics_file)
    assert second["reportsync_last_run_exit_code"] == {BROKER: 3}
    assert second["reportsync_last_success_timestamp_seconds"] == {BROKER: success}
    assert second["reportsync_last_run_timestamp_seconds"][BROKER] > success
    assert second["reportsync_last_run_archived_files"] == {BROKER: 0}
    assert second["reportsync_archived_reports"] == {BROKER: 1}


def test_metrics_count_failing_and_at_risk_files_and_the_key_expiry(
        site: Site, other_pgp_identity: PgpIdentity) -> None:
    expiring = site.identity.gpg().gen_key(site.identity.gpg().gen_key_input(
        key_type="EDDSA", key_curve="ed25519", subkey_type="ECDH", subkey_curve="cv25519",
        name_email="expiring@example.com", expire_date="400d", no_protection=True))
    assert expiring.fingerprint
    site.write_config(notify={"metrics_file": str(site.metrics_file)})
    site.put("U1.Activity.20260820.xml.pgp", other_pgp_identity.encrypt(b"<x/>"), age_days=95)
    site.put_report("U1.Activity.20261102.xml.pgp", report_xml("U1", "20261102"))

    assert site.fetch().exit_code == 1
    found = metrics(site.metrics_file)
    assert found["reportsync_failing_files"] == {BROKER: 1}
    assert found["reportsync_at_risk_files"] == {BROKER: 1}
    assert found["reportsync_last_success_timestamp_seconds"] == {BROKER: 0}, "never yet"
    (labels, ends), = found["reportsync_key_expiry_timestamp_seconds"].items()
    assert labels == (("kind", "pgp"),)
    assert abs(ends - (time.time() + 400 * 86400)) < 2 * 86400


def test_a_missing_metrics_folder_is_a_warning(site: Site) -> None:
    missing = site.root / "nope" / "reportsync.prom"
    site.write_config(notify={"metrics_file": str(missing)})
    result = site.fetch()
    assert result.exit_code == 0
    assert f"warning: monitoring: metrics file {missing} failed after 1 try: its folder " \
        f"{missing.parent} does not exist" in result.stderr
    assert not missing.parent.exists(), "not created"


def test_metrics_text_parses_with_labels_for_every_source_and_certificate() -> None:
    from reportsync.status import SourceStatus

    def source_status(name: str) -> SourceStatus:
        return SourceStatus(name=name, last_run={"finished_at": 1700000000.5, "exit_code": 4,
                                                 "counts": {"archived": 2}},
                            archived=5, failures=[], notices=[], purged=0,
                            last_success=1690000000.0, in_archive=4)

    outcome = RunOutcome(host="h", sources=("a",), error=ConfigError(["boom"]),
                         finished_at=1800000000.25)
    expiries = [CredentialExpiry(PGP, "F", 1900000000.0, 300, "f", "r"),
                CredentialExpiry(SSH_CERTIFICATE, "/c", 1850000000.0, 20, "f", "r", source="b")]
    gauges = collect(outcome, ["a", 'b"x'], 1.5,
                     {"a": source_status("a"), 'b"x': source_status('b"x')}, expiries)
    path_text = metrics_text(gauges)
    families = {family.name: family for family in text_string_to_metric_families(path_text)}
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in families.values() for sample in family.samples}
    assert samples[("reportsync_last_run_exit_code", (("source", "a"),))] == 2
    assert samples[("reportsync_last_run_timestamp_seconds", (("source", "a"),))] == 1800000000.25
    assert samples[("reportsync_last_run_exit_code", (("source", 'b"x'),))] == 4
    assert samples[("reportsync_last_run_archived_files", (("source", 'b"x'),))] == 2
    assert ("reportsync_last_run_duration_seconds", (("source", 'b"x'),)) not in samples, \
        "only the sources this run fetched have a duration"
    assert samples[("reportsync_archived_reports", (("source", "a"),))] == 4
    assert samples[("reportsync_key_expiry_timestamp_seconds", (("kind", "pgp"),))] == 1.9e9
    assert samples[("reportsync_key_expiry_timestamp_seconds",
                    (("kind", "ssh-certificate"), ("source", "b")))] == 1.85e9
    assert all(family.documentation for family in families.values())


# --- secrets -----------------------------------------------------------------------------------


RECEIVER_LOGGERS = ("mail.log",)  # aiosmtpd, which runs in this process


class Recording(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(RECEIVER_LOGGERS):
            return  # the receiving side (the test's SMTP server) logs what it received
        self.messages.append(f"{record.name} {record.getMessage()}")


@pytest.fixture
def root_records() -> Iterator[Recording]:
    """Every record that reaches the root logger (an embedding program's handlers)."""
    handler = Recording()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


def test_the_urls_reach_no_output_log_metrics_json_or_bundle(
        site: Site, http_receiver: HttpReceiver, smtp_receiver: SmtpReceiver,
        root_records: Recording) -> None:
    check = http_receiver.ping_url("hc-check-token-4242")
    hook = http_receiver.apprise_json_url("/hook/apprise-token-5151")
    mail = apprise_mailto_url(smtp_receiver, format="text", name="mail-token-6161")
    http_receiver.respond("/hook", status=500)  # a failing receiver: warnings are printed
    urls = private_file(site.root / "notify.urls", f"{hook}\n{mail}\n")
    site.write_config(notify={"healthchecks_url": check, "urls_file": str(urls),
                              "on": ["fail", "warn", "new", "success"],
                              "metrics_file": str(site.metrics_file)})
    site.put_report("U1.Activity.20261102.xml.pgp", report_xml("U1", "20261102"))

    fetched = site.run("-vv", "--json", "fetch")
    assert fetched.exit_code == 0, fetched.stderr
    assert "warning: monitoring: Apprise notification to URL 1 of 2 (json://)" in fetched.stderr
    assert http_receiver.ping_events(check) == ["start", "success"]
    assert smtp_receiver.wait_for(1)
    status = site.run("--json", "status")
    bundle = site.root / "support.zip"
    doctor = site.run("--json", "doctor", "--bundle", str(bundle))
    assert bundle.exists(), doctor.stderr
    with zipfile.ZipFile(bundle) as archive:
        members = {name: archive.read(name).decode("utf-8") for name in archive.namelist()}
    assert 'healthchecks_url = "<redacted>"' in members["config.toml"]

    seen = {"fetch stdout": fetched.stdout, "fetch stderr": fetched.stderr,
            "status": status.stdout + status.stderr, "doctor": doctor.stdout + doctor.stderr,
            "log file": site.log_file.read_text(encoding="utf-8"),
            "metrics": site.metrics_file.read_text(encoding="utf-8"),
            "log records": "\n".join(root_records.messages),
            **{f"bundle {name}": text for name, text in members.items()}}
    for where, text in seen.items():
        for token in ("hc-check-token-4242", "apprise-token-5151", "mail-token-6161"):
            assert token not in text, f"{token} in {where}"
    assert "healthchecks ping 'success' sent" in seen["log file"]
    assert json.loads(fetched.stdout)["result"]["monitoring"][0]["ok"] is True


# --- status: the provider's window as a strip of days ------------------------------------------


class Terminal(io.StringIO):
    """A stdout that is a terminal, with the encoding it declares."""

    def __init__(self, encoding: str) -> None:
        super().__init__()
        self._encoding = encoding

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._encoding

    def isatty(self) -> bool:
        return True


def status_on(site: Site, stdout: io.StringIO) -> tuple[int, list[str]]:
    from reportsync.cli import main

    code = main(["--config", str(site.config_path), "status"], env=dict(os.environ),
                stdout=stdout, stderr=io.StringIO())
    return code, stdout.getvalue().splitlines()


def test_status_shows_the_window_day_by_day_on_a_terminal_and_in_json(
        site: Site, other_pgp_identity: PgpIdentity) -> None:
    site.write_config()
    now = time.time()
    site.put_report("U1.Activity.20261130.xml.pgp", report_xml("U1", "20261130"), age_days=1)
    site.put_report("U1.Activity.20261129.xml.pgp", report_xml("U1", "20261129"), age_days=2)
    site.put("U1.Activity.20260828.xml.pgp", other_pgp_identity.encrypt(b"<x/>"), age_days=95)
    assert site.fetch().exit_code == 1

    window = site.run("--json", "status").result()["sources"][0]["window"]

    assert (window["purge_days"], window["warn_days"]) == (100, 10)
    days = {day["date"]: day for day in window["days"]}
    assert len(window["days"]) == 100 and list(days) == sorted(days), "oldest first"

    def on(age: float) -> dict[str, Any]:
        return days[datetime.fromtimestamp(now - age * 86400).date().isoformat()]

    assert window["days"][-1]["date"] == datetime.fromtimestamp(now).date().isoformat()
    assert on(1) == {"date": on(1)["date"], "delivered": 1, "archived": 1, "failing": 0,
                     "at_risk": 0, "lost": 0}
    assert on(2)["archived"] == 1
    assert (on(95)["delivered"], on(95)["archived"], on(95)["failing"]) == (1, 0, 1)
    assert sum(day["delivered"] for day in window["days"]) == 3

    code, lines = status_on(site, Terminal("utf-8"))
    assert code == 1
    strip = [line for line in lines if line.startswith("  ") and line[2:7].count("-") == 1]
    assert len(strip) == 2, lines
    marks = "".join(line[8:].replace(" ", "") for line in strip)
    assert len(marks) == 100
    assert marks[100 - 1 - 95] == "\u2717" and marks[-2] == marks[-3] == "\u2588"
    assert set(marks) == {"\u2717", "\u2588", "\u00b7"}
    assert lines[lines.index(strip[0]) + 1].strip() == "^^^^^^^^^^ purged within 10 days"
    assert lines[-1].startswith("\u2588 archived")

    _code, ascii_lines = status_on(site, Terminal("ascii"))
    ascii_marks = "".join(line[8:].replace(" ", "") for line in ascii_lines
                          if line.startswith("  ") and line[2:7].count("-") == 1)
    assert ascii_marks == marks.replace("\u2717", "!").replace("\u2588", "#").replace("\u00b7", ".")
    assert all(line.isascii() for line in ascii_lines)
    _code, piped = status_on(site, io.StringIO())
    assert len(piped) == 1 and piped[0].startswith("broker: NEEDS ATTENTION"), "no strip in a pipe"


def test_the_schedule_brings_the_notify_variables_and_the_metrics_folder(site: Site) -> None:
    from reportsync.config import load_config
    from reportsync.schedule import secret_env_names, systemd_schedule, writable_paths

    site.write_config(notify={
        "healthchecks_url_env": "RS_HC", "urls_env": "RS_URLS",
        "metrics_file": str(site.metrics_file)})
    config = load_config(site.config_path)
    assert secret_env_names(config) == ("RS_HC", "RS_URLS")  # (the FTP password is a file)
    assert site.metrics_file.parent in writable_paths(config), "ProtectSystem=strict"
    service = systemd_schedule(config, site.config_path, program=("/usr/bin/reportsync",))
    text = service.files["reportsync.service"]
    assert "RS_HC" in text and "RS_URLS" in text
    assert str(site.metrics_file.parent) in next(line for line in text.splitlines()
                                                  if line.startswith("ReadWritePaths="))


def test_the_window_counts_each_version_once_by_what_the_retention_plan_says() -> None:
    from reportsync.config import RetentionPolicy
    from reportsync.ledger import VersionState
    from reportsync.render.ledger import strip_lines
    from reportsync.retention import Notice
    from reportsync.status import delivery_window

    now = datetime(2026, 12, 1, 12, 0).timestamp()

    def version(name: str, age_days: int, **state: Any) -> VersionState:
        fields: dict[str, Any] = {"gone_at": None, "lost_acked_at": None, "download_path": None,
                                  "download_sha256": None, "output_path": None,
                                  "output_sha256": None, "deleted": frozenset()}
        fields.update(state)
        return VersionState(file_id=age_days, source="a", name=name, size=1,
                            mtime=int(now - age_days * 86400), **fields)

    versions = [version("archived", 1, output_path="/o/a"),
                version("waiting", 2, download_path="/d/w"),  # --no-decrypt: nothing wrong
                version("failing", 3, download_path="/d/f", failing=True),
                version("risky", 93), version("lost", 50, gone_at=now),
                version("acked", 50, gone_at=now, lost_acked_at=now),
                version("purged long ago", 150)]
    notices = [Notice("at-risk", "a", "risky", 7.0, "r"), Notice("lost", "a", "lost", 50.0, "r")]
    window = delivery_window(versions, notices, RetentionPolicy(), now)

    by_age = {(datetime(2026, 12, 1).date() - day.date).days: day for day in window.days}
    assert len(window.days) == 100 and min(by_age) == 0 and max(by_age) == 99
    assert (by_age[1].delivered, by_age[1].archived) == (1, 1)
    assert (by_age[2].delivered, by_age[2].archived, by_age[2].failing) == (1, 0, 0)
    assert by_age[3].failing == 1 and by_age[93].at_risk == 1
    assert (by_age[50].delivered, by_age[50].lost) == (2, 1), "the acknowledged one is not lost"
    assert sum(day.delivered for day in window.days) == 6, "older than the window: left out"
    lines = strip_lines(window, unicode=False)
    assert lines[1:] == ["  08-24 ......!... .......... .......... .......... .........!",
                         "        ^^^^^^^^^^ purged within 10 days",
                         "  10-13 .......... .......... .......... .......... ......!+#."]
    short = delivery_window([], [], RetentionPolicy(days=7, warn_days=0), now)
    assert [line[8:] for line in strip_lines(short, unicode=False)[1:]] == ["......."]


def test_a_run_stopped_as_a_whole_pings_fail_writes_metrics_and_keeps_its_exit_code(
        site: Site, http_receiver: HttpReceiver) -> None:
    check = http_receiver.ping_url()
    http_receiver.respond(check.split(str(http_receiver.port), 1)[1] + "/fail", status=500)
    site.write_config(notify={"healthchecks_url_env": "RS_HC",
                              "metrics_file": str(site.metrics_file)})
    site.state_dir.mkdir()
    (site.state_dir / "ledger.sqlite3").write_bytes(b"not a database at all" * 100)

    result = site.fetch(env={"RS_HC": check})

    assert result.exit_code == 7, result.stderr
    assert result.json()["error"]["error"] == "LedgerDamagedError", "the error envelope, as before"
    assert http_receiver.ping_events(check) == ["start", "fail", "fail", "fail"]
    assert "is damaged or not a ledger" in http_receiver.requests[-1].text()
    lines = result.stderr.splitlines()
    assert lines[0].startswith("warning: monitoring: healthchecks ping 'fail' failed after 3 "
                               "tries: the receiver answered HTTP 500")
    assert any(line.startswith("error: ") and "damaged" in line for line in lines)
    assert metrics(site.metrics_file)["reportsync_last_run_exit_code"] == {BROKER: 7}
