"""Shared fixtures. The real servers live in tests/servers; their pytest fixtures in the plugins."""

from __future__ import annotations

pytest_plugins = ["tests.fixtures_sftp", "tests.fixtures_ftp"]
