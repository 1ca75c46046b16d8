"""Result objects → text for people, JSON for machines. No I/O: the CLI writes what this returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reportsync.backup import Manifest, RestoreReport
from reportsync.errors import ReportsyncError
from reportsync.fetch import FetchResult, FileOutcome, SourceResult
from reportsync.fsutil import printable
from reportsync.pgpkeys import GeneratedPgpKey, ImportReport, PgpKeyInfo
from reportsync.retention import DeletionOutcome, Notice, RetentionResult
from reportsync.sshkeys import SshCertificateInfo, SshKeyInfo
from reportsync.status import StatusReport, VerifyReport
from reportsync.units import human_bytes

if TYPE_CHECKING:  # doctor imports paramiko: only the doctor command loads it
    from reportsync.doctor import DoctorReport


@dataclass
class Rendered:
    """What to print: ``stdout`` lines (the result), ``stderr`` lines (warnings and errors)."""

    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)


def error_lines(error: ReportsyncError, prefix: str = "error") -> list[str]:
    lines = [f"{prefix}: {error.describe()}"]
    if error.remedy:
        lines.append(f"  what to do: {error.remedy}")
    return lines


def fetch_text(result: FetchResult) -> Rendered:
    rendered = Rendered()
    for source in result.sources:
        rendered.stdout.append(_source_summary(source, result.dry_run))
        if result.dry_run:
            for outcome in source.files:
                if outcome.action == "would-fetch":
                    rendered.stdout.append(f"  would fetch {printable(outcome.name, quote=False)} "
                                           f"({human_bytes(outcome.size)})")
        for outcome in source.failed:
            if outcome.error is not None:
                rendered.stderr.extend(error_lines(outcome.error, prefix="failed"))
        if source.error is not None:
            rendered.stderr.extend(error_lines(source.error))
            rendered.stderr.append(f"  then run: reportsync doctor --source {source.name}")
        for risk in source.at_risk:
            rendered.stderr.append(
                f"warning: source {source.name!r}: {printable(risk.name, quote=False)} is not "
                f"archived and the provider purges it in {max(risk.days_left, 0):.0f} days"
            )
        for notice in source.lost:
            rendered.stderr.append(notice_line(notice))
        rendered.stdout.extend(deletion_lines([o for o in source.deletions if o.done]))
        rendered.stderr.extend(f"warning: source {source.name!r}:{line}"
                               for line in deletion_lines(source.refused_deletions))
        if source.held_back:
            rendered.stderr.append(held_back_line(source.name, source.held_back,
                                                  source.deletion_cap))
        if source.deletions_withheld is not None:
            rendered.stderr.append(notice_line(source.deletions_withheld))
        if source.stale_days is not None:
            since = ("no file has ever arrived" if math.isinf(source.stale_days)
                     else f"the newest file is {source.stale_days:.0f} days old")
            rendered.stderr.append(f"warning: source {source.name!r}: feed looks stale: {since}")
    for expiry in result.expiring:
        rendered.stderr.append(f"warning: {expiry.finding}")
        rendered.stderr.append(f"  what to do: {expiry.remedy}")
    return rendered


def _source_summary(source: SourceResult, dry_run: bool) -> str:
    if source.error is not None and not source.files:
        return f"{source.name}: FAILED ({type(source.error).__name__})"
    if dry_run:
        acknowledged = (f"{source.count('acknowledged')} acknowledged, "
                        if source.count("acknowledged") else "")
        return (f"{source.name}: {source.count('would-fetch')} to fetch, "
                f"{source.count('skipped')} already archived, {acknowledged}{source.matched} "
                f"matching of {source.listed} listed (dry run: nothing written)")
    parts = [f"{source.count('archived')} archived"]
    if source.count("downloaded"):
        parts.append(f"{source.count('downloaded')} downloaded, not decrypted")
    parts.append(f"{source.count('skipped')} already archived")
    if source.count("acknowledged"):
        parts.append(f"{source.count('acknowledged')} acknowledged failure(s), not retried")
    if source.failed:
        parts.append(f"{len(source.failed)} failed")
    if source.count("pending"):
        parts.append(f"{source.count('pending')} left for the next run")
    transferred = f", {human_bytes(source.bytes_transferred)} transferred"
    return f"{source.name}: {', '.join(parts)}{transferred}"


def outcome_dict(outcome: FileOutcome) -> dict[str, Any]:
    return {
        "name": outcome.name,
        "size": outcome.size,
        "mtime": outcome.mtime,
        "action": outcome.action,
        "local_path": outcome.local_path,
        "output_path": outcome.output_path,
        "bytes_transferred": outcome.transferred,
        "decrypted": outcome.decrypted,
        "error": outcome.error.to_dict() if outcome.error else None,
    }


def fetch_json(result: FetchResult) -> dict[str, Any]:
    return {
        "command": "fetch",
        "exit_code": int(result.exit_code),
        "dry_run": result.dry_run,
        "run_id": result.run_id,
        "seconds": round(result.seconds, 3),
        "expiring": [expiry.to_dict() for expiry in result.expiring],
        "sources": [
            {
                "name": source.name,
                "protocol": source.protocol,
                "exit_code": int(source.exit_code),
                "listed": source.listed,
                "matched": source.matched,
                "counts": {action: source.count(action) for action in
                           ("archived", "downloaded", "skipped", "acknowledged", "would-fetch",
                            "failed", "refused", "pending")},
                "bytes_transferred": source.bytes_transferred,
                "error": source.error.to_dict() if source.error else None,
                "at_risk": [{"name": risk.name, "days_left": risk.days_left}
                            for risk in source.at_risk],
                "stale_days": (None if source.stale_days is None or math.isinf(source.stale_days)
                               else source.stale_days),
                "stale": source.stale_days is not None,
                "lost": [notice_dict(notice) for notice in source.lost],
                "deletions": [outcome_of_deletion(outcome) for outcome in source.deletions],
                "deletions_held_back": source.held_back,
                "deletions_withheld": (None if source.deletions_withheld is None
                                       else notice_dict(source.deletions_withheld)),
                "files": [outcome_dict(outcome) for outcome in source.files],
            }
            for source in result.sources
        ],
    }


# --- keys ------------------------------------------------------------------------------------------


def pgp_key_lines(keys: list[PgpKeyInfo]) -> list[str]:
    if not keys:
        return ["no PGP keys in this GnuPG home (create one: reportsync keys pgp generate)"]
    lines = []
    for key in keys:
        days = key.days_to_expiry()
        expiry = "never expires" if key.expires is None else (
            f"expires {key.expires:%Y-%m-%d} ({days} days)" if days is not None and days >= 0
            else f"EXPIRED {key.expires:%Y-%m-%d}")
        secret = "secret+public" if key.has_secret else "public only"
        lines.append(f"{key.fingerprint}  {key.algorithm}  created {key.created:%Y-%m-%d}  "
                     f"{expiry}  [{secret}]")
        lines.extend(f"    {uid}" for uid in key.uids)
    return lines


def generated_pgp_text(result: GeneratedPgpKey, gnupg_home: str) -> Rendered:
    key = result.key
    rendered = Rendered(stdout=[
        f"created PGP key {key.fingerprint} ({key.algorithm}) for {', '.join(key.uids)}",
        f"  in {gnupg_home}; " + ("protected by a passphrase: put it in the variable "
                                  "settings.gpg_passphrase_env names" if result.protected
                                  else "no passphrase"),
    ])
    if result.exported_to is not None:
        rendered.stdout.append(f"  public key written to {result.exported_to}: send this file "
                               "to your provider (never the secret key)")
    if result.other_secret_keys:
        rendered.stdout.append(
            f"  this home now holds {len(result.other_secret_keys) + 1} secret keys; gpg decrypts "
            "each report with whichever key it was encrypted to")
    rendered.stdout.append("  next: back it up with `reportsync keys backup --out FILE`")
    rendered.stderr.extend(f"warning: {warning}" for warning in result.warnings)
    return rendered


def import_text(report: ImportReport, origin: str) -> Rendered:
    lines = [f"imported from {origin}: {report.secret_imported} secret, "
             f"{report.public_imported} public, {report.unchanged} unchanged"]
    lines.extend(f"  {fingerprint}" for fingerprint in report.fingerprints)
    return Rendered(stdout=lines, stderr=[f"warning: {problem}" for problem in report.problems])


def ssh_info_lines(info: SshKeyInfo | SshCertificateInfo) -> list[str]:
    if isinstance(info, SshKeyInfo):
        lines = [info.describe()]
        if info.encrypted:
            lines.append("  (the private key is protected by a passphrase)")
        return lines
    valid_to = "forever" if info.valid_to is None else f"{info.valid_to:%Y-%m-%d %H:%M} UTC"
    days_left = ""
    if info.days_left is not None:
        days_left = (f" ({info.days_left} days left)" if info.days_left >= 0
                     else f" (ended {-info.days_left} days ago)")
    status = {
        "valid": "valid",
        "expired": "EXPIRED: ask the certificate authority for a new certificate",
        "not yet valid": "NOT YET VALID: check this machine's clock and the certificate's start",
    }.get(info.status, info.status.upper())
    if not info.signature_valid:
        status += "; the CA SIGNATURE DOES NOT VERIFY"
    options = ", ".join(f"{name}={value}" if value else name
                        for name, value in info.critical_options) or "none"
    return [
        f"OpenSSH {info.cert_type} certificate {info.path}",
        f"  key id: {info.key_id}   serial: {info.serial}",
        f"  principals: {', '.join(info.principals) or '(any)'}",
        f"  valid from {info.valid_from:%Y-%m-%d %H:%M} UTC to {valid_to}{days_left}",
        f"  status: {status}",
        f"  signed by CA: {info.ca_fingerprint} ({info.ca_key_type})",
        f"  certified key: {info.bits} {info.fingerprint} ({info.key_type})",
        f"  critical options: {options}",
        f"  extensions: {', '.join(name for name, _ in info.extensions) or 'none'}",
    ]


def manifest_lines(manifest: Manifest, path: str) -> list[str]:
    lines = [f"backup {path}: made {manifest.created} on {manifest.host or '?'} by reportsync "
             f"{manifest.tool_version}; every member matches its sha256"]
    for member in manifest.members:
        owner = f" (source {member.source})" if member.source else ""
        prints = f"  {', '.join(member.fingerprints)}" if member.fingerprints else ""
        lines.append(f"  {member.kind:16} {member.name}{owner}{prints}")
    lines.extend(f"  not included: {item}" for item in manifest.not_included)
    return lines


def restore_text(report: RestoreReport) -> Rendered:
    lines = [f"restored from {report.backup}:"]
    lines.extend(f"  {item}" for item in report.written)
    lines.extend(f"  unchanged: {item}" for item in report.unchanged)
    lines.append("next: run `reportsync doctor` to check gpg, keys and logins on this machine")
    return Rendered(stdout=lines,
                    stderr=[f"note: not in the backup: {item}" for item in report.not_included])


# --- doctor ----------------------------------------------------------------------------------------


def _doctor_scope_title(scope: str) -> str:
    return scope if scope in ("config", "local") else f"source {scope}"


def doctor_text(report: DoctorReport, *, quiet: bool = False, bundle: Path | None = None
                ) -> Rendered:
    """A table of findings (status, check, finding; the remedy under WARN/FAIL lines).

    ``quiet``: only WARN and FAIL lines, on stderr (cron mails only when something needs a person).
    """
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


def doctor_json(report: DoctorReport, bundle: Path | None = None) -> dict[str, Any]:
    payload = report.to_dict()
    payload["bundle"] = str(bundle) if bundle is not None else None
    return payload


# --- retention, status, verify -------------------------------------------------------------------


def notice_line(notice: Notice) -> str:
    name = printable(notice.name, quote=False)
    subject = f"source {notice.source!r}" + (f": {name}" if notice.name else "")
    if notice.kind == "lost":
        return (f"LOST: {subject}: {notice.reason}; after checking with the provider, "
                f"acknowledge it: reportsync status --source {notice.source} --ack "
                f"{printable(notice.name)}")
    if notice.kind == "at-risk":
        return f"warning: {subject}: {notice.reason}; run `reportsync fetch` now"
    return f"warning: {subject}: {notice.reason}"


def notice_dict(notice: Notice) -> dict[str, Any]:
    return {"kind": notice.kind, "source": notice.source, "name": notice.name,
            "days": None if math.isinf(notice.days) else notice.days, "reason": notice.reason}


def deletion_lines(outcomes: list[DeletionOutcome]) -> list[str]:
    lines = []
    for outcome in outcomes:
        deletion = outcome.deletion
        if outcome.done:
            lines.append(f"  deleted {deletion.target.replace('_', ' ')} "
                         f"{printable(deletion.path, quote=False)}: "
                         f"{deletion.reason}")
        else:
            lines.append(f"  kept {deletion.target.replace('_', ' ')} "
                         f"{printable(deletion.path, quote=False)}: "
                         f"{outcome.detail}")
    return lines


def held_back_line(source: str, count: int, cap: int) -> str:
    return (f"warning: source {source!r}: {count} more deletion(s) held back by the per-run cap "
            f"(retention.max_deletions = {cap} files); they follow in the next runs")


def outcome_of_deletion(outcome: DeletionOutcome) -> dict[str, Any]:
    deletion = outcome.deletion
    return {"target": deletion.target, "name": deletion.name, "path": deletion.path,
            "reason": deletion.reason, "done": outcome.done, "detail": outcome.detail}


def retention_text(result: RetentionResult) -> Rendered:
    rendered = Rendered()
    for source in result.sources:
        if source.error is not None:
            rendered.stdout.append(f"{source.name}: FAILED ({type(source.error).__name__})")
            rendered.stderr.extend(error_lines(source.error))
            continue
        if result.dry_run:
            rendered.stdout.append(f"{source.name}: {len(source.planned)} deletion(s) planned "
                                   "(dry run: nothing changed)")
            rendered.stdout.extend(f"  would delete {d.target.replace('_', ' ')} {d.path}: "
                                   f"{d.reason}" for d in source.planned)
        else:
            done = sum(outcome.done for outcome in source.outcomes)
            rendered.stdout.append(f"{source.name}: {done} deleted, "
                                   f"{len(source.outcomes) - done} kept")
            rendered.stdout.extend(deletion_lines(source.outcomes))
        if source.held_back:
            rendered.stderr.append(held_back_line(source.name, source.held_back, source.cap))
        rendered.stderr.extend(notice_line(notice) for notice in source.notices)
    return rendered


def retention_json(result: RetentionResult) -> dict[str, Any]:
    return {
        "command": "retention", "exit_code": int(result.exit_code), "dry_run": result.dry_run,
        "sources": [{
            "name": source.name, "exit_code": int(source.exit_code), "cap": source.cap,
            "planned": [{"target": d.target, "name": d.name, "path": d.path, "reason": d.reason}
                        for d in source.planned],
            "deletions": [outcome_of_deletion(outcome) for outcome in source.outcomes],
            "held_back": source.held_back, "withheld": source.withheld,
            "notices": [notice_dict(notice) for notice in source.notices],
            "error": source.error.to_dict() if source.error else None,
        } for source in result.sources],
    }


def _when(timestamp: object) -> str:
    if not isinstance(timestamp, (int, float)):
        return "never"
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def status_text(report: StatusReport) -> Rendered:
    rendered = Rendered()
    if report.acknowledged:
        rendered.stdout.append(f"acknowledged {report.acknowledged} file version(s): no longer "
                               "reported as lost or failing")
    for source in report.sources:
        run = source.last_run
        last = ("no fetch recorded yet" if run is None else
                f"last fetch {_when(run.get('finished_at'))}, exit {run.get('exit_code')}")
        health = "OK" if source.healthy else "NEEDS ATTENTION"
        rendered.stdout.append(f"{source.name}: {health}: {last}; {source.archived} archived; "
                               f"{len(source.failures)} failing; {len(source.of_kind('at-risk'))} "
                               f"at risk; {len(source.of_kind('lost'))} lost; "
                               f"{source.purged} purged by the provider")
        # what needs a person goes to stderr, so `-q status` in cron still mails it
        if run is not None and run.get("error"):
            rendered.stderr.append(f"{source.name}: last error: {run['error']}")
        for failure in source.failures:
            rendered.stderr.append(f"{source.name}: failing: "
                                   f"{printable(str(failure['name']), quote=False)} "
                                   f"({failure['stage']}, "
                                   f"{failure['attempts']} attempt(s)): {failure['reason']}")
        rendered.stderr.extend(notice_line(notice) for notice in source.notices)
    return rendered


def status_json(report: StatusReport) -> dict[str, Any]:
    return {
        "command": "status", "exit_code": int(report.exit_code),
        "acknowledged": report.acknowledged,
        "sources": [{
            "name": source.name, "healthy": source.healthy, "last_run": source.last_run,
            "archived": source.archived, "failures": source.failures,
            "at_risk": [notice_dict(n) for n in source.of_kind("at-risk")],
            "lost": [notice_dict(n) for n in source.of_kind("lost")],
            "stale": [notice_dict(n) for n in source.of_kind("stale")],
            "purged_by_provider": source.purged,
        } for source in report.sources],
    }


def verify_text(report: VerifyReport) -> Rendered:
    rendered = Rendered(stdout=[f"checked {report.checked} file(s) against the ledger: "
                                f"{len(report.problems)} problem(s)"])
    for problem in report.problems:
        rendered.stderr.append(f"{problem.problem.upper()}: source {problem.source!r}: "
                               f"{problem.copy} copy of {printable(problem.name, quote=False)}: "
                               f"{printable(problem.path, quote=False)}")
    if report.problems:
        rendered.stderr.append("  what to do: restore these files from your backups; the ledger "
                               "keeps their sha256 to check the restored copies against")
    return rendered


def verify_json(report: VerifyReport) -> dict[str, Any]:
    return {"command": "verify", "exit_code": int(report.exit_code), "checked": report.checked,
            "problems": [{"source": p.source, "name": p.name, "copy": p.copy, "path": p.path,
                          "problem": p.problem} for p in report.problems]}
