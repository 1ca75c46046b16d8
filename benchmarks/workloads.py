"""The workloads of issue 8: data set-up, reportsync's side and the standard tool's side of each.

A workload has one reportsync side and zero or more standard-tool sides; the runner alternates
them (A B A B ...; A B C A B C ... with two tools) and compares medians. Each side hands out an
``Attempt`` per repetition: what to run (a command, or an in-process call), how to check the
result was right (untimed) and what to remove afterwards.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import probe
from benchmarks.fixtures import (
    MIB,
    Sizes,
    Tool,
    Workspace,
    age,
    count_files,
    link_tree,
    report_text,
    write_random,
)
from benchmarks.measure import BenchError, run_timed
from reportsync.ledger import Ledger

PY = sys.executable
SOURCE = "bench"
NOOP_REAL_PATTERN = "n0000[0-9][0-9].xml"  # the first 100 no-op files: fetched for real
NOOP_REAL_COUNT = 100


@dataclass
class Attempt:
    """One timed run of one side."""

    argv: list[str] | None = None  # a command to time ...
    call: Callable[[], object] | None = None  # ... or an in-process call
    stdin: str | None = None
    inner: int = 1  # run the command this many times, report the mean (start-up workloads)
    rss: bool = False  # measure peak RSS instead of (as well as) time
    verify: Callable[[str, object], None] = lambda output, value: None  # untimed check
    cleanup: Callable[[], None] = lambda: None
    profile_argv: list[str] | None = None  # the same work as a standalone command (profiler)


@dataclass
class Side:
    name: str  # "reportsync", "OpenSSH sftp", ...
    method: str  # how it is driven: "transport API (in-process)", "CLI", "command line"
    prepare: Callable[[int], Attempt]
    skipped: str = ""  # why this side cannot run (a tool missing): reported, never dropped


@dataclass
class Target:
    text: str  # as the issue words it
    min_ratio: float | None = None  # ratio (higher = reportsync better) needed to meet it
    max_seconds: float | None = None  # an absolute bound on reportsync's median as well
    note: str = ""


@dataclass
class Workload:
    key: str
    title: str
    metric: str  # "throughput" (amount/s), "time" (seconds) or "rss" (MiB)
    unit: str  # "MB/s", "files/s", "s", "MiB"
    amount: float  # bytes (1e6 per MB) or files for throughput; ignored otherwise
    reportsync: Side
    tools: list[tuple[Side, Target | None]]
    target_without_tool: Target | None = None  # rss: a goal, no tool
    goal_mib: float = 0.0
    notes: list[str] = field(default_factory=list)
    check: Callable[[], tuple[bool, str]] | None = None  # an extra yes/no check (imports)


# --- helpers -------------------------------------------------------------------------------------


def _expect_count(folder: Path, number: int, suffix: str = "") -> None:
    found, _ = count_files(folder, suffix)
    if found != number:
        raise BenchError(f"expected {number} files in {folder}, found {found}")


def _expect_size(path: Path, size: int) -> None:
    actual = path.stat().st_size if path.exists() else -1
    if actual != size:
        raise BenchError(f"{path.name}: expected {size} bytes, found {actual}")


_SUMMARY = re.compile(r"^bench: (?P<archived>\d+) archived, .*?(?P<skipped>\d+) already archived",
                      re.MULTILINE)


def _expect_fetch(output: str, archived: int, skipped: int) -> None:
    match = _SUMMARY.search(output)
    if match is None:
        raise BenchError(f"no fetch summary in the output: {output[-300:]!r}")
    if (int(match["archived"]), int(match["skipped"])) != (archived, skipped):
        raise BenchError(f"fetch did {match['archived']} archived / {match['skipped']} skipped, "
                         f"expected {archived} / {skipped}: {match.group(0)!r}")
    if "failed" in match.group(0):
        raise BenchError(f"fetch reported failures: {match.group(0)!r}")


def _rmtree(path: Path) -> Callable[[], None]:
    return lambda: shutil.rmtree(path, ignore_errors=True)


def _api_attempt(task: str, kwargs: dict[str, Any], verify: Callable[[str, object], None],
                 cleanup: Callable[[], None]) -> Attempt:
    return Attempt(call=lambda: probe.run_task(task, kwargs), verify=verify, cleanup=cleanup,
                   profile_argv=probe.probe_argv(task, kwargs))


# --- the suite -----------------------------------------------------------------------------------


class Suite:
    """Builds the data once, then hands out the workloads."""

    def __init__(self, ws: Workspace, sizes: Sizes, tools: dict[str, Tool], *, jobs: int,
                 log: Callable[[str], None]) -> None:
        self.ws = ws
        self.sizes = sizes
        self.tools = tools
        self.jobs = jobs
        self.log = log
        self.big_plain = sizes.big
        self.big_cipher = 0
        self.small_bytes = 0
        self.rss_cipher = 0

    # -- data --

    def build_data(self) -> None:
        ws, sizes = self.ws, self.sizes
        root = ws.sftp_root
        started = time.monotonic()
        self.log(f"data: one {sizes.big // MIB} MiB report, {sizes.small_count} x "
                 f"{sizes.small_size // 1024} KiB reports, one {sizes.rss_big // MIB} MiB report, "
                 f"{sizes.noop_files} tiny files")
        big = root / "big" / "big.bin"
        write_random(big, sizes.big)
        rss = root / "rss" / "report.bin"
        write_random(rss, sizes.rss_big)
        small_dir = root / "small"
        small_dir.mkdir()
        rng = random.Random(8)
        plain = []
        for index in range(sizes.small_count):
            path = small_dir / f"r{index:05d}.xml"
            path.write_bytes(report_text(index, sizes.small_size, rng))
            plain.append(path)
        ws.encrypt_files([big, rss, *plain])
        for path in [big, rss, *plain]:
            path.unlink()
        for path in [*small_dir.iterdir(), root / "big" / "big.bin.gpg",
                     root / "rss" / "report.bin.gpg"]:
            age(path)
        self.big_cipher = (root / "big" / "big.bin.gpg").stat().st_size
        self.rss_cipher = (root / "rss" / "report.bin.gpg").stat().st_size
        self.small_bytes = count_files(small_dir)[1]

        noop = root / "noop"
        noop.mkdir()
        stamp = time.time() - 86400
        for index in range(sizes.noop_files):
            path = noop / f"n{index:06d}.xml"
            path.write_bytes(b"<r n='%d'/>\n" % index)
            os.utime(path, (stamp, stamp))

        assert ws.ftp_home is not None
        link_tree(root / "big", ws.ftp_home / "big")
        link_tree(small_dir, ws.ftp_home / "small")
        link_tree(root / "big", ws.root / "dec" / "big")
        link_tree(small_dir, ws.root / "dec" / "small")
        self.log(f"data ready in {time.monotonic() - started:.0f} s")

    # -- common sides --

    def _tool_side(self, tool: str, name: str, prepare: Callable[[int], Attempt]) -> Side:
        found = self.tools.get(tool)
        skipped = "" if found is not None and found.available else \
            f"{tool}: {found.note if found else 'not checked'}"
        return Side(name=name, method="command line", prepare=prepare, skipped=skipped)

    def _ssh_options(self) -> list[str]:
        assert self.ws.sshd is not None
        source = self.ws.sshd.source
        return ["-F", "/dev/null", "-i", str(source["key_file"]), "-o",
                f"UserKnownHostsFile={source['known_hosts']}", "-o", "BatchMode=yes",
                "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes"]

    def _sftp_base(self) -> list[str]:
        assert self.ws.sshd is not None
        return ["sftp", "-q", "-P", str(self.ws.sshd.port), *self._ssh_options()]

    def _user_at(self) -> str:
        assert self.ws.sshd is not None
        return f"{self.ws.sshd.source['username']}@127.0.0.1"

    def _lftp_sftp_open(self) -> str:
        assert self.ws.sshd is not None
        program = "ssh -a -x " + " ".join(self._ssh_options())
        return (f'set sftp:connect-program "{program}"; set net:max-retries 1; '
                f"set net:timeout 60; open -u {self.ws.sshd.source['username']}, "
                f"-p {self.ws.sshd.port} sftp://127.0.0.1")

    def _lftp_ftp_open(self) -> str:
        return ("set ftp:ssl-allow no; set ftp:passive-mode on; set net:max-retries 1; "
                f"set net:timeout 60; open -u {self.ws.ftp_source['username']},{self.ws.ftp_password} "
                f"-p {self.ws.ftp_source['port']} ftp://127.0.0.1")

    def _cli_fetch(self, config: Path, *extra: str) -> list[str]:
        return [PY, "-m", "reportsync", "--config", str(config), "fetch",
                *(["--jobs", str(self.jobs)] if self.jobs != 1 else []), *extra]

    # -- transfer-only --

    def sftp_big(self) -> Workload:
        size = self.big_cipher

        def rs(rep: int) -> Attempt:
            out = self.ws.fresh_dir(f"sftp-big-rs-{rep}")
            return _api_attempt("get_one", {"table": self.ws.sftp_table("big"),
                                            "name": "big.bin.gpg", "out": str(out / "big.bin.gpg")},
                                lambda _o, _v: _expect_size(out / "big.bin.gpg", size), _rmtree(out))

        def tool(rep: int) -> Attempt:
            out = self.ws.fresh_dir(f"sftp-big-tool-{rep}")
            argv = [*self._sftp_base(), f"{self._user_at()}:big/big.bin.gpg", str(out / "big.bin.gpg")]
            return Attempt(argv=argv, verify=lambda _o, _v: _expect_size(out / "big.bin.gpg", size),
                           cleanup=_rmtree(out))

        return Workload(
            key="sftp_big", title=f"SFTP, one {self.sizes.big // MIB} MiB file", metric="throughput",
            unit="MB/s", amount=size,
            reportsync=Side("reportsync", "transport API: connect, download, close", rs),
            tools=[(self._tool_side("sftp", "OpenSSH sftp (default cipher)", tool),
                    Target("≥ 0.6x OpenSSH sftp (then ≥ 1.0x)", 0.6))])

    def sftp_small(self) -> Workload:
        count = self.sizes.small_count

        def rs(rep: int) -> Attempt:
            out = self.ws.fresh_dir(f"sftp-small-rs-{rep}")
            return _api_attempt("get_all", {"table": self.ws.sftp_table("small"), "out_dir": str(out)},
                                lambda _o, _v: _expect_count(out, count), _rmtree(out))

        def sftp(rep: int) -> Attempt:
            out = self.ws.fresh_dir(f"sftp-small-sftp-{rep}")
            return Attempt(argv=[*self._sftp_base(), "-b", "-", self._user_at()],
                           stdin=f"get -r small {out / 'small'}\n",
                           verify=lambda _o, _v: _expect_count(out / "small", count),
                           cleanup=_rmtree(out))

        def lftp(rep: int) -> Attempt:
            out = self.ws.fresh_dir(f"sftp-small-lftp-{rep}")
            return Attempt(argv=["lftp", "-c", f"{self._lftp_sftp_open()}; mirror small {out / 'small'}"],
                           verify=lambda _o, _v: _expect_count(out / "small", count),
                           cleanup=_rmtree(out))

        return Workload(
            key="sftp_small", title=f"SFTP, {count} x {self.sizes.small_size // 1024} KiB files",
            metric="throughput", unit="files/s", amount=count,
            reportsync=Side("reportsync", "transport API: connect, list, download one by one", rs),
            tools=[(self._tool_side("sftp", "OpenSSH sftp get -r", sftp),
                    Target("≥ 0.6x sftp get -r (then ≥ 1.0x)", 0.6)),
                   (self._tool_side("lftp", "lftp mirror (sftp)", lftp), None)])

    def ftp_big(self) -> Workload:
        size = self.big_cipher

        def rs(rep: int) -> Attempt:
            out = self.ws.fresh_dir(f"ftp-big-rs-{rep}")
            return _api_attempt("get_one", {"table": self.ws.ftp_table("big"), "name": "big.bin.gpg",
                                            "out": str(out / "big.bin.gpg")},
                                lambda _o, _v: _expect_size(out / "big.bin.gpg", size), _rmtree(out))

        def curl(rep: int) -> Attempt:
            out = self.ws.fresh_dir(f"ftp-big-curl-{rep}")
            source = self.ws.ftp_source
            argv = ["curl", "-sS", "--fail", "-u", f"{source['username']}:{self.ws.ftp_password}",
                    "-o", str(out / "big.bin.gpg"),
                    f"ftp://127.0.0.1:{source['port']}/big/big.bin.gpg"]
            return Attempt(argv=argv, verify=lambda _o, _v: _expect_size(out / "big.bin.gpg", size),
                           cleanup=_rmtree(out))

        def lftp(rep: int) -> Attempt:
            out = self.ws.fresh_dir(f"ftp-big-lftp-{rep}")
            argv = ["lftp", "-c", f"{self._lftp_ftp_open()}; get big/big.bin.gpg -o {out / 'big.bin.gpg'}"]
            return Attempt(argv=argv, verify=lambda _o, _v: _expect_size(out / "big.bin.gpg", size),
                           cleanup=_rmtree(out))

        return Workload(
            key="ftp_big", title=f"FTP passive, one {self.sizes.big // MIB} MiB file",
            metric="throughput", unit="MB/s", amount=size,
            reportsync=Side("reportsync", "transport API: connect, download, close", rs),
            tools=[(self._tool_side("curl", "curl", curl), Target("≥ 1.0x curl", 1.0)),
                   (self._tool_side("lftp", "lftp get", lftp), None)])

    def ftp_small(self) -> Workload:
        count = self.sizes.small_count

        def rs(rep: int) -> Attempt:
            out = self.ws.fresh_dir(f"ftp-small-rs-{rep}")
            return _api_attempt("get_all", {"table": self.ws.ftp_table("small"), "out_dir": str(out)},
                                lambda _o, _v: _expect_count(out, count), _rmtree(out))

        def lftp(rep: int) -> Attempt:
            out = self.ws.fresh_dir(f"ftp-small-lftp-{rep}")
            argv = ["lftp", "-c", f"{self._lftp_ftp_open()}; mirror -P4 small {out / 'small'}"]
            return Attempt(argv=argv, verify=lambda _o, _v: _expect_count(out / "small", count),
                           cleanup=_rmtree(out))

        return Workload(
            key="ftp_small", title=f"FTP passive, {count} x {self.sizes.small_size // 1024} KiB files",
            metric="throughput", unit="files/s", amount=count,
            reportsync=Side("reportsync", "transport API: connect, list, download one by one", rs),
            tools=[(self._tool_side("lftp", "lftp mirror -P4", lftp),
                    Target("≥ 1.0x lftp mirror -P4", 1.0))],
            notes=["pyftpdlib (the tests' FTP server) is single-threaded Python: on 2 cores it is "
                   "often the bottleneck for both sides"])

    # -- decrypt-only --

    def decrypt_big(self) -> Workload:
        size = self.big_plain
        home = self.ws.root / "gpg"
        encrypted = self.ws.root / "dec" / "big" / "big.bin.gpg"

        def rs(rep: int) -> Attempt:
            out = self.ws.fresh_dir(f"dec-big-rs-{rep}")
            return _api_attempt("decrypt_one", {"home": str(home), "encrypted": str(encrypted),
                                                "out": str(out / "big.bin")},
                                lambda _o, _v: _expect_size(out / "big.bin", size), _rmtree(out))

        def gpg(rep: int) -> Attempt:
            out = self.ws.fresh_dir(f"dec-big-gpg-{rep}")
            return Attempt(argv=self.ws.gpg_argv("--decrypt", "-o", str(out / "big.bin"), str(encrypted)),
                           verify=lambda _o, _v: _expect_size(out / "big.bin", size),
                           cleanup=_rmtree(out))

        return Workload(
            key="decrypt_big", title=f"decrypt one {self.sizes.big // MIB} MiB file",
            metric="throughput", unit="MB/s", amount=size,
            reportsync=Side("reportsync", "pgp API: Gpg.decrypt to a file", rs),
            tools=[(self._tool_side("gpg", "gpg --decrypt -o", gpg), Target("≥ 0.95x gpg", 0.95))])

    def decrypt_small(self, bits: int) -> Workload:
        count = self.sizes.small_count
        home = self.ws.root / "gpg"
        folder = self.ws.root / "dec" / "small"

        def rs(rep: int) -> Attempt:
            out = self.ws.fresh_dir(f"dec-small-rs-{rep}")
            return _api_attempt("decrypt_all", {"home": str(home), "in_dir": str(folder),
                                                "out_dir": str(out)},
                                lambda _o, _v: _expect_count(out, count), _rmtree(out))

        def remove_plaintexts() -> None:
            for path in folder.glob("*.xml"):
                path.unlink()

        def gpg(rep: int) -> Attempt:
            remove_plaintexts()
            files = sorted(str(path) for path in folder.glob("*.gpg"))
            return Attempt(argv=self.ws.gpg_argv("--decrypt-files", *files),
                           verify=lambda _o, _v: _expect_count(folder, count, ".xml"),
                           cleanup=remove_plaintexts)

        return Workload(
            key="decrypt_small", title=f"decrypt {count} small files (RSA {bits})",
            metric="throughput", unit="files/s", amount=count,
            reportsync=Side("reportsync", "pgp API: Gpg.decrypt per file, in turn", rs),
            tools=[(self._tool_side("gpg", "gpg --decrypt-files", gpg),
                    Target("≥ 1.0x gpg --decrypt-files", 1.0))])

    # -- end to end (the CLI) --

    def backfill(self) -> Workload:
        count = self.sizes.small_count
        ws = self.ws
        snapshot = ws.root / "backfill-snapshot"

        def make_snapshot() -> None:
            """Once: `fetch --no-decrypt` of the 2,000 files; each decrypt-only run starts from a
            copy of its ledger and (hard links to) its downloads, at the same path."""
            run = ws.root / "runs" / "backfill-decrypt-only"
            shutil.rmtree(run, ignore_errors=True)
            run.mkdir(parents=True)
            config = ws.write_config(run / "config.toml", dict(ws.sftp_table("small")), run)
            done = run_timed(self._cli_fetch(config, "--no-decrypt"), timeout=3600)
            if f"{count} downloaded, not decrypted" not in done.stdout:
                raise BenchError(f"snapshot fetch --no-decrypt: {done.stdout[-300:]!r}")
            shutil.rmtree(snapshot, ignore_errors=True)
            run.rename(snapshot)

        def rs(rep: int) -> Attempt:
            run = ws.fresh_dir(f"backfill-{rep}")
            config = ws.write_config(run / "config.toml", dict(ws.sftp_table("small")), run)
            return Attempt(argv=self._cli_fetch(config),
                           verify=lambda output, _v: _expect_fetch(output, count, 0),
                           cleanup=_rmtree(run))

        def decrypt_only(rep: int) -> Attempt:
            if not snapshot.exists():
                make_snapshot()
            run = ws.root / "runs" / "backfill-decrypt-only"
            shutil.rmtree(run, ignore_errors=True)
            run.mkdir(parents=True)
            shutil.copy2(snapshot / "config.toml", run / "config.toml")
            shutil.copytree(snapshot / "state", run / "state")
            shutil.copytree(snapshot / "encrypted", run / "encrypted", copy_function=os.link)
            return Attempt(argv=self._cli_fetch(run / "config.toml"),
                           verify=lambda output, _v: _expect_fetch(output, count, 0),
                           cleanup=_rmtree(run))

        return Workload(
            key="backfill", title=f"backfill: download + decrypt {count} files over SFTP",
            metric="throughput", unit="files/s", amount=count,
            reportsync=Side("reportsync", "CLI fetch (empty state)", rs),
            tools=[(Side("reportsync decrypt-only", "CLI fetch, downloads already in place",
                         decrypt_only),
                    Target("≤ 1.1x the decrypt-only time", 1 / 1.1))],
            notes=["the 'tool' here is reportsync itself: the same fetch when the encrypted "
                   "copies are already downloaded (listing + decrypt + archive only)"])

    def noop(self) -> Workload:
        ws = self.ws
        count = self.sizes.noop_files
        run = ws.root / "runs" / "noop"
        config = run / "config.toml"

        def seed() -> None:
            """The ledger of 50,000 archived files, built cheaply (see docs/performance.md)."""
            started = time.monotonic()
            run.mkdir(parents=True, exist_ok=True)
            real = ws.write_config(run / "seed.toml", dict(ws.sftp_table("noop"),
                                                           include=[NOOP_REAL_PATTERN]), run)
            done = run_timed(self._cli_fetch(real), timeout=900)
            _expect_fetch(done.stdout, NOOP_REAL_COUNT, 0)
            ws.write_config(config, dict(ws.sftp_table("noop")), run)
            remote = ws.sftp_root / "noop"
            versions = []
            for entry in os.scandir(remote):
                info = entry.stat()
                versions.append((entry.name, info.st_size, int(info.st_mtime)))
            encrypted, statements = run / "encrypted", run / "statements"
            with Ledger.in_state_dir(run / "state") as ledger:
                ledger._db.execute("PRAGMA synchronous=OFF")  # seeding only; the timed runs use FULL
                run_id = ledger.start_run("fetch", os.getpid())
                ids = ledger.see_files(SOURCE, versions)
                records = ledger.file_records(SOURCE)
                added = 0
                for name, size, mtime in versions:
                    if records[(name, size, mtime)].archived:
                        continue
                    data = (remote / name).read_bytes()
                    digest = hashlib.sha256(data).hexdigest()
                    for folder in (encrypted, statements):
                        path = folder / name
                        path.write_bytes(data)
                        path.chmod(0o600)
                    os.utime(encrypted / name, (mtime, mtime))
                    file_id = ids[(name, size, mtime)]
                    ledger.record_download(file_id, run_id, encrypted / name, size, digest)
                    ledger.record_archived(file_id, run_id, statements / name, size, digest,
                                           decrypted=False, signer=None)
                    added += 1
                ledger.finish_run(run_id, 0, {"archived": added})
            check = run_timed(self._cli_fetch(config), timeout=900)
            _expect_fetch(check.stdout, 0, count)
            self.log(f"no-op ledger: {NOOP_REAL_COUNT} files by a real fetch, {added} added "
                     f"through the Ledger API, in {time.monotonic() - started:.0f} s")

        def rs(rep: int) -> Attempt:
            if not config.exists():
                seed()
            return Attempt(argv=self._cli_fetch(config),
                           verify=lambda output, _v: _expect_fetch(output, 0, count))

        def listing(rep: int) -> Attempt:
            argv = probe.probe_argv("list_only", {"table": ws.sftp_table("noop")})

            def verify(output: str, _v: object) -> None:
                if output.strip() != str(count):
                    raise BenchError(f"listing found {output.strip()!r} files, expected {count}")
            return Attempt(argv=argv, verify=verify)

        def sftp_ls(rep: int) -> Attempt:
            def verify(output: str, _v: object) -> None:
                lines = sum(1 for line in output.splitlines() if line.startswith("-"))
                if lines != count:
                    raise BenchError(f"sftp ls -l listed {lines} files, expected {count}")
            return Attempt(argv=[*self._sftp_base(), "-b", "-", self._user_at()],
                           stdin="ls -l noop\n", verify=verify)

        return Workload(
            key="noop", title=f"no-op fetch, {count} files already archived", metric="time",
            unit="s", amount=0, reportsync=Side("reportsync", "CLI fetch", rs),
            tools=[(Side("bare listing", "python: connect + Transport.list_files", listing),
                    Target("< 2 s and < 1.5x the bare listing", 1 / 1.5, max_seconds=2.0)),
                   (self._tool_side("sftp", "OpenSSH sftp ls -l", sftp_ls), None)],
            notes=[f"ledger built with one real fetch of {NOOP_REAL_COUNT} files plus the rest "
                   "recorded through reportsync's Ledger API (see docs/performance.md)"])

    def rss(self, key: str, remote_dir: str, name: str, plain: int) -> Workload:
        ws = self.ws

        def rs(rep: int) -> Attempt:
            run = ws.fresh_dir(f"{key}-{rep}")
            config = ws.write_config(run / "config.toml", dict(ws.sftp_table(remote_dir)), run)

            def verify(output: str, _v: object) -> None:
                _expect_fetch(output, 1, 0)
                _expect_size(run / "statements" / name, plain)
            return Attempt(argv=self._cli_fetch(config), rss=True, verify=verify,
                           cleanup=_rmtree(run))

        return Workload(
            key=key, title=f"peak RSS, fetch + decrypt of one {plain // MIB} MiB report",
            metric="rss", unit="MiB", amount=0, reportsync=Side("reportsync", "CLI fetch", rs),
            tools=[], target_without_tool=Target("< 100 MiB, flat in file size", 1.0),
            goal_mib=100.0)

    def startup(self) -> Workload:
        def rs(rep: int) -> Attempt:
            return Attempt(argv=[PY, "-m", "reportsync", "--help"], inner=5)

        def floor(rep: int) -> Attempt:
            return Attempt(argv=[PY, "-c", "import click"], inner=5)

        def check() -> tuple[bool, str]:
            done = subprocess.run([PY, "-X", "importtime", "-m", "reportsync", "--help"],
                                  capture_output=True, text=True, timeout=60, check=False)
            heavy = sorted({match for match in re.findall(r"\|\s+(paramiko|gnupg|rich)\s*$",
                                                          done.stderr, re.MULTILINE)})
            return (not heavy, "imported at --help: " + (", ".join(heavy) or "none of them"))

        return Workload(
            key="startup", title="reportsync --help start-up", metric="time", unit="s", amount=0,
            reportsync=Side("reportsync", "CLI --help (mean of 5 starts)", rs),
            tools=[(Side("python + click", "python -c 'import click' (mean of 5)", floor),
                    Target("paramiko, gnupg, rich not imported"))],
            check=check)
