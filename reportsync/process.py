"""Child processes: the one module that starts them, and the one place that builds their environment.

gpg, gpgconf and the gpg-agent they spawn (a daemon that outlives the run), schedule's Python probe
and the per-report hooks (``run_in_own_group``: a process group of their own, stopped whole on a
timeout) all start here. Each gets an environment built from an allowlist,
never the caller's: a secret held in a variable of any name (an FTP password, a key or backup
passphrase, a ledger password, a notification URL) cannot reach a child.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

# What gpg, gpgconf and gpg-agent need to start and to find their files and locale; nothing else
# of the caller's environment is passed on. GNUPGHOME is left out because every gpg gets
# --homedir; GPG_TTY, TERM and DISPLAY are left out because gpg runs in batch mode with loopback
# pinentry and must never open a pinentry window or prompt under cron. The library paths serve a
# gpg installed under a private prefix; the Windows names are what a program and Gpg4win need to
# start.
CHILD_ENV_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "USERNAME", "LANG", "LANGUAGE", "TZ",
    "TMPDIR", "TMP", "TEMP",
    "LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH", "DYLD_FALLBACK_LIBRARY_PATH",
    "SYSTEMROOT", "SYSTEMDRIVE", "WINDIR", "COMSPEC", "PATHEXT", "USERPROFILE", "HOMEDRIVE",
    "HOMEPATH", "APPDATA", "LOCALAPPDATA", "PROGRAMDATA", "PROGRAMFILES", "PROGRAMFILES(X86)",
    "PROGRAMW6432", "COMMONPROGRAMFILES", "COMMONPROGRAMFILES(X86)", "NUMBER_OF_PROCESSORS",
    "PROCESSOR_ARCHITECTURE", "OS",
})
CHILD_ENV_PREFIXES = ("LC_",)  # LC_ALL, LC_CTYPE, LC_MESSAGES, ...

NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0)  # Windows: no console flashes up
PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
ChildError = (OSError, subprocess.SubprocessError)
"""What starting or waiting for a child can raise: callers turn it into their own error."""
TimeoutExpired = subprocess.TimeoutExpired
CompletedProcess = subprocess.CompletedProcess
Popen = subprocess.Popen
BinaryFile = IO[bytes]


def child_environment(hidden: Iterable[str] = (), *, environ: Mapping[str, str] | None = None,
                      extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process: the allowlisted variables of ``environ`` (default:
    ours), minus ``hidden`` (the names the config reads secrets from, in case one of them is also
    an allowlisted name), plus ``extra`` (values reportsync itself hands the child)."""
    source = os.environ if environ is None else environ
    refused = {name.upper() for name in hidden}
    allowed = {name: value for name, value in source.items()
               if name.upper() not in refused
               and (name.upper() in CHILD_ENV_NAMES or name.upper().startswith(CHILD_ENV_PREFIXES))}
    allowed.update(extra or {})
    return allowed


def which(program: str, environ: Mapping[str, str] | None = None) -> str | None:
    """``program`` as found on the PATH of ``environ`` (default: ours), or None."""
    if environ is None:
        return shutil.which(program)
    return shutil.which(program, path=environ.get("PATH", os.defpath))


def run(argv: Sequence[str], *, stdin: bytes = b"", hidden: Iterable[str] = (), timeout: float,
        cwd: Path | str | None = None, environ: Mapping[str, str] | None = None
        ) -> subprocess.CompletedProcess[bytes]:
    """A short child run with the allowlisted part of ``environ`` (default: ours), output
    captured; ``ChildError`` passes up (not found, not executable, timed out)."""
    return subprocess.run(list(argv), input=stdin, capture_output=True, check=False,
                          timeout=timeout, env=child_environment(hidden, environ=environ), cwd=cwd,
                          creationflags=NO_WINDOW)


