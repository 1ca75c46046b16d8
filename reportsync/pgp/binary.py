"""The gpg and gpgconf binaries: where they are, what version, and stopping a home's agent."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from reportsync import process

GPG_TIMEOUT = 30.0  # gpg --version, gpgconf, ownertrust: local steps, no network


@dataclass(frozen=True)
class GpgBinary:
    """What ``gpg --version`` says about the configured gpg binary."""

    binary: str
    path: str | None  # None: not found on PATH
    first_line: str = ""  # of --version (or of stderr when it printed nothing)
    returncode: int | None = None
    error: str | None = None  # it could not be started at all


def inspect_gpg(binary: str, environ: Mapping[str, str] | None = None) -> GpgBinary:
    path = process.which(binary, environ)
    if path is None:
        return GpgBinary(binary, None)
    try:
        completed = process.run([path, "--version"], timeout=GPG_TIMEOUT, environ=environ)
    except process.ChildError as exc:
        return GpgBinary(binary, path, error=str(exc))
    out = completed.stdout.decode("utf-8", "replace").splitlines()[:1]
    err = completed.stderr.decode("utf-8", "replace").strip().splitlines()[:1]
    return GpgBinary(binary, path, (out or err or [""])[0], completed.returncode)


def gpg_version_line(binary: str = "gpg", environ: Mapping[str, str] | None = None) -> str:
    """The first line of ``gpg --version`` and where gpg is, or "not found"."""
    found = inspect_gpg(binary, environ)
    if found.path is None:
        return "not found"
    if found.error is not None:
        return f"{found.path}: cannot run it: {found.error}"
    return f"{found.first_line or 'no version output'} ({found.path})"


def gpgconf_for(gpg_path: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The gpgconf that belongs to this gpg (its sibling), else the one on PATH."""
    sibling = Path(gpg_path).with_name("gpgconf")
    return str(sibling) if sibling.exists() else process.which("gpgconf", environ)


def kill_agent(gpg_path: str, home: Path, environ: Mapping[str, str] | None = None) -> None:
    """Stop the gpg-agent of ``home`` (quietly: there may be none)."""
    gpgconf = gpgconf_for(gpg_path, environ)
    if gpgconf is None:
        return
    with contextlib.suppress(*process.ChildError):
        process.run([gpgconf, "--homedir", str(home), "--kill", "gpg-agent"], timeout=GPG_TIMEOUT,
                    environ=environ)
