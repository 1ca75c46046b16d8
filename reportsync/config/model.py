"""The config as frozen dataclasses, each field declaring its key: the one schema.

Every other module reads these attributes. A field made with ``setting()`` is one key (named
like the field); one made with ``secret()`` is the ``*_env``/``*_file`` (and inline) keys that
name one secret. The section registrations at the end add the rules that span several keys.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reportsync.config.paths import default_gnupg_home, default_state_dir
from reportsync.config.schema import (
    Check,
    TableView,
    dns_name_or_ip,
    folder,
    not_empty,
    pgp_fingerprint_or_empty,
    postgres_url,
    register_section,
    secret,
    setting,
    ssh_fingerprint,
    url_without_password,
)
from reportsync.errors import ConfigError, Problem
from reportsync.fsutil import read_regular_file, too_open
from reportsync.hooks import argv_problem
from reportsync.units import MAX_PLAINTEXT_DEFAULT, GiB

PROTOCOLS = ("sftp", "ftp", "ftps")
DEFAULT_PORTS = {"sftp": 22, "ftp": 21, "ftps": 21}
SOURCE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_DAYS = 36500  # a hundred years: more is a typo, and dates that far back do not exist
MAX_PLAINTEXT_LIMIT = 1024 * GiB  # 1 TiB
MAX_HOOK_TIMEOUT = 86400  # a day: a hook that needs longer should hand the work to a queue

NO_SOURCE = "no source is configured"
NO_SOURCE_REMEDY = ("Add a [sources.NAME] table for the server to fetch from (docs/configuration.md "
                    "lists its keys). Only `keys ...`, `init` and `schedule` work without one.")


class Secret:
    """A resolved secret that never shows itself in a repr, a log line or JSON."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True)
class SecretRef:
    """Where a secret comes from: an environment variable, a file, or (discouraged) inline.

    ``environ`` is the environment the config was loaded with; ``resolve()`` reads the variable
    from it (the process's own environment when none was given)."""

    config_key: str  # e.g. "sources.ibkr.password", for messages
    env: str | None = None
    file: Path | None = None
    inline: str | None = field(default=None, repr=False)
    environ: Mapping[str, str] | None = field(default=None, repr=False, compare=False)

    @property
    def configured(self) -> bool:
        return self.env is not None or self.file is not None or self.inline is not None

    def resolve(self, environ: Mapping[str, str] | None = None) -> Secret | None:
        """The secret, or None if none is configured; ConfigError if it cannot be read.

        ``environ`` overrides the environment the config was loaded with."""
        if self.inline is not None:
            return Secret(self.inline)
        if self.env is not None:
            variables = environ if environ is not None else \
                self.environ if self.environ is not None else os.environ
            value = variables.get(self.env)
            if value is None:
                raise ConfigError(
                    [Problem(f"{self.config_key}_env",
                             f"environment variable {self.env} is not set")],
                    remedy=f"Export {self.env} in the environment reportsync runs in "
                    "(cron and systemd start with an almost empty one).",
                )
            return Secret(value)
        if self.file is not None:
            try:
                text = read_regular_file(self.file).decode("utf-8")
            except OSError as exc:
                raise ConfigError(
                    [Problem(f"{self.config_key}_file",
                             f"cannot read {self.file}: {exc.strerror}")],
                    remedy="Create the file or fix its permissions (it should be 0600).",
                ) from None
            except UnicodeDecodeError:
                raise ConfigError([Problem(f"{self.config_key}_file",
                                           f"{self.file} is not UTF-8 text")],
                                  remedy="Write the secret into the file as UTF-8 text.") from None
            return Secret(text.rstrip("\r\n"))
        return None


def _platform(default: Any) -> Any:
    return lambda _values: default()


@dataclass(frozen=True, kw_only=True)
class Settings:
    state_dir: Path = setting("ledger.sqlite3, the lock and logs live here", kind="path",
                              default_of=_platform(default_state_dir), form=folder)
    gnupg_home: Path = setting("reportsync's own GnuPG home (created 0700)", kind="path",
                               default_of=_platform(default_gnupg_home), form=folder)
    gpg_binary: str = setting("name on PATH or full path of gpg", kind="str", default="gpg")
    gpg_passphrase: SecretRef = secret(env_doc="env var holding the PGP key's passphrase",
                                       env_example="REPORTSYNC_GPG_PASSPHRASE")
    max_plaintext_bytes: int = setting(  # decryption stops past this (compression bombs)
        "a decrypted report larger than this fails (compression-bomb guard); 2 GiB",
        kind="int", default=MAX_PLAINTEXT_DEFAULT, bounds=(1, MAX_PLAINTEXT_LIMIT))
    ledger_url: str | None = setting(
        "a shared PostgreSQL ledger (several hosts); unset: SQLite in state_dir", kind="str",
        example="postgresql://reportsync@db.internal:5432/reportsync", form=postgres_url,
        redact=url_without_password)
    ledger_password: SecretRef = secret(
        env_doc="env var holding the ledger database's password (else libpq's ~/.pgpass)",
        env_example="REPORTSYNC_LEDGER_PASSWORD")


