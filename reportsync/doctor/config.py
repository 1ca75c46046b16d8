"""doctor's first checks: the config file, the sources asked for, the secrets it names, and the
local files each source's transport reads before it connects (its ``Connector.config_checks``).
"""

from __future__ import annotations

import re
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

from reportsync.config import (
    NO_SOURCE,
    NO_SOURCE_REMEDY,
    Config,
    SecretRef,
    SourceConfig,
    load_config,
)
from reportsync.doctor.findings import (
    BUG_REMEDY,
    FAIL,
    PASS,
    WARN,
    DoctorFinding,
    Findings,
)
from reportsync.errors import ConfigError
from reportsync.fsutil import too_open
from reportsync.transports import Connector, connector_for
from reportsync.transports.base import first_problem, secret_where

SCOPE = "config"


def check_config_file(path: Path, out: Findings, environ: Mapping[str, str] | None = None
                      ) -> Config | None:
    try:
        # without sources the local checks (gpg, keys, folders) still run; the missing source
        # is its own finding below
        config = load_config(path, environ=environ, allow_no_sources=True)
    except ConfigError as error:
        for problem in error.problems:
            remedy = error.remedy
            if remedy == ConfigError.default_remedy:
                key = problem.key
                where = key if key and re.fullmatch(r"[\w.-]+", key) else "this"
                remedy = f"Fix {where} in {path}; docs/configuration.md describes every key."
            out.add("parse", SCOPE, FAIL, DoctorFinding.PARSE_PROBLEM, f"{path}: {problem}",
                    remedy)
        return None
    except Exception as exc:  # never raise: a doctor that crashes helps nobody
        out.add("parse", SCOPE, FAIL, DoctorFinding.PARSE_UNREADABLE,
                f"{path}: cannot be read: {exc}", BUG_REMEDY)
        return None
    names = ", ".join(config.sources)
    out.add("parse", SCOPE, PASS, DoctorFinding.PARSE_OK,
            f"{path} is valid: {len(config.sources)} source(s)" + (f" ({names})" if names else ""))
    if not config.sources:
        out.add("source", SCOPE, FAIL, DoctorFinding.SOURCE_NONE,
                f"{path}: {NO_SOURCE}: nothing to fetch or check on a server", NO_SOURCE_REMEDY)
    return config


def select_sources(config: Config, names: Sequence[str], out: Findings) -> list[SourceConfig]:
    unknown = [name for name in names if name not in config.sources]
    for name in unknown:
        out.add("source", SCOPE, FAIL, DoctorFinding.SOURCE_UNKNOWN,
                f"no source named {name!r} (configured: {', '.join(config.sources) or 'none'})",
                "Use one of the configured source names with --source, or add a "
                f"[sources.{name}] table.")
    known = [name for name in names if name in config.sources]
    if names and not known:
        return []
    return config.select(known)


def check_secret(ref: SecretRef, what: str, out: Findings) -> str | None:
    """A finding for one configured secret; returns a problem text when it cannot be read."""
    if not ref.configured:
        return None
    if ref.file is not None and ref.file.exists() and too_open(ref.file) is not None:
        out.add("secret", SCOPE, FAIL, DoctorFinding.SECRET_TOO_OPEN,
                f"{ref.config_key}_file: {ref.file} (the {what}) is readable by group or others "
                f"(mode {stat.S_IMODE(ref.file.stat().st_mode):04o})", f"chmod 600 {ref.file}")
    try:
        value = ref.resolve()
    except ConfigError as error:
        problem = first_problem(error)
        out.add("secret", SCOPE, FAIL, DoctorFinding.SECRET_UNREADABLE,
                f"the {what} cannot be read: {problem}", error.remedy)
        return problem
    if value is not None and not value.reveal():
        out.add("secret", SCOPE, WARN, DoctorFinding.SECRET_EMPTY,
                f"the {what} from {secret_where(ref)} is empty",
                f"Put the {what} into the {secret_where(ref)}.")
        return None
    out.add("secret", SCOPE, PASS, DoctorFinding.SECRET_OK,
            f"the {what} is read from {secret_where(ref)}")
    return None


def check_settings_secrets(config: Config, out: Findings) -> str | None:
    return check_secret(config.settings.gpg_passphrase, "PGP key passphrase", out)


def check_source_config(source: SourceConfig, out: Findings) -> Connector:
    """The source's secrets, then what its transport reads before connecting (the key file and
    known_hosts of SFTP, the CA file of FTPS): the connector keeps what loaded, for the steps."""
    check_secret(source.password, f"password of source {source.name!r}", out)
    # configured for SFTP only (the config refuses it elsewhere): nothing to say otherwise
    check_secret(source.key_passphrase, f"SSH key passphrase of source {source.name!r}", out)
    connector = connector_for(source)
    for result in connector.config_checks():
        out.record(result.check, SCOPE, result)
    return connector