def popen_pipes(argv: Sequence[str], *, env: Mapping[str, str], stdout: int = PIPE,
                cwd: Path | str | None = None, private_files: bool = False
                ) -> subprocess.Popen[bytes]:
    """A child with stdin and stderr on pipes (stdout too unless ``stdout`` says otherwise, e.g.
    DEVNULL), for streaming (gpg's decryptions). ``private_files``: every file the child creates
    is 0600 from the start (umask 077, set by the child itself before it executes: no
    ``preexec_fn``, so safe with threads; POSIX only, elsewhere the folder protects them)."""
    return _start(argv, stdin=PIPE, stdout=stdout, stderr=PIPE, env=env, cwd=cwd,
                  umask=0o077 if private_files else -1, creationflags=NO_WINDOW)


def _start(argv: Sequence[str], *, stdin: int, stdout: int | IO[bytes], stderr: int,
           env: Mapping[str, str], cwd: Path | str | None, **options: Any
           ) -> subprocess.Popen[bytes]:
    """The one place a long-running child is started: with exactly ``env`` (the callers build it
    with ``child_environment``), never through a shell."""
    return subprocess.Popen(list(argv), stdin=stdin, stdout=stdout, stderr=stderr, env=dict(env),
                            cwd=cwd, **options)


# --- a child in a process group of its own (the per-report hooks) ---------------------------------

GROUP_KILL_GRACE = 2.0  # seconds between asking the group to stop and killing it


@dataclass(frozen=True)
class GroupRun:
    """How a child run in its own process group ended: its exit code, or None when it ran past
    its timeout and its whole group was killed."""

    returncode: int | None
    seconds: float

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


def run_in_own_group(argv: Sequence[str], *, env: Mapping[str, str], timeout: float,
                     output: IO[bytes], cwd: Path | str | None = None) -> GroupRun:
    """Run ``argv`` (no shell) with ``env`` exactly, stdin empty, stdout and stderr into
    ``output`` (a file, not a pipe: a grandchild that keeps a pipe open could hold us up), in a
    process group (POSIX: a session) of its own; past ``timeout`` seconds the whole group is
    stopped, children it started included. ``ChildError`` passes up when it cannot start."""
    started = time.monotonic()
    child = _start(argv, stdin=DEVNULL, stdout=output, stderr=subprocess.STDOUT, env=env,
                   cwd=cwd, close_fds=True, **_own_group_options())
    try:
        returncode: int | None = child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop_group(child)
        returncode = None
    except BaseException:  # interrupted (Ctrl-C): the hook must not outlive the run
        _stop_group(child)
        raise
    return GroupRun(returncode, time.monotonic() - started)


def _own_group_options() -> dict[str, Any]:
    """Popen's options for a child that leads a group of its own: on POSIX a new session (its
    process group id is its pid, so ``killpg`` reaches everything it starts); on Windows a new
    process group without a console window."""
    if os.name == "posix":
        return {"start_new_session": True}
    return {"creationflags": NO_WINDOW | getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}


def _stop_group(child: subprocess.Popen[bytes]) -> None:
    """Stop ``child`` and every process of its group: SIGTERM to the group, SIGKILL after a
    grace period (POSIX); on Windows ``taskkill /T /F`` (the child's tree), else the child alone."""
    if os.name == "posix":
        try:
            os.killpg(child.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=GROUP_KILL_GRACE)
            # whatever of the group is left (a grandchild ignoring SIGTERM) ends now
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # the whole group is gone
        except OSError:  # e.g. EPERM for a group of zombies (macOS): the child itself at least
            with contextlib.suppress(OSError):
                child.kill()
    else:
        _windows_kill_tree(child)
    try:
        child.wait(timeout=GROUP_KILL_GRACE)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _windows_kill_tree(child: subprocess.Popen[bytes]) -> None:
    """Windows has no process groups to signal: ``taskkill /T /F`` ends the child's tree."""
    taskkill = which("taskkill")
    if taskkill is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            run([taskkill, "/T", "/F", "/PID", str(child.pid)], timeout=GROUP_KILL_GRACE * 5)
    if child.poll() is None:
        child.kill()
