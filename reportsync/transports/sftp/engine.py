"""Which SSH engine a source's SFTP runs over: the one place that decides (``choose_engine``).

``ssh_engine = "auto"`` (the default) takes OpenSSH's ``ssh`` (``openssh.py``) when it can be
used for this source, else paramiko; ``"openssh"`` insists (a ConfigError naming why it cannot);
``"paramiko"`` never starts ssh. docs/configuration.md and docs/security.md say the same.

The openssh engine cannot be used:

- on Windows (``stream.PipeStream`` waits on the pipes with ``select``, sockets only there);
- without an OpenSSH ``ssh`` >= 8.5 on PATH (``transports.openssh_program.MIN_OPENSSH``);
- for a password login, or a key with a passphrase: ssh would have to be handed the secret
  (an askpass program), which this engine does not do; paramiko keeps them in-process;
- without a key_file (nothing else to log in with);
- when the key, certificate or known_hosts path holds ``%`` (ssh expands tokens there) or ``"``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from reportsync.config import SourceConfig
from reportsync.errors import ConfigError, Problem
from reportsync.transports.openssh_program import SshProgram, find_ssh, machine_problem
from reportsync.transports.sftp.openssh import unquotable
from reportsync.vocab import SshEngine

AUTO = "auto"


@dataclass(frozen=True)
class EngineChoice:
    engine: SshEngine
    program: SshProgram | None  # the ssh to start (openssh only)
    why: str  # for doctor and the log: what decided it

    def describe(self) -> str:
        if self.program is not None:
            return f"{self.engine} ({self.program.version_text})"
        return f"{self.engine} ({self.why})"


def _path_of(source: SourceConfig) -> str | None:
    environ = source.password.environ
    return None if environ is None else environ.get("PATH", os.defpath)


def openssh_problem(source: SourceConfig, program: SshProgram | None) -> str | None:
    """Why the openssh engine cannot serve ``source`` (None: it can)."""
    problem = machine_problem(program)
    if problem is not None:
        return problem
    if source.password.configured:
        return "the source logs in with a password, which only the paramiko engine sends"
    if source.key_passphrase.configured:
        return ("the key has a passphrase, which ssh would have to be handed; the paramiko "
                "engine keeps it in-process")
    if source.key_file is None:
        return "no key_file is set"
    for path in (source.key_file, source.certificate_file, source.known_hosts):
        if path is not None and unquotable(path):
            return f"ssh would expand the % or ~ in {path} (or cannot quote its \")"
    return None


def choose_engine(source: SourceConfig) -> EngineChoice:
    """The engine ``source``'s SFTP uses; ConfigError (exit 2) when ``ssh_engine = "openssh"``
    cannot be honoured."""
    wanted = source.ssh_engine
    if wanted == SshEngine.PARAMIKO:
        return EngineChoice(SshEngine.PARAMIKO, None, 'ssh_engine = "paramiko"')
    program = find_ssh(_path_of(source)) if os.name == "posix" else None
    problem = openssh_problem(source, program)
    if problem is None:
        return EngineChoice(SshEngine.OPENSSH, program, f"ssh_engine = {wanted!r}")
    if wanted == SshEngine.OPENSSH:
        key = f"sources.{source.name}.ssh_engine"
        raise ConfigError(
            [Problem(key, f'"openssh" cannot be used: {problem}')],
            remedy=f'Set {key} = "auto" (paramiko then serves this source) or "paramiko"; or '
            "install OpenSSH 8.5 or later and log in with a key without passphrase.")
    return EngineChoice(SshEngine.PARAMIKO, None, f"auto: {problem}")
