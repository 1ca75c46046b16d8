"""Credentials that stop working on a date: the PGP key the provider encrypts to, and the OpenSSH
certificate a source logs in with.

``pgpkeys.decryption_key_expiry`` and ``sshkeys.certificate_expiry`` build these; ``doctor`` shows
them as WARN and ``fetch`` warns about them on stderr (also under ``-q``, so cron mails it before
logins or deliveries start failing). One threshold, one wording, for both. ``credential_expiries``
lists every one of a config, soon or not (the metrics file's expiry timestamps).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from reportsync.units import EXPIRY_WARN_DAYS

if TYPE_CHECKING:
    from reportsync.config import Config

log = logging.getLogger(__name__)

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


def credential_expiries(config: Config, *, now: float) -> list[CredentialExpiry]:
    """When each credential of ``config`` ends, soon or not: the decryption key (the next usable
    key to end, as ``pgpkeys.decryption_key_expiry`` says) and each SFTP source's certificate.
    For the metrics file, which gives the timestamps to alert on; fetch's warnings are the ones
    of these that are ``soon``. One ``gpg --list-secret-keys`` when the GnuPG home exists; what
    cannot be read is left out (the step that needs it reports it)."""
    # imported here: pgpkeys and sshkeys build CredentialExpiry, so they import this module
    from reportsync import pgpkeys, sshkeys
    from reportsync.errors import ReportsyncError
    from reportsync.pgp import Gpg

    found: list[CredentialExpiry] = []
    settings = config.settings
    if settings.gnupg_home.is_dir():
        try:
            gpg = Gpg(binary=settings.gpg_binary, home=settings.gnupg_home, passphrase=None,
                      create_home=False, environ=config.environ)
            key = pgpkeys.decryption_key_expiry(gpg.decryption_keys(now), settings.gnupg_home,
                                                now)
        except ReportsyncError as error:
            log.debug("key expiry not read: %s", error.message)
        else:
            if key is not None:
                found.append(key)
    moment = datetime.fromtimestamp(now, tz=timezone.utc)
    for source in config.sources.values():
        if source.certificate_file is None:  # only SFTP sources have one (the config says so)
            continue
        try:
            info = sshkeys.inspect_ssh_file(source.certificate_file, now=moment)
        except ReportsyncError as error:
            log.debug("source %s: certificate expiry not read: %s", source.name, error.message)
            continue
        if isinstance(info, sshkeys.SshCertificateInfo):
            certificate = sshkeys.certificate_expiry(info, source.name)
            if certificate is not None:
                found.append(certificate)
    return found
