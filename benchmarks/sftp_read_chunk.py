"""One-off measurement: reportsync's SFTP download vs OpenSSH `sftp`, 50 MiB over loopback.

Not the benchmark runner (issue 8); it backs one figure in a closing note. Run from the repo root:
    python benchmarks/sftp_read_chunk.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import reportsync.transports.sftp.wire as sftp_transport
from reportsync.config import parse_config
from reportsync.transports import open_transport
from tests.servers.sshd import start_sshd

SIZE = 50 * 1024 * 1024
ROUNDS = 3


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="rs-bench-"))
    server = start_sshd(workdir / "sshd")
    try:
        (server.remote_root / "big.bin").write_bytes(os.urandom(SIZE))
        table = dict(server.source, download_dir=str(workdir / "d"), output_dir=str(workdir / "o"))
        source = parse_config({"sources": {"bench": table}}).sources["bench"]
        for request_bytes in (32 * 1024, sftp_transport.READ_REQUEST_BYTES):
            sftp_transport.READ_REQUEST_BYTES = request_bytes
            timings = []
            for _ in range(ROUNDS):
                with open_transport(source) as transport, (workdir / "out.bin").open("wb") as out:
                    started = time.perf_counter()
                    transport.download("big.bin", out)
                    timings.append(time.perf_counter() - started)
            print(f"reportsync SFTP download, READ_REQUEST_BYTES={request_bytes}: "
                  f"best {min(timings):.2f} s")
        command = ["sftp", "-q", "-P", str(server.port), "-i", str(server.source["key_file"]),
                   "-o", f"UserKnownHostsFile={server.source['known_hosts']}", "-o", "BatchMode=yes",
                   f"{server.source['username']}@127.0.0.1:outgoing/big.bin", str(workdir / "c.bin")]
        timings = []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            timings.append(time.perf_counter() - started)
        print(f"OpenSSH sftp (incl. process start and login): best {min(timings):.2f} s")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
