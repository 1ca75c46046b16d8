"""One run at a time per state dir.

The lock is an OS file lock (``filelock``: fcntl on POSIX, msvcrt on Windows), which the OS drops
when its holder dies, so a killed run never blocks the next one. Who holds it is written beside it
for the message a second run prints.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

import filelock

from reportsync.errors import LockHeldError
from reportsync.fsutil import ensure_private_dir, remove_quietly, storage_error

LOCK_FILE = "reportsync.lock"
HOLDER_FILE = "reportsync.lock.holder"


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
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                  "since": time.time()}
        try:
            self._holder_path.write_text(json.dumps(holder), encoding="utf-8")
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
        except (OSError, ValueError):
            return "holder unknown"
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder.get("since", 0))))
        return (f"pid {holder.get('pid')} on {holder.get('host')} "
                f"(`reportsync {holder.get('command')}`, since {started})")


def is_held(state_dir: Path) -> bool:
    """Whether another run holds the lock of ``state_dir`` now: a probe (taken and let go at
    once) for what must happen only when the run will not stop at the lock, such as telling a
    healthchecks receiver that a run starts. Creates nothing: no lock file, no holder file."""
    path = state_dir / LOCK_FILE
    if not path.exists():
        return False
    probe = filelock.FileLock(str(path), timeout=0)
    try:
        probe.acquire(timeout=0)
    except filelock.Timeout:
        return True
    except OSError:
        return False  # cannot tell: the run itself reports what it finds
    probe.release()
    return False
