"""The benchmark runner of issue 13: reportsync's CLI end to end next to the standard tools.

    python -m benchmarks [--only ROW,...] [--repeat N] [--smoke] [--profile N] ...

Sets up real servers on 127.0.0.1 (OpenSSH sshd, pyftpdlib, vsftpd), PGP keys and data in a temp
folder; runs every row's sides in turn (A B A B ...) for N repetitions; prints a markdown table of
medians and ratios; writes JSON to benchmarks/results/. Throughput ratios are tool time /
reportsync time (> 1: reportsync is faster); no-op rows give the time ratio reportsync time /
listing time and reportsync's seconds.
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import hashlib
import importlib.metadata
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks import fixtures, profiling
from benchmarks.fixtures import Sizes, Tool, Workspace, ensure_tools
from benchmarks.measure import REPO_ROOT, BenchError, run_measured
from benchmarks.workloads import ROW_KEYS, Compare, Row, Side, Suite, Target
from tests.servers.vsftpd import vsftpd_version

RESULTS = Path(__file__).resolve().parent / "results"
ATTEMPT_CAP = 1800.0  # no single command may take longer than this
DEFAULT_REPEAT = 5


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class SideResult:
    key: str
    label: str
    reportsync: bool
    seconds: list[float] = field(default_factory=list)
    maxrss_mib: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    skipped: str = ""
    error: str = ""

    @property
    def median_seconds(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None

    @property
    def median_rss(self) -> float | None:
        return statistics.median(self.maxrss_mib) if self.maxrss_mib else None


@dataclass
class Line:
    """One line of the table: a reportsync side against a tool side (or a goal)."""

    row: Row
    reportsync: SideResult
    tool: SideResult | None
    target: Target | None
    judged: bool
    ratio: float | None = None
    met: bool | None = None  # None: info, not judged, or no figures


class Deadline:
    def __init__(self, minutes: float) -> None:
        self.end = time.monotonic() + minutes * 60

    def left(self) -> float:
        return self.end - time.monotonic()


# --- running ---------------------------------------------------------------------------------------


def run_row(row: Row, reps: int, deadline: Deadline, *, judged: bool) -> list[Line]:
    results = {side.key: SideResult(side.key, side.label, side.reportsync, skipped=side.skipped)
               for side in row.sides}
    try:
        started = time.monotonic()
        if not all(side.skipped for side in row.sides):
            row.setup()
            log(f"  set-up done in {time.monotonic() - started:.1f} s")
    except (BenchError, OSError, subprocess.SubprocessError) as exc:
        log(f"  {row.key}: set-up FAILED: {exc}")
        for result in results.values():
            result.error = result.error or f"set-up: {exc}"
    for rep in range(reps):
        for side in row.sides:
            result = results[side.key]
            if result.skipped or result.error:
                continue
            try:
                sample = _attempt(side, rep, deadline)
            except (BenchError, OSError, subprocess.SubprocessError) as exc:
                result.error = f"repetition {rep + 1}: {exc}"
                log(f"  {row.key} / {side.key}: FAILED: {exc}")
                continue
            result.seconds.append(sample[0])
            result.maxrss_mib.append(sample[1])
            result.cpu_seconds.append(sample[2])
            log(f"  {row.key} / {side.key} #{rep + 1}: {_fmt_value(row, sample[0], sample[1])}")
    return [_line(row, compare, results, judged=judged) for compare in row.compares]


def _attempt(side: Side, rep: int, deadline: Deadline) -> tuple[float, float, float]:
    timeout = min(ATTEMPT_CAP, deadline.left())
    if timeout <= 5:
        raise BenchError("the run's time limit was reached")
    attempt = side.prepare(rep)
    try:
        sample = run_measured(attempt.argv, timeout=timeout, stdin=attempt.stdin)
        attempt.verify(sample)
        return sample.seconds, sample.maxrss_kib / 1024, sample.cpu_seconds
    finally:
        attempt.cleanup()


def _line(row: Row, compare: Compare, results: dict[str, SideResult], *, judged: bool) -> Line:
    rs = results[compare.reportsync]
    tool = results[compare.tool] if compare.tool is not None else None
    line = Line(row, rs, tool, compare.target, judged=judged)
    rs_s = rs.median_seconds
    tool_s = tool.median_seconds if tool is not None else None
    if row.kind == "throughput" and rs_s and tool_s:
        line.ratio = tool_s / rs_s
    elif row.kind in ("noop", "time") and rs_s and tool_s:
        line.ratio = rs_s / tool_s
    target = compare.target
    if target is None or not judged:
        return line
    if row.kind == "rss":
        # a memory bound holds for every run, not for the typical one: the worst repetition
        if rs.maxrss_mib and target.max_mib is not None:
            line.met = max(rs.maxrss_mib) < target.max_mib
    elif line.ratio is not None and rs_s is not None:
        met = True
        if target.min_ratio is not None:
            met = met and line.ratio >= target.min_ratio
        if target.max_time_ratio is not None:
            met = met and line.ratio <= target.max_time_ratio
        if target.max_seconds is not None:
            met = met and rs_s < target.max_seconds
        line.met = met
    return line


# --- the table -------------------------------------------------------------------------------------


def _fmt_value(row: Row, seconds: float, mib: float) -> str:
    if row.kind == "rss":
        return f"{mib:.1f} MiB peak ({seconds:.1f} s)"
    if row.kind == "throughput":
        rate = row.amount / seconds / (1e6 if row.unit == "MB/s" else 1)
        return f"{rate:.0f} {row.unit} ({seconds:.2f} s)"
    return f"{seconds:.3f} s"


def _fmt_median(row: Row, side: SideResult | None) -> str:
    if side is None:
        return "-"
    if side.skipped:
        return f"SKIPPED ({side.skipped})"
    seconds = side.median_seconds
    if seconds is None:
        return f"FAILED ({side.error})" if side.error else "-"
    text = _fmt_value(row, seconds, side.median_rss or 0.0)
    if row.kind == "rss" and len(side.maxrss_mib) > 1:
        worst = max(range(len(side.maxrss_mib)), key=side.maxrss_mib.__getitem__)
        text = (f"median {text}; worst {side.maxrss_mib[worst]:.1f} MiB "
                f"({side.seconds[worst]:.1f} s)")
    if side.error:
        text += f" [then FAILED: {side.error}]"
    return text


def _fmt_ratio(line: Line) -> str:
    if line.ratio is None:
        return "-"
    if line.row.kind == "throughput":
        return f"{line.ratio:.2f}"
    return f"time {line.ratio:.2f}x"


def _fmt_met(line: Line) -> str:
    if line.target is None:
        return "(info)"
    if not line.judged:
        return "not judged"
    if line.met is None:
        return "-"
    return "yes" if line.met else "NO"


def table(lines: list[Line]) -> list[str]:
    header = ["row", "workload", "reportsync", "median", "standard tool", "median",
              "ratio", "target", "met"]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for line in lines:
        row = line.row
        if line.tool is None:
            tool, tool_median = (f"goal: {line.target.text}" if line.target else "-"), "-"
        else:
            tool, tool_median = line.tool.label, _fmt_median(row, line.tool)
        cells = [f"`{row.key}`", row.title, line.reportsync.label,
                 _fmt_median(row, line.reportsync), tool, tool_median, _fmt_ratio(line),
                 line.target.text if line.target else "(info)", _fmt_met(line)]
        out.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return out


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


def uptime() -> str:
    """The ``uptime`` line (the machine's load), or the load averages where there is none."""
    try:
        done = subprocess.run(["uptime"], capture_output=True, text=True, timeout=10, check=False)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return "load average: " + ", ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def source_state() -> dict[str, str]:
    """Which reportsync was measured: the commit, whether reportsync/ differs from it, and a
    hash of the package's source (compared at the end to catch a change mid-run)."""
    digest = hashlib.sha256()
    for path in sorted((REPO_ROOT / "reportsync").rglob("*.py")):
        digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes())
    commit, dirty = "unknown", ""
    try:
        done = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=False)
        if done.returncode == 0:
            commit = done.stdout.strip()
        status = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--",
                                 "reportsync"], capture_output=True, text=True, timeout=10,
                                check=False)
        dirty = "yes" if status.stdout.strip() else "no"
    except (OSError, subprocess.SubprocessError):
        pass
    return {"commit": commit, "reportsync_uncommitted_changes": dirty or "unknown",
            "source_sha256": digest.hexdigest()[:16]}


