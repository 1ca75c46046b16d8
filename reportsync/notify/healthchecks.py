"""Healthchecks-style pings (healthchecks.io and compatible): ``/start``, then ``<url>`` or
``/fail``, each a POST of the run's summary and log tail.

A ping is retried briefly (a few tries within seconds, never minutes: the run must end) and then
given up; its outcome is a ``Delivery``, never an exception, so a dead receiver cannot change the
run's exit code. Messages name the event and the config key, never the URL: it is the check's
credential.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit, urlunsplit

from reportsync import __version__
from reportsync.config import Secret
from reportsync.notify.delivery import Delivery, scrubbed

if TYPE_CHECKING:
    import urllib.request

log = logging.getLogger(__name__)

START, SUCCESS, FAIL, LOG = "start", "success", "fail", "log"
# ``/log`` adds a line to the check's event log without changing its state: what doctor's
# --notify-test sends (a success ping would reset the check's "no success for 26 hours" timer)
_SUFFIX = {START: "/start", SUCCESS: "", FAIL: "/fail", LOG: "/log"}
BODY_LIMIT = 100_000  # bytes; healthchecks.io keeps the first 100 kB of a ping's body


@dataclass(frozen=True)
class PingPolicy:
    """How hard a ping tries: ``attempts`` within ``deadline`` seconds in all, each try given at
    most ``timeout`` seconds, ``backoff`` seconds before the second try (doubled after)."""

    attempts: int = 3
    timeout: float = 4.0
    deadline: float = 10.0
    backoff: float = 0.5


def ping_url(base: str, event: str, run_id: str) -> str:
    """``base`` + the event's suffix, with ``rid`` (healthchecks pairs a start with its end by
    it) added to any query the URL has."""
    parts = urlsplit(base)
    query = "&".join(filter(None, (parts.query, urlencode({"rid": run_id}))))
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + _SUFFIX[event],
                       query, ""))


def ping(url: Secret, event: str, body: str, *, run_id: str, key: str,
         policy: PingPolicy = PingPolicy(), secrets: tuple[str, ...] = (),
         clock: Callable[[], float] = time.monotonic) -> Delivery:
    """POST ``body`` (UTF-8, cut to BODY_LIMIT bytes) to the check's ``event`` URL."""
    import urllib.request  # with http.client and ssl: loaded by a run that pings, not by every run

    target = f"healthchecks ping '{event}'"
    # at most BODY_LIMIT bytes, and never half a character
    data = body.encode("utf-8")[:BODY_LIMIT].decode("utf-8", "ignore").encode("utf-8")
    request = urllib.request.Request(
        ping_url(url.reveal(), event, run_id), data=data, method="POST",
        headers={"Content-Type": "text/plain; charset=utf-8",
                 "User-Agent": f"reportsync/{__version__}"})
    ends = clock() + policy.deadline
    delay = policy.backoff
    problem: str | None = "not tried"
    tries = 0
    for tries in range(1, policy.attempts + 1):
        left = ends - clock()
        if left <= 0:
            tries -= 1
            break
        retry, problem = _post(request, min(policy.timeout, left))
        if problem is None:
            log.info("%s sent", target)
            return Delivery(target=target, ok=True, key=key, tries=tries)
        if not retry or tries == policy.attempts or clock() + delay >= ends:
            break
        time.sleep(delay)
        delay *= 2
    detail = scrubbed(problem or "not sent", secrets)
    log.warning("%s not sent after %d tries: %s", target, tries, detail)
    return Delivery(target=target, ok=False, key=key, tries=tries, detail=detail)


def _post(request: urllib.request.Request, timeout: float) -> tuple[bool, str | None]:
    """(whether a retry may help, the problem or None when the receiver took the ping)."""
    import http.client
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
        return False, None
    except urllib.error.HTTPError as error:
        # a server error or "too many requests" may pass; any other answer will not
        return error.code >= 500 or error.code == 429, f"the receiver answered HTTP {error.code}"
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            return True, f"no answer within {timeout:.0f} s"
        if isinstance(reason, OSError):
            return True, f"cannot connect ({reason.strerror or type(reason).__name__})"
        return True, "cannot connect"
    except TimeoutError:
        return True, f"no answer within {timeout:.0f} s"
    except (http.client.HTTPException, ConnectionError) as error:
        return True, f"the connection broke ({type(error).__name__})"
    except OSError as error:
        return True, f"cannot connect ({error.strerror or type(error).__name__})"
