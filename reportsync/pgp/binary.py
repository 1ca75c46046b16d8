"""The gpg and gpgconf binaries: where they are, what version, and stopping a home's agent."""

from __future__ import annotations

import contextlib
import os
import stat
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


INSTALL_GNUPG = ("Install GnuPG (Debian/Ubuntu: apt install gnupg; macOS: brew install gnupg; "
                 "Windows: Gpg4win) or set settings.gpg_binary to its full path.")


def gpg_not_found(binary: str) -> tuple[str, str]:
    """Why ``settings.gpg_binary`` names no gpg that can be run, and what to do: the message
    and remedy both ``Gpg`` and doctor give. A path (it has a folder in it) is looked at as
    such: missing, a folder, or a file that is not executable; a bare name is looked for on
    PATH."""
    key = "settings.gpg_binary"
    if os.sep not in binary and (os.altsep is None or os.altsep not in binary):
        return f"gpg not found: {binary!r} is not on PATH", INSTALL_GNUPG
    path = Path(binary)
    try:
        info = path.stat()
    except FileNotFoundError:
        return f"gpg not found: {key} names {binary}, which does not exist", INSTALL_GNUPG
    except OSError as exc:
        return (f"gpg not found: {key} names {binary}, which cannot be looked at: "
                f"{exc.strerror}", INSTALL_GNUPG)
    if stat.S_ISDIR(info.st_mode):
        return (f"gpg not found: {key} names {binary}, a folder, not the gpg program",
                f"Set {key} to the gpg program itself (e.g. {path / 'gpg'}).")
    if not stat.S_ISREG(info.st_mode):
        return f"gpg not found: {key} names {binary}, not a regular file", INSTALL_GNUPG
    return (f"gpg cannot be run: {key} names {binary}, which is not executable (mode "
            f"{stat.S_IMODE(info.st_mode):04o})",
            f"chmod +x {binary} if it is GnuPG's gpg, or set {key} to the gpg program.")


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
