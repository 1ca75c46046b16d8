"""One ``reportsync fetch``: lock, ledger, then per source list → plan → execute → retention.

Everything a source can fail with is a ``ReportsyncError``; a failure of one file is recorded and
the others go on; a failure of the source (cannot connect, host key, disk full) ends that source
only. A dry run is the plan without the executor: it records nothing and writes nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from reportsync import retention
from reportsync.config import Config, SourceConfig
from reportsync.errors import ReportsyncError
from reportsync.fetch.archive import LazyGpg
from reportsync.fetch.credentials import expiring_credentials
from reportsync.fetch.executor import Executor
from reportsync.fetch.options import FetchOptions, Reporter, SilentReporter
from reportsync.fetch.plan import plan_source, select_files
from reportsync.fetch.record import Recorder
from reportsync.fetch.results import FetchResult, SourceResult
from reportsync.fetch.transfer import kept_copy_intact, remove_leftovers
from reportsync.fsutil import ensure_private_dir, storage_error
from reportsync.ledger import Ledger, VersionState, refreshed
from reportsync.lock import RunLock
from reportsync.transports import RemoteFile, Transport, open_transport
from reportsync.transports.retry import RetryingTransport, RetryPolicy
from reportsync.vocab import Action, Command

Connect = Callable[[SourceConfig], Transport]


def run(config: Config, options: FetchOptions, reporter: Reporter | None = None, *,
        connect: Connect = open_transport) -> FetchResult:
    """Every selected source, the run recorded. ``connect``: how a source's transport is opened
    (tests pass an in-memory server's)."""
    sources = config.select(options.sources)
    started = time.monotonic()
    now = options.now if options.now is not None else time.time()
    with RunLock(config.settings.state_dir, Command.FETCH), Ledger.in_state_dir(
        config.settings.state_dir, create=not options.dry_run
    ) as ledger:
        run_id = None if options.dry_run else ledger.start_run(Command.FETCH, os.getpid())
        decryptor = LazyGpg(config.settings, config.environ)
        may_decrypt = options.decrypt and not options.dry_run and any(s.decrypt for s in sources)
        expiring = expiring_credentials(config, sources, decryptor, may_decrypt=may_decrypt,
                                        now=now)
        results = [_fetch_source(source, config, ledger, run_id, decryptor, options,
                                 reporter or SilentReporter(), connect, now)
                   for source in sources]
        result = FetchResult(sources=results, dry_run=options.dry_run, run_id=run_id,
                             seconds=time.monotonic() - started, expiring=expiring)
        if run_id is not None:
            for source_result in results:
                counts = {action.value: source_result.count(action) for action in Action
                          if action is not Action.WOULD_FETCH}  # a real run's actions
                error = source_result.error.describe() if source_result.error else None
                ledger.record_source_run(run_id, source_result.name, Command.FETCH,
                                         int(source_result.exit_code), counts, error)
            ledger.finish_run(run_id, int(result.exit_code), result.counts())
    return result


def _fetch_source(source: SourceConfig, config: Config, ledger: Ledger, run_id: int | None,
                  decryptor: LazyGpg, options: FetchOptions, reporter: Reporter,
                  connect: Connect, now: float) -> SourceResult:
    result = SourceResult(name=source.name, protocol=source.protocol)
    policy = RetryPolicy(source.retries, options.backoff_base)

    def connection() -> RetryingTransport:
        return RetryingTransport(lambda: connect(source), policy, source.name)

    try:
        with connection() as transport:
            transport.connect()
            # the one read of the source's ledger rows in this run: the listing (FTP's LIST
            # times), the plan and retention all take it, kept up to date with what is written
            versions = ledger.versions(source.name)
            listing = transport.list_files_knowing([version.version for version in versions])
            candidates, refused = select_files(source, listing)
            result.listed, result.matched = len(listing), len(candidates)
            recorder = None if run_id is None else Recorder(ledger, source.name, run_id)
            if recorder is not None:  # a real run records the listing first: jobs need its ids
                recorder.refused(refused)
                ensure_private_dir(source.download_dir, f"sources.{source.name}.download_dir")
                remove_leftovers(source, candidates)
                versions = recorder.listed(candidates, versions)
            plan = plan_source(candidates, refused, {version.version: version
                                                     for version in versions},
                               decrypt=options.decrypt, dry_run=recorder is None,
                               copy_intact=kept_copy_intact)
            result.files.extend(plan.outcomes)
            if recorder is not None:  # a dry run is the plan without the executor
                execution = Executor(source, recorder, decryptor, reporter, jobs=options.jobs,
                                     archive=options.decrypt, connect=connection
                                     ).run(plan.jobs, transport)
                result.files.extend(execution.outcomes)
                result.error = execution.error
                # what the jobs wrote (and the failures of their names), read back alone
                changed = {job.remote.name for job in plan.jobs}
                if changed:
                    versions = refreshed(versions, ledger.versions(source.name, names=changed))
            _apply_retention(result, source, config, ledger, run_id, candidates, now, transport,
                             versions)
    except ReportsyncError as error:
        result.error = error.with_context(source=source.name)
    except OSError as exc:  # a local write outside the per-file steps
        result.error = storage_error(exc, source.download_dir).with_context(source=source.name)
    for outcome in result.failed:
        if outcome.error is not None:
            outcome.error.with_context(source=source.name, path=outcome.name)
    return result


def _apply_retention(result: SourceResult, source: SourceConfig, config: Config, ledger: Ledger,
                     run_id: int | None, candidates: list[RemoteFile], now: float,
                     transport: RetryingTransport, versions: list[VersionState]) -> None:
    """Warn about at-risk, lost and stale; delete what the policy allows (never in a dry run).
    ``versions``: the source's ledger rows as they are after this run's writes."""
    retention_plan = retention.plan(source, config.retention, versions, candidates, now)
    result.notices = retention_plan.notices
    if run_id is None or result.error is not None:
        return  # a source that stopped early is not the moment to delete anything
    result.held_back = len(retention_plan.held_back)
    result.deletion_cap = retention_plan.cap
    # remote deletions go over the source's connection, reopened if a transfer lost it
    result.deletions = retention.apply(retention_plan, ledger, run_id, transport)
