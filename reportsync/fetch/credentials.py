"""Credentials that end soon, checked at the start of a fetch so cron mails the warning in time."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from reportsync import pgpkeys
from reportsync.config import Config, SourceConfig
from reportsync.errors import ReportsyncError
from reportsync.expiry import CredentialExpiry
from reportsync.fetch.archive import LazyGpg
from reportsync.sshkeys import SshCertificateInfo, certificate_expiry, inspect_ssh_file

log = logging.getLogger(__name__)


def expiring_credentials(config: Config, sources: list[SourceConfig], decryptor: LazyGpg, *,
                         may_decrypt: bool, now: float) -> list[CredentialExpiry]:
    """The decryption key and the SSH certificates that end within EXPIRY_WARN_DAYS (or have
    ended), so a nightly run warns before deliveries or logins start failing. Local and cheap:
    one ``gpg --list-secret-keys`` (only when this run may decrypt; not in a dry run, as gpg may
    update its trust database) and a read of each certificate. Whatever cannot be read here is
    left to the step that needs it, which reports it."""
    found: list[CredentialExpiry] = []
    home = config.settings.gnupg_home
    if may_decrypt and home.is_dir():
        try:
            keys = decryptor.get().gpg.decryption_keys(now)
        except ReportsyncError as error:  # gpg missing, say: decrypting says so, with remedy
            log.debug("key expiry not checked: %s", error.message)
        else:
            key_expiry = pgpkeys.decryption_key_expiry(keys, home, now)
            if key_expiry is not None and key_expiry.soon:
                found.append(key_expiry)
    for source in sources:
        if source.certificate_file is None:  # only SFTP sources have one (config says so)
            continue
        try:
            info = inspect_ssh_file(source.certificate_file,
                                    now=datetime.fromtimestamp(now, tz=timezone.utc))
        except ReportsyncError as error:  # the login names the certificate problem
            log.debug("source %s: certificate not checked: %s", source.name, error.message)
            continue
        if isinstance(info, SshCertificateInfo):
            certificate = certificate_expiry(info, source.name)
            if certificate is not None and certificate.soon:
                found.append(certificate)
    for expiry in found:
        log.warning("%s", expiry.finding)
    return found
