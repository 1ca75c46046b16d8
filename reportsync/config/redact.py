"""Secrets by schema: a config with every secret redacted, and every secret it resolves to.

The support bundle (doctor) writes ``redacted_text`` instead of the config and scrubs each of its
members of ``secret_values``. What is a secret is the schema's word (``Key.secret``, the
``secret()`` fields), not a list of names: a key that is not in the schema — a typo, or a section
of a newer version — is redacted wholesale, because nothing says it holds no secret.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from reportsync.config.model import Config, SecretRef
from reportsync.config.paths import expand_path
from reportsync.config.schema import REDACTED, SECTIONS, Section
from reportsync.config.tomlio import dump_toml, tomllib
from reportsync.errors import ReportsyncError


def redacted_document(document: Mapping[str, Any]) -> dict[str, Any]:
    """``document`` (a parsed config, valid or not) with every secret and every value the schema
    does not know replaced by ``REDACTED``; ``*_env`` and ``*_file`` stay visible (they say where
    a secret lives, not what it is)."""
    redacted: dict[str, Any] = {}
    for name, value in document.items():
        section = SECTIONS.get(name)
        if section is None or not isinstance(value, Mapping):
            redacted[name] = REDACTED
        elif section.many:
            redacted[name] = {table_name: _redacted_table(section, table)
                              if isinstance(table, Mapping) else REDACTED
                              for table_name, table in value.items()}
        else:
            redacted[name] = _redacted_table(section, value)
    return redacted


def _redacted_table(section: Section, table: Mapping[str, Any]) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    for name, value in table.items():
        key = section.key(name)
        if key is None or key.secret:
            shown[name] = REDACTED
        else:
            shown[name] = key.redact(value) if key.redact is not None else value
    return shown


def redacted_text(text: str) -> str:
    """A config file's text, redacted (``redacted_document``) and written back as TOML. A text
    that is not TOML cannot be redacted key by key, so none of it is kept."""
    header = "# the config, redacted by reportsync: secrets and unknown keys are " \
             f"{REDACTED}\n"
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return f"# the config is not valid TOML ({exc}); its text is left out\n"
    return header + dump_toml(redacted_document(document))


Items = Callable[[str], list[str]] | None  # Key.items: how a secret that holds several splits


def secret_values(source: Config | Mapping[str, Any], environ: Mapping[str, str] | None = None,
                  *, config_path: Path | None = None) -> list[str]:
    """Every secret the config resolves to (inline values, the variables ``*_env`` names, the
    contents of ``*_file`` files), longest first, for scrubbing text that may hold them.

    ``source`` is a loaded Config or, for a config that does not validate, its TOML document
    (``config_path`` locates relative ``*_file`` paths). Secrets that cannot be read are skipped.
    """
    if isinstance(source, Config):
        environ = source.environ if environ is None else environ
        refs = _config_refs(source)
    else:
        environ = os.environ if environ is None else environ
        base = config_path.parent if config_path is not None else None
        refs = _document_refs(source, base, environ)
    found: set[str] = set()
    for ref, items in refs:
        value = _resolved(ref, environ)
        if value:
            found.add(value)
            found.update(items(value) if items is not None else ())
    return sorted((value for value in found if value), key=len, reverse=True)


def _resolved(ref: SecretRef, environ: Mapping[str, str]) -> str | None:
    try:
        value = ref.resolve(environ)
    except ReportsyncError:
        return None
    return value.reveal() if value is not None else None


def secret_refs(config: Config) -> list[SecretRef]:
    """Every secret the config names (resolved or not), by the schema, in section order: where
    each lives (an ``*_env`` variable, an ``*_file``), for what must bring them along (the
    environment file of a systemd unit)."""
    return [ref for ref, _items in _config_refs(config)]


def _config_refs(config: Config) -> list[tuple[SecretRef, Items]]:
    refs: list[tuple[SecretRef, Items]] = []
    for section in SECTIONS.values():
        value = getattr(config, section.attribute, None) if section.attribute else None
        if value is None:
            value = config.extra_sections.get(section.name)
        models = list(value.values()) if section.many and value is not None else [value]
        for model in models:
            for attribute, parts in section.secrets():
                ref = getattr(model, attribute, None)
                if isinstance(ref, SecretRef):
                    refs.append((ref, next(iter(parts.values())).items))
    return refs


def _document_refs(document: Mapping[str, Any], base: Path | None,
                   environ: Mapping[str, str]) -> list[tuple[SecretRef, Items]]:
    """The secrets a (possibly invalid) document names, read as the loader would read them."""
    refs: list[tuple[SecretRef, Items]] = []
    for section in SECTIONS.values():
        value = document.get(section.name)
        if not isinstance(value, Mapping):
            continue
        tables = list(value.values()) if section.many else [value]
        for table in tables:
            if not isinstance(table, Mapping):
                continue
            for attribute, parts in section.secrets():
                for part, key in parts.items():
                    raw = table.get(key.name)
                    if not isinstance(raw, str) or not raw:
                        continue
                    if part == "file":
                        with contextlib.suppress(ValueError):
                            refs.append((SecretRef(attribute,
                                                   file=expand_path(raw, base, environ)),
                                         key.items))
                    elif part == "env":
                        refs.append((SecretRef(attribute, env=raw), key.items))
                    else:
                        refs.append((SecretRef(attribute, inline=raw), key.items))
    return refs
