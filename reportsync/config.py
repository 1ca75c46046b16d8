"""TOML config → frozen dataclasses, with every problem reported at once.

One schema (the ``*_KEYS`` tables below) drives validation, the defaults and the commented starter
config that ``reportsync init`` writes, so the three never disagree.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import platformdirs

from reportsync.errors import ConfigError
from reportsync.fsutil import too_open

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

APP_NAME = "reportsync"
CONFIG_ENV = "REPORTSYNC_CONFIG"

PROTOCOLS = ("sftp", "ftp", "ftps")
DEFAULT_PORTS = {"sftp": 22, "ftp": 21, "ftps": 21}
SOURCE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


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
    """Where a secret comes from: an environment variable, a file, or (discouraged) inline."""

    config_key: str  # e.g. "sources.ibkr.password_env", for messages
    env: str | None = None
    file: Path | None = None
    inline: str | None = field(default=None, repr=False)
    # the environment ``env`` is read from: the one the config was loaded in (None: ours)
    environ: Mapping[str, str] | None = field(default=None, repr=False, compare=False)

    @property
    def configured(self) -> bool:
        return self.env is not None or self.file is not None or self.inline is not None

    def resolve(self) -> Secret | None:
        """The secret, or None if none is configured; ConfigError if it cannot be read."""
        if self.inline is not None:
            return Secret(self.inline)
        if self.env is not None:
            value = (os.environ if self.environ is None else self.environ).get(self.env)
            if value is None:
                raise ConfigError(
                    [f"{self.config_key}: environment variable {self.env} is not set"],
                    remedy=f"Export {self.env} in the environment reportsync runs in "
                    "(cron and systemd start with an almost empty one).",
                )
            return Secret(value)
        if self.file is not None:
            try:
                text = self.file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(
                    [f"{self.config_key}: cannot read {self.file}: {exc.strerror}"],
                    remedy="Create the file or fix its permissions (it should be 0600).",
                ) from None
            return Secret(text.rstrip("\r\n"))
        return None


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    gnupg_home: Path
    gpg_binary: str
    gpg_passphrase: SecretRef
    max_plaintext_bytes: int = 2 * 1024**3  # decryption stops past this (compression bombs)


@dataclass(frozen=True)
class RetentionPolicy:
    days: int = 100
    warn_days: int = 10
    local_encrypted: str = "expire"
    archive_days: int = 0
    remote: str = "keep"
    max_deletions: int = 50


@dataclass(frozen=True)
class SourceConfig:
    name: str
    protocol: str
    host: str
    port: int
    username: str
    key_file: Path | None
    certificate_file: Path | None
    key_passphrase: SecretRef
    known_hosts: Path | None
    host_key_fingerprint: str | None
    password: SecretRef
    passive: bool
    remote_dir: str
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    download_dir: Path
    output_dir: Path
    decrypt: bool
    require_signature: str
    expect_every_days: int
    timeout: float
    retries: int
    ca_file: Path | None = None

    def matches(self, name: str) -> bool:
        """Whether a remote file name is selected by ``include`` and not by ``exclude``."""
        included = any(fnmatch.fnmatchcase(name, pattern) for pattern in self.include)
        return included and not any(fnmatch.fnmatchcase(name, pattern) for pattern in self.exclude)


@dataclass(frozen=True)
class Config:
    path: Path | None
    settings: Settings
    retention: RetentionPolicy
    sources: Mapping[str, SourceConfig]
    # the environment the config was loaded in: its secrets' variables, and what children get
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ, repr=False,
                                       compare=False)

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


# --- the schema ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One config key: its type, default and the comment the starter config shows."""

    name: str
    kind: str  # "str" | "int" | "float" | "bool" | "path" | "list" | "choice"
    default: Any
    doc: str
    choices: tuple[str, ...] = ()
    example: Any = None  # shown in the starter config instead of the default


SETTINGS_KEYS: tuple[Key, ...] = (
    Key("state_dir", "path", None, "ledger.sqlite3, the lock and logs live here"),
    Key("gnupg_home", "path", None, "reportsync's own GnuPG home (created 0700)"),
    Key("gpg_binary", "str", "gpg", "name on PATH or full path of gpg"),
    Key("gpg_passphrase_env", "str", None, "env var holding the PGP key's passphrase",
        example="REPORTSYNC_GPG_PASSPHRASE"),
    Key("gpg_passphrase_file", "path", None, "or: a file (0600) holding it"),
    Key("max_plaintext_bytes", "int", 2 * 1024**3,
        "a decrypted report larger than this fails (compression-bomb guard); 2 GiB"),
)

