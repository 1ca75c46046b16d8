"""The rows of issue 13: reportsync's CLI end to end next to the standard tool, per workload.

A row has sides: one or more reportsync variants (``reportsync fetch`` as cron runs it, a
subprocess with its own config, state dir and empty folders per repetition; some rows also have
an "info" variant through reportsync's transport or pgp API) and the standard tool(s). The runner
runs them in turn, A B C A B C ..., and compares medians as each ``Compare`` says. Each side hands
out an ``Attempt`` per repetition: the command to time, a check of its result (after the clock
stopped) and what to remove afterwards.
"""

from __future__ import annotations

import functools
import re
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import probe
from benchmarks.fixtures import (
    MIB,
    SOURCE,
    Server,
    Sizes,
    Tool,
    Workspace,
    count_files,
    link_tree,
)
from benchmarks.measure import BenchError, Sample, run_untimed

PY = sys.executable
_SCRIPT = Path(sys.executable).parent / "reportsync"
# the console script cron runs, where it is installed next to this interpreter
REPORTSYNC = [str(_SCRIPT)] if _SCRIPT.exists() else [PY, "-m", "reportsync"]
JOBS = 4  # the parallel reportsync variant and lftp's mirror -P
ROW_KEYS = (
    "backfill_200_rsa2048", "backfill_200_rsa3072", "backfill_2000_rsa2048",
    "backfill_2000_rsa3072", "sftp_small_500", "sftp_small_2000", "sftp_big",
    "ftp_small_pyftpdlib", "ftp_small_vsftpd", "decrypt_big", "decrypt_small", "noop_sftp",
    "noop_vsftpd", "rss_1g", "startup",
)


@dataclass
class Attempt:
    """One timed run of one side."""

    argv: list[str]
    verify: Callable[[Sample], None] = lambda sample: None  # untimed check of the result
    cleanup: Callable[[], None] = lambda: None
    stdin: str | None = None


@dataclass
class Side:
    key: str  # unique in its row: "fetch", "fetch_jobs4", "api", "sftp", ...
    label: str  # how it is driven, as the table shows it
    reportsync: bool  # reportsync's side (else a standard tool's)
    prepare: Callable[[int], Attempt]
    skipped: str = ""  # why this side cannot run (a tool or server missing): shown, never dropped


@dataclass
class Target:
    """A row's goal, as the issue words it. Which bound applies depends on the row's kind."""

    text: str
    min_ratio: float | None = None  # throughput: tool time / reportsync time must reach this
    max_time_ratio: float | None = None  # no-op: reportsync time / listing time at most this
    max_seconds: float | None = None  # no-op: reportsync's median time below this
    max_mib: float | None = None  # peak RSS below this


@dataclass
class Compare:
    reportsync: str  # side key
    tool: str | None  # side key; None for a goal without a tool (peak RSS)
    target: Target | None  # None: an "info" line


@dataclass
class Row:
    key: str  # the stable name (--only); the full sizes are in it
    title: str  # with the sizes of this run
    kind: str  # "throughput" (amount per second), "noop" (seconds), "rss" (MiB), "time"
    unit: str  # "MB/s" or "files/s" for throughput
    amount: float  # bytes (1e6 per MB) or files, for throughput
    sides: list[Side]
    compares: list[Compare]
    setup: Callable[[], None] = lambda: None  # data, snapshots (once, untimed)
    notes: list[str] = field(default_factory=list)

    def side(self, key: str) -> Side:
        return next(side for side in self.sides if side.key == key)


# --- checks ----------------------------------------------------------------------------------------

_SUMMARY = re.compile(
    rf"^{SOURCE}: (?P<archived>\d+) archived, (?:(?P<downloaded>\d+) downloaded, not decrypted, )?"
    r"(?P<skipped>\d+) already archived(?P<rest>.*?), (?P<bytes>\S+ \S+) transferred$",
    re.MULTILINE)


