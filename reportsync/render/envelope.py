"""Results → JSON: one serializer, and the one versioned envelope every ``--json`` document is.

``{"version": 1, "command": "fetch", "exit_code": 0, "result": {...}}``, or, when the command
failed before it had a result, ``{"version": 1, "command": ..., "exit_code": N, "error": {...}}``.

``to_json`` turns any result into JSON values by one rule: a class that says its shape in a
``to_dict()`` gives that; a dataclass gives its fields (leaving out those marked
``metadata={"json": False}``, such as a backup's decrypted bytes); enums their value, paths
strings, datetimes ISO 8601, an infinite or NaN float ``null``. Results whose shape the renderer
defines (fetch's, status', retention's, doctor's) register a view with ``@to_json.register``.
Anything else is a ``TypeError``: a ``Secret`` (which has neither) can never slip into JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from datetime import date, datetime
from datetime import time as time_of_day
from enum import Enum
from functools import singledispatch
from pathlib import PurePath
from typing import Any

from reportsync.errors import ReportsyncError
from reportsync.results import CommandResult

JSON_VERSION = 1  # raised only when a key changes meaning or goes away; new keys may appear


@singledispatch
def to_json(value: object) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, Enum):
        return to_json(value.value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return None if math.isinf(value) or math.isnan(value) else value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, time_of_day):
        return value.strftime("%H:%M")
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_json(to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {item.name: to_json(getattr(value, item.name))
                for item in dataclasses.fields(value) if item.metadata.get("json", True)}
    if isinstance(value, Mapping):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(item) for item in value]
    raise TypeError(f"no JSON form for {type(value).__name__}")


def envelope(command: str | None, *, result: CommandResult | None = None,
             error: ReportsyncError | None = None) -> dict[str, Any]:
    """The ``--json`` document of a run: its result, or the error that stopped it."""
    if (result is None) == (error is None):
        raise ValueError("an envelope holds a result or an error")
    document: dict[str, Any] = {"version": JSON_VERSION, "command": command}
    if error is not None:
        document["exit_code"] = int(error.exit_code)
        document["error"] = to_json(error)
    else:
        assert result is not None
        document["exit_code"] = int(result.exit_code)
        document["result"] = to_json(result)
    return document


def dumps(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2)
