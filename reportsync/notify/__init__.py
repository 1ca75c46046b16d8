"""Monitoring of ``fetch``: healthchecks pings, Apprise notifications, the metrics file.

``monitored_fetch`` is the fetch command's core when ``[notify]`` is set: it resolves the
targets (a URL that cannot be read stops the run with exit code 2 before anything happens), runs
``fetch.run``, pings ``/start`` when the run reports it holds a lock (``Reporter.run_started``:
a probe of the lock before the run would race a run that takes it in between), then pings the
end (``<url>`` or ``/fail``), sends the one notification the run's events call for, and rewrites
the metrics file. Nothing of this can change the run's exit code: each ping, notification and
write is a ``Delivery`` the CLI warns about when it failed. A dry run and a run that finds the
lock held (``LockHeldError``, exit 75; with a shared ledger: every source held by other hosts)
send and write nothing. This package never prints.

- ``targets``: the URLs, events and metrics file of the config.
- ``healthchecks``: the pings, with their bounded retries.
- ``events``: a finished run (``RunOutcome``) and the events it is.
- ``apprise_send``: the notification, through Apprise.
- ``metrics``: the Prometheus text file.
- the wording of ping bodies and notifications: ``reportsync.render.notify``.

Seams for what comes next (issue 15, part two): the per-report ``on_new_report`` hook runs inside
fetch (after a report is archived and recorded) and reports through ``FetchResult``, which this
package reads; doctor's notification checks (``--notify-test``) can call ``resolve_targets``,
``healthchecks.ping`` and ``apprise_send.send`` with a test ``Message``.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from reportsync import fetch
from reportsync.config import Config
from reportsync.errors import ExitCode, LockHeldError, ReportsyncError
from reportsync.expiry import credential_expiries
from reportsync.ledger import open_ledger
from reportsync.notify.delivery import Delivery, scrubbed
from reportsync.notify.events import RunOutcome, events_of
from reportsync.notify.healthchecks import BODY_LIMIT, FAIL, START, SUCCESS, PingPolicy, ping
from reportsync.notify.metrics import collect, metrics_text, write_metrics
from reportsync.notify.targets import Targets, resolve_targets
from reportsync.render.envelope import to_json
from reportsync.render.notify import Message, notification, ping_body, run_summary, start_summary
from reportsync.results import exit_code_of
from reportsync.runlog import RunLog
from reportsync.status import SourceStatus, status
from reportsync.transports import open_transport
from reportsync.transports.head_start import Connect

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonitoredFetch:
    """``fetch`` with its monitoring: the fetch's result (or the error that stopped it), and
    what became of each ping, notification and the metrics file."""

    result: fetch.FetchResult | None
    error: ReportsyncError | None = None
    deliveries: tuple[Delivery, ...] = ()

    @property
    def exit_code(self) -> ExitCode:
        return exit_code_of(self.result, self.error)

    def to_dict(self) -> dict[str, Any]:
        """fetch's own JSON, and ``monitoring``: each delivery (no URL in any of it)."""
        document: dict[str, Any] = to_json(self.result)
        document["monitoring"] = [delivery.to_dict() for delivery in self.deliveries]
        return document


@dataclass(frozen=True)
class Tuning:
    """How hard the senders try (tests make it quick)."""

    ping: PingPolicy = field(default_factory=PingPolicy)
    apprise_retry_delay: float = 1.0