def expect_fetch(output: str, *, archived: int = 0, downloaded: int = 0, skipped: int = 0,
                 no_transfer: bool = False) -> None:
    match = _SUMMARY.search(output)
    if match is None:
        raise BenchError(f"no fetch summary in the output: {output[-300:]!r}")
    found = (int(match["archived"]), int(match["downloaded"] or 0), int(match["skipped"]))
    if found != (archived, downloaded, skipped):
        raise BenchError(f"fetch did {found} (archived, downloaded, already archived), expected "
                         f"{(archived, downloaded, skipped)}: {match.group(0)!r}")
    if match["rest"]:
        raise BenchError(f"fetch reported more: {match.group(0)!r}")
    if no_transfer and match["bytes"] != "0 B":
        raise BenchError(f"expected no transfer: {match.group(0)!r}")


def expect_files(folder: Path, number: int, total: int | None = None, suffix: str = "") -> None:
    found, size = count_files(folder, suffix)
    if found != number or (total is not None and size != total):
        raise BenchError(f"expected {number} files{'' if total is None else f' ({total} bytes)'} "
                         f"in {folder}, found {found} ({size} bytes)")


def expect_listing(output: str, number: int, what: str) -> None:
    lines = sum(1 for line in output.splitlines() if line.startswith("-"))
    if lines != number:
        raise BenchError(f"{what} listed {lines} files, expected {number}")


def rmtree(path: Path) -> Callable[[], None]:
    return lambda: shutil.rmtree(path, ignore_errors=True)


def sh(*commands: list[str]) -> list[str]:
    """``sh -c 'A && B'``: several commands timed as one. A last word ending in ``/*.gpg`` is
    left for the shell to expand (every encrypted file of that folder)."""
    parts = []
    for command in commands:
        words = [shlex.quote(word) for word in command]
        if command and command[-1].endswith("/*.gpg"):
            words[-1] = shlex.quote(command[-1][:-len("/*.gpg")]) + "/*.gpg"
        parts.append(" ".join(words))
    return ["sh", "-c", " && ".join(parts)]


# --- the suite -------------------------------------------------------------------------------------