def machine_info(tools: dict[str, Tool]) -> dict[str, Any]:
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) // 1024} MiB"
    except OSError:
        pass
    versions = {name: tool.version or f"missing: {tool.note}" for name, tool in tools.items()}
    versions["vsftpd"] = vsftpd_version() or "missing"
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
        "tools": versions,
        "uptime_start": uptime(),
        "reportsync": source_state(),
    }


def header(meta: dict[str, Any]) -> list[str]:
    rs, tools = meta["reportsync"], meta["tools"]
    dirty = " (with uncommitted changes to reportsync/)" if \
        rs["reportsync_uncommitted_changes"] == "yes" else ""
    return [
        f"reportsync benchmark: `{meta['command']}`, {meta['mode']} mode, median of "
        f"{meta['repeat']} interleaved repetition(s)",
        f"commit {rs['commit']}{dirty}, {meta['date_utc']}",
        f"machine: {meta['nproc']} CPUs ({meta['cpu_model']}), {meta['memory']}, Linux "
        f"{meta['kernel']}, Python {meta['python']}, paramiko {meta['paramiko']}, "
        f"pyftpdlib {meta['pyftpdlib']}",
        f"tools: {tools.get('sftp')}; {tools.get('gpg')}; {tools.get('lftp')}; "
        f"{tools.get('curl')}; {tools.get('vsftpd')}",
        f"load before: {meta['uptime_start']}",
        f"load after:  {meta.get('uptime_end', '?')}",
        "ratio: throughput rows = tool time / reportsync time (> 1: reportsync faster); "
        "no-op and start-up rows = reportsync time / tool time",
    ]


