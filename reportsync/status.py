"""`reportsync status` and `reportsync verify`: what the ledger and the archive say, no network.

status: per source, the last run, the archive, pending failures, and the retention notices (at
risk, lost, stale) computed by the same planner retention uses. verify: every archived report and
kept encrypted copy re-hashed against the ledger.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from reportsync.config import Config
from reportsync.errors import ExitCode, UsageError
from reportsync.fsutil import printable, sha256_file
from reportsync.ledger import Ledger
from reportsync.retention import ARCHIVE, LOCAL_ENCRYPTED, REMOTE, Notice, plan


@dataclass(frozen=True)
class SourceStatus:
    name: str
    last_run: dict[str, object] | None
    archived: int
    failures: list[dict[str, object]]
    notices: list[Notice]
    purged: int  # versions that vanished from the server without reportsync deleting them

    def of_kind(self, kind: str) -> list[Notice]:
        return [notice for notice in self.notices if notice.kind == kind]

    @property
    def healthy(self) -> bool:
        last_failed = self.last_run is not None and self.last_run.get("exit_code") not in (0, None)
        return not (self.failures or self.notices or last_failed)


@dataclass(frozen=True)
class StatusReport:
    """``status``: each source's health from the ledger, and what ``--ack`` acknowledged."""

    sources: tuple[SourceStatus, ...]
    acknowledged: int = 0

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if all(source.healthy for source in self.sources) else ExitCode.PARTIAL


def status(config: Config, ledger: Ledger, names: tuple[str, ...] = (), *,
           acknowledge: tuple[str, ...] = (), now: float | None = None) -> StatusReport:
    moment = now if now is not None else time.time()
    sources = config.select(names)
    acknowledged = 0
    for name in acknowledge:
        marked = sum(ledger.acknowledge_lost(source.name, name) for source in sources)
        if not marked:
            refused = [source.name for source in sources
                       if any(failure["name"] in (name, printable(name))
                              and failure["stage"] == "name"
                              for failure in ledger.open_failures(source.name))]
            if refused:
                raise UsageError(
                    f"{name} is a name refused as unsafe on {', '.join(refused)}: it was never "
                    "fetched, so there is no file version to acknowledge",
                    remedy="Ask the provider to rename or remove the file; the refusal is "
                    "reported on every run until then.")
            raise UsageError(f"no file named {name!r} in the ledger of "
                             f"{', '.join(source.name for source in sources)}",
                             remedy="Use the name exactly as `reportsync status` shows it.")
        acknowledged += marked
    healths: list[SourceStatus] = []
    for source in sources:
        versions = ledger.versions(source.name)
        retention_plan = plan(source, config.retention, versions, None, moment)
        healths.append(SourceStatus(
            name=source.name,
            last_run=ledger.last_source_run(source.name),
            archived=sum(1 for version in versions if version.archived),
            failures=ledger.open_failures(source.name),
            notices=retention_plan.notices,
            purged=sum(1 for version in versions
                       if version.gone_at is not None and REMOTE not in version.deleted),
        ))
    return StatusReport(sources=tuple(healths), acknowledged=acknowledged)


@dataclass(frozen=True)
class VerifyProblem:
    source: str
    name: str
    copy: str  # "archive" | "encrypted"
    path: str
    problem: str  # "missing" | "altered" | "not a regular file"


@dataclass(frozen=True)
class VerifyReport:
    """``verify``: how many copies were hashed, and which are missing or altered."""

    checked: int = 0
    problems: tuple[VerifyProblem, ...] = ()

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.PARTIAL if self.problems else ExitCode.OK


def verify(config: Config, ledger: Ledger, names: tuple[str, ...] = ()) -> VerifyReport:
    checked = 0
    problems: list[VerifyProblem] = []
    for source in config.select(names):
        for version in ledger.versions(source.name):
            copies = []
            if version.output_path and ARCHIVE not in version.deleted:
                copies.append(("archive", version.output_path, version.output_sha256))
            if (version.download_path and LOCAL_ENCRYPTED not in version.deleted
                    and version.download_path != version.output_path):
                copies.append(("encrypted", version.download_path, version.download_sha256))
            for copy, path, expected in copies:
                checked += 1
                problem = _check(Path(path), expected or "")
                if problem:
                    problems.append(VerifyProblem(source.name, version.name, copy, path, problem))
    return VerifyReport(checked=checked, problems=tuple(problems))


def _check(path: Path, expected: str) -> str | None:
    if path.is_symlink() or (path.exists() and not path.is_file()):
        return "not a regular file"
    try:
        actual = sha256_file(path)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    return None if actual == expected else "altered"
