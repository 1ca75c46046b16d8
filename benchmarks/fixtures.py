"""Servers, keys, data and standard tools for the runner: the tests' launchers, in a temp folder.

Everything listens on 127.0.0.1 only: the tests' OpenSSH ``sshd`` (tests/servers/sshd.py), the
tests' pyftpdlib server in a child process (benchmarks/ftpd_process.py) and the real vsftpd
(tests/servers/vsftpd.py). Data sets are made once per run, when the first selected row needs
them, and hard-linked into each server's folder that serves them. ``Workspace.close`` stops the
servers, kills the gpg-agent of every GnuPG home used and removes the folder; it runs on normal
exit, on an error and on SIGTERM/Ctrl-C.
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

from benchmarks.measure import REPO_ROOT, BenchError
from tests.servers import LocalServer
from tests.servers.sshd import sshd_available, start_sshd
from tests.servers.vsftpd import start_vsftpd, vsftpd_available
from tests.support import PgpIdentity, make_identity, write_config

DAY = 86400
KIB = 1024
MIB = 1024 * 1024
SOURCE = "bench"  # the one source name of every config the runner writes
REPORT_SIZE = 20 * KIB

# Standard tool → Debian package that provides it.
TOOL_PACKAGES = {"sftp": "openssh-client", "lftp": "lftp", "curl": "curl", "gpg": "gnupg",
                 "sync": "coreutils"}
_VERSION_ARGS = {"sftp": ["ssh", "-V"], "lftp": ["lftp", "--version"],
                 "curl": ["curl", "--version"], "gpg": ["gpg", "--version"],
                 "sync": ["sync", "--version"]}


@dataclass
class Tool:
    name: str
    path: str | None
    version: str = ""
    note: str = ""  # how it got here, or why it is missing

    @property
    def available(self) -> bool:
        return self.path is not None


def version_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = (done.stdout or done.stderr).strip()
    first = text.splitlines()[0].strip() if text else ""
    if first.startswith("LFTP | Version "):  # "LFTP | Version 4.9.2 | Copyright ..."
        return "lftp " + first.split()[3]
    if first.startswith("curl "):  # then a long list of libraries
        return " ".join(first.split()[:2])
    return first


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
                           version=version_line(_VERSION_ARGS[name]) if path else "",
                           note=notes.get(name, "" if path else "not installed"))
    return tools


@dataclass
class Sizes:
    """How much data the rows move. The row keys name the full sizes; ``--smoke`` shrinks them."""

    backfill: tuple[int, int]  # report counts of the two backfill sizes
    small: tuple[int, int]  # file counts of the two SFTP many-files rows
    ftp_small: int
    decrypt_small: int
    big: int  # bytes of the one big file (SFTP transfer, decrypt)
    rss_big: int  # bytes of the peak-RSS report
    noop_files: int

    @classmethod
    def full(cls) -> Sizes:
        return cls(backfill=(200, 2000), small=(500, 2000), ftp_small=2000, decrypt_small=2000,
                   big=256 * MIB, rss_big=1024 * MIB, noop_files=50_000)

    @classmethod
    def smoke(cls) -> Sizes:
        return cls(backfill=(3, 6), small=(4, 8), ftp_small=8, decrypt_small=6, big=1 * MIB,
                   rss_big=2 * MIB, noop_files=150)


@dataclass
class Server:
    """One server the rows fetch from: its source table and the folder its remote_dir is in."""

    name: str  # "sftp", "pyftpdlib", "vsftpd"
    source: dict[str, Any]  # a [sources.NAME] table without remote_dir
    root: Path  # remote_dir "X" is root / "X"
    password: str = ""  # ftp: the (throwaway, test-only) password, for the standard tools

    def table(self, remote_dir: str) -> dict[str, Any]:
        return dict(self.source, remote_dir=remote_dir, timeout=60.0, retries=0)


@dataclass
class Workspace:
    """The temp folder, the servers in it, the data sets and everything to tear down."""

    root: Path
    log: Callable[[str], None]
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    gnupg_homes: list[Path] = field(default_factory=list)
    servers: dict[str, Server] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # server name -> why
    sshd: LocalServer | None = None
    _identities: dict[int, PgpIdentity] = field(default_factory=dict)
    _report_counts: dict[int, int] = field(default_factory=dict)
    _datasets: dict[str, Path] = field(default_factory=dict)

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

    def start_servers(self) -> None:
        if sshd_available():
            sshd = start_sshd(self.root / "sshd")
            self.cleanups.append(sshd.stop)
            self.sshd = sshd
            self.servers["sftp"] = Server("sftp", _without_remote_dir(sshd.source),
                                          Path(sshd.extra["sftp_root"]))
        else:
            self.unavailable["sftp"] = "OpenSSH sshd/ssh-keygen not installed"
        self._start_pyftpdlib()
        if vsftpd_available():
            vsftpd = start_vsftpd(self.root / "vsftpd")
            self.cleanups.append(vsftpd.stop)
            self.servers["vsftpd"] = Server("vsftpd", _without_remote_dir(vsftpd.source),
                                            Path(vsftpd.extra["home"]),
                                            password=vsftpd.extra["password"])
        else:
            self.unavailable["vsftpd"] = "vsftpd not installed (apt-get install vsftpd)"

    def _start_pyftpdlib(self) -> None:
        """tests.servers.ftpd.start_ftpd in a child process (see ftpd_process.py): in the runner
        it would share the runner's GIL, and the runner is idle only while it waits."""
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
            self.unavailable["pyftpdlib"] = "the pyftpdlib server process did not start"
            return
        info = json.loads(line)
        self.servers["pyftpdlib"] = Server("pyftpdlib", _without_remote_dir(info["source"]),
                                           Path(info["home"]), password=info["password"])

    def server(self, name: str) -> Server:
        if name not in self.servers:
            raise BenchError(f"{name} server not available: {self.unavailable.get(name, '?')}")
        return self.servers[name]

    # --- PGP -------------------------------------------------------------------------------------

    def identity(self, bits: int) -> PgpIdentity:
        """A GnuPG home with one RSA key of ``bits`` and no passphrase, its agent warmed up."""
        if bits in self._identities:
            return self._identities[bits]
        home = self.root / f"gpg{bits}"
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
                raise BenchError(f"gpg could not generate an RSA {bits} key: {key.stderr}")
            identity = PgpIdentity(home=home, fingerprint=str(key.fingerprint),
                                   email="client@example.com")
        # start the agent now, so that no timed run pays for it
        if identity.gpg().decrypt(identity.encrypt(b"warm-up")).data != b"warm-up":
            raise BenchError(f"gpg cannot decrypt with the RSA {bits} key it just made")
        self._identities[bits] = identity
        return identity

    def gpg_argv(self, bits: int, *args: str) -> list[str]:
        return ["gpg", "--homedir", str(self.identity(bits).home), "--batch", "--yes", *args]

    def encrypt_files(self, bits: int, paths: list[Path]) -> None:
        """``path`` → ``path.gpg`` (uncompressed, so the ciphertext is as big as the plaintext)."""
        identity = self.identity(bits)
        for start in range(0, len(paths), 500):
            argv = self.gpg_argv(bits, "--trust-model", "always", "--compress-algo", "none",
                                 "-r", identity.fingerprint, "--encrypt-files",
                                 *[str(path) for path in paths[start:start + 500]])
            subprocess.run(argv, check=True, capture_output=True, timeout=1800)

    # --- data sets -----------------------------------------------------------------------------

    def reports(self, bits: int, count: int) -> Path:
        """A folder with ``count`` 20 KiB XML statements encrypted to the RSA ``bits`` key.

        One cache per key size (encrypting is the slow part): the first call encrypts, a larger
        count later encrypts only the missing ones; each row links the first ``count`` files."""
        cache = self.root / "cache" / f"reports-rsa{bits}"
        plain = self.root / "cache" / "plain"
        have = self._report_counts.get(bits, 0)
        if count > have:
            started = time.monotonic()
            cache.mkdir(parents=True, exist_ok=True)
            plain.mkdir(parents=True, exist_ok=True)
            todo = []
            for index in range(have, count):
                source = plain / report_name(index)
                if not source.exists():
                    source.write_bytes(report_text(index, REPORT_SIZE))
                target = cache / report_name(index)
                shutil.copyfile(source, target)
                todo.append(target)
            self.encrypt_files(bits, todo)
            for path in todo:
                path.unlink()
                age(cache / (path.name + ".gpg"))
            self._report_counts[bits] = count
            self.log(f"data: {count - have} reports encrypted to RSA {bits} in "
                     f"{time.monotonic() - started:.1f} s")
        return self.dataset(f"reports-rsa{bits}-{count}", lambda folder: link_first(
            cache, folder, [report_name(index) + ".gpg" for index in range(count)]))

    def plaintext_bytes(self, count: int) -> int:
        """Total size of the first ``count`` reports' plaintext (as the decryptions must give)."""
        plain = self.root / "cache" / "plain"
        return sum((plain / report_name(index)).stat().st_size for index in range(count))

    def big_file(self, name: str, size: int) -> Path:
        """A folder holding ``name``.gpg: ``size`` random bytes encrypted to the RSA 2048 key."""
        def build(folder: Path) -> None:
            started = time.monotonic()
            path = folder / name
            write_random(path, size)
            self.encrypt_files(2048, [path])
            path.unlink()
            age(folder / (name + ".gpg"))
            self.log(f"data: {size // MIB} MiB {name}.gpg in {time.monotonic() - started:.1f} s")
        return self.dataset(f"big-{name}-{size}", build)

    def noop_files(self, count: int) -> Path:
        """``count`` tiny plain XML files, one day old (written directly: seconds for 50,000)."""
        def build(folder: Path) -> None:
            stamp = time.time() - DAY
            for index in range(count):
                path = folder / f"n{index:06d}.xml"
                path.write_bytes(b"<r n='%d'/>\n" % index)
                os.utime(path, (stamp, stamp))
        return self.dataset(f"noop-{count}", build)

    def dataset(self, name: str, build: Callable[[Path], None]) -> Path:
        if name not in self._datasets:
            folder = self.root / "data" / name
            folder.mkdir(parents=True)
            build(folder)
            self._datasets[name] = folder
        return self._datasets[name]

    def publish(self, dataset: Path, server: str) -> str:
        """Hard-link a data set into the server's folder (once); its remote_dir."""
        target = self.server(server).root / dataset.name
        if not target.exists():
            link_tree(dataset, target)
        return dataset.name

    # --- configs -------------------------------------------------------------------------------

    def write_config(self, path: Path, table: dict[str, Any], run_dir: Path, bits: int) -> Path:
        """A reportsync config with one source ``bench``, its folders and state under ``run_dir``."""
        full = dict(table, download_dir=str(run_dir / "encrypted"),
                    output_dir=str(run_dir / "statements"))
        full.setdefault("include", ["*"])
        if SSH_ENGINE is not None and full.get("protocol") == "sftp":
            full["ssh_engine"] = SSH_ENGINE
        return write_config(path, {
            "settings": {"state_dir": str(run_dir / "state"),
                         "gnupg_home": str(self.identity(bits).home)},
            "sources": {SOURCE: full},
        })


