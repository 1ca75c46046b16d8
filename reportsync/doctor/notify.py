"""doctor's checks of the notification setup (``[notify]``; docs/monitoring.md).

Without ``--notify-test`` nothing is sent: the URLs are read and parsed the way ``fetch`` reads
them (``notify.targets.resolve_targets``: a URL that fetch would refuse is a FAIL here), and each
receiver's server is only connected to (DNS and TCP, then closed), because any request to a
healthchecks ping URL *is* a ping. With ``--notify-test`` each channel gets one test message:
the healthchecks check a ``/log`` event (which changes nothing of the check's state), every
Apprise URL a notification of the kind ``info``. A finding names the key and the URL's position
and scheme, never the URL (its credentials); every text is scrubbed of every secret besides.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

from reportsync.config import Config, Secret
from reportsync.doctor.findings import FAIL, PASS, WARN, DoctorFinding, Findings
from reportsync.errors import ConfigError
from reportsync.notify.delivery import scrubbed
from reportsync.notify.healthchecks import LOG, PingPolicy, ping
from reportsync.notify.targets import Targets, quiet_apprise, resolve_targets, scheme_of
from reportsync.render.notify import INFO, Message

SCOPE = "notify"
CONNECT_TIMEOUT = 5.0  # seconds for each receiver's DNS lookup and TCP connection together
SEND_REMEDY = ("Check the URL against docs/monitoring.md and that this machine may reach the "
               "service; the receiver's own log may say why it refused the message.")


@dataclass(frozen=True)
class Endpoint:
    """Where a channel connects: host and port, and whether the host may be shown (a service's
    public host, or a mail server; not what an Apprise URL holds where a host would be, which for
    many services is a token)."""

    host: str
    port: int
    shown: bool


def notify_checks(config: Config, out: Findings, *, send_test: bool = False) -> None:
    """The notification findings, in the order: URLs readable → each receiver reachable → (with
    ``send_test``) one test message through each channel."""
    if not config.notify.configured:
        out.add("setup", SCOPE, PASS, DoctorFinding.NOTIFY_NONE,
                "[notify] is not set up: fetch sends no ping and no notification"
                + ("; --notify-test has nothing to send" if send_test else ""))
        return
    try:
        targets = resolve_targets(config)
    except ConfigError as error:
        for problem in error.problems:
            out.add("setup", SCOPE, FAIL, DoctorFinding.NOTIFY_UNUSABLE,
                    f"fetch would stop with exit code 2: {problem}", error.remedy)
        return
    report = _Reporter(out, targets.secrets)
    channels = ", ".join(filter(None, (
        "a healthchecks check" if targets.healthchecks is not None else "",
        f"{len(targets.apprise_urls)} Apprise URL(s) for {', '.join(sorted(targets.events))}"
        if targets.apprise_urls else "",
        f"the metrics file {targets.metrics_file}" if targets.metrics_file is not None else "")))
    report.add("setup", PASS, DoctorFinding.NOTIFY_OK, f"[notify] is read as fetch reads it: "
               f"{channels}")
    if targets.healthchecks is not None:
        _reachable(report, "healthchecks", f"the healthchecks ping URL ({_key(config, 'healthchecks_url')})",
                   _ping_endpoint(targets.healthchecks))
    for number, url in enumerate(targets.apprise_urls, start=1):
        what = f"Apprise URL {number} of {len(targets.apprise_urls)} ({scheme_of(url)})"
        _reachable(report, "apprise", what, _apprise_endpoint(url))
    if send_test:
        _send_tests(config, targets, report)


class _Reporter:
    """``Findings.add`` for this scope, every text scrubbed of every secret of the config."""

    def __init__(self, out: Findings, secrets: tuple[str, ...]) -> None:
        self._out = out
        self._secrets = secrets

    def add(self, check: str, status: str, finding_id: DoctorFinding, finding: str,
            remedy: str = "", seconds: float = 0.0) -> None:
        self._out.add(check, SCOPE, status, finding_id, scrubbed(finding, self._secrets),
                      scrubbed(remedy, self._secrets), seconds)


def _key(config: Config, name: str) -> str:
    ref = getattr(config.notify, name)
    return f"notify.{name}" + ("_env" if ref.env else "_file" if ref.file else "")


def _ping_endpoint(url: Secret) -> Endpoint | None:
    parts = urlsplit(url.reveal())
    if not parts.hostname:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    return Endpoint(parts.hostname, port, shown=True)  # the host is not the check's secret


def _apprise_endpoint(url: Secret) -> Endpoint | None:
    """Where Apprise will connect for ``url``: a mail server, the service's public API host,
    or the host of a self-hosted receiver (json://, ntfys://host/...); None when it cannot tell."""
    import apprise

    with quiet_apprise():
        plugin = apprise.Apprise.instantiate(url.reveal())
    if plugin is None:
        return None
    smtp_host = getattr(plugin, "smtp_host", None)
    if isinstance(smtp_host, str) and smtp_host:
        port = getattr(plugin, "port", None) or 587
        return Endpoint(smtp_host, int(port), shown=True)
    api = _public_url(plugin, "notify_url", "webhook_url")
    if api is not None:  # a cloud service: its API host is public (the URL's "host" is a token)
        return api
    own_host = getattr(plugin, "host", None)
    if isinstance(own_host, str) and own_host:  # a self-hosted receiver (json://host/...)
        port = getattr(plugin, "port", None) or (443 if getattr(plugin, "secure", False) else 80)
        return Endpoint(own_host, int(port), shown=False)
    return _public_url(plugin, "cloud_notify_url")  # ntfy://topic: the public ntfy.sh


def _public_url(plugin: object, *names: str) -> Endpoint | None:
    for name in names:
        value = getattr(plugin, name, None)
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            parts = urlsplit(value)
            if parts.hostname:
                return Endpoint(parts.hostname, parts.port or
                                (443 if parts.scheme == "https" else 80), shown=True)
    return None


def _reachable(report: _Reporter, check: str, what: str, endpoint: Endpoint | None) -> None:
    if endpoint is None:
        report.add(check, PASS, DoctorFinding.NOTIFY_UNCHECKED,
                   f"{what} is one fetch can send to; where its service connects is not known "
                   "here, so it was not tried (--notify-test sends a test message)")
        return
    where = f"{endpoint.host}:{endpoint.port}" if endpoint.shown else f"its server's port {endpoint.port}"
    started = time.monotonic()
    problem = _connect(endpoint)
    seconds = time.monotonic() - started
    if problem is None:
        report.add(check, PASS, DoctorFinding.NOTIFY_REACHABLE,
                   f"{what}: {where} accepts connections (nothing was sent)", seconds=seconds)
        return
    report.add(check, WARN, DoctorFinding.NOTIFY_UNREACHABLE,
               f"{what}: cannot connect to {where}: {problem}; fetch goes on, but this channel "
               "would not hear of it",
               "Check the URL's host and port, this machine's DNS and firewall (outgoing "
               "connections to the receiver), and that the receiver runs; doctor's --notify-test "
               "sends it a test message.", seconds=seconds)


def _connect(endpoint: Endpoint) -> str | None:
    """None when a TCP connection to the endpoint opens (then closed at once), else why not.
    The lookup and the connection together get CONNECT_TIMEOUT: the lookup runs in a thread
    that is given up on (``getaddrinfo`` has no timeout of its own)."""
    answer: dict[str, str | None] = {}

    def attempt() -> None:
        answer["problem"] = _try_connect(endpoint)

    worker = threading.Thread(target=attempt, name="reportsync-notify-check", daemon=True)
    worker.start()
    worker.join(CONNECT_TIMEOUT)
    if worker.is_alive():
        return f"no answer within {CONNECT_TIMEOUT:g} s (DNS, or a firewall that drops the traffic)"
    return answer.get("problem")


def _try_connect(endpoint: Endpoint) -> str | None:
    try:
        socket.create_connection((endpoint.host, endpoint.port), timeout=CONNECT_TIMEOUT).close()
    except socket.gaierror as exc:
        return f"the name does not resolve ({exc.strerror or exc})"
    except ConnectionRefusedError:
        return "the connection was refused (nothing listens there, or a firewall rejects it)"
    except TimeoutError:
        return f"no answer within {CONNECT_TIMEOUT:g} s (a firewall may drop the traffic)"
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def _send_tests(config: Config, targets: Targets, report: _Reporter) -> None:
    host = socket.gethostname()
    text = (f"reportsync doctor --notify-test on {host}: a test message. If you read this, "
            "this channel will hear about reportsync's fetches.")
    if targets.healthchecks is not None:
        delivery = ping(targets.healthchecks, LOG, text, run_id=str(uuid.uuid4()),
                        key=_key(config, "healthchecks_url"), policy=PingPolicy(attempts=2),
                        secrets=targets.secrets)
        _test_finding(report, "test healthchecks", "a healthchecks '/log' event (the check's "
                      "state is unchanged)", delivery.ok, delivery.detail, delivery.key)
    if targets.apprise_urls:
        from reportsync.notify import apprise_send  # loads Apprise

        message = Message(title=f"reportsync on {host}: test notification", body=text + "\n",
                          kind=INFO)
        for delivery in apprise_send.send(targets.apprise_urls, message,
                                          key=_key(config, "urls")):
            _test_finding(report, "test apprise", delivery.target.replace(
                "Apprise notification", "a test notification"), delivery.ok, delivery.detail,
                delivery.key)


def _test_finding(report: _Reporter, check: str, what: str, ok: bool, detail: str,
                  key: str) -> None:
    if ok:
        report.add(check, PASS, DoctorFinding.NOTIFY_TEST_SENT, f"{what}: sent and accepted")
    else:
        report.add(check, FAIL, DoctorFinding.NOTIFY_TEST_FAILED,
                   f"{what}: not delivered: {detail or 'refused'}", f"Check {key}. {SEND_REMEDY}")
