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
import subprocess
import time
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


def wait_for_greeting(name: str, port: int, process: subprocess.Popen[bytes], log: Path, *,
                      greeting: bytes, timeout: float, host: str = "127.0.0.1") -> None:
    """Until a server process started on ``port`` sends its first bytes (``greeting``: b"SSH-",
    b"220"); its log in the error if it exits first or says nothing within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n"
                               + log.read_text(errors="replace"))
        try:
            with socket.create_connection((host, port), timeout=1.0) as probe:
                if probe.recv(64).startswith(greeting):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise RuntimeError(f"{name} did not greet within {timeout}s:\n"
                               + log.read_text(errors="replace"))
        time.sleep(0.05)


def stopper(process: subprocess.Popen[bytes]) -> Callable[[], None]:
    """A ``LocalServer.stop`` for a server process: terminate, then kill after 5 s."""
    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return stop
