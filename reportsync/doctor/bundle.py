"""``doctor --bundle FILE``: a zip for a support ticket, with no secret in any member.

Findings, versions, the config with inline passwords redacted, the log's last lines and a ledger
summary; every secret the config names (resolved) is scrubbed from every member.
"""

from __future__ import annotations

import contextlib
import io
import json
import platform
import sqlite3
import ssl
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from reportsync import __version__
from reportsync.config import REDACTED, Config, redacted_text, secret_values
from reportsync.config.tomlio import tomllib
from reportsync.errors import ReportsyncError
from reportsync.fsutil import write_atomically
from reportsync.ledger import LEDGER_FILE, Ledger, open_shared_ledger

if TYPE_CHECKING:
    from reportsync.doctor import DoctorReport

BUNDLE_LOG_LINES = 200
SUMMARY_TABLES = ("runs", "source_runs", "remote_files", "downloads", "archived", "failures",
                  "deletions")


def write_bundle(report: DoctorReport, path: Path) -> Path:
    """A zip for a support ticket (0600, written atomically): findings, versions, the redacted
    config, recent log lines and a ledger summary. No configured secret goes into any member."""
    secrets = _secret_values(report.config_path, report.config)
    members: dict[str, str] = {
        "findings.json": json.dumps(report.to_dict(), indent=2),
        "versions.json": json.dumps(versions(report.gpg_version), indent=2),
    }
    config_text = _redacted_config(report.config_path)
    if config_text is not None:
        members["config.toml"] = config_text
    if report.config is not None:
        state_dir = report.config.settings.state_dir
        log_tail = _log_tail(state_dir / "logs" / "reportsync.log")
        if log_tail is not None:
            members["reportsync.log"] = log_tail
        summary = (_shared_ledger_summary(report.config) if report.config.settings.ledger_url
                   else _ledger_summary(state_dir / LEDGER_FILE))
        members["ledger.json"] = json.dumps(summary, indent=2)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, text in members.items():
            archive.writestr(name, _scrub(text, secrets))
    return write_atomically(path, buffer.getvalue(), mode=0o600)


def versions(gpg_version: str | None = None) -> dict[str, str | None]:
    from importlib import metadata

    def installed(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "reportsync": __version__,
        "python": sys.version.split()[0],
        "paramiko": installed("paramiko"),
        "cryptography": installed("cryptography"),
        "python-gnupg": installed("python-gnupg"),
        "click": installed("click"),
        "gpg": gpg_version,
        "openssl": ssl.OPENSSL_VERSION,
        "os": platform.platform(),
    }


def _config_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _secret_values(config_path: Path, config: Config | None) -> list[str]:
    """Every secret the config names (resolved), to scrub from the bundle's members: what the
    loaded config resolves, and what the file's text names, so a config that does not validate
    is scrubbed too (the schema says which keys are secrets: ``config.secret_values``)."""
    found = set(secret_values(config)) if config is not None else set()
    text = _config_text(config_path)
    if text is not None:
        with contextlib.suppress(tomllib.TOMLDecodeError):
            found |= set(secret_values(tomllib.loads(text), config.environ if config else None,
                                       config_path=config_path))
    return sorted(found, key=len, reverse=True)


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        for form in (secret, json.dumps(secret)[1:-1]):
            text = text.replace(form, REDACTED)
    return text


def _redacted_config(path: Path) -> str | None:
    """The config file redacted by schema: its secrets, and every key the schema does not know."""
    text = _config_text(path)
    return redacted_text(text) if text is not None else None


def _log_tail(path: Path) -> str | None:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    return "\n".join(lines[-BUNDLE_LOG_LINES:]) + "\n"


def _shared_ledger_summary(config: Config) -> dict[str, object]:
    """The summary of a shared (PostgreSQL) ledger: the same fields, ``location`` for ``path``
    (its URL, which never holds the password); nothing is created."""
    settings = config.settings
    assert settings.ledger_url is not None
    try:
        ledger = open_shared_ledger(settings, environ=config.environ, create=False)
        if ledger is None:
            return {"location": settings.ledger_url, "exists": False}
        with ledger:
            return {
                "location": ledger.location,
                "exists": True,
                "schema_version": ledger.schema_version,
                "integrity": ledger.integrity_check(),
                "counts": {table: ledger.count(table) for table in SUMMARY_TABLES},
                "open_failures": ledger.open_failures(),
            }
    except ReportsyncError as exc:
        return {"location": settings.ledger_url, "exists": None, "error": exc.message}


def _ledger_summary(path: Path) -> dict[str, object]:
    if not path.exists():
        return {"path": str(path), "exists": False}
    try:
        with Ledger(path) as ledger:
            counts: dict[str, int] = {}
            for table in SUMMARY_TABLES:
                with contextlib.suppress(ValueError, sqlite3.Error):  # tables of other versions
                    counts[table] = ledger.count(table)
            return {
                "path": str(path),
                "exists": True,
                "schema_version": ledger.schema_version,
                "integrity": ledger.integrity_check(),
                "counts": counts,
                "open_failures": ledger.open_failures(),
            }
    except (ReportsyncError, sqlite3.Error) as exc:
        return {"path": str(path), "exists": True, "error": str(exc)}
