"""One ``reportsync fetch``: lock, ledger, then per source (under its lock) list → plan → execute
→ retention.

Everything a source can fail with is a ``ReportsyncError``; a failure of one file is recorded and
the others go on; a failure of the source (cannot connect, host key, disk full) ends that source
only. A dry run is the plan without the executor: it records nothing and writes nothing.
Which runs may overlap is ``runguard``'s: the state dir's run lock with the embedded ledger, the
source's lock in a shared one (a source another host holds is skipped, naming it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Iterator
from contextlib import ExitStack

from reportsync import retention
from reportsync.background import Background
from reportsync.config import Config, SourceConfig
from reportsync.errors import ReportsyncError
from reportsync.fetch.archive import LazyGpg
from reportsync.fetch.credentials import expiring_credentials
from reportsync.fetch.executor import Executor
from reportsync.fetch.handoff import hand_off
from reportsync.fetch.options import FetchOptions, Reporter, SilentReporter
from reportsync.fetch.plan import plan_source, select_files
from reportsync.fetch.record import Recorder
from reportsync.fetch.results import FetchResult, SourceResult
from reportsync.fetch.transfer import kept_copy_intact, remove_leftovers
from reportsync.fsutil import ensure_private_dir, storage_error
from reportsync.gcpause import collector_paused
from reportsync.ledger import Ledger, VersionIndex, VersionState, open_ledger, refreshed
from reportsync.runguard import run_lock, source_turn
from reportsync.transports import RemoteFile, open_transport
from reportsync.transports.base import VersionKey
from reportsync.transports.head_start import Connect
from reportsync.transports.retry import RetryingTransport, RetryPolicy
from reportsync.vocab import Action, Command


def run(config: Config, options: FetchOptions, reporter: Reporter | None = None, *,
        connect: Connect = open_transport) -> FetchResult:
    """Every selected source, the run recorded. ``connect``: how a source's transport is opened
    (tests pass an in-memory server's)."""
    sources = config.select(options.sources)
    started = time.monotonic()
    now = options.now if options.now is not None else time.time()
    reporter = reporter or SilentReporter()
    announce = _StartAnnouncer(reporter)
    with ExitStack() as held:
        if held.enter_context(run_lock(config.settings, Command.FETCH)):
            announce()  # the whole run is ours (a ledger that cannot be opened ends a started run)
        ledger = held.enter_context(open_ledger(config.settings, environ=config.environ,
                                                create=not options.dry_run))
        run_id = None if options.dry_run else ledger.start_run(Command.FETCH, os.getpid())
        decryptor = LazyGpg(config.settings, config.environ)
        may_decrypt = options.decrypt and not options.dry_run and any(s.decrypt for s in sources)
        expiring = expiring_credentials(config, sources, decryptor, may_decrypt=may_decrypt,
                                        now=now)
        results = []
        for source in sources:
            with source_turn(ledger, source.name, Command.FETCH) as turn:
                if turn.ours:
                    announce()  # with a shared ledger: its first source's lock is ours
                    results.append(_fetch_source(source, config, ledger, run_id, decryptor,
                                                 options, reporter, connect, now))
                else:  # held by another run, or the lock could not be asked for
                    results.append(SourceResult(name=source.name, protocol=source.protocol,
                                                holder=turn.holder, error=turn.error))
        result = FetchResult(sources=results, dry_run=options.dry_run, run_id=run_id,
                             seconds=time.monotonic() - started, expiring=expiring)
        if run_id is not None:
            for source_result in results:
                if source_result.skipped_held:
                    continue  # its run is the holder's to record
                counts = {action.value: source_result.count(action) for action in Action
                          if action is not Action.WOULD_FETCH}  # a real run's actions
                error = source_result.error.describe() if source_result.error else None
                ledger.record_source_run(run_id, source_result.name, Command.FETCH,
                                         int(source_result.exit_code), counts, error)
            ledger.finish_run(run_id, int(result.exit_code), result.counts())
    return result


class _StartAnnouncer:
    """``Reporter.run_started``, once, when the run first holds a lock (the whole run's, or with
    a shared ledger its first source's): a run that stops at the locks (exit 75) never reports a
    start, and nothing probes a lock before taking it (that would race another run)."""

    def __init__(self, reporter: Reporter) -> None:
        self._reporter = reporter
        self._done = False

    def __call__(self) -> None:
        if not self._done:
            self._done = True
            self._reporter.run_started()


def _fetch_source(source: SourceConfig, config: Config, ledger: Ledger, run_id: int | None,
                  decryptor: LazyGpg, options: FetchOptions, reporter: Reporter,
                  connect: Connect, now: float) -> SourceResult:
    result = SourceResult(name=source.name, protocol=source.protocol)
    policy = RetryPolicy(source.retries, options.backoff_base)

    def connection() -> RetryingTransport:
        return RetryingTransport(lambda: connect(source), policy, source.name)

    try:
        with connection() as transport:
            with collector_paused():  # 50,000-entry listings and indexes: gcpause.py
                # the one read of every ledger row of the source in this run, compactly: the
                # listing (FTP's LIST times), the plan and retention take it; in full only the
                # versions that can act (not archived, or old enough for retention), read after
                # the listing is recorded and kept up to date with what the jobs write. Read
                # on a thread while the server logs in and lists (the ledger is the thread's
                # alone until ``_listed_knowing`` returns)
                index_read = Background(lambda: ledger.version_index(source.name),
                                        f"ledger-read-{source.name}")
                listing = _listed_knowing(transport, index_read)
                index = index_read.result()
                candidates, refused = select_files(source, listing)
                result.listed, result.matched = len(listing), len(candidates)
                recorder = None if run_id is None else Recorder(
                    ledger, source.name, run_id, hooks=bool(source.on_new_report))
                if recorder is not None:  # a real run records the listing first: jobs need ids
                    recorder.refused(refused)
                    ensure_private_dir(source.download_dir,
                                       f"sources.{source.name}.download_dir")
                    remove_leftovers(source, candidates)
                    index = recorder.listed(candidates, index)
                versions = ledger.acting_versions(source.name, index, archived_before=(
                    retention.acting_before(config.retention, now, server_asked=True)))
                plan = plan_source(candidates, refused, {version.version: version
                                                         for version in versions},
                                   archived=index.archived, decrypt=options.decrypt,
                                   dry_run=recorder is None, copy_intact=kept_copy_intact)
                result.files.extend(plan.outcomes)
                result.skipped.extend(plan.skipped)
                result.refused, result.listed_end = plan.refused, len(plan.outcomes)
            if recorder is not None:  # a dry run is the plan without the executor
                execution = Executor(source, recorder, decryptor, reporter, jobs=options.jobs,
                                     archive=options.decrypt, connect=connection
                                     ).run(plan.jobs, transport)
                result.files.extend(execution.outcomes)
                result.error = execution.error
                if source.on_new_report:  # the new reports, archived and recorded: hand off
                    hand_off(source, config, ledger, recorder, result)
                # what the jobs wrote (and the failures of their names), read back alone
                changed = {job.remote.name for job in plan.jobs}
                if changed:
                    versions = refreshed(versions, ledger.versions(source.name, names=changed))
            with collector_paused():
                _apply_retention(result, source, config, ledger, run_id, candidates, now,
                                 transport, versions, index)
    except ReportsyncError as error:
        result.error = error.with_context(source=source.name)
    except OSError as exc:  # a local write outside the per-file steps
        result.error = storage_error(exc, source.download_dir).with_context(source=source.name)
    for outcome in result.failed:
        if outcome.error is not None:
            outcome.error.with_context(source=source.name, path=outcome.name)
    return result


def _listed_knowing(transport: RetryingTransport, index_read: Background[VersionIndex]
                    ) -> list[RemoteFile]:
    """Connect and list, the index (being read) handed to the listing for FTP's LIST times;
    the read has ended when this returns, whichever way."""
    try:
        transport.connect()
        return transport.list_files_knowing(_KnownOnceRead(index_read))
    finally:
        index_read.wait()


class _KnownOnceRead(Collection[VersionKey]):
    """The versions on record, for ``list_files_knowing``: waits for the ledger read on first
    use (FTP looks only once LIST's lines are in; SFTP never does)."""

    def __init__(self, index_read: Background[VersionIndex]) -> None:
        self._index_read = index_read

    def _known(self) -> Collection[VersionKey]:
        return self._index_read.result().ids.keys()

    def __contains__(self, key: object) -> bool:
        return key in self._known()

    def __iter__(self) -> Iterator[VersionKey]:
        return iter(self._known())

    def __len__(self) -> int:
        return len(self._known())


def _apply_retention(result: SourceResult, source: SourceConfig, config: Config, ledger: Ledger,
                     run_id: int | None, candidates: list[RemoteFile], now: float,
                     transport: RetryingTransport, versions: list[VersionState],
                     index: VersionIndex) -> None:
    """Warn about at-risk, lost and stale; delete what the policy allows (never in a dry run).
    ``versions``: the source's ledger rows that can act, as they are after this run's writes;
    ``index``: all of them, compactly."""
    retention_plan = retention.plan(source, config.retention, versions, candidates, now,
                                    settled=index)
    result.notices = retention_plan.notices
    if run_id is None or result.error is not None:
        return  # a source that stopped early is not the moment to delete anything
    result.held_back = len(retention_plan.held_back)
    result.deletion_cap = retention_plan.cap
    # remote deletions go over the source's connection, reopened if a transfer lost it
    result.deletions = retention.apply(retention_plan, ledger, run_id, transport)
