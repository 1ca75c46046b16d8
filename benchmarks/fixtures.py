"""Servers, keys, data and standard tools for the runner: the tests' launchers, in a temp folder.

Everything listens on 127.0.0.1 only. ``Workspace.close`` stops the servers, kills the gpg-agent
of every GnuPG home used, and removes the folder; it runs on normal exit, on an error and on
SIGTERM/Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gnupg

from benchmarks.measure import REPO_ROOT
from tests.servers import LocalServer
from tests.servers.sshd import sshd_available, start_sshd
from tests.support import PgpIdentity, make_identity, write_config

DAY = 86400
MIB = 1024 * 1024

# Standard tool → Debian package that provides it.
TOOL_PACKAGES = {"sftp": "openssh-client", "lftp": "lftp", "curl": "curl", "gpg": "gnupg",
                 "gpgconf": "gnupg"}


@dataclass
class Tool:
    name: str
    path: str | None
    version: str = ""
    note: str = ""  # how it got here, or why it is missing

    @property
    def available(self) -> bool:
        return self.path is not None


def _version_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0].strip() if text else ""


_VERSION_ARGS = {"sftp": ["ssh", "-V"], "lftp": ["lftp", "--version"], "curl": ["curl", "--version"],
                 "gpg": ["gpg", "--version"], "gpgconf": ["gpgconf", "--version"]}


def ensure_tools(names: list[str], *, install: bool, log: Callable[[str], None]) -> dict[str, Tool]:
    """Find each tool; install the missing ones with apt-get when root (and ``install``)."""
    missing = [name for name in names if shutil.which(name) is None]
    notes: dict[str, str] = {}
    if missing:
        packages = sorted({TOOL_PACKAGES[name] for name in missing})
        if not install:
            reason = "not installed (--no-install)"
        elif os.geteuid() != 0:
            reason = f"not installed and not root: apt-get install {' '.join(packages)}"
        elif shutil.which("apt-get") is None:
            reason = "not installed and no apt-get on this machine"
        else:
            log(f"installing {' '.join(packages)} with apt-get")
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            try:
                subprocess.run(["apt-get", "update", "-qq"], env=env, timeout=300, check=False,
                               capture_output=True)
                subprocess.run(["apt-get", "install", "-y", "-qq", *packages], env=env,
                               timeout=600, check=False, capture_output=True)
            except subprocess.TimeoutExpired:
                log("apt-get timed out")
            reason = "apt-get install failed"
        for name in missing:
            notes[name] = "installed by the runner (apt-get)" if shutil.which(name) else reason
    tools: dict[str, Tool] = {}
    for name in names:
        path = shutil.which(name)
        tools[name] = Tool(name=name, path=path,
                           version=_version_line(_VERSION_ARGS[name]) if path else "",
                           note=notes.get(name, "" if path else "not installed"))
    return tools


@dataclass
class Sizes:
    """How much data each workload moves (``--quick`` makes it smaller)."""

    big: int
    small_count: int
    small_size: int
    rss_big: int
    noop_files: int
    noop_real: int  # how many of the no-op files go through a real `reportsync fetch` first


@dataclass
class Workspace:
    """The temp folder, the servers in it and everything to tear down at the end."""

    root: Path
    log: Callable[[str], None]
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    gnupg_homes: list[Path] = field(default_factory=list)
    sshd: LocalServer | None = None
    ftp_source: dict[str, Any] = field(default_factory=dict)
    ftp_password: str = ""
    ftp_home: Path | None = None
    identity: PgpIdentity | None = None

    @classmethod
    def create(cls, log: Callable[[str], None]) -> Workspace:
        # short path: gpg-agent's socket path must stay under ~100 bytes
        return cls(root=Path(tempfile.mkdtemp(prefix="rsb-")), log=log)

    def close(self) -> None:
        for cleanup in reversed(self.cleanups):
            try:
                cleanup()
            except Exception as exc:  # clean up the rest regardless
                self.log(f"cleanup step failed: {exc}")
        self.cleanups.clear()
        for home in self.gnupg_homes:
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
                           check=False, capture_output=True, timeout=30)
        self.gnupg_homes.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def fresh_dir(self, name: str) -> Path:
        """An empty folder under the workspace (emptied if it exists)."""
        path = self.root / "runs" / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    # --- servers -------------------------------------------------------------------------------

    def start_sshd(self) -> LocalServer:
        if not sshd_available():
            raise RuntimeError("OpenSSH sshd/ssh-keygen not installed (apt-get install openssh-server)")
        server = start_sshd(self.root / "sshd")
        self.cleanups.append(server.stop)
        self.sshd = server
        return server

    @property
    def sftp_root(self) -> Path:
        assert self.sshd is not None
        return Path(self.sshd.extra["sftp_root"])

    def sftp_table(self, remote_dir: str) -> dict[str, Any]:
        assert self.sshd is not None
        return dict(self.sshd.source, remote_dir=remote_dir, timeout=60.0, retries=0)

    def start_ftpd(self) -> None:
        """tests.servers.ftpd.start_ftpd, run in a child process (see ftpd_process.py)."""
        process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.ftpd_process", str(self.root / "ftpd")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            cwd=REPO_ROOT, text=True)
        assert process.stdout is not None and process.stdin is not None

        def stop() -> None:
            if process.stdin is not None:
                with contextlib.suppress(OSError):
                    process.stdin.close()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

        self.cleanups.append(stop)
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("the FTP server process did not start")
        info = json.loads(line)
        self.ftp_source = info["source"]
        self.ftp_password = info["password"]
        self.ftp_home = Path(info["home"])

    def ftp_table(self, remote_dir: str) -> dict[str, Any]:
        return dict(self.ftp_source, remote_dir=remote_dir, timeout=60.0, retries=0)

    # --- PGP -------------------------------------------------------------------------------------

    def make_identity(self, bits: int) -> PgpIdentity:
        home = self.root / "gpg"
        self.gnupg_homes.append(home)
        if bits == 2048:  # the tests' own key
            identity = make_identity(home, "client@example.com")
        else:  # the same key spec as tests.support.make_identity, at another size
            home.mkdir(parents=True, exist_ok=True)
            home.chmod(0o700)
            gpg = gnupg.GPG(gnupghome=str(home))
            spec = gpg.gen_key_input(name_real="reportsync bench", name_email="client@example.com",
                                     key_type="RSA", key_length=bits, expire_date=0,
                                     no_protection=True)
            key = gpg.gen_key(spec)
            if not key.fingerprint:
                raise RuntimeError(f"gpg could not generate an RSA {bits} key: {key.stderr}")
            identity = PgpIdentity(home=home, fingerprint=str(key.fingerprint),
                                   email="client@example.com")
        self.identity = identity
        return identity

    def gpg_argv(self, *args: str) -> list[str]:
        assert self.identity is not None
        return ["gpg", "--homedir", str(self.identity.home), "--batch", "--yes", *args]

    def encrypt_files(self, paths: list[Path]) -> None:
        """``path`` → ``path.gpg`` (uncompressed, so the ciphertext is as big as the plaintext)."""
        assert self.identity is not None
        for start in range(0, len(paths), 500):
            argv = self.gpg_argv("--trust-model", "always", "--compress-algo", "none",
                                 "-r", self.identity.fingerprint, "--encrypt-files",
                                 *[str(path) for path in paths[start:start + 500]])
            subprocess.run(argv, check=True, capture_output=True, timeout=1800)

    def write_config(self, path: Path, table: dict[str, Any], run_dir: Path) -> Path:
        """A reportsync config with one source ``bench``, its folders and state under ``run_dir``."""
        assert self.identity is not None
        full = dict(table, download_dir=str(run_dir / "encrypted"),
                    output_dir=str(run_dir / "statements"))
        full.setdefault("include", ["*"])
        return write_config(path, {
            "settings": {"state_dir": str(run_dir / "state"),
                         "gnupg_home": str(self.identity.home)},
            "sources": {"bench": full},
        })


# --- data ------------------------------------------------------------------------------------------


def age(path: Path, days: float = 1.0) -> None:
    stamp = time.time() - days * DAY
    os.utime(path, (stamp, stamp))


def write_random(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        left = size
        while left:
            chunk = min(left, 8 * MIB)
            handle.write(os.urandom(chunk))
            left -= chunk


def report_text(index: int, size: int, rng: random.Random) -> bytes:
    """An XML statement of about ``size`` bytes (like a broker's flex report)."""
    rows = [f"<FlexQueryResponse account='U{index:07d}'>\n"]
    length = len(rows[0])
    row = 0
    while length < size - 30:
        line = (f"  <Trade id='{row}' symbol='S{rng.randrange(10**6):06d}' "
                f"qty='{rng.randrange(10**5)}' price='{rng.random() * 1000:.4f}'/>\n")
        rows.append(line)
        length += len(line)
        row += 1
    rows.append("</FlexQueryResponse>\n")
    return "".join(rows).encode()


def link_tree(source: Path, target: Path) -> None:
    """Hard-link every file of ``source`` into ``target`` (same file system: no extra disk)."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file():
            os.link(path, target / path.name)


def count_files(folder: Path, suffix: str = "") -> tuple[int, int]:
    """(number, total bytes) of the regular, non-hidden files directly in ``folder``."""
    number = total = 0
    for entry in os.scandir(folder):
        if entry.is_file() and not entry.name.startswith(".") and entry.name.endswith(suffix):
            number += 1
            total += entry.stat().st_size
    return number, total
