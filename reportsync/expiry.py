"""Credentials that stop working on a date: the PGP key the provider encrypts to, and the OpenSSH
certificate a source logs in with.

``pgpkeys.decryption_key_expiry`` and ``sshkeys.certificate_expiry`` build these; ``doctor`` shows
them as WARN and ``fetch`` warns about them on stderr (also under ``-q``, so cron mails it before
logins or deliveries start failing). One threshold, one wording, for both.
"""

from __future__ import annotations

from dataclasses import dataclass

from reportsync.units import EXPIRY_WARN_DAYS

PGP = "pgp"
SSH_CERTIFICATE = "ssh-certificate"


@dataclass(frozen=True)
class CredentialExpiry:
    kind: str  # PGP | SSH_CERTIFICATE
    subject: str  # the key's fingerprint, or the certificate file
    expires_at: float  # seconds since the epoch
    days_left: int  # whole days (rounded down) until then; negative once it has ended
    finding: str  # one line: what ends when, and what stops working then
    remedy: str
    source: str | None = None  # SSH_CERTIFICATE: the source that logs in with it

    @property
    def soon(self) -> bool:
        """Ended already, or ends within EXPIRY_WARN_DAYS: a person must act now."""
        return self.days_left < EXPIRY_WARN_DAYS

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "subject": self.subject, "source": self.source,
                "expires_at": self.expires_at, "days_left": self.days_left,
                "finding": self.finding, "remedy": self.remedy}
