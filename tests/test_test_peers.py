"""The test peers themselves: a real PostgreSQL cluster, an HTTP receiver and an SMTP receiver.

Later tests (the shared ledger, monitoring) rely on these behaving like the real thing: scram
password authentication, isolated databases, advisory locks that die with their connection,
Apprise's ``json://`` and ``mailto://`` arriving with title and body, and receivers that fail on
demand.
"""

from __future__ import annotations

import http.client
import os
import pwd
import socket
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import apprise
import psycopg
import pytest

import tests.fixtures_postgres as fixtures_postgres
from tests.servers.http_receiver import HttpReceiver
from tests.servers.postgres import (
    PostgresDatabase,
    PostgresServer,
    postgres_available,
    start_postgres,
)
from tests.servers.smtp_receiver import SmtpReceiver, apprise_mailto_url


def _post(url: str, body: bytes = b"", timeout: float = 10.0) -> int:
    request = urllib.request.Request(url, data=body, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return int(response.status)


def _notify(url: str, *, title: str, body: str) -> bool:
    notifier = apprise.Apprise()
    assert notifier.add(url), f"Apprise refused the URL {url}"
    return bool(notifier.notify(title=title, body=body, body_format=apprise.NotifyFormat.TEXT))


def _as_superuser(server: PostgresServer, database: PostgresDatabase) -> PostgresDatabase:
    return PostgresDatabase(server.host, server.port, database.dbname, server.superuser,
                            server.superuser_password)


# --- PostgreSQL ----------------------------------------------------------------------------------


def test_the_role_logs_in_over_tcp_with_its_password_and_a_wrong_one_is_refused(
        postgres_server: PostgresServer, postgres_db: PostgresDatabase) -> None:
    with postgres_db.connect() as connection:
        seen = connection.execute(
            "SELECT current_user, current_database(), host(inet_server_addr()),"
            " coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
        ).fetchone()
    assert seen == (postgres_db.user, postgres_db.dbname, "127.0.0.1", False)

    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        postgres_db.connect(password="not-" + postgres_db.password).close()
    # Over the unix socket too: no "trust" or "peer" left anywhere in pg_hba.conf.
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        postgres_db.connect(host=str(postgres_server.socket_dir), password="wrong").close()
    with postgres_db.connect(host=str(postgres_server.socket_dir)) as connection:
        assert connection.execute("SELECT current_user").fetchone() == (postgres_db.user,)

    with _as_superuser(postgres_server, postgres_db).connect() as admin:
        stored = admin.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s",
                               (postgres_db.user,)).fetchone()
        methods = {row[0] for row in admin.execute(
            "SELECT auth_method FROM pg_hba_file_rules").fetchall()}
        listen = admin.execute("SHOW listen_addresses").fetchone()
    assert stored is not None and stored[0].startswith("SCRAM-SHA-256$")
    assert methods == {"scram-sha-256"}
    assert listen == ("127.0.0.1",)


def test_the_default_reportsync_database_and_a_url_without_password(
        postgres_server: PostgresServer) -> None:
    database = postgres_server.database
    assert (database.user, database.dbname) == ("reportsync", "reportsync")
    assert postgres_server.url() == f"postgresql://reportsync@127.0.0.1:{postgres_server.port}/reportsync"
    assert postgres_server.password not in postgres_server.url()
    assert postgres_server.password not in repr(postgres_server)
    with database.connect() as connection:
        owner = connection.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        ).fetchone()
    assert owner == ("reportsync",)


def test_the_cluster_runs_as_an_unprivileged_user(postgres_server: PostgresServer) -> None:
    data_owner = postgres_server.data_dir.stat().st_uid
    postmaster_pid = int((postgres_server.data_dir / "postmaster.pid").read_text().split()[0])
    assert data_owner != 0
    assert pwd.getpwuid(data_owner).pw_name == postgres_server.os_user
    if os.geteuid() == 0:
        assert postgres_server.os_user != "root"
    proc_status = Path(f"/proc/{postmaster_pid}/status")
    if proc_status.exists():  # Linux: the running postmaster's real uid
        uid_line = next(line for line in proc_status.read_text().splitlines()
                        if line.startswith("Uid:"))
        assert int(uid_line.split()[1]) == data_owner


