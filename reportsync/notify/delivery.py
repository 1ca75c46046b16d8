"""What happened to one thing the monitoring sent or wrote: the result the CLI warns from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Delivery:
    """One ping, one notification or the metrics file: whether it arrived, and if not, why.

    ``target`` says what it was without the URL (``healthchecks ping 'start'``, ``Apprise URL 2
    of 3 (json://)``, ``metrics file /var/lib/...``); ``key`` is the config key to check.
    """

    target: str
    ok: bool
    key: str
    tries: int = 1
    detail: str = ""  # why it failed, scrubbed of every secret

    def to_dict(self) -> dict[str, object]:
        return {"target": self.target, "ok": self.ok, "key": self.key, "tries": self.tries,
                "detail": self.detail}


def scrubbed(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret (longest first) replaced: what is sent or shown never holds
    a URL's credentials, whatever a library put into a message."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text
