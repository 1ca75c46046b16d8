"""``doctor``'s findings for people, and its JSON view."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from reportsync.render.base import Rendered, error_lines
from reportsync.render.envelope import to_json
from reportsync.results import DoctorRun

if TYPE_CHECKING:  # doctor imports paramiko: only the doctor command loads it
    from reportsync.doctor import DoctorReport


def _doctor_scope_title(scope: str) -> str:
    return scope if scope in ("config", "local", "notify") else f"source {scope}"


def doctor_text(run: DoctorRun, *, quiet: bool = False) -> Rendered:
    """A table of findings (status, check, finding; the remedy under WARN/FAIL lines).

    ``quiet``: only WARN and FAIL lines, on stderr (cron mails only when something needs a person).
    """
    rendered = _findings_text(run.report, quiet=quiet, bundle=run.bundle)
    if run.bundle_error is not None:
        rendered.stderr.extend(error_lines(run.bundle_error, prefix="bundle not written"))
    return rendered


def _findings_text(report: DoctorReport, *, quiet: bool, bundle: Path | None) -> Rendered:
    rendered = Rendered()
    if quiet:
        for finding in report.findings:
            if finding.status in ("WARN", "FAIL"):
                rendered.stderr.append(f"{finding.status} {_doctor_scope_title(finding.scope)}: "
                                       f"{finding.check}: {finding.finding}")
                if finding.remedy:
                    rendered.stderr.append(f"  what to do: {finding.remedy}")
        if bundle is not None:
            rendered.stderr.append(f"support bundle written to {bundle}")
        return rendered
    width = max((len(finding.check) for finding in report.findings), default=5)
    lines = [f"reportsync doctor: {report.config_path}"]
    scope = None
    for finding in report.findings:
        if finding.scope != scope:
            scope = finding.scope
            lines.append("")
            lines.append(_doctor_scope_title(scope))
        lines.append(f"  {finding.status:<7} {finding.check:<{width}}  {finding.finding}")
        if finding.remedy and finding.status in ("WARN", "FAIL"):
            lines.append(f"  {'':<7} {'':<{width}}  what to do: {finding.remedy}")
    counts = report.counts()
    lines.append("")
    summary = ", ".join(f"{counts[status]} {status}" for status in ("FAIL", "WARN", "PASS", "SKIPPED")
                        if counts[status])
    first = report.first_fail()
    verdict = "no failures" if first is None else \
        f"first failure: {_doctor_scope_title(first.scope)}: {first.check}"
    lines.append(f"{summary} in {report.seconds:.1f}s; {verdict}")
    if bundle is not None:
        lines.append(f"support bundle written to {bundle} (no secrets in it)")
    rendered.stdout = lines
    return rendered


@to_json.register
def _doctor(run: DoctorRun) -> dict[str, Any]:
    shape: dict[str, Any] = to_json(run.report)
    for enveloped in ("command", "exit_code"):  # the envelope says them
        shape.pop(enveloped, None)
    shape["bundle"] = to_json(run.bundle)
    if run.bundle_error is not None:
        shape["bundle_error"] = to_json(run.bundle_error)
    return shape
