"""Where reportsync's time goes: py-spy over the reportsync side of a workload, summarised.

py-spy samples every thread (paramiko does its decryption in its own transport thread, which
cProfile would not see), idle frames included: for round-trip-bound work, waiting *is* the
time. The summary lists, per thread, the functions with the most samples on top of the stack
(self) and anywhere in the stack (inclusive).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_HEAD = re.compile(r"^thread \((?P<tid>\d+)\)(?:: (?P<name>[^;]*))?(?:;|$)")
_THREAD_NUMBER = re.compile(r"Thread-\d+")
_OWN = re.compile(r"[(/]reportsync/[^()]*:\d+\)$")


def py_spy() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else None


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    if "/reportsync/" in path:
        path = "reportsync/" + path.split("/reportsync/", 1)[1]
    return f"{match['function']} ({path})"


def _line(frame: str) -> str:
    """``function (reportsync/x.py:LINE)``: where in reportsync the time is spent."""
    match = re.match(r"^(?P<function>.*?) \((?:.*/)?(?P<file>reportsync/[^:]*):(?P<line>\d+)\)$", frame)
    if match is None:
        return frame
    return f"{match['function']} ({match['file']}:{match['line']})"


@dataclass
class ThreadProfile:
    name: str
    samples: int = 0
    self_counts: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)
    own_lines: Counter[str] = field(default_factory=Counter)  # reportsync's lines, inclusive


def summarise(raw: Path, top: int = 12) -> tuple[int, list[ThreadProfile]]:
    """Parse py-spy's raw (collapsed stacks) output: total samples and per-thread tallies."""
    threads: dict[str, ThreadProfile] = {}
    total = 0
    lines = raw.read_text(errors="replace").splitlines()
    names: dict[str, str] = {}  # thread id -> name (py-spy names a thread once it has one)
    for line in lines:
        match = _HEAD.match(line.rpartition(" ")[0])
        if match is not None and match["name"]:
            names[match["tid"]] = _THREAD_NUMBER.sub("Thread-N", match["name"])
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        match = _HEAD.match(stack)
        if match is None or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        own = {_line(frame) for frame in frames[1:] if _OWN.search(frame)}
        name = names.get(match["tid"], f"thread {match['tid']} (unnamed)")
        frames = [_short(frame) for frame in frames[1:]]
        if not frames:
            continue
        profile = threads.setdefault(name, ThreadProfile(name))
        profile.samples += count
        total += count
        profile.self_counts[frames[-1]] += count
        for frame in set(frames):
            profile.inclusive[frame] += count
        for frame in own:
            profile.own_lines[frame] += count
    ordered = sorted(threads.values(), key=lambda item: item.samples, reverse=True)
    return total, ordered


def render(total: int, threads: list[ThreadProfile], top: int = 12) -> list[str]:
    lines = [f"{total} samples (all threads, idle included)"]
    for profile in threads[:4]:
        lines.append(f"thread {profile.name}: {profile.samples} samples "
                     f"({100 * profile.samples / max(total, 1):.0f}%)")
        lines.append("  self (top of stack):")
        for frame, count in profile.self_counts.most_common(top):
            lines.append(f"    {100 * count / max(profile.samples, 1):5.1f}%  {frame}")
        lines.append("  inclusive:")
        shown = 0
        for frame, count in profile.inclusive.most_common():
            if frame.startswith(("<module>", "_run_module", "_run_code", "Thread._bootstrap",
                                 "Thread.run", "main (reportsync/cli", "_find_and_load")):
                continue
            lines.append(f"    {100 * count / max(profile.samples, 1):5.1f}%  {frame}")
            shown += 1
            if shown >= top:
                break
        if profile.own_lines:
            lines.append("  reportsync lines (inclusive):")
            for frame, count in profile.own_lines.most_common(top):
                lines.append(f"    {100 * count / max(profile.samples, 1):5.1f}%  {frame}")
    return lines


def record(argv: list[str], out: Path, *, timeout: float, rate: int = 200) -> list[str]:
    """Run ``argv`` under py-spy; returns the summary lines (raw stacks saved to ``out``)."""
    spy = py_spy()
    if spy is None:
        return ["py-spy not installed (pip install py-spy): no profile"]
    command = [spy, "record", "-r", str(rate), "--idle", "--threads", "-f", "raw", "-o", str(out),
               "--", *argv]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if not out.exists():
        return [f"py-spy failed ({done.returncode}): {done.stderr.strip()[-400:]}"]
    total, threads = summarise(out)
    return render(total, threads)


def main(argv: list[str]) -> int:
    """Summarise a saved raw profile again: ``python -m benchmarks.profiling FILE [TOP]``."""
    if not argv:
        print("usage: python -m benchmarks.profiling RAW-FILE [TOP]", file=sys.stderr)
        return 2
    top = int(argv[1]) if len(argv) > 1 else 12
    total, threads = summarise(Path(argv[0]), top)
    print("\n".join(render(total, threads, top)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