RETENTION_KEYS: tuple[Key, ...] = (
    Key("days", "int", 100, "the provider's purge horizon"),
    Key("warn_days", "int", 10, "an unfetched file this close to purge is 'at risk'"),
    Key("local_encrypted", "choice", "expire",
        "'expire': delete local encrypted copies older than `days` once decrypted and verified",
        choices=("expire", "keep")),
    Key("archive_days", "int", 0, "decrypted reports: 0 = keep forever (financial records)"),
    Key("remote", "choice", "keep", "what to do with files on the server",
        choices=("keep", "delete-expired", "delete-after-fetch")),
    Key("max_deletions", "int", 50, "per run and source: at most this many files lose copies; "
        "the rest follow in later runs"),
)

# Keys of earlier versions: still an error (a key that does nothing must not look set), but one
# that says what replaced it.
REMOVED_KEYS: dict[str, str] = {
    "retention.max_deletions_percent": (
        "removed; the cap is max_deletions alone, and a source whose newest listed file is older "
        "than retention.days gets no deletions at all (docs/retention.md#the-safety-caps): delete "
        "this line"),
}

SOURCE_KEYS: tuple[Key, ...] = (
    Key("protocol", "choice", None, "sftp | ftp | ftps (explicit TLS)", choices=PROTOCOLS,
        example="sftp"),
    Key("host", "str", None, "server name", example="xfer.example.com"),
    Key("port", "int", None, "default 22 for sftp, 21 for ftp/ftps", example=22),
    Key("username", "str", None, "login name", example="acme"),
    Key("key_file", "path", None, "sftp: private key", example="~/.ssh/reportsync_rsa"),
    Key("certificate_file", "path", None, "sftp: optional OpenSSH certificate for the key"),
    Key("key_passphrase_env", "str", None, "env var holding the key's passphrase"),
    Key("key_passphrase_file", "path", None, "or: a file (0600) holding it"),
    Key("known_hosts", "path", None, "sftp: the server's host key must be in here ...",
        example="~/.ssh/known_hosts"),
    Key("host_key_fingerprint", "str", None, "... or pinned here (SHA256:...)"),
    Key("password_env", "str", None, "ftp/ftps: env var holding the password; never logged"),
    Key("password_file", "path", None, "or: a file (0600) holding it"),
    Key("password", "str", None, "inline password: only accepted if this file is 0600"),
    Key("ca_file", "path", None, "ftps: CA bundle to verify the server (default: system CAs)"),
    Key("passive", "bool", True, "ftp/ftps: passive mode (the data channel goes to the host)"),
    Key("remote_dir", "str", ".", "folder on the server", example="outgoing"),
    Key("include", "list", ["*.pgp", "*.gpg", "*.asc"], "file name patterns to fetch"),
    Key("exclude", "list", [], "file name patterns to skip"),
    Key("download_dir", "path", None, "encrypted copies as downloaded",
        example="~/reports/NAME/encrypted"),
    Key("output_dir", "path", None, "decrypted reports (0700 folder, 0600 files)",
        example="~/reports/NAME/statements"),
    Key("decrypt", "bool", True, "files that are not PGP are archived as they are"),
    Key("require_signature", "str", "", "signer fingerprint; then unsigned files fail"),
    Key("expect_every_days", "int", 0, ">0: warn when no new file arrived for this long"),
    Key("timeout", "float", 30.0, "seconds for connect and each network operation"),
    Key("retries", "int", 3, "retries for transient network errors (with backoff)"),
)

REQUIRED_SOURCE_KEYS = ("protocol", "host", "username", "download_dir", "output_dir")


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    override = (os.environ if environ is None else environ).get(CONFIG_ENV)
    if override:
        return expand_path(override)
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / "config.toml"


def default_state_dir() -> Path:
    return Path(platformdirs.user_state_dir(APP_NAME, appauthor=False))


def default_gnupg_home() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / "gnupg"


def expand_path(raw: str, relative_to: Path | None = None) -> Path:
    """Expand ``~`` and ``$VARS``; a relative path is taken relative to the config's folder."""
    path = Path(os.path.expanduser(os.path.expandvars(raw)))
    if not path.is_absolute() and relative_to is not None:
        path = relative_to / path
    return path


