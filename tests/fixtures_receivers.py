"""pytest fixtures for the real notification receivers (see tests/servers/http_receiver.py and
tests/servers/smtp_receiver.py).

Each test gets receivers of its own (starting one costs milliseconds), so what a test finds
recorded was sent by that test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers.http_receiver import HttpReceiver, start_http_receiver
from tests.servers.smtp_receiver import SmtpReceiver, start_smtp_receiver


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    """An HTTP server recording every request: healthchecks pings and Apprise ``json://`` hooks."""
    receiver = start_http_receiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def smtp_receiver() -> Iterator[SmtpReceiver]:
    """An SMTP server (no TLS, no login) recording every mail; see ``apprise_mailto_url``."""
    receiver = start_smtp_receiver()
    yield receiver
    receiver.stop()
