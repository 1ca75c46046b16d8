"""The tests' pyftpdlib server (tests/servers/ftpd.py), in a process of its own.

start_ftpd serves from a thread of the calling process; run there, it would share the runner's
GIL with the clients being timed. This wrapper starts it, prints one JSON line (the source table,
the password and the home folder) and serves until its standard input closes.

    python -m benchmarks.ftpd_process WORKDIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.servers.ftpd import start_ftpd


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m benchmarks.ftpd_process WORKDIR", file=sys.stderr)
        return 2
    server = start_ftpd(Path(argv[0]))
    try:
        print(json.dumps({"source": server.source, "password": server.extra["password"],
                          "home": str(server.extra["home"]), "port": server.port}), flush=True)
        sys.stdin.read()  # until the runner closes the pipe (or dies)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
