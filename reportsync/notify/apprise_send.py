"""The run's one notification, sent to each Apprise URL (mail, Slack, Teams, ntfy, webhooks...).

Apprise does the sending; reportsync builds no mail or chat message of its own. Each URL gets its
own try (and one more after a second, for a relay that defers), so one dead service does not
hide the others' outcome; none of it raises, and none of Apprise's log records (which name hosts
and parts of tokens) reach a handler. Imported only by a run that has Apprise URLs (loading
Apprise takes a moment).
"""

from __future__ import annotations

import logging
import time

import apprise

from reportsync.config import Secret
from reportsync.notify.delivery import Delivery
from reportsync.notify.targets import apprise_asset, quiet_apprise, scheme_of
from reportsync.render.notify import Message

log = logging.getLogger(__name__)
ATTEMPTS = 2
RETRY_DELAY = 1.0


def send(urls: tuple[Secret, ...], message: Message, *, key: str,
         retry_delay: float = RETRY_DELAY) -> list[Delivery]:
    deliveries = []
    with quiet_apprise():
        for number, url in enumerate(urls, start=1):
            target = f"Apprise notification to URL {number} of {len(urls)} ({scheme_of(url)})"
            tries, sent = 0, False
            while not sent and tries < ATTEMPTS:
                if tries:
                    time.sleep(retry_delay)
                tries += 1
                sent = _notify(url, message)
            if sent:
                log.info("%s sent", target)
            else:
                log.warning("%s not sent after %d tries", target, tries)
            deliveries.append(Delivery(
                target=target, ok=sent, key=key, tries=tries,
                detail="" if sent else "the service refused it or could not be reached"))
    return deliveries


def _notify(url: Secret, message: Message) -> bool:
    try:
        notifier = apprise.Apprise(asset=apprise_asset())
        if not notifier.add(url.reveal()):
            return False
        return bool(notifier.notify(title=message.title, body=message.body,
                                    body_format=apprise.NotifyFormat.TEXT,
                                    notify_type=apprise.NotifyType(message.kind)))
    except Exception:  # a notification library must never end the run
        return False
