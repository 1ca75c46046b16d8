"""One run at a time per state dir, and who holds a lock.

The lock is an OS file lock (``filelock``: fcntl on POSIX, msvcrt on Windows), which the OS drops
when its holder dies, so a killed run never blocks the next one. Who holds it is written beside it
for the message a second run prints. A shared ledger's per-source locks (``reportsync.ledger``)
name their holder in the same words (``LockHolder``).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import TracebackType

import filelock

from reportsync.errors import LockHeldError
from reportsync.fsutil import ensure_private_dir, remove_quietly, storage_error

LOCK_FILE = "reportsync.lock"
HOLDER_FILE = "reportsync.lock.holder"


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock: the host and pid of the run, its command and since when (what is not
    known is None)."""

    host: str | None
    pid: int | None
    command: str | None = None
    since: float | None = None

    @classmethod
    def this_process(cls, command: str) -> LockHolder:
        return cls(host=socket.gethostname(), pid=os.getpid(), command=command, since=time.time())

    def describe(self) -> str:
        """``pid 4242 on host-a (`reportsync fetch`, since 2026-11-02 07:15:00)``."""
        if self.host is None and self.pid is None:
            return "holder unknown"
        details = []
        if self.command:
            details.append(f"`reportsync {self.command}`")
        if self.since is not None:
            details.append("since " + time.strftime("%Y-%m-%d %H:%M:%S",
                                                    time.localtime(self.since)))
        where = f"pid {self.pid if self.pid is not None else '?'} on {self.host or '?'}"
        return f"{where} ({', '.join(details)})" if details else where


class RunLock:
    def __init__(self, state_dir: Path, command: str) -> None:
        self.state_dir = state_dir
        self.command = command
        self._lock = filelock.FileLock(str(state_dir / LOCK_FILE), timeout=0)
        self._holder_path = state_dir / HOLDER_FILE

    def __enter__(self) -> RunLock:
        ensure_private_dir(self.state_dir, "settings.state_dir")
        try:
            self._lock.acquire(timeout=0)
        except filelock.Timeout:
            raise LockHeldError(
                f"another reportsync run holds the lock in {self.state_dir}: "
                f"{self.describe_holder()}",
                path=str(self.state_dir / LOCK_FILE),
            ) from None
        holder = LockHolder.this_process(self.command)
        try:
            self._holder_path.write_text(json.dumps({"pid": holder.pid, "host": holder.host,
                                                     "command": holder.command,
                                                     "since": holder.since}), encoding="utf-8")
        except OSError as exc:
            # a full disk (or a read-only state dir) shows here first: said as what it is, and
            # the lock is let go again, since the run cannot record anything anyway
            remove_quietly(self._holder_path)
            self._lock.release()
            raise storage_error(exc, self.state_dir) from None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        remove_quietly(self._holder_path)
        self._lock.release()

    def describe_holder(self) -> str:
        try:
            holder = json.loads(self._holder_path.read_text(encoding="utf-8"))
            return LockHolder(host=holder.get("host"), pid=holder.get("pid"),
                              command=holder.get("command"),
                              since=float(holder.get("since", 0))).describe()
        except (OSError, ValueError, TypeError, AttributeError):
            return "holder unknown"


class LockState(Enum):
    ABSENT = "absent"  # no lock file: no run has used this state dir yet
    FREE = "free"
    HELD = "held"  # a run holds it now


def lock_state(state_dir: Path) -> LockState:
    """Whether a run holds the lock of ``state_dir`` now: a probe (taken and let go at once) that
    creates nothing, no lock file and no holder file. Raises ``OSError`` when the lock file cannot
    be opened."""
    path = state_dir / LOCK_FILE
    if not path.exists():
        return LockState.ABSENT
    probe = filelock.FileLock(str(path), timeout=0)
    try:
        probe.acquire(timeout=0)
    except filelock.Timeout:
        return LockState.HELD
    probe.release()
    return LockState.FREE
