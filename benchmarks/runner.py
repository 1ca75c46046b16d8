"""The benchmark runner of issue 8: reportsync next to the standard tools, in one run.

    python -m benchmarks [--quick] [--reps N] [--only KEY,...] [--profile N] ...

Sets up the tests' servers (real OpenSSH sshd, pyftpdlib) and the data in a temp folder, runs
every workload alternating reportsync and the tool(s) (A B A B ...), prints a table of medians and
ratios and writes benchmarks/results/latest.json plus a timestamped copy. Ratios are throughput
ratios: tool time / reportsync time, so ≥ 1.0 means reportsync is as fast or faster.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks import profiling
from benchmarks.fixtures import MIB, Sizes, Workspace, ensure_tools
from benchmarks.measure import BenchError, call_timed, run_timed, run_with_peak_rss
from benchmarks.workloads import Attempt, Side, Suite, Target, Workload

RESULTS = Path(__file__).resolve().parent / "results"
ALL_KEYS = ("sftp_big", "sftp_small", "ftp_big", "ftp_small", "decrypt_big", "decrypt_small",
            "backfill", "noop", "rss", "rss_ref", "startup")
ATTEMPT_CAP = 1800.0  # no single run may take longer than this


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class SideResult:
    name: str
    method: str
    samples: list[float] = field(default_factory=list)  # seconds (or MiB for rss)
    extra: list[dict[str, float]] = field(default_factory=list)
    skipped: str = ""
    error: str = ""

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None


@dataclass
class Row:
    """One line of the table: reportsync against one tool (or a goal)."""

    workload: Workload
    reportsync: SideResult
    tool: SideResult | None
    target: Target | None
    ratio: float | None = None
    met: bool | None = None
    check: str = ""


class Deadline:
    def __init__(self, minutes: float) -> None:
        self.end = time.monotonic() + minutes * 60

    def left(self) -> float:
        return self.end - time.monotonic()


def _attempt(attempt: Attempt, deadline: Deadline) -> tuple[float, dict[str, float]]:
    """Run one attempt; (seconds or MiB, extra figures). Verifies, always cleans up."""
    timeout = min(ATTEMPT_CAP, deadline.left())
    if timeout <= 5:
        raise BenchError("the run's time limit was reached")
    try:
        if attempt.rss:
            assert attempt.argv is not None
            sample = run_with_peak_rss(attempt.argv, timeout=timeout)
            attempt.verify(sample.stdout, None)
            extra = {"seconds": sample.seconds,
                     "process_hwm_mib": sample.process_hwm_kib / 1024,
                     "gpg_hwm_mib": sample.children_hwm_kib / 1024}
            return sample.process_hwm_kib / 1024, extra
        if attempt.call is not None:
            seconds, value = call_timed(attempt.call)
            attempt.verify("", value)
            return seconds, {}
        assert attempt.argv is not None
        total = 0.0
        output = ""
        for _ in range(attempt.inner):
            done = run_timed(attempt.argv, timeout=timeout, stdin=attempt.stdin)
            total += done.seconds
            output = done.stdout
        attempt.verify(output, None)
        return total / attempt.inner, {}
    finally:
        attempt.cleanup()


def run_workload(workload: Workload, reps: int, deadline: Deadline) -> list[Row]:
    sides: list[tuple[Side, SideResult]] = [
        (workload.reportsync, SideResult(workload.reportsync.name, workload.reportsync.method))]
    for tool, _target in workload.tools:
        sides.append((tool, SideResult(tool.name, tool.method, skipped=tool.skipped)))
    for rep in range(reps):
        for side, result in sides:
            if result.skipped or result.error:
                continue
            try:
                value, extra = _attempt(side.prepare(rep), deadline)
            except (BenchError, OSError, subprocess.SubprocessError) as exc:
                result.error = f"repetition {rep + 1}: {exc}"
                log(f"  {workload.key} / {side.name}: FAILED: {exc}")
                continue
            except Exception as exc:  # reportsync raised in-process: report, do not hide
                result.error = f"repetition {rep + 1}: {type(exc).__name__}: {exc}"
                log(f"  {workload.key} / {side.name}: FAILED: {result.error}")
                continue
            result.samples.append(value)
            if extra:
                result.extra.append(extra)
            log(f"  {workload.key} / {side.name} #{rep + 1}: {_fmt_sample(workload, value)}")
    rs = sides[0][1]
    check = workload.check() if workload.check is not None else None
    rows: list[Row] = []
    if not workload.tools:
        rows.append(_row(workload, rs, None, workload.target_without_tool, check))
    for (_tool, target), (_side, result) in zip(workload.tools, sides[1:], strict=True):
        rows.append(_row(workload, rs, result, target, check))
    return rows


def _row(workload: Workload, rs: SideResult, tool: SideResult | None, target: Target | None,
         check: tuple[bool, str] | None) -> Row:
    row = Row(workload, rs, tool, target)
    if workload.metric == "rss":
        if rs.median is not None:
            row.ratio = workload.goal_mib / rs.median
    elif tool is not None and rs.median and tool.median:
        row.ratio = tool.median / rs.median
    if target is not None and row.ratio is not None:
        met = target.min_ratio is None or row.ratio >= target.min_ratio
        if target.max_seconds is not None and rs.median is not None:
            met = met and rs.median < target.max_seconds
        row.met = met
    if check is not None:
        row.check = check[1]
        if target is not None:
            row.met = check[0] and (row.met if target.min_ratio is not None else True)
    return row


def _fmt_sample(workload: Workload, value: float) -> str:
    if workload.metric == "rss":
        return f"{value:.1f} MiB"
    if workload.metric == "time":
        return f"{value:.3f} s"
    rate = workload.amount / value / (1e6 if workload.unit == "MB/s" else 1)
    return f"{value:.2f} s = {rate:.0f} {workload.unit}"


def _fmt_median(workload: Workload, side: SideResult | None) -> str:
    if side is None:
        return "-"
    if side.skipped:
        return f"SKIPPED ({side.skipped})"
    if side.median is None:
        return f"FAILED ({side.error})" if side.error else "-"
    text = _fmt_sample(workload, side.median)
    if workload.metric == "throughput":
        text = text.split(" = ")[1] + f" ({side.median:.2f} s)"
    if side.error:
        text += f" [then failed: {side.error}]"
    return text


def print_table(rows: list[Row]) -> list[str]:
    header = ["workload", "reportsync (how)", "reportsync median", "tool", "tool median",
              "ratio", "target", "met"]
    body: list[list[str]] = []
    for row in rows:
        w = row.workload
        tool_name = row.tool.name if row.tool is not None else (
            f"goal {w.goal_mib:.0f} MiB" if w.metric == "rss" else "-")
        ratio = f"{row.ratio:.2f}" if row.ratio is not None else "-"
        met = "-" if row.met is None else ("yes" if row.met else "NO")
        target = row.target.text if row.target is not None else "(info)"
        if row.check:
            target += f"; {row.check}"
        body.append([w.title, row.reportsync.method, _fmt_median(w, row.reportsync), tool_name,
                     _fmt_median(w, row.tool) if row.tool is not None else "-", ratio, target, met])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    print("\n".join(lines), flush=True)
    return lines


# --- the machine -----------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def source_state() -> dict[str, str]:
    """Which reportsync was measured: the checked-out commit (read from .git, without running
    git) and a hash of the package's source, compared at the end to catch a change mid-run."""
    root = RESULTS.parent.parent
    digest = hashlib.sha256()
    for path in sorted((root / "reportsync").rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    commit = "unknown"
    try:
        head = (root / ".git" / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = head[5:]
            ref_file = root / ".git" / ref
            if ref_file.exists():
                commit = ref_file.read_text().strip()
            else:
                for line in (root / ".git" / "packed-refs").read_text().splitlines():
                    if line.endswith(" " + ref):
                        commit = line.split()[0]
        else:
            commit = head
    except OSError:
        pass
    return {"commit": commit, "source_sha256": digest.hexdigest()[:16]}


def machine_info(tools: dict[str, Any]) -> dict[str, Any]:
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) // 1024} MiB"
    except OSError:
        pass
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "paramiko": _version("paramiko"),
        "cryptography": _version("cryptography"),
        "python-gnupg": _version("python-gnupg"),
        "pyftpdlib": _version("pyftpdlib"),
        "tools": {name: {"path": tool.path, "version": tool.version, "note": tool.note}
                  for name, tool in tools.items()},
        "loadavg_start": os.getloadavg(),
        "reportsync": source_state(),
    }


