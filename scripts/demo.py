"""The main job end to end on this machine, with nothing faked.

Starts a real local SFTP server (OpenSSH sshd; pyftpdlib FTP if sshd is not installed), generates
a fresh PGP key pair in a private GnuPG home, puts sample broker statements encrypted to it in the
server's `outgoing/` folder, writes a config, and runs `reportsync fetch` twice: the first run
archives and decrypts everything, the second finds nothing new. Everything lives in ./demo.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # the local servers live with the tests, shared with them

from tests.servers import LocalServer  # noqa: E402
from tests.support import PgpIdentity, make_identity, write_config  # noqa: E402

SAMPLES = {
    "U1234567.Activity_Daily.20261102.20261102.xml.pgp": 19,
    "U1234567.Activity_Daily.20261103.20261103.xml.pgp": 18,
    "U1234567.Trade_Confirms.20261103.20261103.csv.gpg": 18,
    "U1234567.Activity_Monthly.20261001.20261031.xml.asc": 21,
}


def sample_statement(name: str) -> bytes:
    if name.endswith((".csv.gpg", ".csv")):
        rows = "".join(f"2026-11-03,SYM{i},{i * 10},{100 + i}.25\n" for i in range(25))
        return ("TradeDate,Symbol,Quantity,Price\n" + rows).encode()
    trades = "".join(f"    <Trade tradeID='{i}' symbol='SYM{i}' quantity='{i * 10}'/>\n"
                     for i in range(25))
    return (f"<FlexQueryResponse queryName='{name.split('.')[1]}'>\n  <FlexStatement "
            f"accountId='U1234567'>\n{trades}  </FlexStatement>\n</FlexQueryResponse>\n").encode()


def start_server(workdir: Path, protocol: str) -> LocalServer:
    if protocol == "sftp":
        from tests.servers.sshd import sshd_available, start_sshd

        if sshd_available():
            return start_sshd(workdir / "sshd")
        print("demo: OpenSSH sshd is not installed; using a local FTP server instead "
              "(install openssh-server for the SFTP demo)")
    from tests.servers.ftpd import start_ftpd

    return start_ftpd(workdir / "ftpd")


def publish_samples(server: LocalServer, identity: PgpIdentity) -> None:
    now = time.time()
    for name, age_days in SAMPLES.items():
        armor = name.endswith(".asc")
        path = server.remote_root / name
        path.write_bytes(identity.encrypt(sample_statement(name), armor=armor))
        stamp = now - age_days * 86400
        os.utime(path, (stamp, stamp))


def run_reportsync(config: Path, *args: str) -> int:
    command = [sys.executable, "-m", "reportsync", "--config", str(config), *args]
    print(f"\n$ reportsync --config {config.relative_to(REPO_ROOT)} {' '.join(args)}", flush=True)
    return subprocess.call(command, cwd=REPO_ROOT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=("sftp", "ftp"), default="sftp")
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT / "demo")
    options = parser.parse_args()
    workdir: Path = options.workdir.resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(mode=0o700, parents=True)

    print("demo: generating a PGP key pair (what you would send the provider: its public half)")
    identity = make_identity(workdir / "gnupg", "statements@example.com")
    print(f"demo: key fingerprint {identity.fingerprint}")
    server = start_server(workdir, options.protocol)
    try:
        print(f"demo: {server.protocol.upper()} server on {server.host}:{server.port}, "
              f"{len(SAMPLES)} encrypted statements in outgoing/")
        publish_samples(server, identity)
        source = dict(server.source)
        source.update({"download_dir": str(workdir / "reports" / "encrypted"),
                       "output_dir": str(workdir / "reports" / "statements"),
                       "timeout": 10, "retries": 1})
        config = write_config(workdir / "config.toml", {
            "settings": {"state_dir": str(workdir / "state"), "gnupg_home": str(identity.home)},
            "sources": {"demo": source},
        })
        first = run_reportsync(config, "fetch")
        second = run_reportsync(config, "fetch")
        statements = sorted((workdir / "reports" / "statements").iterdir())
        print(f"\ndemo: decrypted statements in {statements[0].parent.relative_to(REPO_ROOT)}:"
              if statements else "\ndemo: no statements were archived")
        for path in statements:
            print(f"  {path.name}  ({path.stat().st_size} bytes)")
        if first == 0 and second == 0 and len(statements) == len(SAMPLES):
            print("\ndemo: OK: every statement fetched once, decrypted and archived; "
                  "the second run found nothing new")
            return 0
        print(f"\ndemo: FAILED (exit codes {first}, {second})")
        return 1
    finally:
        server.stop()
        identity.stop_agent()


if __name__ == "__main__":
    sys.exit(main())
