"""A fetch workspace over the in-memory transport: the real fetch, ledger and file system, the
server in memory (``reportsync.transports.memory``), no gpg (the files are not PGP)."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from reportsync import fetch, retention
from reportsync.config import Config, SourceConfig, parse_config
from reportsync.fetch import FetchOptions, FetchResult, SourceResult
from reportsync.retention import RetentionResult
from reportsync.transports import Transport
from reportsync.transports.memory import MemoryServer
from reportsync.units import DAY

SOURCE = "mem"


@dataclass
class MemoryWorkspace:
    root: Path
    server: MemoryServer = field(default_factory=MemoryServer)
    source: dict[str, Any] = field(default_factory=dict)  # overrides of the source table
    retention: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # overrides of [settings]

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def download_dir(self) -> Path:
        return self.root / "encrypted"

    @property
    def output_dir(self) -> Path:
        return self.root / "statements"

    def config(self) -> Config:
        table = {"protocol": "ftp", "host": "127.0.0.1", "username": "u",
                 "password_env": "RS_MEMORY_UNUSED", "remote_dir": "outgoing",
                 "download_dir": str(self.download_dir), "output_dir": str(self.output_dir),
                 "include": ["*"], "retries": 0, **self.source}
        return parse_config({"settings": {"state_dir": str(self.state_dir),
                                          "gnupg_home": str(self.root / "no-gnupg"),
                                          **self.settings},
                             "retention": self.retention, "sources": {SOURCE: table}})

    def connect(self, source: SourceConfig) -> Transport:
        return self.server.connect(source.name)

    def put(self, name: str, data: bytes, *, age_days: float = 1.0) -> bytes:
        self.server.put(name, data, time.time() - age_days * DAY)
        return data

    def fetch(self, **options: Any) -> SourceResult:
        return self.fetch_run(**options).sources[0]

    def fetch_run(self, **options: Any) -> FetchResult:
        return fetch.run(self.config(), FetchOptions(backoff_base=0.0, **options),
                         connect=self.connect)

    def retention_run(self, **options: Any) -> RetentionResult:
        return retention.run_retention(self.config(), backoff_base=0.0, connect=self.connect,
                                       **options)

    def outputs(self) -> dict[str, bytes]:
        if not self.output_dir.exists():
            return {}
        return {path.name: path.read_bytes() for path in sorted(self.output_dir.iterdir())}

    def hidden(self) -> list[str]:
        return sorted(path.name for folder in (self.download_dir, self.output_dir)
                      if folder.exists() for path in folder.iterdir() if path.name.startswith("."))

    def ledger(self) -> sqlite3.Connection:
        return sqlite3.connect(self.state_dir / "ledger.sqlite3")

    def downloads(self) -> list[str]:
        """The download operations the server saw, as ``NAME@OFFSET``."""
        return [operation.split(" ", 1)[1] for operation in self.server.operations
                if operation.startswith("download ")]


@pytest.fixture
def mem(tmp_path: Path) -> MemoryWorkspace:
    return MemoryWorkspace(tmp_path)
