"""TOML in and out: the reader for this Python, and the small writer the starter config and the
redacted config (doctor's bundle) are written with."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = ["dump_toml", "key_text", "toml_literal", "tomllib"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_literal(value: Any) -> str:
    """``value`` as a TOML value; strings escape quotes and control characters."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # inf and nan are TOML too
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_literal(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{key_text(str(k))} = {toml_literal(v)}"
                               for k, v in value.items()) + "}"
    # JSON's escapes (\" \\ \n \uXXXX ...) are TOML's; DEL is the one control JSON leaves raw
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")


def key_text(name: str) -> str:
    """A TOML key as written in a file: bare when it can be, else quoted (never raw controls)."""
    return name if _BARE_KEY.fullmatch(name) else toml_literal(name)


def dump_toml(document: Mapping[str, Any]) -> str:
    """A TOML text for ``document``: plain keys first, then one ``[table]`` per nested table."""
    lines: list[str] = []
    _dump_table(document, [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _dump_table(table: Mapping[str, Any], path: list[str], lines: list[str]) -> None:
    plain = {k: v for k, v in table.items() if not isinstance(v, Mapping)}
    tables = {k: v for k, v in table.items() if isinstance(v, Mapping)}
    if path and (plain or not tables):
        lines += ["", "[" + ".".join(key_text(part) for part in path) + "]"]
    lines += [f"{key_text(str(key))} = {toml_literal(value)}" for key, value in plain.items()]
    for key, value in tables.items():
        _dump_table(value, [*path, str(key)], lines)
