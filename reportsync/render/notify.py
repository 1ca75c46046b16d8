"""What monitoring sends, for people: the healthchecks ping bodies and the one notification of a
run; and the warnings ``fetch`` prints when a ping, a notification or the metrics file failed.

The wording of failures and notices is fetch's own (``fetch_text``, ``error_lines``,
``notice_line``): a notification says what the cron mail would have said.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from reportsync.fsutil import printable
from reportsync.render.base import Rendered, error_lines
from reportsync.render.fetch import deletion_lines, fetch_text, notice_line

if TYPE_CHECKING:
    from reportsync.notify import MonitoredFetch
    from reportsync.notify.events import RunOutcome

FAILURE, WARNING, SUCCESS, INFO = "failure", "warning", "success", "info"  # Apprise's NotifyType
WARNED_KINDS = ("at-risk", "lost", "stale")


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    kind: str  # FAILURE | WARNING | SUCCESS | INFO


def start_summary(host: str, sources: tuple[str, ...]) -> str:
    return f"reportsync fetch started on {host}: {', '.join(sources) or 'no source'}"


def run_summary(outcome: RunOutcome) -> list[str]:
    """The run as its cron mail says it: a headline, then fetch's own lines (or its error)."""
    lines = [f"reportsync fetch on {outcome.host}: exit {int(outcome.exit_code)}"
             f" ({_when(outcome.finished_at)})"]
    if outcome.result is not None:
        rendered = fetch_text(outcome.result)
        lines += rendered.stdout + rendered.stderr
    elif outcome.error is not None:
        lines += error_lines(outcome.error)
    return lines


def ping_body(summary: list[str], log_lines: list[str], limit: int) -> str:
    """The summary, then as many of the run's last log lines as fit in ``limit`` bytes."""
    head = "\n".join(summary) + "\n"
    heading = "\nthe log of this run (last lines):\n"
    room = limit - len((head + heading).encode("utf-8"))
    if room <= 0 or not log_lines:
        return head.encode("utf-8")[:limit].decode("utf-8", "ignore")
    kept: list[str] = []
    for line in reversed(log_lines):
        size = len(line.encode("utf-8")) + 1
        if size > room:
            break
        kept.append(line)
        room -= size
    return head + heading + "".join(line + "\n" for line in reversed(kept))


def notification(outcome: RunOutcome, events: dict[str, tuple[str, ...]]) -> Message:
    """The one message of a run for ``events`` (those of ``notify.on`` that happened, with the
    sources each concerns): the title names the host, what happened and the sources; the body
    the files and what to do, then the run's summary."""
    result = outcome.result
    headline: list[str] = []
    body: list[str] = []
    if "fail" in events:
        headline.append(f"FAILED (exit {int(outcome.exit_code)})")
        body += ["FAILED:", *_failure_lines(outcome), ""]
    if "warn" in events and result is not None:
        headline.append("needs attention")
        body.append("NEEDS ATTENTION:")
        for source in result.sources:
            body += [notice_line(notice) for notice in source.notices
                     if notice.kind in WARNED_KINDS]
        for expiry in result.expiring:
            body += [f"warning: {expiry.finding}", f"  what to do: {expiry.remedy}"]
        body.append("")
    if "new" in events and result is not None:
        archived = [(source.name, outcome_) for source in result.sources
                    for outcome_ in source.files if outcome_.action == "archived"]
        headline.append(f"{len(archived)} new report{'s' if len(archived) != 1 else ''}")
        body.append(f"NEW REPORTS ({len(archived)}):")
        body += [f"{name}: {printable(outcome_.output_path or outcome_.name, quote=False)}"
                 for name, outcome_ in archived]
        body.append("")
    if "success" in events and not headline:
        headline.append("OK")
    concerned = tuple(dict.fromkeys(name for names in events.values() for name in names))
    title = (f"reportsync on {outcome.host}: {', '.join(headline)}: "
             f"{', '.join(concerned or outcome.sources)}")
    body += ["SUMMARY:", *run_summary(outcome)]
    kind = (FAILURE if "fail" in events else WARNING if "warn" in events else
            SUCCESS if "success" in events else INFO)
    return Message(title=title, body="\n".join(body) + "\n", kind=kind)


def _failure_lines(outcome: RunOutcome) -> list[str]:
    if outcome.result is None:
        assert outcome.error is not None
        return error_lines(outcome.error)
    lines: list[str] = []
    for source in outcome.result.sources:
        if source.error is not None:
            lines += error_lines(source.error, source=source.name)
        for failed in source.failed:
            if failed.error is not None:
                lines += error_lines(failed.error, prefix="failed")
        lines += [f"warning: source {source.name!r}:{line}"
                  for line in deletion_lines(source.refused_deletions)]
    return lines


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def monitoring_lines(run: MonitoredFetch) -> list[str]:
    """A warning for each ping, notification or metrics file that failed (stderr: cron mails
    it); the run's exit code is not changed by any of them."""
    return [f"warning: monitoring: {delivery.target} failed after {delivery.tries} "
            f"{'try' if delivery.tries == 1 else 'tries'}: {delivery.detail}; the run's exit "
            f"code is unchanged; check {delivery.key} and the receiver (docs/monitoring.md)"
            for delivery in run.deliveries if not delivery.ok]


def monitored_fetch_text(run: MonitoredFetch) -> Rendered:
    assert run.result is not None
    rendered = fetch_text(run.result)
    rendered.stderr.extend(monitoring_lines(run))
    return rendered