class _Problems:
    """Collects every problem found, so the user fixes a config in one pass, not ten."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, what: str) -> None:
        self.items.append(f"{where}: {what}")


def _coerce(key: Key, value: Any, where: str, problems: _Problems, base: Path | None) -> Any:
    kind = key.kind
    if kind in ("str", "choice"):
        if not isinstance(value, str):
            problems.add(where, f"must be a string, not {_toml_type(value)}")
            return None
        if kind == "choice" and value not in key.choices:
            problems.add(where, f"must be one of {', '.join(key.choices)}, not {value!r}")
            return None
        return value
    if kind == "path":
        if not isinstance(value, str) or not value:
            problems.add(where, "must be a non-empty path string")
            return None
        return expand_path(value, base)
    if kind == "bool":
        if not isinstance(value, bool):
            problems.add(where, f"must be true or false, not {_toml_type(value)}")
            return None
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            problems.add(where, f"must be a whole number, not {_toml_type(value)}")
            return None
        if value < 0:
            problems.add(where, "must not be negative")
            return None
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.add(where, f"must be a number, not {_toml_type(value)}")
            return None
        if value <= 0:
            problems.add(where, "must be greater than zero")
            return None
        return float(value)
    if kind == "list":
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            problems.add(where, "must be a list of strings")
            return None
        return tuple(value)
    raise AssertionError(f"unknown schema kind {kind}")  # pragma: no cover


def _toml_type(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _read_table(
    table: Any,
    keys: tuple[Key, ...],
    where: str,
    problems: _Problems,
    base: Path | None,
) -> dict[str, Any]:
    """Validated values for every key of the schema (defaults filled in)."""
    values: dict[str, Any] = {key.name: key.default for key in keys}
    if not isinstance(table, dict):
        problems.add(where, "must be a table")
        return values
    known = {key.name: key for key in keys}
    for name, raw in table.items():
        key = known.get(name)
        if key is None:
            removed = REMOVED_KEYS.get(f"{where}.{name}")
            hint = f": {removed}" if removed else _did_you_mean(name, list(known))
            problems.add(f"{where}.{name}", f"unknown key{hint}")
            continue
        coerced = _coerce(key, raw, f"{where}.{name}", problems, base)
        if coerced is not None:
            values[name] = coerced
    return values


def _did_you_mean(name: str, candidates: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


NO_SOURCE = "no source is configured"
NO_SOURCE_REMEDY = ("Add a [sources.NAME] table for the server to fetch from (docs/configuration.md "
                    "lists its keys). Only `keys ...`, `init` and `schedule` work without one.")


def load_config(path: Path | None = None, *, environ: Mapping[str, str] | None = None,
                allow_no_sources: bool = False) -> Config:
    """Read and validate the config file; ConfigError lists every problem with file and key.

    ``allow_no_sources``: a config with only ``[settings]`` (and ``[retention]``) is valid, for
    the commands that need no source (``keys ...``, ``schedule``)."""
    config_path = path if path is not None else default_config_path(environ)
    try:
        raw_text = config_path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            [f"{config_path} does not exist"],
            path=str(config_path),
            remedy="Run `reportsync init` to write a starter config, or pass --config PATH.",
        ) from None
    except OSError as exc:
        raise ConfigError([f"cannot read {config_path}: {exc.strerror}"], path=str(config_path)) from None
    try:
        document = tomllib.loads(raw_text.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(["the file is not UTF-8 text"], path=str(config_path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], path=str(config_path)) from None
    return parse_config(
        document, config_path=config_path, file_is_private=too_open(config_path) is None,
        allow_no_sources=allow_no_sources, environ=environ,
    )


def parse_config(
    document: Mapping[str, Any],
    *,
    config_path: Path | None = None,
    file_is_private: bool = True,
    allow_no_sources: bool = False,
    environ: Mapping[str, str] | None = None,
) -> Config:
    problems = _Problems()
    base = config_path.parent if config_path else None

    for name in document:
        if name not in ("settings", "retention", "sources"):
            hint = _did_you_mean(name, ["settings", "retention", "sources"])
            problems.add(name, f"unknown section{hint}")

    settings_values = _read_table(document.get("settings", {}), SETTINGS_KEYS, "settings",
                                  problems, base)
    settings = Settings(
        state_dir=settings_values["state_dir"] or default_state_dir(),
        gnupg_home=settings_values["gnupg_home"] or default_gnupg_home(),
        gpg_binary=settings_values["gpg_binary"],
        gpg_passphrase=_secret_ref(
            "settings.gpg_passphrase", settings_values["gpg_passphrase_env"],
            settings_values["gpg_passphrase_file"], None, problems,
        ),
        max_plaintext_bytes=settings_values["max_plaintext_bytes"],
    )
    if settings.max_plaintext_bytes == 0:
        problems.add("settings.max_plaintext_bytes", "must be greater than zero")

    retention_values = _read_table(document.get("retention", {}), RETENTION_KEYS, "retention",
                                   problems, base)
    retention = RetentionPolicy(**retention_values)
    if retention.warn_days >= retention.days > 0:
        problems.add("retention.warn_days", f"must be smaller than retention.days ({retention.days})")

    sources: dict[str, SourceConfig] = {}
    raw_sources = document.get("sources", {})
    if not isinstance(raw_sources, dict):
        problems.add("sources", "must be a table of [sources.NAME] tables")
        raw_sources = {}
    for name, table in raw_sources.items():
        source = _parse_source(name, table, problems, base, file_is_private, config_path)
        if source is not None:
            sources[name] = source
    if not raw_sources and not allow_no_sources:
        problems.add("sources", NO_SOURCE)

    if problems.items:
        where = str(config_path) if config_path else None
        only_no_source = problems.items == [f"sources: {NO_SOURCE}"]
        raise ConfigError(problems.items, path=where,
                          remedy=NO_SOURCE_REMEDY if only_no_source else None)
    if environ is None:
        return Config(path=config_path, settings=settings, retention=retention, sources=sources)
    # W2-B's shim until W2-C threads ``environ`` through the schema: each secret reads from it
    settings = replace(settings, gpg_passphrase=replace(settings.gpg_passphrase, environ=environ))
    sources = {name: replace(source, password=replace(source.password, environ=environ),
                             key_passphrase=replace(source.key_passphrase, environ=environ))
               for name, source in sources.items()}
    return Config(path=config_path, settings=settings, retention=retention, sources=sources,
                  environ=environ)


def _secret_ref(
    config_key: str,
    env: str | None,
    file: Path | None,
    inline: str | None,
    problems: _Problems,
) -> SecretRef:
    given = [kind for kind, value in (("_env", env), ("_file", file), ("", inline)) if value]
    if len(given) > 1:
        problems.add(config_key, f"set only one of {', '.join(config_key + g for g in given)}")
    return SecretRef(config_key=config_key, env=env, file=file, inline=inline)


def _parse_source(
    name: str,
    table: Any,
    problems: _Problems,
    base: Path | None,
    file_is_private: bool,
    config_path: Path | None = None,
) -> SourceConfig | None:
    where = f"sources.{name}"
    if not SOURCE_NAME_PATTERN.match(name):
        problems.add(where, "a source name may hold letters, digits, '.', '_' and '-' only")
    values = _read_table(table, SOURCE_KEYS, where, problems, base)
    if not isinstance(table, dict):
        return None
    for required in REQUIRED_SOURCE_KEYS:
        if required not in table:
            problems.add(f"{where}.{required}", "is required")
    protocol = values["protocol"]
    if protocol is None:
        return None

    if protocol == "sftp":
        if not (values["key_file"] or _has_password(values)):
            problems.add(f"{where}.key_file", "sftp needs key_file (or a password_env/password_file)")
        if not (values["known_hosts"] or values["host_key_fingerprint"]):
            problems.add(
                f"{where}.known_hosts",
                "sftp needs known_hosts or host_key_fingerprint: unknown host keys are refused",
            )
        fingerprint = values["host_key_fingerprint"]
        if fingerprint and not re.fullmatch(r"SHA256:[A-Za-z0-9+/]{43}=?", fingerprint):
            problems.add(f"{where}.host_key_fingerprint",
                         "must look like SHA256:<43 base64 characters> (as `ssh-keygen -l` prints)")
        for ftp_only in ("ca_file",):
            if ftp_only in table:
                problems.add(f"{where}.{ftp_only}", "applies to ftps only")
    else:
        for sftp_only in ("key_file", "certificate_file", "key_passphrase_env",
                          "key_passphrase_file", "known_hosts", "host_key_fingerprint"):
            if sftp_only in table:
                problems.add(f"{where}.{sftp_only}", f"applies to sftp only, not {protocol}")
        if not _has_password(values):
            problems.add(f"{where}.password_env", f"{protocol} needs password_env or password_file")
        if protocol == "ftp" and "ca_file" in table:
            problems.add(f"{where}.ca_file", "applies to ftps only")
    if values["password"] is not None and not file_is_private:
        prefix = ""
        if config_path is not None:  # OpenSSH's words, as for a private key left open
            with contextlib.suppress(OSError):
                mode = too_open(config_path)
                if mode is not None:
                    prefix = f"Permissions {mode:04o} for '{config_path}' are too open. "
        problems.add(
            f"{where}.password",
            f"{prefix}An inline password is accepted only if the config file is not readable "
            "by group or others (chmod 600); better use password_env or password_file",
        )
    if values["certificate_file"] and not values["key_file"]:
        problems.add(f"{where}.certificate_file", "needs key_file (the certificate's private key)")
    if values["port"] is not None and not 0 < values["port"] < 65536:
        problems.add(f"{where}.port", "must be between 1 and 65535")
    if not values["include"]:
        problems.add(f"{where}.include", "is empty: no file would ever be fetched")
    if values["require_signature"] and not re.fullmatch(r"[0-9A-Fa-f]{16,40}",
                                                       values["require_signature"]):
        problems.add(f"{where}.require_signature", "must be a key fingerprint (hex)")
    if values["require_signature"] and not values["decrypt"]:
        problems.add(f"{where}.require_signature", "needs decrypt = true: a file archived as "
                     "delivered is never decrypted, so its signature is never checked")
    if values["download_dir"] and values["output_dir"] and \
            values["download_dir"] == values["output_dir"] and values["decrypt"]:
        problems.add(f"{where}.output_dir", "must differ from download_dir")

    if any(values[key] is None for key in REQUIRED_SOURCE_KEYS):
        return None
    return SourceConfig(
        name=name,
        protocol=protocol,
        host=values["host"],
        port=values["port"] or DEFAULT_PORTS[protocol],
        username=values["username"],
        key_file=values["key_file"],
        certificate_file=values["certificate_file"],
        key_passphrase=_secret_ref(f"{where}.key_passphrase", values["key_passphrase_env"],
                                   values["key_passphrase_file"], None, problems),
        known_hosts=values["known_hosts"],
        host_key_fingerprint=values["host_key_fingerprint"],
        password=_secret_ref(f"{where}.password", values["password_env"],
                             values["password_file"], values["password"], problems),
        passive=values["passive"],
        remote_dir=values["remote_dir"],
        include=tuple(values["include"]),
        exclude=tuple(values["exclude"]),
        download_dir=values["download_dir"],
        output_dir=values["output_dir"],
        decrypt=values["decrypt"],
        require_signature=values["require_signature"].upper(),
        expect_every_days=values["expect_every_days"],
        timeout=values["timeout"],
        retries=values["retries"],
        ca_file=values["ca_file"],
    )


def _has_password(values: Mapping[str, Any]) -> bool:
    return any(values[key] for key in ("password_env", "password_file", "password"))


# --- the starter config ---------------------------------------------------------------------------


def toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_literal(item) for item in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class ProviderPreset:
    """A provider's known settings for one source: what ``init --provider`` fills in."""

    name: str
    title: str
    values: Mapping[str, Any]  # source keys written active, with these values
    notes: tuple[str, ...] = ()  # comment lines above the [sources.NAME] table
    docs: Mapping[str, str] = field(default_factory=dict)  # comments that replace the schema's


