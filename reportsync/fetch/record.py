"""Every ledger write of one source's fetch goes through here.

One place, so the order the crash-consistency argument rests on is visible (a file is renamed
into place first, recorded after; a killed run in between is reconciled by the next run adopting
the file), and so batching the writes (issue 13: group commits) is a change of this class alone.
"""

from __future__ import annotations

from reportsync.fetch.archive import Archived
from reportsync.fetch.plan import HookJob, Job
from reportsync.fetch.results import FileOutcome
from reportsync.fetch.transfer import Downloaded
from reportsync.ledger import Ledger, VersionState
from reportsync.transports import RemoteFile
from reportsync.vocab import Stage


class Recorder:
    def __init__(self, ledger: Ledger, source: str, run_id: int, *, hooks: bool = False) -> None:
        self._ledger = ledger
        self._source = source
        self._run_id = run_id
        self._hooks = hooks  # the source has an on_new_report hook: each archive makes one due

    def listed(self, candidates: list[RemoteFile], known: list[VersionState]
               ) -> list[VersionState]:
        """These versions are on the server now; the source's others are gone from it. ``known``:
        the source's versions read at the start of the run; returned as they are now."""
        return self._ledger.see_listing(self._source, {remote.version for remote in candidates},
                                        known)

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

    def failed(self, job: Job, stage: Stage, reason: str) -> int:
        """Record (or count again) this file's failure; returns how many attempts it has had."""
        return self._ledger.record_failure(self._source, job.remote.name, job.file_id,
                                           self._run_id, stage, reason)
