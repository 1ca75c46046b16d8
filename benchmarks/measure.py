"""Timing primitives: a subprocess or an in-process call, wall clock; peak RSS of a process."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


class BenchError(RuntimeError):
    """One attempt failed (non-zero exit, timeout, wrong output): the workload is marked failed."""


def _tail(text: str | bytes | None, limit: int = 600) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


@dataclass
class Completed:
    seconds: float
    stdout: str
    stderr: str


def run_timed(argv: list[str], *, timeout: float, stdin: str | None = None,
              env: dict[str, str] | None = None, cwd: Path = REPO_ROOT) -> Completed:
    """Run ``argv`` to completion; wall-clock seconds from spawn to exit. Raises BenchError."""
    started = time.perf_counter()
    try:
        completed = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                                   timeout=timeout, cwd=cwd, env=env, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{argv[0]} timed out after {timeout:.0f} s: {_tail(exc.stderr)}") from None
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise BenchError(f"{' '.join(argv[:4])}... exited {completed.returncode}: "
                         f"{_tail(completed.stderr) or _tail(completed.stdout)}")
    return Completed(seconds, completed.stdout, completed.stderr)


def call_timed(function: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    value = function()
    return time.perf_counter() - started, value


def _status_kib(pid: int, field: str) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
        except OSError:
            continue
        found.extend(int(child) for child in text.split())
    return found


@dataclass
class RssSample:
    seconds: float
    process_hwm_kib: int  # VmHWM of the process itself (reportsync's Python), last value seen
    children_hwm_kib: int  # the largest VmHWM seen among its child processes (gpg)
    stdout: str


def run_with_peak_rss(argv: list[str], *, timeout: float, env: dict[str, str] | None = None,
                      cwd: Path = REPO_ROOT, interval: float = 0.01) -> RssSample:
    """Run ``argv``, polling /proc/PID/status VmHWM until it exits.

    VmHWM is the kernel's own peak-RSS mark of the process's address space, so polling cannot
    miss a spike that is over before a poll (only growth in the last ``interval`` before exit).
    ``ru_maxrss`` from wait4/RUSAGE_CHILDREN is not used: Linux carries the high-water mark of the
    address space that exec replaced into it, so a child of a large runner inherits the runner's
    peak (it read 130 MiB for every run, whatever the file size).
    """
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"rsb-rss-{os.getpid()}.out"
    with out_path.open("w+") as out, open(os.devnull, "w") as devnull:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=devnull, cwd=cwd, env=env)
        hwm = 0
        children_hwm = 0
        deadline = started + timeout
        while process.poll() is None:
            value = _status_kib(process.pid, "VmHWM")
            if value is not None:
                hwm = max(hwm, value)
            for child in _children(process.pid):
                child_value = _status_kib(child, "VmHWM")
                if child_value is not None:
                    children_hwm = max(children_hwm, child_value)
            if time.perf_counter() > deadline:
                process.kill()
                process.wait()
                raise BenchError(f"{argv[0]} timed out after {timeout:.0f} s")
            time.sleep(interval)
        seconds = time.perf_counter() - started
        out.seek(0)
        stdout = out.read()
    out_path.unlink(missing_ok=True)
    if process.returncode != 0:
        raise BenchError(f"{' '.join(argv[:4])}... exited {process.returncode}: {_tail(stdout)}")
    return RssSample(seconds=seconds, process_hwm_kib=hwm, children_hwm_kib=children_hwm,
                     stdout=stdout)
