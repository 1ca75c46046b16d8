"""Helpers shared by the hardening tests (tests/test_hardening_*.py); no tests of its own.

The workspace is the end-to-end suite's (tests/test_fetch_e2e.py): a real CLI subprocess against
real servers, with the test's own GnuPG home, state dir and folders.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reportsync.fsutil import temp_name
from tests.servers import LocalServer
from tests.servers.hostile_ftpd import Script, start_hostile_ftpd
from tests.support import CliResult, PgpIdentity
from tests.test_fetch_e2e import Workspace

__all__ = ["Workspace", "files_by_name", "gpg_cli", "gpg_wrapper", "hidden_files",
           "hostile_workspace", "integrity_ok", "part_name", "plaintext_anywhere",
           "wrapper_calls"]


def hostile_workspace(tmp_path: Path, identity: PgpIdentity, script: Script, *,
                      mlsd: bool = True) -> tuple[Workspace, LocalServer]:
    """A workspace whose server is the lying FTP server (stop it when done)."""
    server = start_hostile_ftpd(tmp_path / "hostile", script, mlsd=mlsd)
    workspace = Workspace(tmp_path / "ws", identity, server)
    workspace.root.mkdir()
    workspace.write_config()
    return workspace, server


def files_by_name(result: CliResult) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in result.result()["sources"][0]["files"]}


def part_name(name: str, size: int, mtime: float) -> str:
    """The resumable download's temp name, as fetch derives it."""
    return temp_name(f"{name}\0{size}\0{int(mtime)}", "part")


def hidden_files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith(".")) \
        if folder.is_dir() else []


def walk_files(root: Path) -> Iterator[Path]:
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink() and not stat.S_ISSOCK(path.lstat().st_mode):
                yield path


def plaintext_anywhere(marker: bytes, *roots: Path) -> list[Path]:
    """Every regular file under ``roots`` whose bytes contain ``marker``."""
    found = []
    for root in roots:
        for path in walk_files(root):
            try:
                if marker in path.read_bytes():
                    found.append(path)
            except OSError:
                continue
    return found


def integrity_ok(state_dir: Path) -> bool:
    with sqlite3.connect(state_dir / "ledger.sqlite3") as db:
        return bool(db.execute("PRAGMA integrity_check").fetchone()[0] == "ok")


def gpg_cli(home: Path, *args: str, data: bytes | None = None) -> bytes:
    """The real gpg on a test home (for making hostile messages); raises on failure."""
    completed = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--yes", *args],
                               input=data, capture_output=True, check=False)
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")
    return completed.stdout


def gpg_wrapper(folder: Path) -> tuple[Path, Path]:
    """A gpg_binary that records every command line it is started with, then runs the real gpg.

    Returns (wrapper, log): one JSON list of arguments per line of the log.
    """
    real = subprocess.run(["which", "gpg"], capture_output=True, text=True, check=True).stdout.strip()
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "gpg-argv.log"
    wrapper = folder / "gpg-recording"
    wrapper.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"with open({str(log)!r}, 'a') as out:\n"
        "    out.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        f"os.execv({real!r}, [{real!r}] + sys.argv[1:])\n",
        encoding="utf-8",
    )
    wrapper.chmod(0o700)
    return wrapper, log


def wrapper_calls(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line]


@contextlib.contextmanager
def tiny_filesystem(folder: Path, size: str = "1m") -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted at ``folder``, unmounted afterwards; the test is skipped
    (with the reason) where mounting is not permitted."""
    folder.mkdir(parents=True)
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("a small file system for the test needs Linux and root (mount -t tmpfs)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                              str(folder)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)