# --- main ------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", metavar="ROW[,ROW]",
                        help="rows to run (names or shell patterns such as 'backfill_*') of: "
                             + ", ".join(ROW_KEYS))
    parser.add_argument("--repeat", type=int, metavar="N",
                        help=f"repetitions per side (default {DEFAULT_REPEAT}; --smoke 1)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny data, one repetition, no target judged: checks that every "
                             "row still runs (CI)")
    parser.add_argument("--time-limit", type=float, metavar="MIN",
                        help="minutes for the whole run; what is left then is reported as "
                             "failed (default 120; --smoke 10)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS,
                        help=f"where the JSON goes (default {RESULTS})")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="afterwards, run py-spy on reportsync's side of the N worst ratios")
    parser.add_argument("--no-install", action="store_true",
                        help="do not apt-get missing tools; report them as skipped")
    parser.add_argument("--ssh-engine", choices=["auto", "openssh", "paramiko"],
                        help="ssh_engine of the SFTP sources (default: the config's, auto)")
    parser.add_argument("--table-from", type=Path, metavar="JSON",
                        help="run nothing: print the table of a saved results file, judged by "
                             "the current targets")
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    args.rows = select_rows(args.only, parser)
    return args


def select_rows(only: str | None, parser: argparse.ArgumentParser) -> list[str]:
    if not only:
        return list(ROW_KEYS)
    chosen: list[str] = []
    for pattern in (part.strip() for part in only.split(",") if part.strip()):
        matches = [key for key in ROW_KEYS if fnmatch.fnmatchcase(key, pattern)]
        if not matches:
            parser.error(f"no row matches {pattern!r}; rows: {', '.join(ROW_KEYS)}")
        chosen += [key for key in matches if key not in chosen]
    return [key for key in ROW_KEYS if key in chosen]


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    args = parse_args(arguments)
    if args.table_from is not None:
        document = json.loads(args.table_from.read_text(encoding="utf-8"))
        print("\n".join([*header(document["meta"]), "", *table(lines_from_results(document))]))
        return 0
    fixtures.SSH_ENGINE = args.ssh_engine
    reps = args.repeat or (1 if args.smoke else DEFAULT_REPEAT)
    sizes = Sizes.smoke() if args.smoke else Sizes.full()
    deadline = Deadline(args.time_limit or (10 if args.smoke else 120))
    signal.signal(signal.SIGTERM, _terminate)

    tools = ensure_tools(["sftp", "lftp", "curl", "gpg", "sync"], install=not args.no_install,
                         log=log)
    for tool in tools.values():
        if not tool.available:
            log(f"{tool.name}: SKIPPED: {tool.note}")
    meta = machine_info(tools)
    meta.update(command=shlex.join(["python", "-m", "benchmarks", *arguments]),
                mode="smoke" if args.smoke else "full", repeat=reps, sizes=sizes.__dict__,
                rows=args.rows)
    log(f"reportsync {meta['reportsync']['commit'][:12]}, {meta['nproc']} CPUs, "
        f"{reps} repetition(s), {len(args.rows)} row(s); load: {meta['uptime_start']}")

    ws = Workspace.create(log)
    lines: list[Line] = []
    profiles: dict[str, list[str]] = {}
    started = time.monotonic()
    try:
        log(f"workspace {ws.root}")
        ws.start_servers()
        for name, why in ws.unavailable.items():
            log(f"{name} server: SKIPPED: {why}")
        factories = Suite(ws, sizes, tools).rows()
        for key in args.rows:
            row = factories[key]()
            log(f"{row.key}: {row.title}")
            lines.extend(run_row(row, reps, deadline, judged=not args.smoke))
        meta["uptime_end"] = uptime()
        meta["seconds"] = round(time.monotonic() - started, 1)
        meta["reportsync_at_end"] = source_state()
        if meta["reportsync_at_end"]["source_sha256"] != meta["reportsync"]["source_sha256"]:
            log("WARNING: reportsync's source changed during the run: the figures mix versions")
        text = [*header(meta), "", *table(lines)]
        print("\n".join(text), flush=True)
        if args.profile:
            profiles = profile_worst(lines, args.profile, deadline, args.results_dir)
        write_results(args.results_dir, meta, lines, text, profiles,
                      partial=args.rows != list(ROW_KEYS) or (not args.smoke and reps < DEFAULT_REPEAT))
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        return 130
    finally:
        ws.close()
        log(f"servers stopped, gpg-agents killed, workspace removed "
            f"({time.monotonic() - started:.0f} s in all)")
    failed = [line for line in lines if line.reportsync.error or
              (line.tool is not None and line.tool.error)]
    if failed:
        log(f"{len(failed)} line(s) with a FAILED side: see the table")
        return 1
    return 0


