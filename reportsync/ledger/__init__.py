"""The ledger: the record of every remote file version seen, fetched, decrypted or failed.

``Ledger`` (``base.py``) is the one interface the core uses; ``open_ledger(settings)`` gives the
one the config names: the embedded SQLite file in ``state_dir`` (``sqlite.py``, the default), or
with ``settings.ledger_url`` a shared PostgreSQL database (``postgres.py``; the driver is the
``postgres`` extra). ``schema.py`` holds the one schema both are built from; ``migrate.py`` moves
a SQLite ledger into PostgreSQL (``reportsync ledger migrate``).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from types import ModuleType

from reportsync.config import Secret, Settings
from reportsync.config.schema import postgres_url
from reportsync.errors import ConfigError, Problem
from reportsync.fsutil import require_private_file
from reportsync.ledger.base import (
    Engine,
    Ledger,
    PendingHook,
    SourceLock,
    VersionIndex,
    VersionState,
    refreshed,
)
from reportsync.ledger.schema import MIGRATIONS, SCHEMA_VERSION, TABLES
from reportsync.ledger.sqlite import IN_MEMORY, LEDGER_FILE
from reportsync.lock import LockHolder

__all__ = [
    "IN_MEMORY", "LEDGER_FILE", "MIGRATIONS", "SCHEMA_VERSION", "TABLES", "Engine", "Ledger",
    "LockHolder", "PendingHook", "SourceLock", "VersionIndex", "VersionState", "ledger_password",
    "open_ledger", "open_postgres_ledger", "open_shared_ledger", "postgres_driver", "refreshed",
]

DRIVER_REMEDY = "pip install 'reportsync[postgres]' (it installs psycopg 3, the PostgreSQL driver)"


def postgres_driver(config_key: str = "settings.ledger_url") -> ModuleType:
    """``reportsync.ledger.postgres``, or a config error (exit 2) saying what to install when
    psycopg is missing (or its libpq cannot load)."""
    try:
        return importlib.import_module("reportsync.ledger.postgres")
    except ImportError as exc:
        raise ConfigError([Problem(config_key, "a PostgreSQL ledger needs psycopg 3, which is not "
                                   f"installed or does not load ({exc.name or exc})")],
                          remedy=DRIVER_REMEDY) from None


def ledger_password(settings: Settings, environ: Mapping[str, str] | None = None) -> Secret | None:
    """The ledger database's password from ``ledger_password_env``/``ledger_password_file`` (a
    file group or others can read is refused, as for every secret file); None when neither is
    set: then libpq reads ``PGPASSFILE`` or ``~/.pgpass`` itself."""
    ref = settings.ledger_password
    if ref.file is not None:
        require_private_file(ref.file, "settings.ledger_password_file", "password")
    return ref.resolve(environ)


def open_postgres_ledger(url: str, *, password: Secret | None,
                         environ: Mapping[str, str] | None = None, create: bool = True,
                         config_key: str = "settings.ledger_url") -> Ledger | None:
    """The PostgreSQL ledger at ``url`` (its schema created or migrated on first use); None when
    ``create`` is False and the database holds no ledger yet. A password inside ``url`` is
    refused, naming ``config_key`` (the config already refuses one; ``--to`` is checked here)."""
    problem = postgres_url(url)
    if problem is not None:
        raise ConfigError([Problem(config_key, problem)])
    postgres = postgres_driver(config_key)
    variables = os.environ if environ is None else environ
    target = postgres.PostgresTarget(url=url, password=password,
                                     passfile=variables.get("PGPASSFILE"), config_key=config_key)
    engine = postgres.open_postgres(target, create=create)
    return Ledger(engine=engine) if engine is not None else None


def open_shared_ledger(settings: Settings, *, environ: Mapping[str, str] | None = None,
                       create: bool = True) -> Ledger | None:
    """The config's shared ledger (``settings.ledger_url`` must be set), with the password the
    config names; None when ``create`` is False and the database holds no ledger yet."""
    assert settings.ledger_url is not None, "only for a config with a shared ledger"
    return open_postgres_ledger(settings.ledger_url, password=ledger_password(settings, environ),
                                environ=environ, create=create)


def open_ledger(settings: Settings, *, environ: Mapping[str, str] | None = None,
                create: bool = True) -> Ledger:
    """The ledger the config names: SQLite in ``state_dir``, or PostgreSQL at
    ``settings.ledger_url``. ``create`` False (a dry run, which changes nothing anywhere): a
    ledger that does not exist yet is not created; an empty one in memory stands in for it."""
    if settings.ledger_url is None:
        return Ledger.in_state_dir(settings.state_dir, create=create)
    ledger = open_shared_ledger(settings, environ=environ, create=create)
    return ledger if ledger is not None else Ledger(None)
