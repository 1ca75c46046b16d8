"""Where the config file and reportsync's folders are, and how a path in the config expands.

Expansion reads the environment it is given (``environ``), not the process's own, so a caller
that runs reportsync in-process with another environment (tests, ``cli.main(argv, env)``) gets
the paths that environment names.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import platformdirs

APP_NAME = "reportsync"
CONFIG_ENV = "REPORTSYNC_CONFIG"

# posixpath.expandvars' rule: $NAME or ${NAME}, NAME of ASCII word characters; an unset
# variable is left as written
_VARIABLE = re.compile(r"\$(\w+|\{[^}]*\})", re.ASCII)


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$REPORTSYNC_CONFIG`` (expanded) when set and not empty, else the platform config dir."""
    environ = os.environ if environ is None else environ
    override = environ.get(CONFIG_ENV)
    if override:
        return expand_path(override, environ=environ)
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / "config.toml"


def default_state_dir() -> Path:
    return Path(platformdirs.user_state_dir(APP_NAME, appauthor=False))


def default_gnupg_home() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / "gnupg"


def expand_variables(raw: str, environ: Mapping[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("{"):
            name = name[1:-1]
        return environ.get(name, match.group(0))

    return _VARIABLE.sub(value, raw)


def expand_home(raw: str, environ: Mapping[str, str]) -> str:
    """``~`` and ``~/...`` from the home the environment names (HOME; USERPROFILE on Windows),
    as os.path.expanduser does with the process's environment; ``~user`` as expanduser does."""
    separators = ("/", "\\") if os.name == "nt" else ("/",)
    if raw != "~" and not raw.startswith(tuple("~" + sep for sep in separators)):
        return os.path.expanduser(raw)
    home = environ.get("USERPROFILE" if os.name == "nt" else "HOME")
    if not home:
        return os.path.expanduser(raw)
    return (home.rstrip("".join(separators)) + raw[1:]) or separators[0]


def expand_path(raw: str, relative_to: Path | None = None,
                environ: Mapping[str, str] | None = None) -> Path:
    """Expand ``$VARS`` and ``~``; a relative path is taken relative to ``relative_to`` (the
    config's folder)."""
    environ = os.environ if environ is None else environ
    path = Path(expand_home(expand_variables(raw, environ), environ))
    if not path.is_absolute() and relative_to is not None:
        path = relative_to / path
    return path