def profile_worst(lines: list[Line], count: int, deadline: Deadline,
                  results_dir: Path) -> dict[str, list[str]]:
    """py-spy over reportsync's side of the ``count`` lines furthest below their target."""
    candidates = [line for line in lines if line.met is False and line.ratio is not None]
    def shortfall(line: Line) -> float:  # lower is worse
        ratio = line.ratio or 0.0
        return ratio if line.row.kind == "throughput" else -ratio
    candidates.sort(key=shortfall)
    profiles: dict[str, list[str]] = {}
    results_dir.mkdir(parents=True, exist_ok=True)
    seen: set[tuple[str, str]] = set()
    for line in candidates:
        if len(profiles) >= count:
            break
        side = line.row.side(line.reportsync.key)
        if (line.row.key, side.key) in seen:
            continue
        seen.add((line.row.key, side.key))
        name = f"{line.row.key}-{side.key}"
        log(f"profiling {name}")
        attempt = side.prepare(99)
        try:
            summary = profiling.record(attempt.argv, results_dir / f"profile-{name}.txt",
                                       timeout=min(ATTEMPT_CAP, max(deadline.left(), 60)))
        finally:
            attempt.cleanup()
        profiles[name] = summary
        print(f"\nprofile of {name} ({line.row.title}):\n" + "\n".join(summary), flush=True)
    return profiles


def lines_from_results(document: dict[str, Any]) -> list[Line]:
    """The lines of a saved run, judged again by the rows' current targets."""
    meta = document["meta"]
    sizes = Sizes.smoke() if meta["mode"] == "smoke" else Sizes.full()
    # the rows only for their targets: nothing is set up or started
    factories = Suite(Workspace(root=Path("/nonexistent"), log=log), sizes, {}).rows()
    rows: dict[str, Row] = {}
    lines = []
    for item in document["lines"]:
        if item["row"] not in rows:
            rows[item["row"]] = factories[item["row"]]()
        row = rows[item["row"]]
        row.title, row.amount = item["title"], item["amount"]
        sides = [_side_from_json(item["reportsync"]), _side_from_json(item["tool"])]
        results = {side.key: side for side in sides if side is not None}
        tool_key = sides[1].key if sides[1] is not None else None
        compare = next(compare for compare in row.compares
                       if (compare.reportsync, compare.tool) == (sides[0].key, tool_key)
                       ) if sides[0] is not None else None
        if compare is not None:
            lines.append(_line(row, compare, results, judged=meta["mode"] != "smoke"))
    return lines


def _side_from_json(data: dict[str, Any] | None) -> SideResult | None:
    if data is None:
        return None
    return SideResult(data["key"], data["label"], data["reportsync"], seconds=data["seconds"],
                      maxrss_mib=data["maxrss_mib"], cpu_seconds=data["cpu_seconds"],
                      skipped=data["skipped"], error=data["error"])


def _side_json(side: SideResult | None) -> dict[str, Any] | None:
    if side is None:
        return None
    return {"key": side.key, "label": side.label, "reportsync": side.reportsync,
            "seconds": side.seconds, "median_seconds": side.median_seconds,
            "maxrss_mib": side.maxrss_mib, "median_maxrss_mib": side.median_rss,
            "cpu_seconds": side.cpu_seconds, "skipped": side.skipped, "error": side.error}


def write_results(results_dir: Path, meta: dict[str, Any], lines: list[Line], text: list[str],
                  profiles: dict[str, list[str]], *, partial: bool) -> None:
    document = {
        "meta": meta,
        "lines": [{
            "row": line.row.key, "title": line.row.title, "kind": line.row.kind,
            "unit": line.row.unit, "amount": line.row.amount, "notes": line.row.notes,
            "reportsync": _side_json(line.reportsync), "tool": _side_json(line.tool),
            "ratio": line.ratio, "target": line.target.text if line.target else None,
            "judged": line.judged, "met": line.met,
        } for line in lines],
        "table_markdown": text,
        "profiles": profiles,
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    body = json.dumps(document, indent=2, default=str)
    stamped = results_dir / f"{stamp}-{meta['mode']}{'-partial' if partial else ''}.json"
    stamped.write_text(body)
    written = [stamped]
    if meta["mode"] == "full" and not partial:
        (results_dir / "latest.json").write_text(body)
        written.append(results_dir / "latest.json")
    log("results: " + ", ".join(str(path) for path in written))