class Suite:
    """Hands out the rows; builds their data when a row is set up."""

    def __init__(self, ws: Workspace, sizes: Sizes, tools: dict[str, Tool]) -> None:
        self.ws = ws
        self.sizes = sizes
        self.tools = tools

    def rows(self) -> dict[str, Callable[[], Row]]:
        s = self.sizes
        made: dict[str, Callable[[], Row]] = {}
        for label, count in zip(("200", "2000"), s.backfill, strict=True):
            for bits in (2048, 3072):
                key = f"backfill_{label}_rsa{bits}"
                made[key] = functools.partial(self.backfill, key, count, bits)
        for label, count in zip(("500", "2000"), s.small, strict=True):
            key = f"sftp_small_{label}"
            made[key] = functools.partial(self.sftp_small, key, count, api=count == s.small[1])
        made["sftp_big"] = self.sftp_big
        made["ftp_small_pyftpdlib"] = lambda: self.ftp_small("ftp_small_pyftpdlib", "pyftpdlib")
        made["ftp_small_vsftpd"] = lambda: self.ftp_small("ftp_small_vsftpd", "vsftpd")
        made["decrypt_big"] = self.decrypt_big
        made["decrypt_small"] = self.decrypt_small
        made["noop_sftp"] = lambda: self.noop("noop_sftp", "sftp")
        made["noop_vsftpd"] = lambda: self.noop("noop_vsftpd", "vsftpd")
        made["rss_1g"] = self.rss
        made["startup"] = self.startup
        assert tuple(made) == ROW_KEYS
        return made

    # -- commands --

    def _missing(self, *needs: str) -> str:
        """Why a side cannot run ("" if it can): a standard tool or a server is missing."""
        for need in needs:
            tool = self.tools.get(need)
            if tool is not None and not tool.available:
                return f"{need}: {tool.note}"
            if need in ("sftp-server", "pyftpdlib", "vsftpd"):
                name = "sftp" if need == "sftp-server" else need
                if name not in self.ws.servers:
                    return f"{name} server: {self.ws.unavailable.get(name, 'not started')}"
        return ""

    def _fetch(self, key: str, label: str, server: str, *extra: str,
               prepare_run: Callable[[int], tuple[Path, Path]],
               verify: Callable[[Path, Sample], None]) -> Side:
        """A reportsync side: ``reportsync --config RUN/config.toml fetch EXTRA...``."""
        def prepare(rep: int) -> Attempt:
            run, config = prepare_run(rep)
            return Attempt(argv=[*REPORTSYNC, "--config", str(config), "fetch", *extra],
                           verify=lambda sample: verify(run, sample), cleanup=rmtree(run))
        return Side(key, label, True, prepare, skipped=self._missing(server))

    def _fresh_run(self, name: str, server: str, remote_dir: str, bits: int = 2048,
                   ) -> Callable[[int], tuple[Path, Path]]:
        """A new config, state dir and empty folders for each repetition."""
        def prepare_run(rep: int) -> tuple[Path, Path]:
            run = self.ws.fresh_dir(name)
            config = self.ws.write_config(run / "config.toml",
                                          self.ws.server(server).table(remote_dir), run, bits)
            return run, config
        return prepare_run

    def _ssh_options(self) -> list[str]:
        assert self.ws.sshd is not None
        source = self.ws.sshd.source
        return ["-F", "/dev/null", "-i", str(source["key_file"]), "-o",
                f"UserKnownHostsFile={source['known_hosts']}", "-o", "BatchMode=yes",
                "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes"]

    def _sftp(self, *args: str) -> list[str]:
        assert self.ws.sshd is not None
        return ["sftp", "-q", "-P", str(self.ws.sshd.port), *self._ssh_options(), *args]

    def _user_at(self) -> str:
        assert self.ws.sshd is not None
        return f"{self.ws.sshd.source['username']}@127.0.0.1"

    def _sftp_batch(self, name: str, commands: str) -> list[str]:
        """OpenSSH ``sftp -b FILE`` running ``commands`` (one per line)."""
        batch = self.ws.root / "runs" / f"{name}.sftp-batch"
        batch.parent.mkdir(parents=True, exist_ok=True)
        batch.write_text(commands)
        return self._sftp("-b", str(batch), self._user_at())

    def _lftp(self, name: str, server: Server, command: str) -> list[str]:
        """``lftp -f SCRIPT``: the (throwaway) password stays out of argv, in a 0600 script."""
        script = self.ws.root / "runs" / f"{name}.lftp"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(
            "set cmd:fail-exit yes\nset ftp:ssl-allow no\nset ftp:passive-mode on\n"
            "set net:max-retries 1\nset net:timeout 60\n"
            f"open -u {server.source['username']},{server.password} -p {server.source['port']} "
            f"ftp://127.0.0.1\n{command}\n")
        script.chmod(0o600)
        return ["lftp", "-f", str(script)]

    def _curl_list(self, name: str, server: Server, remote_dir: str) -> list[str]:
        netrc = self.ws.root / "runs" / f"{name}.netrc"
        netrc.parent.mkdir(parents=True, exist_ok=True)
        netrc.write_text(f"machine 127.0.0.1 login {server.source['username']} "
                         f"password {server.password}\n")
        netrc.chmod(0o600)
        return ["curl", "-sS", "--fail", "--netrc-file", str(netrc),
                f"ftp://127.0.0.1:{server.source['port']}/{remote_dir}/"]

    def _api(self, task: str, kwargs: Callable[[], dict[str, object]], out: Path | None,
             verify: Callable[[Sample], None], needs: str, label: str = "") -> Side:
        """reportsync's transport/pgp API in a process of its own (benchmarks/probe.py): no
        ledger, no fsync, no hashing. An info line: what the CLI costs on top of it."""
        def prepare(rep: int) -> Attempt:
            if out is not None:
                self.ws.fresh_dir(out.name)
            return Attempt(argv=probe.probe_argv(task, kwargs()), verify=verify,
                           cleanup=rmtree(out) if out is not None else lambda: None)
        return Side("api", label or f"API probe: {task} (info)", True, prepare,
                    skipped=self._missing(needs))

    # -- rows --

    def backfill(self, key: str, count: int, bits: int) -> Row:
        ws = self.ws
        remote = ""
        plain_total = 0

        def setup() -> None:
            nonlocal remote, plain_total
            remote = ws.publish(ws.reports(bits, count), "sftp")
            plain_total = ws.plaintext_bytes(count)

        def verify_fetch(run: Path, sample: Sample) -> None:
            expect_fetch(sample.stdout, archived=count)
            expect_files(run / "statements", count, plain_total)

        def tool(rep: int) -> Attempt:
            out = ws.fresh_dir(f"{key}-tool")
            argv = sh(self._sftp_batch(key, f"get -r {remote} {out / 'files'}\n"),
                      ws.gpg_argv(bits, "--decrypt-files", str(out / "files" / "*.gpg")))
            return Attempt(argv=argv, cleanup=rmtree(out),
                           verify=lambda _s: expect_files(out / "files", count, plain_total, ".xml"))

        return Row(
            key=key, title=f"backfill: {count} PGP reports (RSA {bits}), fetch + decrypt over SFTP",
            kind="throughput", unit="files/s", amount=count, setup=setup,
            sides=[self._fetch("fetch", "CLI fetch", "sftp-server",
                               prepare_run=lambda rep: self._fresh_run(key, "sftp", remote, bits)(rep),
                               verify=verify_fetch),
                   Side("tool", "sftp -b (get -r) && gpg --decrypt-files", False, tool,
                        skipped=self._missing("sftp", "gpg", "sftp-server"))],
            compares=[Compare("fetch", "tool", Target("≥ 1.0x", min_ratio=1.0))])

    def sftp_small(self, key: str, count: int, *, api: bool) -> Row:
        ws = self.ws
        remote = ""
        cipher_total = 0

        def setup() -> None:
            nonlocal remote, cipher_total
            folder = ws.reports(2048, count)
            remote = ws.publish(folder, "sftp")
            cipher_total = count_files(folder)[1]

        def verify_fetch(run: Path, sample: Sample) -> None:
            expect_fetch(sample.stdout, downloaded=count)
            expect_files(run / "encrypted", count, cipher_total)

        def fetch(side_key: str, label: str, *extra: str) -> Side:
            return self._fetch(side_key, label, "sftp-server", "--no-decrypt", *extra,
                               prepare_run=lambda rep: self._fresh_run(f"{key}-{side_key}", "sftp",
                                                                       remote)(rep),
                               verify=verify_fetch)

        def tool(rep: int) -> Attempt:
            out = ws.fresh_dir(f"{key}-tool")
            return Attempt(argv=self._sftp_batch(key, f"get -r {remote} {out / 'files'}\n"),
                           verify=lambda _s: expect_files(out / "files", count, cipher_total),
                           cleanup=rmtree(out))

        sides = [fetch("fetch", "CLI fetch --no-decrypt"),
                 fetch("fetch_jobs4", f"CLI fetch --no-decrypt --jobs {JOBS}", "--jobs", str(JOBS)),
                 Side("tool", "OpenSSH sftp -b (get -r)", False, tool,
                      skipped=self._missing("sftp", "sftp-server"))]
        compares = [Compare("fetch", "tool", Target("≥ 1.0x", min_ratio=1.0)),
                    Compare("fetch_jobs4", "tool", Target("≥ 1.0x", min_ratio=1.0))]
        if api:
            api_out = ws.root / "runs" / f"{key}-api"
            sides.insert(2, self._api(
                "get_all", lambda: {"table": ws.server("sftp").table(remote),
                                    "out_dir": str(api_out)}, api_out,
                lambda _s: expect_files(api_out, count, cipher_total), "sftp-server"))
            compares.append(Compare("api", "tool", None))
        return Row(key=key, title=f"SFTP, {count} x 20 KiB files, fetch --no-decrypt",
                   kind="throughput", unit="files/s", amount=count, setup=setup, sides=sides,
                   compares=compares)

    def sftp_big(self) -> Row:
        ws, size = self.ws, self.sizes.big
        remote = ""
        cipher = 0

        def setup() -> None:
            nonlocal remote, cipher
            folder = ws.big_file("big.bin", size)
            remote = ws.publish(folder, "sftp")
            cipher = (folder / "big.bin.gpg").stat().st_size
            row.amount = cipher

        def verify_fetch(run: Path, sample: Sample) -> None:
            expect_fetch(sample.stdout, downloaded=1)
            expect_files(run / "encrypted", 1, cipher)

        def tool(rep: int) -> Attempt:
            out = ws.fresh_dir("sftp_big-tool")
            return Attempt(argv=self._sftp(f"{self._user_at()}:{remote}/big.bin.gpg",
                                           str(out / "big.bin.gpg")),
                           verify=lambda _s: expect_files(out, 1, cipher), cleanup=rmtree(out))

        api_out = ws.root / "runs" / "sftp_big-api"
        api = self._api("get_one", lambda: {"table": ws.server("sftp").table(remote),
                                            "name": "big.bin.gpg",
                                            "out": str(api_out / "big.bin.gpg")}, api_out,
                        lambda _s: expect_files(api_out, 1, cipher), "sftp-server")
        row = Row(
            key="sftp_big", title=f"SFTP, one {size // MIB} MiB file, fetch --no-decrypt",
            kind="throughput", unit="MB/s", amount=size, setup=setup,
            sides=[self._fetch("fetch", "CLI fetch --no-decrypt", "sftp-server", "--no-decrypt",
                               prepare_run=lambda rep: self._fresh_run("sftp_big", "sftp",
                                                                       remote)(rep),
                               verify=verify_fetch),
                   api,
                   Side("tool", "OpenSSH sftp get (default cipher)", False, tool,
                        skipped=self._missing("sftp", "sftp-server"))],
            compares=[Compare("fetch", "tool", Target("≥ 1.0x", min_ratio=1.0)),
                      Compare("api", "tool", None)])
        return row

    def ftp_small(self, key: str, server_name: str) -> Row:
        ws, count = self.ws, self.sizes.ftp_small
        remote = ""
        cipher_total = 0

        def setup() -> None:
            nonlocal remote, cipher_total
            folder = ws.reports(2048, count)
            remote = ws.publish(folder, server_name)
            cipher_total = count_files(folder)[1]

        def verify_fetch(run: Path, sample: Sample) -> None:
            expect_fetch(sample.stdout, downloaded=count)
            expect_files(run / "encrypted", count, cipher_total)

        def fetch(side_key: str, label: str, *extra: str) -> Side:
            return self._fetch(side_key, label, server_name, "--no-decrypt", *extra,
                               prepare_run=lambda rep: self._fresh_run(
                                   f"{key}-{side_key}", server_name, remote)(rep),
                               verify=verify_fetch)

        def tool(rep: int) -> Attempt:
            out = ws.fresh_dir(f"{key}-tool")
            argv = self._lftp(key, ws.server(server_name),
                              f"mirror -P{JOBS} {remote} {out / 'files'}")
            return Attempt(argv=argv, verify=lambda _s: expect_files(out / "files", count,
                                                                     cipher_total),
                           cleanup=rmtree(out))

        sides = [fetch("fetch", "CLI fetch --no-decrypt"),
                 fetch("fetch_jobs4", f"CLI fetch --no-decrypt --jobs {JOBS}", "--jobs", str(JOBS)),
                 Side("tool", f"lftp mirror -P{JOBS}", False, tool,
                      skipped=self._missing("lftp", server_name))]
        compares = [Compare("fetch", "tool", Target("≥ 1.0x", min_ratio=1.0)),
                    Compare("fetch_jobs4", "tool", Target("≥ 1.0x", min_ratio=1.0))]
        notes = []
        if server_name == "pyftpdlib":
            api_out = ws.root / "runs" / f"{key}-api"
            sides.insert(2, self._api(
                "get_all", lambda: {"table": ws.server(server_name).table(remote),
                                    "out_dir": str(api_out)}, api_out,
                lambda _s: expect_files(api_out, count, cipher_total), server_name))
            compares.append(Compare("api", "tool", None))
            notes.append("pyftpdlib is single-threaded Python sharing the machine's cores")
        else:
            notes.append("vsftpd has no MLSD: reportsync lists with LIST, then SIZE and MDTM "
                         "per file")
        return Row(key=key, title=f"FTP passive ({server_name}), {count} x 20 KiB files, "
                                  "fetch --no-decrypt",
                   kind="throughput", unit="files/s", amount=count, setup=setup, sides=sides,
                   compares=compares, notes=notes)

    def decrypt_big(self) -> Row:
        ws, size = self.ws, self.sizes.big
        encrypted = Path()
        snapshot = Snapshot(ws, "decrypt_big-fetch")

        def setup() -> None:
            nonlocal encrypted
            folder = ws.big_file("big.bin", size)
            encrypted = folder / "big.bin.gpg"
            snapshot.make("sftp", ws.publish(folder, "sftp"), 1)

        def verify_fetch(run: Path, sample: Sample) -> None:
            expect_fetch(sample.stdout, archived=1, no_transfer=True)
            expect_files(run / "statements", 1, size)

        def tool(rep: int) -> Attempt:
            out = ws.fresh_dir("decrypt_big-tool")
            argv = sh(ws.gpg_argv(2048, "--decrypt", "-o", str(out / "big.bin"), str(encrypted)),
                      ["sync", str(out / "big.bin")])
            return Attempt(argv=argv, verify=lambda _s: expect_files(out, 1, size),
                           cleanup=rmtree(out))

        api_out = ws.root / "runs" / "decrypt_big-api"
        api = self._api("decrypt_one", lambda: {"home": str(ws.identity(2048).home),
                                                "encrypted": str(encrypted),
                                                "out": str(api_out / "big.bin")}, api_out,
                        lambda _s: expect_files(api_out, 1, size), "gpg",
                        label="API probe: Gpg.decrypt (info; no fsync)")

        return Row(
            key="decrypt_big", title=f"decrypt one {size // MIB} MiB report in a fetch",
            kind="throughput", unit="MB/s", amount=size, setup=setup,
            sides=[self._fetch("fetch", "CLI fetch (download kept from an earlier --no-decrypt)",
                               "sftp-server", prepare_run=snapshot.restore,
                               verify=verify_fetch),
                   api,
                   Side("tool", "gpg -o FILE && sync FILE", False, tool,
                        skipped=self._missing("gpg", "sync"))],
            compares=[Compare("fetch", "tool", Target("≥ 1.0x", min_ratio=1.0)),
                      Compare("api", "tool", None)],
            notes=["both sides durable: reportsync fsyncs the report, the tool side runs sync FILE"])

    def decrypt_small(self) -> Row:
        ws, count = self.ws, self.sizes.decrypt_small
        folder = Path()
        plain_total = 0
        snapshot = Snapshot(ws, "decrypt_small-fetch")

        def setup() -> None:
            nonlocal folder, plain_total
            folder = ws.reports(2048, count)
            plain_total = ws.plaintext_bytes(count)
            snapshot.make("sftp", ws.publish(folder, "sftp"), count)

        def verify_fetch(run: Path, sample: Sample) -> None:
            expect_fetch(sample.stdout, archived=count, no_transfer=True)
            expect_files(run / "statements", count, plain_total)

        def tool(rep: int) -> Attempt:
            out = ws.fresh_dir("decrypt_small-tool")
            link_tree(folder, out / "files")
            return Attempt(argv=sh(ws.gpg_argv(2048, "--decrypt-files",
                                               str(out / "files" / "*.gpg"))),
                           verify=lambda _s: expect_files(out / "files", count, plain_total,
                                                          ".xml"),
                           cleanup=rmtree(out))

        return Row(
            key="decrypt_small", title=f"decrypt {count} small reports (RSA 2048) in a fetch",
            kind="throughput", unit="files/s", amount=count, setup=setup,
            sides=[self._fetch("fetch", "CLI fetch (downloads kept from an earlier --no-decrypt)",
                               "sftp-server", prepare_run=snapshot.restore,
                               verify=verify_fetch),
                   Side("tool", "gpg --decrypt-files", False, tool, skipped=self._missing("gpg"))],
            compares=[Compare("fetch", "tool", Target("≥ 1.0x", min_ratio=1.0))])

    def noop(self, key: str, server_name: str) -> Row:
        """A no-op fetch over ``noop_files`` archived files. Both no-op rows share one ledger:
        one real ``fetch`` over SFTP archives every file; the vsftpd row's config names the same
        source (``bench``), state dir and folders, and its first (untimed) run must find all of
        them archived already, or the row fails."""
        ws, count = self.ws, self.sizes.noop_files
        run = ws.root / "runs" / "noop-ledger"
        remote = f"noop-{count}"
        config = run / f"{server_name}.toml"

        def setup() -> None:
            folder = ws.noop_files(count)
            for name in ("sftp", "vsftpd"):
                if name in ws.servers:
                    ws.publish(folder, name)
            seeded = run / "seeded"
            if not seeded.exists():
                started = time.monotonic()
                run.mkdir(parents=True, exist_ok=True)
                seeder = "sftp" if "sftp" in ws.servers else server_name
                seed_config = ws.write_config(run / "seed.toml", ws.server(seeder).table(remote),
                                              run, 2048)
                output = run_untimed([*REPORTSYNC, "--config", str(seed_config), "fetch",
                                      "--jobs", str(JOBS)], timeout=3600)
                expect_fetch(output, archived=count)
                seeded.write_text(seeder)
                ws.log(f"no-op ledger: {count} files archived by a real fetch --jobs {JOBS} over "
                       f"{seeder} in {time.monotonic() - started:.0f} s")
            ws.write_config(config, ws.server(server_name).table(remote), run, 2048)
            if seeded.read_text() != server_name:
                # The other server's first look at the shared ledger, untimed: it must find every
                # file archived (a timed run that archived them would pass its later repetitions).
                check = run_untimed([*REPORTSYNC, "--config", str(config), "fetch"],
                                    timeout=3600)
                expect_fetch(check, skipped=count, no_transfer=True)

        def fetch(rep: int) -> Attempt:
            return Attempt(argv=[*REPORTSYNC, "--config", str(config), "fetch"],
                           verify=lambda sample: expect_fetch(sample.stdout, skipped=count,
                                                              no_transfer=True))

        target = Target("< 2 s and ≤ 1.5x the listing", max_time_ratio=1.5, max_seconds=2.0)
        sides = [Side("fetch", "CLI fetch (all archived)", True, fetch,
                      skipped=self._missing("sftp-server" if server_name == "sftp"
                                            else server_name))]
        compares: list[Compare] = []
        if server_name == "sftp":
            sides.append(Side("sftp", "OpenSSH sftp -b (ls -l)", False,
                              lambda rep: Attempt(
                                  argv=self._sftp_batch(key, f"ls -l {remote}\n"),
                                  verify=lambda s: expect_listing(s.stdout, count, "sftp ls -l")),
                              skipped=self._missing("sftp", "sftp-server")))
            compares.append(Compare("fetch", "sftp", target))
        else:
            sides.append(Side("curl", "curl LIST", False, lambda rep: Attempt(
                argv=self._curl_list(key, ws.server(server_name), remote),
                verify=lambda s: expect_listing(s.stdout, count, "curl LIST")),
                skipped=self._missing("curl", server_name)))
            sides.append(Side("lftp", "lftp cls -l", False, lambda rep: Attempt(
                argv=self._lftp(key, ws.server(server_name), f"cls -l {remote}"),
                verify=lambda s: expect_listing(s.stdout, count, "lftp cls -l")),
                skipped=self._missing("lftp", server_name)))
            compares += [Compare("fetch", "curl", target), Compare("fetch", "lftp", None)]
        notes = [f"ledger: {count} files archived by one real fetch over SFTP, shared by both "
                 "no-op rows"]
        if server_name == "vsftpd":
            notes.append("vsftpd has no MLSD: reportsync lists with LIST, then SIZE and MDTM "
                         "per file")
        return Row(key=key, title=f"no-op fetch, {count} files archived ({server_name})",
                   kind="noop", unit="s", amount=0, setup=setup, sides=sides, compares=compares,
                   notes=notes)

    def rss(self) -> Row:
        ws, size = self.ws, self.sizes.rss_big
        remote = ""

        def setup() -> None:
            nonlocal remote
            remote = ws.publish(ws.big_file("report.bin", size), "sftp")

        def verify_fetch(run: Path, sample: Sample) -> None:
            expect_fetch(sample.stdout, archived=1)
            expect_files(run / "statements", 1, size)

        return Row(
            key="rss_1g", title=f"peak RSS, fetch + decrypt of one {size // MIB} MiB report (SFTP)",
            kind="rss", unit="MiB", amount=0, setup=setup,
            sides=[self._fetch("fetch", "CLI fetch", "sftp-server",
                               prepare_run=lambda rep: self._fresh_run("rss_1g", "sftp",
                                                                       remote)(rep),
                               verify=verify_fetch)],
            compares=[Compare("fetch", None, Target("< 100 MiB", max_mib=100.0))],
            notes=["peak RSS: ru_maxrss from wait4 of the reportsync process (the largest of it "
                   "and the gpg processes it waited for)"])

    def startup(self) -> Row:
        return Row(
            key="startup", title="start-up: reportsync --help", kind="time", unit="s", amount=0,
            sides=[Side("help", "reportsync --help", True,
                        lambda rep: Attempt(argv=[*REPORTSYNC, "--help"])),
                   Side("python", "python -c 'import click'", False,
                        lambda rep: Attempt(argv=[PY, "-c", "import click"]))],
            compares=[Compare("help", "python", None)],
            notes=["the interpreter and click: the floor under every CLI row"])


