"""doctor's checks of one source: its transport's connection steps, shown one by one, then the
listing and the files at risk of the provider's purge.

The steps are the transport's own (``transports.base.Connector``): the code a fetch runs to
connect, with the same words, so a fix in a transport reaches doctor. Nothing here knows which
protocol it is talking.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable

from reportsync import retention
from reportsync.config import Config, SourceConfig
from reportsync.doctor.findings import (
    BUG_REMEDY,
    FAIL,
    PASS,
    SKIPPED,
    WARN,
    DoctorFinding,
    Findings,
    Outcome,
    Verdict,
)
from reportsync.errors import ReportsyncError
from reportsync.ledger import LEDGER_FILE, Ledger, VersionState
from reportsync.listing import select
from reportsync.transports import Connector, RemoteFile
from reportsync.transports.base import shown_names
from reportsync.vocab import NoticeKind

log = logging.getLogger(__name__)


class SourceChecks:
    """The checks of one source, in order; a FAIL (or a SKIPPED) blocks the rest."""

    def __init__(self, source: SourceConfig, config: Config, connector: Connector,
                 out: Findings, now: float) -> None:
        self.source = source
        self.config = config
        self.connector = connector
        self.out = out
        self.now = now
        self.candidates: list[RemoteFile] = []
        self.versions: list[VersionState] = []
        self.ledger_problem: str | None = None  # why the ledger could not be read, if it could not

    def checks(self) -> list[tuple[str, Callable[[], Outcome]]]:
        steps = [*self.connector.steps(), *self.connector.probes()]
        return [*((str(step.check), step.run) for step in steps),
                ("listing", self.check_listing), ("at risk", self.check_at_risk)]

    def run(self) -> None:
        blocked: str | None = None
        self.read_versions()
        # what the ledger knows spares a listing without exact times a question per file
        self.connector.known_versions = [(version.name, version.size, version.mtime)
                                         for version in self.versions]
        try:
            for check, run in self.checks():
                if blocked is not None:
                    self.out.add(check, self.source.name, SKIPPED, DoctorFinding.NOT_CHECKED,
                                 f"not checked: {blocked}")
                    continue
                started = time.monotonic()
                try:
                    result = run()
                except Exception as exc:
                    log.debug("doctor: check %s of %s failed unexpectedly", check,
                              self.source.name, exc_info=True)
                    result = Verdict(FAIL, DoctorFinding.CHECK_FAILED,
                                     f"the check itself failed: {type(exc).__name__}: {exc}",
                                     BUG_REMEDY)
                self.out.record(check, self.source.name, result, time.monotonic() - started)
                if result.status == FAIL:
                    blocked = f"{check} failed"
                elif result.status == SKIPPED:
                    blocked = result.finding.removeprefix("not checked: ")
        finally:
            self.connector.close()

    def read_versions(self) -> None:
        """This source's versions in the ledger (none if there is no ledger yet), read once: the
        listing and the at-risk check both use them."""
        ledger_path = self.config.settings.state_dir / LEDGER_FILE
        if not ledger_path.exists():
            return
        try:
            with Ledger(ledger_path) as ledger:
                self.versions = ledger.versions(self.source.name)
        except (ReportsyncError, sqlite3.Error) as exc:
            self.ledger_problem = str(exc)

    def check_listing(self) -> Verdict:
        try:
            listing = self.connector.list_files()
        except ReportsyncError as error:
            return Verdict(FAIL, DoctorFinding.LISTING_FAILED, error.message, error.remedy)
        candidates, refused = select(self.source, listing)
        self.candidates = candidates
        source = self.source
        names = sorted(remote.name for remote in listing)
        patterns = f"include {list(source.include)}" + (
            f", exclude {list(source.exclude)}" if source.exclude else "")
        if not names:
            return Verdict(WARN, DoctorFinding.LISTING_EMPTY,
                           f"the remote folder {source.remote_dir!r} is empty",
                           "Nothing to fetch now. If you expect reports, check remote_dir and ask "
                           "the provider whether deliveries to this account are set up.")
        if refused:
            return Verdict(WARN, DoctorFinding.LISTING_UNSAFE_NAMES,
                           f"{len(refused)} file name(s) refused as unsafe: "
                           f"{shown_names(remote.name for remote, _ in refused)}; "
                           f"{len(candidates)} of {len(names)} files match {patterns}",
                           "These files are never downloaded; ask the provider why such names "
                           "are in your folder.")
        if not candidates:
            return Verdict(WARN, DoctorFinding.LISTING_NO_MATCH,
                           f"none of the {len(names)} files matches {patterns}; the folder "
                           f"holds: {shown_names(names)}",
                           f"Adjust include/exclude in [sources.{source.name}] to match the names "
                           "the provider uses.")
        return Verdict(PASS, DoctorFinding.LISTING_OK,
                       f"{len(names)} file(s) listed in {source.remote_dir!r}, "
                       f"{len(candidates)} match {patterns}")

    def check_at_risk(self) -> Verdict:
        """What ``retention.plan`` says of the listed files, as ``status`` and ``fetch`` do."""
        policy = self.config.retention
        horizon = policy.days - policy.warn_days
        if self.ledger_problem is not None:
            return Verdict(WARN, DoctorFinding.AT_RISK_LEDGER_UNREADABLE,
                           "cannot read the ledger to tell which files are fetched: "
                           f"{self.ledger_problem}", "See the ledger check above.")
        plan = retention.plan(self.source, policy, self.versions, self.candidates, self.now)
        at_risk = sorted(plan.of_kind(NoticeKind.AT_RISK), key=lambda notice: notice.days)
        lost = plan.of_kind(NoticeKind.LOST)
        fetch = f"reportsync fetch --source {self.source.name}"
        parts, remedies = [], []
        if at_risk:
            described = shown_names(
                f"{notice.name} ({notice.days:.0f} days left)" if notice.days >= 0.5
                else f"{notice.name} (past the purge date)" for notice in at_risk)
            parts.append(f"{len(at_risk)} file(s) not archived yet are older than {horizon} "
                         f"days; the provider purges files {policy.days} days after delivery: "
                         f"{described}")
            remedies.append(f"Run `{fetch}` now (after fixing any FAIL above); a purged file is "
                            "gone for good.")
        if lost:
            parts.append(f"{len(lost)} file(s) lost: "
                         + shown_names(f"{notice.name} ({notice.reason})" for notice in lost))
            remedies.append(f"Run `{fetch}` for the ones still on the server; ask the provider "
                            "for the others, then acknowledge each: `reportsync status --source "
                            f"{self.source.name} --ack NAME`.")
        if parts:
            finding_id = DoctorFinding.AT_RISK_FILES if at_risk else DoctorFinding.AT_RISK_LOST
            return Verdict(WARN, finding_id, "; ".join(parts), " ".join(remedies))
        return Verdict(PASS, DoctorFinding.AT_RISK_OK,
                       f"no file near the provider's purge: {len(self.candidates)} matching "
                       f"file(s) listed, none unarchived and older than {horizon} days")