@dataclass(frozen=True, kw_only=True)
class RetentionPolicy:
    days: int = setting("the provider's purge horizon", kind="int", default=100,
                        bounds=(0, MAX_DAYS))
    warn_days: int = setting("an unfetched file this close to purge is 'at risk'", kind="int",
                             default=10, bounds=(0, MAX_DAYS))
    local_encrypted: str = setting(
        "'expire': delete local encrypted copies older than `days` once decrypted and verified",
        default="expire", choices=("expire", "keep"))
    archive_days: int = setting("decrypted reports: 0 = keep forever (financial records)",
                                kind="int", default=0, bounds=(0, MAX_DAYS))
    remote: str = setting("what to do with files on the server", default="keep",
                          choices=("keep", "delete-expired", "delete-after-fetch"))
    max_deletions: int = setting("per run and source: at most this many files lose copies; "
                                 "the rest follow in later runs", kind="int", default=50,
                                 bounds=(0, 1_000_000))


SFTP = ("sftp",)
SSH_ENGINES = ("auto", "openssh", "paramiko")  # transports/sftp/engine.py chooses


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    name: str  # NAME of its [sources.NAME] table; not a key
    protocol: str = setting("sftp | ftp | ftps (explicit TLS)", choices=PROTOCOLS, required=True,
                            example="sftp")
    host: str = setting("server name", kind="str", required=True, example="xfer.example.com",
                        form=dns_name_or_ip)
    port: int = setting("default 22 for sftp, 21 for ftp/ftps", kind="int", example=22,
                        bounds=(1, 65535), default_of=lambda values: DEFAULT_PORTS[values["protocol"]])
    username: str = setting("login name", kind="str", required=True, example="acme")
    key_file: Path | None = setting("sftp: private key", kind="path", protocols=SFTP,
                                    example="~/.ssh/reportsync_rsa")
    certificate_file: Path | None = setting("sftp: optional OpenSSH certificate for the key",
                                            kind="path", protocols=SFTP)
    key_passphrase: SecretRef = secret(env_doc="env var holding the key's passphrase",
                                       protocols=SFTP)
    known_hosts: Path | None = setting("sftp: the server's host key must be in here ...",
                                       kind="path", protocols=SFTP, example="~/.ssh/known_hosts")
    host_key_fingerprint: str | None = setting("... or pinned here (SHA256:...)", kind="str",
                                               protocols=SFTP, form=ssh_fingerprint)
    ssh_engine: str = setting("sftp: who speaks SSH: auto (OpenSSH's ssh when it can) | "
                              "openssh | paramiko", choices=SSH_ENGINES, default="auto",
                              protocols=SFTP)
    password: SecretRef = secret(
        env_doc="ftp/ftps: env var holding the password; never logged",
        inline_doc="inline password: only accepted if this file is 0600")
    ca_file: Path | None = setting("ftps: CA bundle to verify the server (default: system CAs)",
                                   kind="path", protocols=("ftps",))
    passive: bool = setting("ftp/ftps: passive mode (the data channel goes to the host)",
                            kind="bool", default=True, protocols=("ftp", "ftps"),
                            elsewhere="ignored")
    remote_dir: str = setting("folder on the server", kind="str", default=".", example="outgoing")
    include: tuple[str, ...] = setting("file name patterns to fetch", kind="list",
                                       default=["*.pgp", "*.gpg", "*.asc"], form=not_empty)
    exclude: tuple[str, ...] = setting("file name patterns to skip", kind="list", default=[])
    download_dir: Path = setting("encrypted copies as downloaded", kind="path", required=True,
                                 example="~/reports/NAME/encrypted")
    output_dir: Path = setting("decrypted reports (0700 folder, 0600 files)", kind="path",
                               required=True, example="~/reports/NAME/statements")
    decrypt: bool = setting("files that are not PGP are archived as they are", kind="bool",
                            default=True)
    require_signature: str = setting("signer fingerprint; then unsigned files fail", kind="str",
                                     default="", form=pgp_fingerprint_or_empty,
                                     normalize=str.upper)
    expect_every_days: int = setting(">0: warn when no new file arrived for this long",
                                     kind="int", default=0, bounds=(0, MAX_DAYS))
    timeout: float = setting("seconds for connect and each network operation", kind="float",
                             default=30.0, bounds=(1, 3600))
    retries: int = setting("retries for transient network errors (with backoff)", kind="int",
                           default=3, bounds=(0, 20))
    on_new_report: tuple[str, ...] = setting(
        "argv (no shell) run for each newly archived report; {path} {source} {remote_name} "
        "{sha256}", kind="list", default=[], example=["/usr/local/bin/load-statement", "{path}"],
        form=argv_problem)
    hook_timeout: int = setting("seconds on_new_report may run; then it and its children are "
                                "stopped", kind="int", default=300, bounds=(1, MAX_HOOK_TIMEOUT))

    def matches(self, name: str) -> bool:
        """Whether a remote file name is selected by ``include`` and not by ``exclude``."""
        return self.matcher()(name)

    def matcher(self) -> Callable[[str], bool]:
        """``matches``, its patterns looked up once, for a whole listing (50,000 names)."""
        include, exclude = _any_of(tuple(self.include)).match, _any_of(tuple(self.exclude)).match
        return lambda name: include(name) is not None and exclude(name) is None


