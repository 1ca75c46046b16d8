"""pytest fixtures for the real PostgreSQL server (see tests/servers/postgres.py).

One cluster per test session (initdb + start cost one to two seconds, see ``timings``); every test
that asks for ``postgres_db`` gets a fresh database owned by a fresh role with its own password,
dropped afterwards.

Without PostgreSQL's server binaries the fixtures **fail when the environment variable ``CI`` is
set** (to anything but ``""``, ``0``, ``false`` or ``no``): the shared-ledger tests must run in CI,
and ``scripts/test`` installs Debian's ``postgresql`` for that. Elsewhere, e.g. a plain ``pytest``
on a laptop without PostgreSQL, they skip with the install command as the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.servers.postgres import (
    PostgresDatabase,
    PostgresServer,
    postgres_available,
    start_postgres,
)

_MISSING = ("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: apt-get install"
            " postgresql, or run scripts/test, which installs it")


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _require_postgres() -> None:
    if postgres_available():
        return
    if running_in_ci():
        pytest.fail(f"{_MISSING} (CI is set: the PostgreSQL tests must run, not skip)",
                    pytrace=False)
    pytest.skip(_MISSING)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL cluster (superuser credentials in ``admin``)."""
    _require_postgres()
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture
def postgres_db(postgres_server: PostgresServer) -> Iterator[PostgresDatabase]:
    """A fresh empty database of this test's own and its owner role's credentials."""
    database = postgres_server.create_database()
    yield database
    postgres_server.drop_database(database)
