"""The words reportsync records and prints, one enum per vocabulary.

Each member's value is the string the ledger, ``--json`` and the docs have always used, and a
member *is* that string (``Action.ARCHIVED == "archived"``, ``f"{Action.ARCHIVED}"`` and
``json.dumps`` give ``archived``): code names the member, stored data does not change.
"""

from __future__ import annotations

from enum import Enum


class StrEnum(str, Enum):
    """``enum.StrEnum`` of Python 3.11, for 3.10: members are their string values."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, format_spec: str) -> str:
        return format(str(self.value), format_spec)


class Action(StrEnum):
    """What a fetch did with one remote file (``FileOutcome.action``; the run's counts)."""

    ARCHIVED = "archived"  # in output_dir, decrypted if it was PGP, recorded
    DOWNLOADED = "downloaded"  # in download_dir only (--no-decrypt); a later run archives it
    SKIPPED = "skipped"  # archived before: nothing to do
    ACKNOWLEDGED = "acknowledged"  # its failure was acknowledged (status --ack): not retried
    WOULD_FETCH = "would-fetch"  # a dry run: the next real run fetches it
    FAILED = "failed"  # this file failed this run; the next run tries again
    REFUSED = "refused"  # its name is unsafe: never fetched
    PENDING = "pending"  # not tried (the source stopped early), or changed while fetched


class Stage(StrEnum):
    """Where a file's failure happened (the ledger's ``failures.stage``)."""

    NAME = "name"  # the name was refused as unsafe
    DOWNLOAD = "download"
    ARCHIVE = "archive"  # decrypting or copying into output_dir
    HOOK = "hook"  # the source's on_new_report hook failed for the archived report


class HookState(StrEnum):
    """Where a report's ``on_new_report`` hook stands (the ledger's ``hooks.state``)."""

    DUE = "due"  # archived while a hook was configured; not run yet
    FAILED = "failed"  # ran and failed (exit code, timeout, could not start): runs again
    SUCCEEDED = "succeeded"  # exited 0: never runs again for this report


class NoticeKind(StrEnum):
    """What retention's planner warns about (``retention.Notice.kind``)."""

    AT_RISK = "at-risk"  # not archived, and the provider's purge is near
    LOST = "lost"  # never archived and purged (or gone from the server)
    STALE = "stale"  # no new file for longer than expect_every_days
    DELETIONS_WITHHELD = "deletions-withheld"  # the whole folder looks expired: no deletion


class DeletionTarget(StrEnum):
    """Which copy of a report a deletion removes (the ledger's ``deletions.target``)."""

    LOCAL_ENCRYPTED = "local_encrypted"  # the encrypted download in download_dir
    ARCHIVE = "archive"  # the archived report in output_dir
    REMOTE = "remote"  # the file on the provider's server


class LocalEncryptedPolicy(StrEnum):
    """``retention.local_encrypted``."""

    KEEP = "keep"
    EXPIRE = "expire"


class RemotePolicy(StrEnum):
    """``retention.remote``."""

    KEEP = "keep"
    DELETE_AFTER_FETCH = "delete-after-fetch"
    DELETE_EXPIRED = "delete-expired"


class CheckStatus(StrEnum):
    """A doctor finding's verdict."""

    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIPPED = "SKIPPED"  # its prerequisite failed


class ProtocolName(StrEnum):
    """A source's ``protocol``."""

    SFTP = "sftp"
    FTP = "ftp"
    FTPS = "ftps"


class Command(StrEnum):
    """The command a run (ledger ``runs.command``, ``source_runs.command``) or the run lock
    belongs to."""

    FETCH = "fetch"
    RETENTION = "retention"
    DOCTOR = "doctor"


class SshEngine(StrEnum):
    """What speaks SSH for an SFTP session (``transports.sftp.session``); a source's
    ``ssh_engine`` key picks one, ``auto`` lets ``transports.sftp.engine`` choose."""

    OPENSSH = "openssh"  # an ``ssh -s sftp`` child (transports/sftp/openssh.py)
    PARAMIKO = "paramiko"  # in-process