def monitored_fetch(config: Config, options: fetch.FetchOptions,
                    reporter: fetch.Reporter | None = None, *,
                    connect: Connect = open_transport,
                    tuning: Tuning = Tuning()) -> MonitoredFetch:
    """``fetch.run`` with the monitoring ``config.notify`` sets up (none: just the fetch);
    ``connect`` as for ``fetch.run``."""
    if options.dry_run or not config.notify.configured:
        return MonitoredFetch(fetch.run(config, options, reporter, connect=connect))
    targets = resolve_targets(config)  # exit 2 here: before anything is fetched or sent
    sources = tuple(source.name for source in config.select(options.sources))
    host = socket.gethostname()
    run_id = str(uuid.uuid4())
    deliveries: list[Delivery] = []
    with RunLog.capture(BODY_LIMIT) as run_log:
        ping_key = _secret_key(config, "healthchecks_url")

        def ping_start() -> None:
            if targets.healthchecks is None:
                return
            body = ping_body([start_summary(host, sources)], run_log.lines(), BODY_LIMIT)
            deliveries.append(ping(targets.healthchecks, START, scrubbed(body, targets.secrets),
                                   run_id=run_id, key=ping_key, policy=tuning.ping,
                                   secrets=targets.secrets))

        started = time.monotonic()
        try:
            result, error = fetch.run(config, options, _Started(reporter, ping_start),
                                      connect=connect), None
        except LockHeldError:
            raise  # another run is active: it is the one being monitored
        except ReportsyncError as stopped:
            result, error = None, stopped
        if result is not None and result.exit_code == ExitCode.LOCKED:
            # every source held by other hosts sharing the ledger: they are the runs monitored
            return MonitoredFetch(result, None, tuple(deliveries))
        duration = time.monotonic() - started
        outcome = RunOutcome(host=host, sources=sources, result=result, error=error,
                             finished_at=time.time())
        if targets.metrics_file is not None:
            deliveries.append(_write_metrics(config, targets, outcome, duration))
        if targets.apprise_urls:
            deliveries += _notify(config, targets, outcome, tuning)
        if targets.healthchecks is not None:
            event = SUCCESS if int(outcome.exit_code) == 0 else FAIL
            body = ping_body(run_summary(outcome), run_log.lines(), BODY_LIMIT)
            deliveries.append(ping(targets.healthchecks, event, scrubbed(body, targets.secrets),
                                   run_id=run_id, key=ping_key, policy=tuning.ping,
                                   secrets=targets.secrets))
    return MonitoredFetch(result, error, tuple(deliveries))


class _Started:
    """The caller's reporter, and ``on_start`` once the run holds the lock."""

    def __init__(self, inner: fetch.Reporter | None, on_start: Callable[[], None]) -> None:
        self._inner = inner or fetch.SilentReporter()
        self._on_start = on_start

    def run_started(self) -> None:
        self._on_start()
        self._inner.run_started()

    def file_started(self, source: str, name: str, total: int, already: int) -> None:
        self._inner.file_started(source, name, total, already)

    def advance(self, source: str, name: str, nbytes: int) -> None:
        self._inner.advance(source, name, nbytes)

    def file_finished(self, source: str, name: str) -> None:
        self._inner.file_finished(source, name)


def _secret_key(config: Config, name: str) -> str:
    ref = getattr(config.notify, name)
    return f"notify.{name}" + ("_env" if ref.env else "_file" if ref.file else "")


def _notify(config: Config, targets: Targets, outcome: RunOutcome,
            tuning: Tuning) -> list[Delivery]:
    happened = events_of(outcome)
    wanted = {event: names for event, names in happened.items() if event in targets.events}
    if not wanted:
        return []
    from reportsync.notify import apprise_send  # loads Apprise: only a run that notifies

    message = notification(outcome, wanted)
    message = replace(message, title=scrubbed(message.title, targets.secrets),
                      body=scrubbed(message.body, targets.secrets))
    return apprise_send.send(targets.apprise_urls, message, key=_secret_key(config, "urls"),
                             retry_delay=tuning.apprise_retry_delay)


def _write_metrics(config: Config, targets: Targets, outcome: RunOutcome,
                   duration: float) -> Delivery:
    assert targets.metrics_file is not None
    statuses: Mapping[str, SourceStatus] | None
    try:
        with open_ledger(config.settings, environ=config.environ, create=False) as ledger:
            report = status(config, ledger, now=outcome.finished_at)
        statuses = {source.name: source for source in report.sources}
    except ReportsyncError as error:  # the ledger cannot be read: the run's own numbers only
        log.warning("metrics: the ledger could not be read: %s", error.message)
        statuses = None
    gauges = collect(outcome, list(config.sources), duration, statuses,
                     credential_expiries(config, now=outcome.finished_at))
    return write_metrics(targets.metrics_file, metrics_text(gauges))


__all__ = ["Delivery", "Message", "MonitoredFetch", "RunOutcome", "Tuning", "monitored_fetch"]