# --- main ------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="2 repetitions and smaller data (64 MiB, 500 small files, ...)")
    parser.add_argument("--reps", type=int, help="repetitions per side (default 5; --quick 2)")
    parser.add_argument("--only", help=f"comma-separated workloads of: {', '.join(ALL_KEYS)}")
    parser.add_argument("--noop-files", type=int, help="files of the no-op fetch (default 50000)")
    parser.add_argument("--small-files", type=int, help="files of the many-files workloads "
                        "(default 2000)")
    parser.add_argument("--rsa-bits", type=int, default=4096, choices=(2048, 3072, 4096),
                        help="size of the PGP key the reports are encrypted to (default 4096)")
    parser.add_argument("--jobs", type=int, default=1, help="--jobs for the CLI fetches (default 1)")
    parser.add_argument("--time-limit", type=float, help="minutes for the whole run; what is left "
                        "then is reported as not run (default 120; --quick 30)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="afterwards, run py-spy on reportsync's side of the N worst ratios")
    parser.add_argument("--no-install", action="store_true",
                        help="do not apt-get missing tools; report them as skipped")
    args = parser.parse_args(argv)
    if args.only:
        unknown = [key for key in args.only.split(",") if key not in ALL_KEYS]
        if unknown:
            parser.error(f"unknown workloads: {', '.join(unknown)}")
    return args


def _sizes(args: argparse.Namespace) -> Sizes:
    quick = args.quick
    sizes = Sizes(big=(64 if quick else 256) * MIB, small_count=500 if quick else 2000,
                  small_size=20 * 1024, rss_big=(256 if quick else 1024) * MIB,
                  noop_files=5000 if quick else 50000, noop_real=100)
    if args.noop_files is not None:
        sizes.noop_files = max(args.noop_files, 100)
    if args.small_files is not None:
        sizes.small_count = max(args.small_files, 1)
    return sizes


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    reps = args.reps or (2 if args.quick else 5)
    sizes = _sizes(args)
    keys = args.only.split(",") if args.only else list(ALL_KEYS)
    deadline = Deadline(args.time_limit or (30 if args.quick else 120))
    signal.signal(signal.SIGTERM, _terminate)

    tools = ensure_tools(["sftp", "lftp", "curl", "gpg", "gpgconf"], install=not args.no_install,
                         log=log)
    for tool in tools.values():
        if not tool.available:
            log(f"{tool.name}: SKIPPED: {tool.note}")
    meta = machine_info(tools)
    meta.update(mode="quick" if args.quick else "full", reps=reps, rsa_bits=args.rsa_bits,
                fetch_jobs=args.jobs, sizes=sizes.__dict__, workloads=keys)
    log(f"reportsync {meta['reportsync']['commit'][:12]} (source {meta['reportsync']['source_sha256']})")
    log(f"{meta['nproc']} x {meta['cpu_model']}, Python {meta['python']}, paramiko "
        f"{meta['paramiko']}, {tools['gpg'].version}; {reps} repetitions")

    ws = Workspace.create(log)
    rows: list[Row] = []
    profiles: dict[str, list[str]] = {}
    suite: Suite | None = None
    try:
        log(f"workspace {ws.root}")
        ws.start_sshd()
        ws.start_ftpd()
        log(f"sshd on 127.0.0.1:{ws.sshd.port if ws.sshd else '?'}, FTP on "
            f"127.0.0.1:{ws.ftp_source.get('port')}; PGP key RSA {args.rsa_bits}")
        ws.make_identity(args.rsa_bits)
        suite = Suite(ws, sizes, tools, jobs=args.jobs, log=log)
        suite.build_data()
        factories = {
            "sftp_big": suite.sftp_big, "sftp_small": suite.sftp_small, "ftp_big": suite.ftp_big,
            "ftp_small": suite.ftp_small, "decrypt_big": suite.decrypt_big,
            "decrypt_small": lambda: suite.decrypt_small(args.rsa_bits) if suite else None,
            "backfill": suite.backfill, "noop": suite.noop,
            "rss": lambda: suite.rss("rss", "rss", "report.bin", sizes.rss_big) if suite else None,
            "rss_ref": lambda: suite.rss("rss_ref", "big", "big.bin", sizes.big) if suite else None,
            "startup": suite.startup,
        }
        workloads: list[Workload] = []
        for key in keys:
            made = factories[key]()
            assert isinstance(made, Workload)
            workloads.append(made)
        for workload in workloads:
            log(f"{workload.key}: {workload.title}")
            rows.extend(run_workload(workload, reps, deadline))
        meta["loadavg_end"] = os.getloadavg()
        meta["reportsync_at_end"] = source_state()
        if meta["reportsync_at_end"] != meta["reportsync"]:
            log("WARNING: reportsync's source changed during the run: the figures mix versions")
        print()
        table = print_table(rows)
        if args.profile:
            profiles = profile_worst(rows, args.profile, deadline)
        write_results(meta, rows, table, profiles, partial=bool(args.only))
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        return 130
    finally:
        ws.close()
        log("servers stopped, gpg-agent killed, workspace removed")
    return 0


def profile_worst(rows: list[Row], count: int, deadline: Deadline) -> dict[str, list[str]]:
    """py-spy over reportsync's side of the ``count`` workloads with the worst ratios (among the
    rows with a ratio target: not RSS, not start-up, whose ratio is against a floor)."""
    candidates = [row for row in rows if row.ratio is not None and row.target is not None
                  and row.target.min_ratio is not None and row.workload.metric != "rss"]
    candidates.sort(key=lambda row: row.ratio or 0.0)
    chosen: list[Workload] = []
    for row in candidates:
        if row.workload not in chosen:
            chosen.append(row.workload)
    profiles: dict[str, list[str]] = {}
    RESULTS.mkdir(parents=True, exist_ok=True)
    for workload in chosen[:count]:
        attempt = workload.reportsync.prepare(99)
        argv = attempt.profile_argv or attempt.argv
        if argv is None:
            attempt.cleanup()
            continue
        log(f"profiling {workload.key}: {' '.join(argv[:6])} ...")
        try:
            lines = profiling.record(argv, RESULTS / f"profile-{workload.key}.txt",
                                     timeout=min(ATTEMPT_CAP, max(deadline.left(), 60)))
        finally:
            attempt.cleanup()
        profiles[workload.key] = lines
        print(f"\nprofile of reportsync's side of {workload.key} ({workload.title}):")
        print("\n".join(lines), flush=True)
    return profiles


def _side_json(side: SideResult | None) -> dict[str, Any] | None:
    if side is None:
        return None
    return {"name": side.name, "method": side.method, "samples": side.samples,
            "median": side.median, "extra": side.extra, "skipped": side.skipped,
            "error": side.error}


def write_results(meta: dict[str, Any], rows: list[Row], table: list[str],
                  profiles: dict[str, list[str]], *, partial: bool) -> None:
    document = {
        "meta": meta,
        "rows": [{
            "key": row.workload.key, "title": row.workload.title, "metric": row.workload.metric,
            "unit": row.workload.unit, "amount": row.workload.amount,
            "reportsync": _side_json(row.reportsync), "tool": _side_json(row.tool),
            "ratio": row.ratio, "target": row.target.text if row.target else None,
            "target_min_ratio": row.target.min_ratio if row.target else None,
            "met": row.met, "check": row.check, "notes": row.workload.notes,
        } for row in rows],
        "table_markdown": table,
        "profiles": profiles,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(document, indent=2, default=str)
    stamped = RESULTS / f"{stamp}-{meta['mode']}{'-partial' if partial else ''}.json"
    stamped.write_text(text)
    written = [stamped]
    if not partial:
        (RESULTS / "latest.json").write_text(text)
        written.append(RESULTS / "latest.json")
    log("results: " + ", ".join(str(path) for path in written))
