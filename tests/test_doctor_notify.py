"""doctor's notification checks against real receivers: the HTTP server for healthchecks pings
and Apprise ``json://`` webhooks, the SMTP server (aiosmtpd) for Apprise ``mailto://``; the
source is the real FTP server, the keys the real gpg's.

Without ``--notify-test`` a receiver is only connected to, never sent anything; with it each
channel gets one test message and each outcome is a finding. No URL appears in any output.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.servers import LocalServer, free_port
from tests.servers.http_receiver import HttpReceiver
from tests.servers.smtp_receiver import SmtpReceiver, apprise_mailto_url
from tests.support import CliResult, PgpIdentity
from tests.test_notify import Site, private_file

HC_TOKEN = "hc-check-token-3141"


@pytest.fixture
def site(tmp_path: Path, pgp_identity: PgpIdentity, ftp_server: LocalServer) -> Site:
    return Site(tmp_path, pgp_identity, ftp_server)


def notify_findings(result: CliResult) -> list[dict[str, Any]]:
    findings: list[dict[str, Any]] = result.json()["result"]["findings"]
    return [finding for finding in findings if finding["scope"] == "notify"]


def ids(result: CliResult) -> list[tuple[str, str]]:
    return [(finding["status"], finding["id"]) for finding in notify_findings(result)]


def channels(site: Site, http_receiver: HttpReceiver, smtp_receiver: SmtpReceiver,
             *extra: str) -> tuple[dict[str, str], list[str]]:
    """The environment of a [notify] with a healthchecks check, a JSON webhook and mail (and
    ``extra`` Apprise URLs), and every secret in it."""
    hc = http_receiver.ping_url(HC_TOKEN)
    urls = [http_receiver.apprise_json_url("/hooks/json-token-2718"),
            apprise_mailto_url(smtp_receiver, format="text", name="mail-token-1618"), *extra]
    site.write_config(notify={"healthchecks_url_env": "RS_HC", "urls_env": "RS_URLS"})
    return {"RS_HC": hc, "RS_URLS": " ".join(urls)}, [hc, *urls, HC_TOKEN, "json-token-2718"]


def assert_no_secret(result: CliResult, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in result.stdout and secret not in result.stderr


def test_doctor_checks_each_receiver_without_sending_anything(
        site: Site, http_receiver: HttpReceiver, smtp_receiver: SmtpReceiver) -> None:
    dead = http_receiver.apprise_json_url("/x").replace(str(http_receiver.port),
                                                        str(free_port()))
    env, secrets = channels(site, http_receiver, smtp_receiver, dead)

    result = site.run("--json", "doctor", env=env)

    assert result.exit_code == 0, result.stdout + result.stderr
    assert ids(result) == [("PASS", "notify.ok"), ("PASS", "notify.reachable"),
                           ("PASS", "notify.reachable"), ("PASS", "notify.reachable"),
                           ("WARN", "notify.unreachable")]
    found = notify_findings(result)
    assert "a healthchecks check, 3 Apprise URL(s) for fail, warn" in found[0]["finding"]
    assert f"127.0.0.1:{http_receiver.port} accepts connections" in found[1]["finding"]
    assert "Apprise URL 1 of 3 (json://)" in found[2]["finding"]
    assert f"127.0.0.1:{smtp_receiver.port}" in found[3]["finding"], "the mail server is named"
    assert "Apprise URL 3 of 3 (json://): cannot connect" in found[4]["finding"]
    assert "refused" in found[4]["finding"] and "--notify-test" in found[4]["remedy"]
    assert http_receiver.requests == [], "a request to a ping URL is a ping: none was made"
    assert smtp_receiver.messages == []
    assert_no_secret(result, secrets)
    bundle = site.root / "support.zip"
    text = site.run("doctor", "--bundle", str(bundle), env=env)
    assert "\nnotify\n" in text.stdout and "WARN" in text.stdout
    assert_no_secret(text, secrets)
    with zipfile.ZipFile(bundle) as archive:
        members = {name: archive.read(name).decode("utf-8") for name in archive.namelist()}
    assert "notify.unreachable" in members["findings.json"]
    for name, content in members.items():
        assert not [secret for secret in secrets if secret in content], name


def test_notify_test_sends_one_message_through_every_channel_and_reports_each(
        site: Site, http_receiver: HttpReceiver, smtp_receiver: SmtpReceiver) -> None:
    env, secrets = channels(site, http_receiver, smtp_receiver)

    result = site.run("--json", "doctor", "--notify-test", env=env)

    assert result.exit_code == 0, result.stdout + result.stderr
    assert ids(result)[-3:] == [("PASS", "notify-test.sent")] * 3
    assert http_receiver.ping_events(env["RS_HC"]) == ["log"], \
        "a /log event: the check's state (and its 'no success' timer) is left alone"
    (hook,) = http_receiver.requests_to("/hooks/json-token-2718")
    assert "test notification" in hook.json()["title"] and hook.json()["type"] == "info"
    (mail,) = smtp_receiver.wait_for(1)
    assert "test notification" in mail.subject and "--notify-test" in mail.body
    assert_no_secret(result, secrets)

    http_receiver.clear()
    http_receiver.respond("/hooks", status=500)
    failing = site.run("--json", "doctor", "--notify-test", env=env)
    assert failing.exit_code == 1, "a channel that refuses the test message is a FAIL"
    failed = [f for f in notify_findings(failing) if f["id"] == "notify-test.failed"]
    assert len(failed) == 1 and "URL 1 of 2 (json://)" in failed[0]["finding"]
    assert "notify.urls_env" in failed[0]["remedy"]
    assert_no_secret(failing, secrets)


def test_a_setup_fetch_would_refuse_fails_and_none_is_said_as_such(site: Site) -> None:
    urls = private_file(site.root / "notify.urls", "json://127.0.0.1:9/hook-token-99\n",
                        mode=0o644)
    site.write_config(notify={"urls_file": str(urls)})
    refused = site.run("--json", "doctor")
    assert refused.exit_code == 1
    assert ids(refused) == [("FAIL", "notify.unusable")]
    finding = notify_findings(refused)[0]
    assert "notify.urls_file" in finding["finding"] and "exit code 2" in finding["finding"]
    assert "hook-token-99" not in refused.stdout + refused.stderr

    site.write_config()
    plain = site.run("--json", "doctor", "--notify-test")
    assert ids(plain) == [("PASS", "notify.none")]
    assert "nothing to send" in notify_findings(plain)[0]["finding"]