_PGP_PATTERNS = ("*.pgp", "*.gpg", "*.asc")
USERNAME_PLACEHOLDER = "CHANGE-ME"

# No provider: a generic SFTP source with the schema's examples.
GENERIC_PRESET = ProviderPreset(
    name="generic",
    title="a generic SFTP server",
    values={key.name: key.example if key.example is not None else key.default
            for key in SOURCE_KEYS
            if key.name in ("protocol", "host", "port", "username", "key_file", "known_hosts",
                            "remote_dir", "include", "download_dir", "output_dir")},
)

PROVIDER_PRESETS: Mapping[str, ProviderPreset] = {
    "ibkr-sftp": ProviderPreset(
        name="ibkr-sftp",
        title="Interactive Brokers report delivery over SFTP",
        values={
            "protocol": "sftp",
            "host": "xfer.interactivebrokers.com",
            "port": 32,
            "username": USERNAME_PLACEHOLDER,
            "key_file": "~/.ssh/reportsync_rsa",
            "known_hosts": "~/.ssh/known_hosts",
            "remote_dir": "outgoing",
            "include": [*_PGP_PATTERNS, "*.xml", "*.csv"],
            "download_dir": "~/reports/NAME/encrypted",
            "output_dir": "~/reports/NAME/statements",
        },
        notes=(
            "Interactive Brokers, SFTP: log in with your own RSA 2048 key; send the provider",
            "the .pub file (reportsync keys ssh generate --out ~/.ssh/reportsync_rsa).",
            "The server's host key must be in known_hosts (or pinned in host_key_fingerprint):",
            "`reportsync doctor` shows the key the server offers and the line to add; add it",
            "only once its fingerprint matches the one the provider publishes.",
            "PGP is optional on this route, so unencrypted .xml/.csv reports are fetched too.",
        ),
        docs={"username": "the SFTP username the provider gave you",
              "include": "PGP files, and unencrypted reports (allowed on SFTP)"},
    ),
    "ibkr-ftp": ProviderPreset(
        name="ibkr-ftp",
        title="Interactive Brokers report delivery over FTP",
        values={
            "protocol": "ftp",
            "host": "ftp2.interactivebrokers.com",
            "port": 21,
            "username": USERNAME_PLACEHOLDER,
            "password_env": "IBKR_FTP_PASSWORD",
            "passive": True,
            "remote_dir": "outgoing",
            "include": list(_PGP_PATTERNS),
            "download_dir": "~/reports/NAME/encrypted",
            "output_dir": "~/reports/NAME/statements",
        },
        notes=(
            "Interactive Brokers, FTP: username and password, passive mode; every report is",
            "PGP-encrypted to your public key (PGP is required on this route). The password",
            "comes from the variable password_env names (or from password_file, mode 0600):",
            "set it where cron or systemd runs reportsync. A firewall must let the command",
            "channel out to port 21 and the data channel to the server's ports above 1024.",
        ),
        docs={"username": "the FTP username the provider gave you",
              "password_env": "env var holding the FTP password; never logged"},
    ),
}