class Snapshot:
    """Decrypt-only runs: once, a ``fetch --no-decrypt``; every repetition then starts from a
    copy of its state dir and (hard links to) its downloads, at the same paths, so that the timed
    ``fetch`` lists, finds the kept copies and decrypts and archives them without a transfer."""

    def __init__(self, ws: Workspace, name: str) -> None:
        self.ws = ws
        self.run = ws.root / "runs" / name
        self.saved = ws.root / "runs" / f"{name}.snapshot"

    def make(self, server: str, remote_dir: str, count: int) -> None:
        if self.saved.exists():
            return
        shutil.rmtree(self.run, ignore_errors=True)
        self.run.mkdir(parents=True)
        config = self.ws.write_config(self.run / "config.toml",
                                      self.ws.server(server).table(remote_dir), self.run, 2048)
        output = run_untimed([*REPORTSYNC, "--config", str(config), "fetch", "--no-decrypt",
                              "--jobs", str(JOBS)], timeout=3600)
        expect_fetch(output, downloaded=count)
        self.run.rename(self.saved)

    def restore(self, rep: int) -> tuple[Path, Path]:
        shutil.rmtree(self.run, ignore_errors=True)
        self.run.mkdir(parents=True)
        shutil.copy2(self.saved / "config.toml", self.run / "config.toml")
        shutil.copytree(self.saved / "state", self.run / "state")
        shutil.copytree(self.saved / "encrypted", self.run / "encrypted", copy_function=_link)
        return self.run, self.run / "config.toml"


def _link(source: str, target: str) -> None:
    Path(target).hardlink_to(source)


