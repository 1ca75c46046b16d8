"""The commented starter config ``reportsync init`` writes, and the providers' presets.

It is generated from the registered sections, so it shows every key of the schema with its
comment, default or example, in schema order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reportsync.config.model import SOURCE_KEYS, SOURCE_NAME_PATTERN, SOURCES
from reportsync.config.schema import SECTIONS, Key
from reportsync.config.tomlio import toml_literal


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
                docs: Mapping[str, str], *, header_commented: bool = False) -> None:
        lines.append(f"{'# ' if header_commented else ''}[{title}]")
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

    for registered in SECTIONS.values():
        if registered is SOURCES:
            if preset.notes:
                lines.extend(f"# {note}" for note in preset.notes)
            section(f"sources.{table}", registered.keys, values, preset.docs)
        elif registered.many:  # an example table, all commented: NAME is the user's to choose
            section(f"{registered.name}.NAME", registered.keys, {}, {}, header_commented=True)
        elif registered.starter_note:  # an optional feature: off until its lines are uncommented
            lines.extend(f"# {note}" for note in registered.starter_note)
            section(registered.name, registered.keys, {}, {}, header_commented=True)
        else:
            section(registered.name, registered.keys, {}, {})
    return "\n".join(lines)