@functools.lru_cache(maxsize=64)
def _any_of(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One expression that matches what any of these ``fnmatch`` patterns matches (none: nothing):
    ``matches`` runs for every listed name, 50,000 on a big folder, so not a call per pattern."""
    if not patterns:
        return re.compile(r"(?!)")
    return re.compile("|".join(f"(?:{fnmatch.translate(pattern)})" for pattern in patterns))


NOTIFY_EVENTS = ("fail", "warn", "new", "success")
# Between two Apprise URLs: spaces, commas or line breaks, where the next URL's scheme follows; a
# comma inside a URL (mailto://...?to=a@x,b@x) is not followed by one, so it stays in its URL.
_URL_SEPARATOR = re.compile(r"[\s,]+(?=[A-Za-z][A-Za-z0-9+.-]*://)")


def split_urls(text: str) -> list[str]:
    """The URLs in ``text`` (a urls_env value, or a urls_file): separated by spaces, commas or
    line breaks; in a file, a line that starts with ``#`` is a comment."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = "\n".join(lines).strip().strip(",").strip()
    if not joined:
        return []
    return [url.strip().rstrip(",") for url in _URL_SEPARATOR.split(joined) if url.strip(" ,\n")]


def _not_a_folder(path: Path) -> str | None:
    return f"{path} is a folder; name the file to write" if path.is_dir() else None


@dataclass(frozen=True, kw_only=True)
class NotifySettings:
    """``[notify]``: who hears about a fetch (docs/monitoring.md). Nothing is sent unless set."""

    healthchecks_url: SecretRef = secret(
        env_doc="env var holding the healthchecks ping URL (a secret: never logged)",
        env_example="REPORTSYNC_HC_URL", file_doc="or: a file (0600) holding it",
        inline_doc="inline ping URL: only accepted if this file is 0600")
    urls: SecretRef = secret(
        env_doc="env var holding Apprise URLs, separated by spaces or commas",
        file_doc="or: a file (0600) of Apprise URLs, one a line (mail, Slack, ntfy, ...)",
        file_example="~/.config/reportsync/notify.urls", items=split_urls)
    on: tuple[str, ...] = setting("events that notify `urls`: fail, warn, new, success", kind="list",
                                  choices=NOTIFY_EVENTS, default=["fail", "warn"])
    metrics_file: Path | None = setting(
        "Prometheus text file (node_exporter's textfile folder), rewritten after every fetch",
        kind="path", example="/var/lib/prometheus/node-exporter/reportsync.prom",
        form=_not_a_folder)

    @property
    def configured(self) -> bool:
        """Whether any monitoring is set up (a fetch without it does no monitoring work)."""
        return self.healthchecks_url.configured or self.urls.configured or \
            self.metrics_file is not None


def _unconfigured_notify() -> NotifySettings:
    return NotifySettings(healthchecks_url=SecretRef("notify.healthchecks_url"),
                          urls=SecretRef("notify.urls"))


@dataclass(frozen=True)
class Config:
    path: Path | None
    settings: Settings
    retention: RetentionPolicy
    sources: Mapping[str, SourceConfig]
    # the environment the config was loaded with: secrets and child processes read this one
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ, repr=False,
                                       compare=False)
    # sections registered without an attribute here, by their name in the file
    extra_sections: Mapping[str, Any] = field(default_factory=dict)
    notify: NotifySettings = field(default_factory=_unconfigured_notify)

    def select(self, names: tuple[str, ...] | list[str] = ()) -> list[SourceConfig]:
        """The sources named (all when none are), in config order; unknown names are an error."""
        if not names:
            return list(self.sources.values())
        unknown = [name for name in names if name not in self.sources]
        if unknown:
            known = ", ".join(self.sources) or "none"
            raise ConfigError(
                [f"no source named {name!r} (configured: {known})" for name in unknown],
                path=str(self.path) if self.path else None,
            )
        return [self.sources[name] for name in names]