def test_two_fresh_databases_are_isolated(postgres_server: PostgresServer,
                                          postgres_db: PostgresDatabase) -> None:
    other = postgres_server.create_database()
    try:
        assert other.dbname != postgres_db.dbname and other.user != postgres_db.user
        with postgres_db.connect(autocommit=True) as first, other.connect(autocommit=True) as second:
            first.execute("CREATE TABLE marker (value text)")
            first.execute("INSERT INTO marker VALUES ('first')")
            with pytest.raises(psycopg.errors.UndefinedTable):
                second.execute("SELECT value FROM marker")
            # Advisory locks are per database: the same key is free in the other one.
            assert first.execute("SELECT pg_try_advisory_lock(7)").fetchone() == (True,)
            assert second.execute("SELECT pg_try_advisory_lock(7)").fetchone() == (True,)
    finally:
        postgres_server.drop_database(other)
    with postgres_db.connect() as connection:
        assert connection.execute("SELECT count(*) FROM marker").fetchone() == (1,)
    with _as_superuser(postgres_server, postgres_db).connect() as admin:
        gone = admin.execute("SELECT count(*) FROM pg_database WHERE datname = %s",
                             (other.dbname,)).fetchone()
        role_gone = admin.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s",
                                  (other.user,)).fetchone()
    assert gone == (0,) and role_gone == (0,)


def test_a_terminated_connection_releases_its_advisory_lock(
        postgres_server: PostgresServer, postgres_db: PostgresDatabase) -> None:
    holder = postgres_db.connect(autocommit=True)
    # Another host: the same database, another role, so terminating by role spares it.
    with _as_superuser(postgres_server, postgres_db).connect(autocommit=True) as other_host:
        assert holder.execute("SELECT pg_try_advisory_lock(42)").fetchone() == (True,)
        assert other_host.execute("SELECT pg_try_advisory_lock(42)").fetchone() == (False,)

        ended = postgres_server.terminate_connections(dbname=postgres_db.dbname,
                                                      user=postgres_db.user)

        assert ended == 1
        assert other_host.execute("SELECT pg_try_advisory_lock(42)").fetchone() == (True,)
        with pytest.raises(psycopg.OperationalError):
            holder.execute("SELECT 1")
    holder.close()


def test_terminate_connections_needs_a_database_or_a_role(postgres_server: PostgresServer) -> None:
    with pytest.raises(ValueError, match="database or a role"):
        postgres_server.terminate_connections()


@pytest.mark.slow
def test_a_server_of_its_own_starts_and_stop_removes_it() -> None:
    if not postgres_available():
        pytest.skip("PostgreSQL is not installed (the session fixture says so louder)")
    server = start_postgres()
    try:
        assert set(server.timings) == {"initdb", "start", "setup"}
        with server.database.connect() as connection:
            assert connection.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()
    assert not server.workdir.exists()
    with pytest.raises(psycopg.OperationalError):
        server.database.connect(connect_timeout=3).close()


def test_missing_postgres_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fixtures_postgres, "postgres_available", lambda: False)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="must run, not skip"):
        fixtures_postgres._require_postgres()
    for value in ("", "false", "0"):
        monkeypatch.setenv("CI", value)
        with pytest.raises(pytest.skip.Exception, match="apt-get install postgresql"):
            fixtures_postgres._require_postgres()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        fixtures_postgres._require_postgres()


# --- HTTP receiver -------------------------------------------------------------------------------


def test_an_apprise_json_notification_reaches_the_http_receiver(http_receiver: HttpReceiver) -> None:
    sent = _notify(http_receiver.apprise_json_url("/hooks/reportsync"),
                   title="reportsync on host1: ibkr failed", body="U123.xml failed\nrun doctor")

    assert sent
    (request,) = http_receiver.wait_for(1)
    assert (request.method, request.path) == ("POST", "/hooks/reportsync")
    assert request.headers["content-type"].startswith("application/json")
    payload = request.json()
    assert payload["title"] == "reportsync on host1: ibkr failed"
    assert payload["message"] == "U123.xml failed\nrun doctor"
    assert payload["type"] == "info"