SSH_ENGINE: str | None = None
"""``--ssh-engine``: the SFTP sources' ``ssh_engine`` (None: the config's default, auto)."""


def _without_remote_dir(source: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in source.items() if key != "remote_dir"}


# --- data ------------------------------------------------------------------------------------------


def report_name(index: int) -> str:
    return f"U{index:07d}.Activity.20261102.xml"


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


def report_text(index: int, size: int) -> bytes:
    """An XML statement of about ``size`` bytes (like a broker's flex report); the same for the
    same index, so a cache extended later holds the same reports."""
    rng = random.Random(index)
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


def link_first(source: Path, target: Path, names: list[str]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        os.link(source / name, target / name)


def link_tree(source: Path, target: Path) -> None:
    """Hard-link every file of ``source`` into ``target`` (same file system: no extra disk)."""
    target.mkdir(parents=True, exist_ok=True)
    target.chmod(0o755)  # vsftpd serves anonymous sessions as an unprivileged user
    for entry in os.scandir(source):
        if entry.is_file():
            os.link(entry.path, target / entry.name)


def count_files(folder: Path, suffix: str = "") -> tuple[int, int]:
    """(number, total bytes) of the regular, non-hidden files directly in ``folder``."""
    number = total = 0
    if not folder.is_dir():
        return 0, 0
    for entry in os.scandir(folder):
        if entry.is_file() and not entry.name.startswith(".") and entry.name.endswith(suffix):
            number += 1
            total += entry.stat().st_size
    return number, total
