"""Timing: every command runs through ``benchmarks.spawn`` (wall clock and ``wait4`` peak RSS)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
GRACE = 30.0  # seconds the runner waits beyond a command's own timeout before killing spawn


class BenchError(RuntimeError):
    """One attempt failed (non-zero exit, timeout, wrong output): that side is marked failed."""


def tail(text: str | bytes | None, limit: int = 600) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


@dataclass
class Sample:
    """One finished command: wall-clock seconds, peak RSS (KiB) and its output."""

    seconds: float
    maxrss_kib: int
    cpu_seconds: float
    stdout: str
    stderr: str


def run_measured(argv: list[str], *, timeout: float, stdin: str | None = None,
                 env: dict[str, str] | None = None, cwd: Path = REPO_ROOT) -> Sample:
    """Run ``argv`` to completion through benchmarks.spawn; raises BenchError unless it exits 0."""
    fd, name = tempfile.mkstemp(prefix="rsb-spawn-", suffix=".json")
    os.close(fd)
    result_path = Path(name)
    try:
        spawn = [sys.executable, "-m", "benchmarks.spawn", str(result_path), f"{timeout:.1f}", "--",
                 *argv]
        full_env = dict(env if env is not None else os.environ)
        # benchmarks.spawn must be importable whatever the command's own working folder is
        full_env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT), *filter(None, [full_env.get("PYTHONPATH")])])
        try:
            done = subprocess.run(spawn, input=stdin, capture_output=True, text=True, cwd=cwd,
                                  env=full_env, timeout=timeout + GRACE, check=False)
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"{argv[0]} did not finish within {timeout + GRACE:.0f} s: "
                             f"{tail(exc.stderr)}") from None
        try:
            result = json.loads(result_path.read_text() or "null")
        except (OSError, ValueError):
            result = None
        if not isinstance(result, dict):
            raise BenchError(f"could not run {argv[0]}: {tail(done.stderr) or done.returncode}")
    finally:
        result_path.unlink(missing_ok=True)
    if result["timed_out"]:
        raise BenchError(f"{' '.join(argv[:3])}... timed out after {timeout:.0f} s: "
                         f"{tail(done.stderr)}")
    if result["returncode"] != 0:
        raise BenchError(f"{' '.join(argv[:3])}... exited {result['returncode']}: "
                         f"{tail(done.stderr) or tail(done.stdout)}")
    return Sample(seconds=float(result["seconds"]), maxrss_kib=int(result["maxrss_kib"]),
                  cpu_seconds=float(result["user_s"]) + float(result["sys_s"]),
                  stdout=done.stdout, stderr=done.stderr)


def run_untimed(argv: list[str], *, timeout: float, cwd: Path = REPO_ROOT) -> str:
    """Set-up commands (not measured): stdout, or BenchError."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                              check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{argv[0]} (set-up) timed out after {timeout:.0f} s") from None
    if done.returncode != 0:
        raise BenchError(f"set-up {' '.join(argv[:4])}... exited {done.returncode}: "
                         f"{tail(done.stderr) or tail(done.stdout)}")
    return done.stdout
