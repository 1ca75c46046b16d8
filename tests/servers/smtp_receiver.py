"""A real SMTP server that records the mail it is sent (aiosmtpd), for notification tests.

Plain Python (no pytest). ``start_smtp_receiver()`` runs an aiosmtpd ``Controller`` on 127.0.0.1
and a free port, in its own thread; no TLS, no authentication, like a local relay. Each message is
recorded as a ``ReceivedMail``: the envelope (``mail_from``, ``rcpt_tos``), the message parsed
with ``email`` (``subject``, ``body``: its plain-text part, else its HTML part) and the raw bytes.
``reply`` sets the answer to DATA (default ``250``; e.g. ``"451 4.3.0 try again later"`` for a
relay that refuses mail: the message is recorded all the same).

``apprise_mailto_url(receiver)`` is the Apprise URL that sends mail here: ``mailto://`` (not
``mailtos://``) means Apprise's "insecure" mode: plain SMTP, no STARTTLS; with no user and no
password in the URL it does not log in; ``from=`` and ``to=`` set the addresses, since
``127.0.0.1`` gives Apprise no user@domain to derive them from.
"""

from __future__ import annotations

import email
import email.policy
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from urllib.parse import quote, urlencode

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.servers import free_port

HOST = "127.0.0.1"
ACCEPTED = "250 Message accepted for delivery"
DEFAULT_FROM = "reportsync@example.com"
DEFAULT_TO = "ops@example.com"


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage = field(repr=False)
    raw: bytes = field(repr=False)
    time: float

    @property
    def subject(self) -> str:
        return str(self.message.get("Subject", ""))

    @property
    def body(self) -> str:
        part = self.message.get_body(preferencelist=("plain", "html"))
        if part is None:
            return ""
        return str(part.get_content())


class _RecordingHandler:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        self.messages: list[ReceivedMail] = []
        self.reply = ACCEPTED

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        mail = ReceivedMail(mail_from=str(envelope.mail_from or ""),
                            rcpt_tos=tuple(envelope.rcpt_tos), message=message, raw=raw,
                            time=time.time())
        with self.arrived:
            self.messages.append(mail)
            self.arrived.notify_all()
            return self.reply


@dataclass
class SmtpReceiver:
    host: str
    port: int
    _controller: Controller = field(repr=False)
    _handler: _RecordingHandler = field(repr=False)

    @property
    def messages(self) -> list[ReceivedMail]:
        with self._handler.lock:
            return list(self._handler.messages)

    @property
    def reply(self) -> str:
        return self._handler.reply

    @reply.setter
    def reply(self, line: str) -> None:
        self._handler.reply = line

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMail]:
        """All messages, once at least ``count`` have arrived; TimeoutError otherwise."""
        handler = self._handler
        with handler.arrived:
            if not handler.arrived.wait_for(lambda: len(handler.messages) >= count, timeout):
                raise TimeoutError(f"{len(handler.messages)} of {count} mails arrived"
                                   f" within {timeout}s")
            return list(handler.messages)

    def clear(self) -> None:
        with self._handler.lock:
            self._handler.messages.clear()
            self._handler.reply = ACCEPTED

    def stop(self) -> None:
        self._controller.stop()


def apprise_mailto_url(receiver: SmtpReceiver, *, sender: str = DEFAULT_FROM,
                       to: str = DEFAULT_TO, **options: str) -> str:
    """``mailto://HOST:PORT?from=...&to=...``: plain SMTP to the receiver, no TLS, no login."""
    query = urlencode({"from": sender, "to": to, **options}, quote_via=quote, safe="@")
    return f"mailto://{receiver.host}:{receiver.port}?{query}"


def start_smtp_receiver(attempts: int = 3) -> SmtpReceiver:
    handler = _RecordingHandler()
    for attempt in range(1, attempts + 1):
        # aiosmtpd binds the port it is given (it needs the number to probe its own readiness):
        # free_port() can lose a race to another process, so a failed start tries another port.
        controller = Controller(handler, hostname=HOST, port=free_port(HOST),
                                server_hostname="reportsync-test-smtp", ready_timeout=10.0)
        try:
            controller.start()
        except (OSError, RuntimeError, TimeoutError):
            if attempt == attempts:
                raise
            continue
        return SmtpReceiver(host=HOST, port=int(controller.port), _controller=controller,
                            _handler=handler)
    raise AssertionError("unreachable")


if __name__ == "__main__":  # pragma: no cover - manual check: python -m tests.servers.smtp_receiver
    running = start_smtp_receiver()
    print(f"recording mail on {running.host}:{running.port}: {apprise_mailto_url(running)}")
    try:
        seen = 0
        while True:
            arrived = running.wait_for(seen + 1, timeout=3600)
            for mail in arrived[seen:]:
                print(mail.mail_from, mail.rcpt_tos, mail.subject, mail.body[:200])
            seen = len(arrived)
    except KeyboardInterrupt:
        running.stop()
