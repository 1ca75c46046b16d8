"""The benchmark runner (benchmarks/) cannot rot: its measuring parts, and a smoke run of it all.

No timing assertion here: the figures belong to docs/performance.md, not to the suite.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.measure import BenchError, run_measured
from benchmarks.runner import Line, SideResult, _line, select_rows
from benchmarks.workloads import ROW_KEYS, Attempt, Compare, Row, Side, Target, expect_fetch
from tests.support import REPO_ROOT

MIB = 1024 * 1024


def test_peak_rss_is_the_commands_own_not_the_runners() -> None:
    """Linux hands the high-water mark of the address space exec replaces on to the new
    program's ru_maxrss: spawned straight from a big process, a small command would report at
    least that process's peak. benchmarks.spawn keeps it out."""
    ballast = bytearray(300 * MIB)  # this process now has a peak of over 300 MiB
    ballast[:: 4096] = b"x" * len(ballast[:: 4096])  # touch every page: resident, not reserved

    small = run_measured(["true"], timeout=30)
    big = run_measured([sys.executable, "-c",
                        "x = bytearray(120 * 1024 * 1024); x[::4096] = b'y' * len(x[::4096])"],
                       timeout=60)

    assert small.maxrss_kib < 60 * 1024
    assert 120 * 1024 <= big.maxrss_kib < 250 * 1024
    assert small.seconds < big.seconds + 5  # both timed at all
    del ballast


def test_a_failing_command_is_an_error_with_its_output() -> None:
    with pytest.raises(BenchError, match="exited 3: no such report"):
        run_measured(["sh", "-c", "echo no such report >&2; exit 3"], timeout=30)


def test_a_timeout_kills_the_commands_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(BenchError, match="timed out"):
        run_measured(["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"], timeout=1)
    assert time.monotonic() - started < 20
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the command's child survived its timeout"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_only_takes_names_and_patterns_in_table_order() -> None:
    parser = argparse.ArgumentParser()
    assert select_rows("noop_vsftpd,backfill_2000_*", parser) == [
        "backfill_2000_rsa2048", "backfill_2000_rsa3072", "noop_vsftpd"]
    assert select_rows(None, parser) == list(ROW_KEYS)
    with pytest.raises(SystemExit):
        select_rows("no_such_row", parser)


def _row(kind: str) -> Row:
    def never(rep: int) -> Attempt:
        raise AssertionError("not run")
    return Row(key="r", title="t", kind=kind, unit="files/s", amount=100,
               sides=[Side("rs", "reportsync", True, never), Side("tool", "tool", False, never)],
               compares=[])


def _judge(kind: str, rs: list[float], tool: list[float], target: Target) -> Line:
    results = {"rs": SideResult("rs", "reportsync", True, seconds=rs),
               "tool": SideResult("tool", "tool", False, seconds=tool)}
    return _line(_row(kind), Compare("rs", "tool", target), results, judged=True)


def test_throughput_ratio_is_tool_time_over_reportsync_time_of_the_medians() -> None:
    target = Target("≥ 1.0x", min_ratio=1.0)
    faster = _judge("throughput", [2.0, 1.0, 9.0], [3.0, 3.0, 3.0], target)
    slower = _judge("throughput", [4.0, 4.0, 4.0, 4.0, 4.0], [2.0, 2.0, 2.0, 2.0, 2.0], target)
    assert (faster.ratio, faster.met) == (1.5, True)
    assert (slower.ratio, slower.met) == (0.5, False)


def test_noop_needs_both_the_time_ratio_and_the_absolute_bound() -> None:
    target = Target("< 2 s and ≤ 1.5x", max_time_ratio=1.5, max_seconds=2.0)
    within = _judge("noop", [1.2], [1.0], target)
    too_slow_absolute = _judge("noop", [3.0], [2.5], target)
    too_slow_relative = _judge("noop", [1.8], [1.0], target)
    assert within.ratio == pytest.approx(1.2) and within.met is True
    assert too_slow_absolute.met is False
    assert too_slow_relative.ratio == pytest.approx(1.8) and too_slow_relative.met is False


def test_peak_rss_is_judged_by_the_worst_repetition() -> None:
    """A memory bound must hold for every run (one cron run over it is the one that is
    killed), so one bad repetition of five fails the row although the median is fine."""
    target = Target("< 100 MiB", max_mib=100.0)
    results = {"rs": SideResult("rs", "reportsync", True, seconds=[40.0, 41.0, 270.0],
                                maxrss_mib=[64.0, 66.0, 1100.0])}
    line = _line(_row("rss"), Compare("rs", None, target), results, judged=True)
    results["rs"].maxrss_mib[2] = 70.0
    steady = _line(_row("rss"), Compare("rs", None, target), results, judged=True)
    assert line.met is False
    assert steady.met is True


def test_the_fetch_summary_check_reads_what_fetch_prints() -> None:
    expect_fetch("bench: 0 archived, 5 downloaded, not decrypted, 0 already archived, "
                 "100 KB transferred\n", downloaded=5)
    expect_fetch("bench: 0 archived, 50000 already archived, 0 B transferred\n", skipped=50000,
                 no_transfer=True)
    with pytest.raises(BenchError, match="expected"):
        expect_fetch("bench: 3 archived, 0 already archived, 1 KB transferred\n", archived=4)
    with pytest.raises(BenchError, match="more"):
        expect_fetch("bench: 3 archived, 0 already archived, 1 failed, 1 KB transferred\n",
                     archived=3)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_smoke_run_of_every_row(tmp_path: Path) -> None:
    """``python -m benchmarks --smoke``: every row's every side runs once on tiny data against
    the real servers and tools, and checks its result; the table names every row."""
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--smoke", "--no-install",
                           "--results-dir", str(tmp_path)], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=540, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("| `")]
    for key in ROW_KEYS:
        assert any(line.startswith(f"| `{key}` |") for line in table), key
    assert "FAILED" not in done.stdout
    (written,) = tmp_path.glob("*-smoke.json")
    document = json.loads(written.read_text())
    assert {line["row"] for line in document["lines"]} == set(ROW_KEYS)
    assert document["meta"]["reportsync"]["commit"] != "unknown"
    assert "load average" in document["meta"]["uptime_start"]
    again = subprocess.run([sys.executable, "-m", "benchmarks", "--table-from", str(written)],
                           capture_output=True, text=True, cwd=REPO_ROOT, timeout=60, check=False)
    assert again.returncode == 0, again.stderr
    assert [line for line in again.stdout.splitlines() if line.startswith("| `")] == table


def test_performance_md_describes_every_row() -> None:
    text = (REPO_ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    missing = [key for key in ROW_KEYS if f"`{key}`" not in text]
    assert not missing, f"docs/performance.md does not describe the rows {missing}"