# --- the rules that span keys ------------------------------------------------------------------


def _warn_before_purge(table: TableView) -> None:
    days, warn_days = table.values["days"], table.values["warn_days"]
    if warn_days >= days > 0:
        table.problem("warn_days", f"must be smaller than retention.days ({days})")


def _has_password(values: Mapping[str, Any]) -> bool:
    return any(values[key] for key in ("password_env", "password_file", "password"))


def _login(table: TableView) -> None:
    values = table.values
    protocol = values["protocol"]
    if protocol == "sftp":
        if not (values["key_file"] or _has_password(values)):
            table.problem("key_file", "sftp needs key_file (or a password_env/password_file)")
        if not (values["known_hosts"] or values["host_key_fingerprint"]):
            table.problem("known_hosts", "sftp needs known_hosts or host_key_fingerprint: "
                          "unknown host keys are refused")
    elif not _has_password(values):
        table.problem("password_env", f"{protocol} needs password_env or password_file")
    if values["certificate_file"] and not values["key_file"]:
        table.problem("certificate_file", "needs key_file (the certificate's private key)")


def _inline_secret_in_private_file(attribute: str, what: str) -> Check:
    """The rule for an inline secret (``attribute`` set in the file itself): only in a config
    that group and others cannot read."""
    def check(table: TableView) -> None:
        if table.values[attribute] is None or table.file_is_private:
            return
        prefix = ""
        if table.config_path is not None:  # OpenSSH's words, as for a private key left open
            with contextlib.suppress(OSError):
                mode = too_open(table.config_path)
                if mode is not None:
                    prefix = f"Permissions {mode:04o} for '{table.config_path}' are too open. "
        table.problem(attribute, f"{prefix}An inline {what} is accepted only if the config file "
                      "is not readable by group or others (chmod 600); better use "
                      f"{attribute}_env or {attribute}_file")
    return check


def _signature_and_folders(table: TableView) -> None:
    values = table.values
    if values["require_signature"] and not values["decrypt"]:
        table.problem("require_signature", "needs decrypt = true: a file archived as delivered is "
                      "never decrypted, so its signature is never checked")
    if values["download_dir"] and values["download_dir"] == values["output_dir"] and \
            values["decrypt"]:
        table.problem("output_dir", "must differ from download_dir")


SETTINGS = register_section("settings", Settings, attribute="settings")
RETENTION = register_section(
    "retention", RetentionPolicy, attribute="retention", checks=(_warn_before_purge,),
    # keys of earlier versions: still an error (a key that does nothing must not look set), but
    # one that says what replaced it
    removed={"max_deletions_percent": (
        "removed; the cap is max_deletions alone, and a source whose newest listed file is older "
        "than retention.days gets no deletions at all (docs/retention.md#the-safety-caps): delete "
        "this line")},
)
SOURCES = register_section(
    "sources", SourceConfig, attribute="sources", many=True, variant_key="protocol",
    checks=(_login, _inline_secret_in_private_file("password", "password"),
            _signature_and_folders),
    table_name=(SOURCE_NAME_PATTERN,
                "a source name may hold letters, digits, '.', '_' and '-' only"),
    needed=(NO_SOURCE, NO_SOURCE_REMEDY),
)
NOTIFY = register_section(
    "notify", NotifySettings, attribute="notify",
    checks=(_inline_secret_in_private_file("healthchecks_url", "ping URL"),),
    starter_note=(
        "Monitoring (docs/monitoring.md): healthchecks pings around every fetch, Apprise",
        "notifications (mail, Slack, ntfy, ...) for the events in `on`, a Prometheus metrics",
        "file. The URLs hold credentials: keep them in a variable or a 0600 file.",
    ),
)
SETTINGS_KEYS = SETTINGS.keys
RETENTION_KEYS = RETENTION.keys
SOURCE_KEYS = SOURCES.keys
REQUIRED_SOURCE_KEYS = tuple(key.name for key in SOURCE_KEYS if key.required)