def test_healthchecks_style_pings_are_recorded_in_order(http_receiver: HttpReceiver) -> None:
    check = str(uuid.uuid4())
    ping = http_receiver.ping_url(check)
    assert ping == f"http://127.0.0.1:{http_receiver.port}/ping/{check}"

    assert _post(ping + "/start") == 200
    assert _post(ping + "?rid=run-1", b"1 new report\nlast log lines") == 200
    assert _post(ping + "/fail", "échec".encode()) == 200

    assert http_receiver.ping_events(ping) == ["start", "success", "fail"]
    start, success, fail = http_receiver.requests
    assert start.path == f"/ping/{check}/start" and start.body == b""
    assert success.query == {"rid": ["run-1"]}
    assert success.body == b"1 new report\nlast log lines"
    assert fail.text() == "échec"
    assert start.time <= success.time <= fail.time
    assert http_receiver.requests_to(f"/ping/{check}/fail") == [fail]


def test_the_receiver_answers_a_status_for_a_path_and_below_then_recovers(
        http_receiver: HttpReceiver) -> None:
    ping = http_receiver.ping_url()
    http_receiver.respond(urlsplit(ping).path, status=503, times=2)

    for suffix in ("/start", ""):
        with pytest.raises(urllib.error.HTTPError) as refused:
            _post(ping + suffix)
        assert refused.value.code == 503
    assert _post(ping + "/fail") == 200  # the rule was for two requests
    assert _post(http_receiver.url("/elsewhere")) == 200
    assert http_receiver.ping_events(ping) == ["start", "success", "fail"]

    # A dead receiver for Apprise: the notification is reported as not sent.
    http_receiver.respond("/hook", status=500)
    assert not _notify(http_receiver.apprise_json_url("/hook"), title="t", body="b")
    assert http_receiver.requests_to("/hook")  # it arrived all the same


def test_the_receiver_can_hang_past_a_timeout_and_drop_the_connection(
        http_receiver: HttpReceiver) -> None:
    http_receiver.respond("/slow", delay=30)
    with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
        _post(http_receiver.url("/slow"), b"x", timeout=0.5)

    http_receiver.respond("/drop", close=True)
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        _post(http_receiver.url("/drop"), b"body")

    assert [request.path for request in http_receiver.requests] == ["/slow", "/drop"]
    assert http_receiver.requests_to("/drop")[0].body == b"body"
    assert _post(http_receiver.url("/fine")) == 200  # the others still answer


# --- SMTP receiver -------------------------------------------------------------------------------


def test_an_apprise_mailto_notification_reaches_the_smtp_receiver(
        smtp_receiver: SmtpReceiver) -> None:
    url = apprise_mailto_url(smtp_receiver, sender="reportsync@host1.example",
                             to="ops@example.com")
    assert url.startswith(f"mailto://127.0.0.1:{smtp_receiver.port}?")

    assert _notify(url, title="reportsync on host1: 2 files at risk",
                   body="U123.xml is purged in 5 days\nrun reportsync fetch")

    (mail,) = smtp_receiver.wait_for(1)
    assert mail.mail_from == "reportsync@host1.example"
    assert mail.rcpt_tos == ("ops@example.com",)
    assert mail.subject == "reportsync on host1: 2 files at risk"
    assert mail.body.splitlines() == ["U123.xml is purged in 5 days", "run reportsync fetch"]


def test_a_refusing_smtp_receiver_makes_apprise_report_failure(smtp_receiver: SmtpReceiver) -> None:
    smtp_receiver.reply = "451 4.3.0 try again later"
    assert not _notify(apprise_mailto_url(smtp_receiver), title="t", body="b")
    assert len(smtp_receiver.messages) == 1  # it was sent, and refused
