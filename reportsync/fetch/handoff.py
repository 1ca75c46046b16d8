"""After a source's files are archived: hand each new report to the source's ``on_new_report``.

The hooks run one at a time, in the order their reports were archived, after the executor is
done (so a hook never competes with the downloads, and a loader that is not safe to run twice at
once never has to be). ``plan.plan_hooks`` decides which reports' hooks run: the ones archived
this run, and the ones whose hook failed before; ``hooks.run_hook`` runs one. A failed hook is
that report's failure: its outcome becomes ``failed`` (the run exits 1) and the ledger keeps it
due, so the next fetch runs it again, without a download, until it succeeds or the file is
acknowledged (``status --ack``). A hook that succeeded never runs again.
"""

from __future__ import annotations

import logging
import shlex

from reportsync.config import Config, SourceConfig
from reportsync.errors import HookError
from reportsync.fetch.plan import HookJob, plan_hooks
from reportsync.fetch.record import Recorder
from reportsync.fetch.results import FileOutcome, SourceResult
from reportsync.fsutil import printable
from reportsync.hooks import NewReport, run_hook
from reportsync.ledger import Ledger
from reportsync.schedule import secret_env_names
from reportsync.vocab import Action

log = logging.getLogger(__name__)


def hand_off(source: SourceConfig, config: Config, ledger: Ledger, recorder: Recorder,
             source_result: SourceResult) -> None:
    """Run the hooks that are due; a failure turns the file's outcome in ``source_result`` into a
    failure (one is added for a report no longer listed by the server)."""
    jobs = plan_hooks(ledger.pending_hooks(source.name))
    if not jobs:
        return
    files = source_result.files
    outcomes = {(outcome.name, outcome.size, outcome.mtime): outcome for outcome in files
                if outcome.action in (Action.ARCHIVED, Action.SKIPPED)}
    hidden = secret_env_names(config)  # also hidden if one is an allowlisted name
    for job in jobs:
        result = run_hook(source.on_new_report, _report(source, job),
                          timeout=source.hook_timeout, environ=config.environ, hidden=hidden)
        for line in result.output:
            log.info("source %s: hook for %s: %s", source.name, printable(job.name), line)
        if result.ok:
            recorder.hook_succeeded(job)
            log.info("source %s: hook for %s succeeded (%.1f s)%s", source.name,
                     printable(job.name), result.seconds, " on a retry" if job.retry else "")
            continue
        assert result.problem is not None
        attempts = recorder.hook_failed(job, result.exit_code, result.problem)
        log.warning("source %s: %s: hook failed (run %d): %s", source.name, printable(job.name),
                    attempts, result.problem)
        error = HookError(result.problem, source=source.name, path=job.name, remedy=(
            f"The report is archived ({job.output_path}). Fix sources.{source.name}."
            "on_new_report (or what the hook needs) and the next fetch runs it again for this "
            "report; to stop that, acknowledge it: `reportsync status --source "
            f"{shlex.quote(source.name)} --ack {shlex.quote(job.name)}`."))
        outcome = outcomes.get(job.version) or source_result.take_skipped(job.version)
        if outcome is None:  # archived earlier and gone from the server since
            outcome = FileOutcome(job.name, job.version[1], job.version[2], Action.FAILED,
                                  output_path=str(job.output_path))
            files.append(outcome)
        outcome.action, outcome.error = Action.FAILED, error


def _report(source: SourceConfig, job: HookJob) -> NewReport:
    return NewReport(source=source.name, remote_name=job.name, path=job.output_path,
                     sha256=job.sha256)
