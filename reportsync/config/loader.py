"""Reading a config: the file → a TOML document → validated dataclasses, every problem at once.

Nothing here knows a key by name: the sections registered in ``SECTIONS`` (model.py) say which
keys exist, their kinds, ranges and forms, which protocols they apply to, and the rules across
keys; this module applies them to any section alike.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reportsync.config.model import Config, SecretRef
from reportsync.config.paths import default_config_path
from reportsync.config.schema import (
    SECTIONS,
    Invalid,
    Section,
    TableView,
    check_value,
    did_you_mean,
    field_keys,
)
from reportsync.config.tomlio import key_text, tomllib
from reportsync.errors import ConfigError, Problem
from reportsync.fsutil import NotARegularFileError, read_regular_file, too_open

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def load_config(path: Path | None = None, *, environ: Mapping[str, str] | None = None,
                allow_no_sources: bool = False) -> Config:
    """Read and validate the config file; ConfigError lists every problem with file and key.

    ``environ`` (default: the process's environment) is where ``$REPORTSYNC_CONFIG``, ``$VARS``
    and ``~`` in paths and the ``*_env`` secrets are read from. ``allow_no_sources``: a config
    with only ``[settings]`` (and ``[retention]``) is valid, for the commands that need no source
    (``keys ...``, ``schedule``)."""
    environ = os.environ if environ is None else environ
    config_path = path if path is not None else default_config_path(environ)
    try:
        raw_text = read_regular_file(config_path)
    except OSError as exc:
        raise _unreadable(config_path, exc) from None
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


def _unreadable(path: Path, exc: OSError) -> ConfigError:
    remedy = None
    if isinstance(exc, FileNotFoundError):
        problem = f"{path} does not exist"
        remedy = "Run `reportsync init` to write a starter config, or pass --config PATH."
    elif isinstance(exc, NotARegularFileError):  # a FIFO would block the read forever
        problem = f"{path} is {exc.kind}, not a regular file"
        remedy = "Point --config (or REPORTSYNC_CONFIG) at the config file itself."
    else:
        problem = f"cannot read {path}: {exc.strerror}"
    return ConfigError([problem], path=str(path), remedy=remedy)


def parse_config(
    document: Mapping[str, Any],
    *,
    config_path: Path | None = None,
    file_is_private: bool = True,
    allow_no_sources: bool = False,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate a TOML document against every registered section; ConfigError lists every
    problem. Relative paths are taken from ``config_path``'s folder."""
    environ = os.environ if environ is None else environ
    reader = _Reader(config_path, file_is_private, environ)
    for name in document:
        if name not in SECTIONS:
            reader.problems.append(Problem(key_text(name), "unknown section"
                                           + did_you_mean(name, list(SECTIONS))))
    parsed: dict[str, Any] = {}
    for section in SECTIONS.values():
        raw = document.get(section.name)
        if section.many:
            parsed[section.name] = reader.many(section, raw, allow_empty=allow_no_sources)
        else:
            parsed[section.name] = reader.table(section, section.name, {} if raw is None else raw)

    if reader.problems:
        # a config that lacks only its sources gets the remedy that says how to add one
        remedy = next((section.needed[1] for section in SECTIONS.values() if section.needed
                       and reader.problems == [Problem(section.name, section.needed[0])]), None)
        raise ConfigError(reader.problems, path=str(config_path) if config_path else None,
                          remedy=remedy)
    attributes = {field.name for field in dataclasses.fields(Config)}
    return Config(
        path=config_path, environ=environ,
        extra_sections={name: value for name, value in parsed.items()
                        if SECTIONS[name].attribute not in attributes},
        **{SECTIONS[name].attribute: value for name, value in parsed.items()
           if SECTIONS[name].attribute in attributes},
    )


class _Reader:
    """Applies the schema to one document's tables, collecting every problem."""

    def __init__(self, config_path: Path | None, file_is_private: bool,
                 environ: Mapping[str, str]) -> None:
        self.config_path = config_path
        self.base = config_path.parent if config_path else None
        self.file_is_private = file_is_private
        self.environ = environ
        self.problems: list[Problem] = []

    def many(self, section: Section, raw: Any, *, allow_empty: bool) -> dict[str, Any]:
        """``[name.NAME]`` tables: a model per table, in file order."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.problems.append(Problem(section.name,
                                         f"must be a table of [{section.name}.NAME] tables"))
            raw = {}
        models: dict[str, Any] = {}
        for name, table in raw.items():
            where = f"{section.name}.{_table_name_text(name)}"
            if section.table_name is not None and not section.table_name[0].match(name):
                self.problems.append(Problem(where, section.table_name[1]))
            model = self.table(section, where, table, table_name=name)
            if model is not None:
                models[name] = model
        if not raw and section.needed and not allow_empty:
            self.problems.append(Problem(section.name, section.needed[0]))
        return models

    def table(self, section: Section, where: str, table: Any, *,
              table_name: str | None = None) -> Any:
        """The section's model for one table, or None when the table cannot make one."""
        if not isinstance(table, dict):
            self.problems.append(Problem(where, "must be a table"))
            return None
        view = TableView(where=where, values={key.name: key.default for key in section.keys},
                         present=set(), problems=self.problems,
                         file_is_private=self.file_is_private, config_path=self.config_path)
        given: set[str] = set()
        for name, raw in table.items():
            key = section.key(name)
            if key is None:
                removed = section.removed.get(name)
                hint = f": {removed}" if removed else did_you_mean(name, [k.name for k in
                                                                         section.keys])
                view.problem(key_text(name), f"unknown key{hint}")
                continue
            view.present.add(name)
            try:
                view.values[name] = check_value(key, raw, self.base, self.environ)
            except Invalid as invalid:
                view.problem(name, str(invalid))
            else:
                given.add(name)
        for key in section.keys:
            if key.required and key.name not in view.present:
                view.problem(key.name, "is required")
        self._check_secrets(section, view)
        variant = view.values[section.variant_key] if section.variant_key else None
        if section.variant_key and (variant is None or section.variant_key not in given):
            return None  # the rules below depend on it (which keys apply, which are needed)
        if variant is not None:
            for key in section.keys:
                if key.name in view.present and not key.applies_to(variant) and \
                        key.elsewhere == "refused":
                    view.problem(key.name, f"applies to {' and '.join(key.protocols)} only, "
                                 f"not {variant}")
        for check in section.checks:
            check(view)
        if any(key.required and key.name not in given for key in section.keys):
            return None
        return self._model(section, view, given, table_name)

    def _check_secrets(self, section: Section, view: TableView) -> None:
        for attribute, parts in section.secrets():
            set_keys = [key.name for key in parts.values() if view.values[key.name]]
            if len(set_keys) > 1:
                view.problem(attribute, "set only one of "
                             + ", ".join(f"{view.where}.{name}" for name in set_keys))

    def _model(self, section: Section, view: TableView, given: set[str],
               table_name: str | None) -> Any:
        values = view.values
        arguments: dict[str, Any] = {}
        for model_field, keys in field_keys(section.model):
            if keys[0].part:
                parts = {key.part: values[key.name] for key in keys}
                arguments[model_field.name] = SecretRef(
                    config_key=f"{view.where}.{model_field.name}", env=parts.get("env"),
                    file=parts.get("file"), inline=parts.get("inline"), environ=self.environ)
                continue
            key = keys[0]
            if key.name in given:
                value = values[key.name]
            elif key.default_of is not None:
                value = key.default_of(values)
            else:
                value = key.default
            arguments[model_field.name] = tuple(value) if isinstance(value, list) else value
        if table_name is not None and "name" in {f.name for f in dataclasses.fields(section.model)}:
            arguments["name"] = table_name  # NAME of [section.NAME], for models that keep it
        return section.model(**arguments)


def _table_name_text(name: str) -> str:
    """NAME as messages show it: as written when it is a plain name (with dots, as source names
    may have them), else quoted, so a control character is never printed raw."""
    return name if _PLAIN_NAME.fullmatch(name) else key_text(name)
