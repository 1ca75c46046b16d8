"""Every ledger write of one source's fetch goes through here.

One place, so the order the crash-consistency argument rests on is visible (a file is renamed
into place first, recorded after; a killed run in between is reconciled by the next run adopting
the file). The executor records a batch of files in one transaction (``downloaded_many``,
``archived_many``: group commits, one ledger fsync per batch), and only after the batch's files
and their folder were fsynced (docs/fetch.md, "Batches and power loss").
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

from reportsync.errors import ReportsyncError
from reportsync.fetch.archive import Archived
from reportsync.fetch.plan import HookJob, Job
from reportsync.fetch.results import FileOutcome
from reportsync.fetch.transfer import Downloaded
from reportsync.ledger import Ledger, VersionIndex
from reportsync.transports import RemoteFile
from reportsync.vocab import Stage


class Recorder:
    def __init__(self, ledger: Ledger, source: str, run_id: int, *, hooks: bool = False) -> None:
        self._ledger = ledger
        self._source = source
        self._run_id = run_id
        self._hooks = hooks  # the source has an on_new_report hook: each archive makes one due

    def listed(self, candidates: list[RemoteFile], index: VersionIndex) -> VersionIndex:
        """These versions are on the server now; the source's others are gone from it. ``index``:
        the source's versions read at the start of the run; returned as they are now."""
        return self._ledger.see_listing(self._source, {remote.version for remote in candidates},
                                        index)

    def refused(self, outcomes: list[FileOutcome]) -> None:
        for outcome in outcomes:
            self._ledger.record_failure(self._source, outcome.name, None, self._run_id, Stage.NAME,
                                        outcome.error.message if outcome.error else "refused")

    def downloaded(self, job: Job, downloaded: Downloaded) -> None:
        self._ledger.record_download(job.file_id, self._run_id, downloaded.path,
                                     job.remote.size, downloaded.sha256)

    def archived(self, job: Job, archived: Archived) -> None:
        """The report is in the archive; with a hook, its hook is due, in the same commit (a run
        killed between the two cannot leave an archived report whose hook never runs)."""
        with self._ledger.transaction():
            self._ledger.record_archived(job.file_id, self._run_id, archived.path, archived.size,
                                         archived.sha256, decrypted=archived.decrypted,
                                         signer=archived.signer, signature=archived.signature)
            if self._hooks:
                self._ledger.record_hook_due(job.file_id, self._run_id)

    def hook_succeeded(self, job: HookJob) -> None:
        self._ledger.record_hook(job.file_id, self._run_id, succeeded=True, exit_code=0)

    def hook_failed(self, job: HookJob, exit_code: int | None, reason: str) -> int:
        """The hook failed: the report's failure (stage ``hook``); returns how often it ran."""
        with self._ledger.transaction():
            self._ledger.record_failure(self._source, job.name, job.file_id, self._run_id,
                                        Stage.HOOK, reason)
            return self._ledger.record_hook(job.file_id, self._run_id, succeeded=False,
                                            exit_code=exit_code, reason=reason)

    def downloaded_many(self, done: Sequence[tuple[Job, Downloaded]]
                        ) -> list[ReportsyncError | None]:
        """Record durable downloads in one transaction; per file None, or the error that kept
        it from being recorded (the others are recorded all the same)."""
        return self._group([functools.partial(self.downloaded, job, item) for job, item in done])

    def archived_many(self, done: Sequence[tuple[Job, Archived]]) -> list[ReportsyncError | None]:
        """Record durable reports in one transaction, as ``downloaded_many``."""
        return self._group([functools.partial(self.archived, job, item) for job, item in done])

    def _group(self, writes: Sequence[Callable[[], None]]) -> list[ReportsyncError | None]:
        errors: list[ReportsyncError | None] = []
        if not writes:
            return errors
        with self._ledger.transaction():  # each write in a savepoint: a failed one is undone alone
            for write in writes:
                try:
                    write()
                except ReportsyncError as error:
                    errors.append(error)
                else:
                    errors.append(None)
        return errors

    def failed(self, job: Job, stage: Stage, reason: str) -> int:
        """Record (or count again) this file's failure; returns how many attempts it has had."""
        return self._ledger.record_failure(self._source, job.remote.name, job.file_id,
                                           self._run_id, stage, reason)
