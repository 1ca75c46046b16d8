"""Real servers for the tests and the demo, on 127.0.0.1 and free ports.

Plain Python (no pytest here), so ``scripts/demo.py`` starts the same servers the tests use.
Every launcher returns a ``LocalServer``: tests put files into ``remote_root`` (setting their
mtimes with ``os.utime``) and write ``source`` as a ``[sources.NAME]`` table of the config.
"""

from __future__ import annotations

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
