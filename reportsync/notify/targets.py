"""Where a fetch's monitoring goes: the ping URL, the Apprise URLs, the events, the metrics file.

Read once when the fetch starts, so a URL that cannot be read or used stops the run with exit
code 2 before anything is fetched or sent, like any other secret of the config. The URLs hold
credentials: a problem names the key and the URL's position, never the URL.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from reportsync.config import Config, Secret, SecretRef, secret_values, split_urls
from reportsync.errors import ConfigError, Problem
from reportsync.fsutil import require_private_file

if TYPE_CHECKING:
    import apprise

QUIETED_LOGGERS = ("apprise", "urllib3")


@dataclass(frozen=True)
class Targets:
    healthchecks: Secret | None  # the check's ping URL, without a trailing slash
    apprise_urls: tuple[Secret, ...]
    events: frozenset[str]
    metrics_file: Path | None
    secrets: tuple[str, ...]  # every secret of the config, to scrub from what is sent or shown

    @property
    def sends(self) -> bool:
        return self.healthchecks is not None or bool(self.apprise_urls)


def resolve_targets(config: Config) -> Targets:
    """The monitoring of ``config``'s fetches; ConfigError (exit 2) if a URL cannot be read, is
    in a file others can read, or cannot be used."""
    notify = config.notify
    where = str(config.path) if config.path else None
    ping = _read(notify.healthchecks_url, "healthchecks_url", where)
    if ping is not None:
        parts = urlsplit(ping.reveal().strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError([Problem(_key(notify.healthchecks_url, "healthchecks_url"),
                                       "is not an http:// or https:// URL")], path=where,
                              remedy="Copy the check's ping URL from healthchecks "
                              "(https://hc-ping.com/<uuid>, or your own instance's).")
        ping = Secret(ping.reveal().strip().rstrip("/"))
    urls: tuple[Secret, ...] = ()
    listed = _read(notify.urls, "urls", where)
    if listed is not None:
        urls = tuple(Secret(url) for url in split_urls(listed.reveal()))
        if not urls:
            raise ConfigError([Problem(_key(notify.urls, "urls"), "holds no URL")], path=where,
                              remedy="Write one Apprise URL a line (docs/monitoring.md has "
                              "examples), or remove the key.")
        _check_apprise_urls(urls, _key(notify.urls, "urls"), where)
    return Targets(healthchecks=ping, apprise_urls=urls, events=frozenset(notify.on),
                   metrics_file=notify.metrics_file,
                   secrets=tuple(secret_values(config)) if ping or urls else ())


def _key(ref: SecretRef, name: str) -> str:
    """The key that names the secret, as the file has it: notify.urls_file."""
    suffix = "_env" if ref.env is not None else "_file" if ref.file is not None else ""
    return f"notify.{name}{suffix}"


def _read(ref: SecretRef, name: str, where: str | None) -> Secret | None:
    if not ref.configured:
        return None
    if ref.file is not None:  # a file others can read would give the URL's credentials away
        require_private_file(ref.file, f"notify.{name}_file", "URL")
    value = ref.resolve()
    if value is None or not value.reveal().strip():
        raise ConfigError([Problem(_key(ref, name), "is empty")], path=where,
                          remedy="Put the URL there, or remove the key.")
    return value


def _check_apprise_urls(urls: tuple[Secret, ...], key: str, where: str | None) -> None:
    """Every URL is one Apprise can send to (a known scheme, the parts its service needs)."""
    import apprise  # only a config with Apprise URLs pays for loading it

    problems = []
    with quiet_apprise():
        for number, url in enumerate(urls, start=1):
            if not apprise.Apprise(asset=apprise_asset()).add(url.reveal()):
                problems.append(Problem(key, f"URL {number} of {len(urls)} ({scheme_of(url)}) is "
                                        "not one Apprise can send to: an unknown scheme, or a "
                                        "part its service needs is missing"))
    if problems:
        raise ConfigError(problems, path=where,
                          remedy="Check the URL against Apprise's list of services "
                          "(https://github.com/caronc/apprise/wiki); docs/monitoring.md has "
                          "mail and Slack examples.")


def scheme_of(url: Secret) -> str:
    """The scheme of a URL, for messages: ``mailto://``; the rest of it may hold credentials."""
    scheme = url.reveal().partition("://")[0]
    return f"{scheme}://" if scheme.isascii() and scheme.replace("+", "").isalnum() and \
        len(scheme) <= 16 else "a URL"


def apprise_asset() -> apprise.AppriseAsset:
    """Apprise's settings for reportsync: nothing kept on disk (no persistent store)."""
    import apprise

    return apprise.AppriseAsset(storage_mode="memory")


@contextmanager
def quiet_apprise() -> Iterator[None]:
    """Apprise logs whole URLs (tokens in their paths) at DEBUG, and urllib3 (its HTTP client,
    through requests) each request's path: while Apprise runs, no record of either reaches any
    handler (our log file, stderr, an embedding program's root logger)."""
    loggers = [logging.getLogger(name) for name in QUIETED_LOGGERS]
    saved = [(logger.propagate, logger.disabled) for logger in loggers]
    for logger in loggers:
        logger.propagate, logger.disabled = False, True
    try:
        yield
    finally:
        for logger, (propagate, disabled) in zip(loggers, saved, strict=True):
            logger.propagate, logger.disabled = propagate, disabled

