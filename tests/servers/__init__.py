"""Real servers for the tests and the demo, on 127.0.0.1 and free ports.

Plain Python (no pytest here), so ``scripts/demo.py`` and the benchmarks start the same servers
the tests use (their pytest fixtures are in ``tests/fixtures_*.py``):

- ``sshd.py``: OpenSSH ``sshd`` (key and certificate login, ``internal-sftp``);
- ``ftpd.py``: pyftpdlib FTP / FTPS; ``hostile_ftpd.py``: one that lies; ``proxy.py``: a TCP proxy
  that cuts or slows connections;
- ``postgres.py``: a PostgreSQL cluster (``initdb``/``pg_ctl``, scram passwords, a fresh database
  and role per test, ``terminate_connections``) for the shared ledger;
- ``http_receiver.py``: an HTTP server recording healthchecks pings and Apprise ``json://``
  webhooks, failing on demand (status, delay, dropped connection);
- ``smtp_receiver.py``: an aiosmtpd server recording mail (Apprise ``mailto://``).

The transport servers return a ``LocalServer``: tests put files into ``remote_root`` (setting their
mtimes with ``os.utime``) and write ``source`` as a ``[sources.NAME]`` table of the config. The
others return objects of their own (``PostgresServer``, ``HttpReceiver``, ``SmtpReceiver``).
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class LocalServer:
    protocol: str  # "sftp" | "ftp" | "ftps"
    host: str
    port: int
    remote_root: Path  # the folder the source's remote_dir points at
    source: dict[str, Any]  # config keys of a [sources.NAME] table that logs in here
    stop: Callable[[], None] = field(repr=False)
    extra: dict[str, Any] = field(default_factory=dict)  # launcher-specific handles


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def free_port_block(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` consecutive ports that are free right now (an FTP server's passive range)."""
    for _ in range(200):
        start = secrets.randbelow(20000) + 40000
        probes: list[socket.socket] = []
        try:
            for port in range(start, start + count):
                probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                probes.append(probe)
                probe.bind((host, port))
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
        return list(range(start, start + count))
    raise RuntimeError("no free block of passive ports found")
