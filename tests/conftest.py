"""Shared fixtures. The real servers live in tests/servers; their pytest fixtures in the plugins."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import PgpIdentity, copy_identity, make_identity

pytest_plugins = ["tests.fixtures_sftp", "tests.fixtures_ftp", "tests.fixtures_postgres",
                  "tests.fixtures_receivers", "tests.fixtures_memory"]


@pytest.fixture(scope="session")
def _pgp_key_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgpIdentity]:
    identity = make_identity(tmp_path_factory.mktemp("gpgtpl") / "h", "client@example.com")
    yield identity
    identity.stop_agent()


@pytest.fixture(scope="session")
def other_pgp_identity(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgpIdentity]:
    """Somebody else's key: files encrypted to it must fail to decrypt with ours."""
    identity = make_identity(tmp_path_factory.mktemp("gpgother") / "h", "stranger@example.com")
    yield identity
    identity.stop_agent()


@pytest.fixture
def pgp_identity(_pgp_key_template: PgpIdentity, tmp_path_factory: pytest.TempPathFactory,
                 ) -> Iterator[PgpIdentity]:
    """The client's key pair in a GnuPG home of this test's own (short path: agent sockets)."""
    identity = copy_identity(_pgp_key_template, tmp_path_factory.mktemp("gpg") / "h")
    yield identity
    identity.stop_agent()
