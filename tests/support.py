"""Test helpers: real GnuPG identities, config files, and running the CLI."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gnupg

from reportsync.config import toml_literal

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class PgpIdentity:
    """An isolated GnuPG home holding one RSA key pair without a passphrase."""

    home: Path
    fingerprint: str
    email: str

    def gpg(self) -> gnupg.GPG:
        return gnupg.GPG(gnupghome=str(self.home))

    def encrypt(self, plaintext: bytes, *, armor: bool = False, sign: bool = False,
                extra_args: list[str] | None = None) -> bytes:
        result = self.gpg().encrypt(plaintext, self.fingerprint, armor=armor, always_trust=True,
                                    sign=self.fingerprint if sign else None,
                                    extra_args=extra_args)
        assert result.ok, result.stderr
        return bytes(result.data)

    def stop_agent(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"],
                       check=False, capture_output=True)


def make_identity(home: Path, email: str, *, passphrase: str | None = None) -> PgpIdentity:
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)
    gpg = gnupg.GPG(gnupghome=str(home))
    spec = gpg.gen_key_input(name_real="reportsync test", name_email=email, key_type="RSA",
                             key_length=2048, expire_date=0,
                             passphrase=passphrase, no_protection=passphrase is None)
    key = gpg.gen_key(spec)
    assert key.fingerprint, key.stderr
    return PgpIdentity(home=home, fingerprint=str(key.fingerprint), email=email)


def copy_identity(identity: PgpIdentity, home: Path) -> PgpIdentity:
    """A private copy of a GnuPG home (each test its own agent and trustdb)."""
    shutil.copytree(identity.home, home, ignore=shutil.ignore_patterns("S.*", "*.lock"))
    home.chmod(0o700)
    return PgpIdentity(home=home, fingerprint=identity.fingerprint, email=identity.email)


def toml_dump(document: dict[str, Any]) -> str:
    """Enough TOML for our configs: tables of scalars and lists, [sources.NAME] sub-tables."""
    lines: list[str] = []
    for section, table in document.items():
        if section == "sources":
            for name, source in table.items():
                lines.append(f"[sources.{name}]")
                lines.extend(f"{key} = {toml_literal(value)}" for key, value in source.items())
                lines.append("")
        else:
            lines.append(f"[{section}]")
            lines.extend(f"{key} = {toml_literal(value)}" for key, value in table.items())
            lines.append("")
    return "\n".join(lines)


def write_config(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(toml_dump(document), encoding="utf-8")
    path.chmod(0o600)
    return path


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """The whole ``--json`` envelope."""
        return json.loads(self.stdout)

    def result(self) -> Any:
        """The ``result`` of the ``--json`` envelope (the command's own document)."""
        document = self.json()
        assert document["version"] == 1 and "result" in document, document
        return document["result"]


def run_cli_inprocess(*args: str, env: dict[str, str] | None = None) -> CliResult:
    """``reportsync ARGS`` through ``cli.main`` in this process: its exit code and output, without
    starting a Python (a second or more each). ``env`` is added to a copy of this process's
    environment that goes to ``main`` and never into ``os.environ``: a variable set only in ``env``
    reaches the run only through the environment ``main`` hands on (config, secrets, children), as
    in a real process that was started with it."""
    from reportsync.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    code = main(list(args), env={**os.environ, **(env or {})}, stdout=stdout, stderr=stderr)
    return CliResult(code, stdout.getvalue(), stderr.getvalue())


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> CliResult:
    """Run ``python -m reportsync`` in a real subprocess: real exit codes, real signals, a process
    of its own (the cron contract; a test that must not share this process's state)."""
    full_env = {**os.environ, **(env or {})}
    completed = subprocess.run([sys.executable, "-m", "reportsync", *args], capture_output=True,
                               text=True, env=full_env, cwd=REPO_ROOT, timeout=timeout)
    return CliResult(completed.returncode, completed.stdout, completed.stderr)


def files_in(folder: Path) -> Iterator[Path]:
    return (path for path in sorted(folder.iterdir()) if path.is_file())


def random_plain(size: int) -> bytes:
    """Random content that cannot pass for a PGP message: fetch judges files by their first bytes
    too, and about 4 % of purely random files start with an OpenPGP packet header."""
    return b"<" + os.urandom(size - 1)


def processes(matching: Callable[[list[bytes]], bool]) -> list[int]:
    """The pids of the running processes whose argv (from ``/proc/PID/cmdline``) ``matching``
    accepts; a process that ends while it is looked at is left out."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if matching(argv):
            pids.append(int(entry.name))
    return pids
