"""``reportsync doctor``: ordered checks that say what is wrong and what to change.

Every check returns a ``Finding`` (PASS / WARN / FAIL / SKIPPED, one line, a remedy, a stable id)
instead of raising: a broken config, a missing gpg or a server that never answers are findings,
not crashes. A check whose prerequisite failed is SKIPPED. The order is: config (``config.py``)
→ this machine (``local.py``) → per source (``network.py``: the transport's own connection
steps, DNS → TCP → banner → TLS → host key → authentication → remote folder → FTP data channel,
then the listing and the files at risk of purge) → the notification setup (``notify.py``; with
``--notify-test`` one test message per channel). Every network step is bounded by the source's
``timeout``. ``bundle.py`` writes the support zip. This package never prints: the CLI renders
the ``DoctorReport``.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reportsync.config import Config, SourceConfig
from reportsync.doctor.bundle import versions, write_bundle
from reportsync.doctor.config import (
    check_config_file,
    check_settings_secrets,
    check_source_config,
    select_sources,
)
from reportsync.doctor.findings import (
    FAIL,
    PASS,
    SKIPPED,
    STATUSES,
    WARN,
    DoctorFinding,
    Finding,
    Findings,
    guarded,
)
from reportsync.doctor.local import local_checks
from reportsync.doctor.network import SourceChecks
from reportsync.doctor.notify import notify_checks
from reportsync.errors import ExitCode
from reportsync.transports import Connector, connector_for

__all__ = ["FAIL", "PASS", "SKIPPED", "WARN", "DoctorFinding", "DoctorReport", "Finding",
           "run_doctor", "versions", "write_bundle"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DoctorReport:
    config_path: Path
    findings: tuple[Finding, ...]
    seconds: float
    config: Config | None = field(default=None, repr=False)
    gpg_version: str | None = None

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.PARTIAL if any(f.status == FAIL for f in self.findings) else ExitCode.OK

    def counts(self) -> dict[str, int]:
        return {str(status): sum(1 for f in self.findings if f.status == status)
                for status in STATUSES}

    def first_fail(self) -> Finding | None:
        return next((f for f in self.findings if f.status == FAIL), None)

    def to_dict(self) -> dict[str, object]:
        return {
            "command": "doctor",
            "exit_code": int(self.exit_code),
            "config": str(self.config_path),
            "seconds": round(self.seconds, 3),
            "counts": self.counts(),
            "findings": [finding.to_dict() for finding in self.findings],
        }


def run_doctor(config_path: Path, sources: Sequence[str] = (), *, now: float | None = None,
               environ: Mapping[str, str] | None = None,
               notify_test: bool = False) -> DoctorReport:
    """Run every check for ``config_path`` (only ``sources`` when given); never raises.
    ``environ``: the environment the config is loaded in (its secrets, gpg's children);
    ``notify_test``: send one test message through every notification channel."""
    started = time.monotonic()
    out = Findings()
    config = check_config_file(config_path, out, environ)
    gpg_version: str | None = None
    if config is None:
        out.add("checks", "local", SKIPPED, DoctorFinding.CHECKS_SKIPPED,
                "not checked: the config did not load")
    else:
        none: list[SourceConfig] = []
        selected = guarded(out, "source", lambda: select_sources(config, sources, out), none,
                           scope="config")
        connectors: dict[str, Connector | None] = {
            source.name: guarded(out, "source", functools.partial(check_source_config, source, out),
                                 None, scope="config")
            for source in selected}
        unchecked: str | None = "the passphrase could not be checked"
        gpg_problem = guarded(out, "secret", lambda: check_settings_secrets(config, out),
                              unchecked, scope="config")
        gpg_version = local_checks(config, selected, gpg_problem, out)
        for source in selected:
            connector = connectors[source.name]
            if connector is None:  # its config checks failed unexpectedly (said above)
                connector = connector_for(source)
                connector.config_checks()
            SourceChecks(source, config, connector, out,
                         now if now is not None else time.time()).run()
        guarded(out, "setup", lambda: notify_checks(config, out, send_test=notify_test), None,
                scope="notify")
    for finding in out.items:
        if finding.status in (WARN, FAIL):
            log.info("doctor: %s %s/%s: %s", finding.status, finding.scope, finding.check,
                     finding.finding)
    return DoctorReport(config_path=config_path, findings=tuple(out.items),
                        seconds=time.monotonic() - started, config=config, gpg_version=gpg_version)
