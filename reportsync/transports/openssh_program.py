"""The ``ssh`` on PATH and whether the openssh SFTP engine can run it (``transports/sftp/engine``
decides per source; ``reportsync --version`` shows it). Apart from the ``sftp`` package so that
``--version`` does not import paramiko."""

from __future__ import annotations

import functools
import logging
import os
import re
from dataclasses import dataclass

from reportsync import process

log = logging.getLogger(__name__)

MIN_OPENSSH = (8, 5)
"""The oldest ssh the engine runs: ``KnownHostsCommand`` (pinning) and the checks issue 13
made of the safety properties (resume, known_hosts refusals before any credential, pinning,
certificates) are from 8.5 on."""

VERSION_TIMEOUT = 10.0  # seconds ``ssh -V`` may take

_VERSION = re.compile(r"OpenSSH_(?:for_Windows_)?(\d+)\.(\d+)(\S*)")


@dataclass(frozen=True)
class SshProgram:
    """The ``ssh`` on PATH and what ``ssh -V`` said."""

    path: str
    version_text: str  # e.g. "OpenSSH_9.2p1"
    version: tuple[int, int]

    @property
    def usable(self) -> bool:
        return self.version >= MIN_OPENSSH


@functools.cache
def find_ssh(path_variable: str | None = None) -> SshProgram | None:
    """OpenSSH's ``ssh`` on ``path_variable`` (default: our PATH), or None when there is none or
    it is not OpenSSH; asked once per run (``ssh -V`` costs a few milliseconds)."""
    environ = None if path_variable is None else {"PATH": path_variable}
    found = process.which("ssh", environ)
    if found is None:
        return None
    try:
        completed = process.run([found, "-V"], timeout=VERSION_TIMEOUT)
    except process.ChildError as exc:
        log.debug("ssh -V failed: %s", exc)
        return None
    text = (completed.stderr or completed.stdout).decode("utf-8", "replace")
    match = _VERSION.search(text)
    if match is None:
        log.debug("ssh -V: not OpenSSH: %s", text.strip())
        return None
    return SshProgram(found, match.group(0), (int(match.group(1)), int(match.group(2))))


def machine_problem(program: SshProgram | None) -> str | None:
    """Why this machine cannot run the openssh engine at all (None: it can)."""
    if os.name != "posix":
        return "not on Windows (the engine waits on ssh's pipes with select, sockets only there)"
    if program is None:
        return "no OpenSSH `ssh` on PATH"
    if not program.usable:
        return (f"{program.path} is {program.version_text}, older than OpenSSH "
                f"{'.'.join(map(str, MIN_OPENSSH))}")
    return None


def engine_summary(paramiko_version: str) -> str:
    """What SFTP sources speak SSH with on this machine (``reportsync --version``)."""
    program = find_ssh() if os.name == "posix" else None
    fallback = f"paramiko {paramiko_version}"
    problem = machine_problem(program)
    if problem is None and program is not None:
        return (f"openssh ({program.version_text}) for key logins / {fallback} for passwords, "
                "keys with a passphrase, and ssh_engine = \"paramiko\"")
    return f"{fallback} (openssh unused: {problem})"