def starter_config(source_name: str = "ibkr", provider: str | None = None,
                   username: str | None = None) -> str:
    """A commented config with every key of the schema, for ``reportsync init``.

    ``provider`` (a key of PROVIDER_PRESETS) fills in that provider's host, port, folder and
    patterns; without it the source shows the schema's examples. ``username`` replaces the
    placeholder. Keys the preset does not set are commented out and show their default.
    """
    if provider is not None and provider not in PROVIDER_PRESETS:
        raise ValueError(f"unknown provider {provider!r} (known: {', '.join(PROVIDER_PRESETS)})")
    if not SOURCE_NAME_PATTERN.match(source_name):
        raise ValueError(f"invalid source name {source_name!r}: letters, digits, '.', '_' and '-' "
                         "only, starting with a letter or digit")
    if username is not None and (not username or any(ord(c) < 32 or ord(c) == 127
                                                     for c in username)):
        raise ValueError("a username must be non-empty and hold no control characters")
    preset = PROVIDER_PRESETS[provider] if provider is not None else GENERIC_PRESET
    values = dict(preset.values)
    if username is not None:
        values["username"] = username
    table = source_name if re.fullmatch(r"[A-Za-z0-9_-]+", source_name) else f'"{source_name}"'
    lines = [
        "# reportsync configuration. Every key is listed; commented ones show their default.",
        "# `~` and $VARS expand in paths. Unknown keys are errors. Docs: docs/configuration.md",
        "",
    ]

    def literal(key: Key, value: Any) -> str:
        if value is None:
            return '""'
        if key.kind == "path" and isinstance(value, str):
            return toml_literal(value.replace("NAME", source_name))
        return toml_literal(value)

    def section(title: str, keys: tuple[Key, ...], preset_values: Mapping[str, Any],
                docs: Mapping[str, str]) -> None:
        lines.append(f"[{title}]")
        for key in keys:
            active = key.name in preset_values
            if active:
                shown = preset_values[key.name]
            else:
                shown = key.example if key.example is not None else key.default
            prefix = "" if active else "# "
            doc = docs.get(key.name, key.doc)
            lines.append(f"{prefix}{key.name} = {literal(key, shown)}".ljust(48) + f"  # {doc}")
        lines.append("")

    section("settings", SETTINGS_KEYS, {}, {})
    section("retention", RETENTION_KEYS, {}, {})
    if preset.notes:
        lines.extend(f"# {note}" for note in preset.notes)
    section(f"sources.{table}", SOURCE_KEYS, values, preset.docs)
    return "\n".join(lines)
