"""One error hierarchy: every failure carries its exit code, whether a retry may help, and a remedy.

Core modules raise these; only ``cli.py`` turns them into text and an exit status.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeVar

_Error = TypeVar("_Error", bound="ReportsyncError")


class ExitCode(IntEnum):
    OK = 0
    PARTIAL = 1  # some files failed, others succeeded; or doctor found a FAIL
    CONFIG = 2  # usage or configuration error
    NETWORK = 3  # DNS, refused, timed out, connection lost
    AUTH = 4  # authentication refused
    HOST_KEY = 5  # host key unknown or changed
    DECRYPT = 6  # gpg missing, no secret key, bad passphrase
    STORAGE = 7  # permission denied, disk full
    LOCKED = 75  # another run holds the lock (EX_TEMPFAIL, so cron wrappers may retry)


# When several sources fail differently, the first code in this list wins (SPEC.md, Exit codes).
EXIT_CODE_PRIORITY: tuple[ExitCode, ...] = (
    ExitCode.CONFIG,
    ExitCode.HOST_KEY,
    ExitCode.AUTH,
    ExitCode.DECRYPT,
    ExitCode.STORAGE,
    ExitCode.NETWORK,
    ExitCode.PARTIAL,
)


def most_severe(codes: Iterable[int]) -> ExitCode:
    """The exit code a run reports when its parts ended with ``codes``."""
    present = {ExitCode(code) for code in codes}
    if ExitCode.LOCKED in present:
        return ExitCode.LOCKED
    for code in EXIT_CODE_PRIORITY:
        if code in present:
            return code
    return ExitCode.OK


class ReportsyncError(Exception):
    """Base of every error reportsync reports to a person.

    ``source`` and ``path`` name what the error concerns, so a message read in a cron mail is
    actionable without the log.
    """

    exit_code: ExitCode = ExitCode.PARTIAL
    retryable: bool = False
    default_remedy: str = ""

    def __init__(
        self,
        message: str,
        *,
        remedy: str | None = None,
        source: str | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.remedy = remedy if remedy is not None else self.default_remedy
        self.source = source
        self.path = path

    def with_context(self, *, source: str | None = None, path: str | None = None) -> ReportsyncError:
        """Fill in what the error concerns where the raiser did not know it."""
        if self.source is None:
            self.source = source
        if self.path is None:
            self.path = path
        return self

    def copy(self: _Error) -> _Error:
        """This error again, for another file or source: one error object raised for several
        files would name the first one's path in every line (``with_context`` fills in only
        what is missing), so each gets a copy of its own."""
        return copy.copy(self)

    def describe(self) -> str:
        """One line: where, what went wrong."""
        where = []
        if self.source:
            where.append(f"source {self.source!r}")
        if self.path and self.path not in self.message:
            # a remote name or a local path: escaped if it holds anything a terminal would act on
            from reportsync.fsutil import printable  # fsutil imports this module

            where.append(printable(self.path, quote=False))
        prefix = f"{', '.join(where)}: " if where else ""
        return f"{prefix}{self.message}"

    def to_dict(self) -> dict[str, object]:
        return {
            "error": type(self).__name__,
            "exit_code": int(self.exit_code),
            "message": self.message,
            "remedy": self.remedy,
            "source": self.source,
            "path": self.path,
            "retryable": self.retryable,
        }

    def __str__(self) -> str:
        return self.describe()


class UsageError(ReportsyncError):
    exit_code = ExitCode.CONFIG
    default_remedy = "Run `reportsync --help` for the commands and options."


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: the key it concerns (``sources.ibkr.port``; None when the
    problem is about the file as a whole) and what is wrong. ``str()`` is the line the user reads:
    ``sources.ibkr.port: must be between 1 and 65535``."""

    key: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message


class ConfigError(ReportsyncError):
    """Every problem found in a config file, reported together.

    ``problems`` are :class:`Problem` objects, so a reader (doctor) takes the key from
    ``problem.key`` instead of parsing the text; a plain string is a problem without a key.
    """

    exit_code = ExitCode.CONFIG
    default_remedy = "Fix the config file, then run `reportsync doctor`."

    def __init__(self, problems: Iterable[Problem | str], *, path: str | None = None,
                 remedy: str | None = None):
        self.problems: list[Problem] = [
            problem if isinstance(problem, Problem) else Problem(None, problem)
            for problem in problems
        ]
        if len(self.problems) == 1:
            message = f"config problem: {self.problems[0]}"
        else:
            listing = "\n".join(f"  - {problem}" for problem in self.problems)
            message = f"{len(self.problems)} config problems:\n{listing}"
        super().__init__(message, remedy=remedy, path=path)

    def to_dict(self) -> dict[str, object]:
        result = super().to_dict()
        result["problems"] = [str(problem) for problem in self.problems]
        return result


class NetworkError(ReportsyncError):
    """DNS failure, refused or timed-out connection, a connection lost mid-transfer."""

    exit_code = ExitCode.NETWORK
    retryable = True
    default_remedy = "Check the host, port and your network; run `reportsync doctor`."


class TooManyConnectionsError(NetworkError):
    """The server refused one more session (FTP 421 "too many connections"): it allows fewer
    than were opened. Not a failure of the file being fetched: a caller running several
    connections keeps the ones it has and goes on with fewer; a lone connection refused so is
    retried like any network error (another client may hold the sessions). ``limit`` is the
    number of sessions the server named, if it did (None: it did not say)."""

    def __init__(self, message: str, *, limit: int | None = None, remedy: str | None = None,
                 source: str | None = None, path: str | None = None) -> None:
        super().__init__(message, remedy=remedy, source=source, path=path)
        self.limit = limit


class AuthenticationError(ReportsyncError):
    """The server refused the credentials; retrying would only lock the account."""

    exit_code = ExitCode.AUTH
    default_remedy = (
        "Check the username and the password or key the config names; "
        "run `reportsync doctor` to see what the server offers."
    )


class HostKeyError(ReportsyncError):
    """The server's SSH host key is unknown or differs from the one on record."""

    exit_code = ExitCode.HOST_KEY
    default_remedy = (
        "Compare the fingerprint with the one your provider publishes, then add it to "
        "`known_hosts` or set `host_key_fingerprint`."
    )


class TlsError(ReportsyncError):
    """An FTPS server certificate that does not verify: treated like an unknown host key."""

    exit_code = ExitCode.HOST_KEY
    default_remedy = (
        "The server's TLS certificate did not verify; check the host name, or install the "
        "provider's CA certificate."
    )


class DecryptionError(ReportsyncError):
    """gpg could not turn this one file into a verified plaintext (the others may be fine)."""

    exit_code = ExitCode.PARTIAL
    # every DecryptionError reportsync raises names its own remedy (tests check the source);
    # this one only says what is true of them all
    default_remedy = (
        "The encrypted copy is kept in download_dir and the next run tries again; "
        "`reportsync doctor` checks gpg and your keys."
    )


class KeyProblemError(ReportsyncError):
    """Decryption cannot work at all: gpg missing, no usable secret key, a bad passphrase."""

    exit_code = ExitCode.DECRYPT
    default_remedy = "Run `reportsync doctor` to check gpg, the GnuPG home and the passphrase."


class BackupError(ReportsyncError):
    """A key backup that cannot give its keys back: damaged, truncated, not a backup at all, or
    holding no config. A key problem (exit 6), like a wrong passphrase: the keys it should
    restore are out of reach; a usage error (2) would send the person to their options."""

    exit_code = ExitCode.DECRYPT
    default_remedy = "Use another copy of the backup; nothing was written."


class BackupPassphraseError(BackupError):
    """The passphrase does not open the backup (its check value does not match)."""

    default_remedy = "Check the passphrase (and the variable --passphrase-env names); nothing was written."


class LedgerVersionError(ReportsyncError):
    """The ledger was written by a newer reportsync (its schema is newer than this version
    reads). Not a storage fault: the data is fine and nothing is written; this installation is
    the wrong version for it, so it is a usage problem (2) for both ledgers, SQLite and
    PostgreSQL alike (docs/commands.md)."""

    exit_code = ExitCode.CONFIG
    default_remedy = "Upgrade reportsync on this machine to the version that wrote the ledger."


class StorageError(ReportsyncError):
    """A local write failed: permission denied, disk full, a read-only folder."""

    exit_code = ExitCode.STORAGE
    default_remedy = "Free disk space or fix the folder's permissions, then run again."


class LedgerDamagedError(StorageError):
    """The SQLite ledger's file is damaged (a page fails SQLite's own check, or a read finds it
    malformed): nothing more is read from it or written to it. Not a full disk, nor a folder's
    permissions: those are plain StorageErrors, and the ledger is never blamed for them."""

    default_remedy = (
        "Stop the scheduled runs and keep a copy of the damaged file. Restore the ledger from "
        "a backup; or move the file aside and run again: a new ledger starts empty, files still "
        "on the server are fetched again, and a report already archived with the same bytes "
        "keeps its name.")


class TransferError(ReportsyncError):
    """One file's transfer did not complete correctly (short, too long, vanished)."""

    exit_code = ExitCode.PARTIAL
    retryable = True
    default_remedy = "The next run tries this file again; if it keeps failing run `reportsync doctor`."


class UnsafeNameError(ReportsyncError):
    """The server offered a file name that could escape the configured folders."""

    exit_code = ExitCode.PARTIAL
    default_remedy = (
        "The file was not downloaded. Ask the provider why such a name is in your folder."
    )


class RemoteChangedError(ReportsyncError):
    """The remote file changed between the listing and its download (a delivery still being
    written, or replaced): its bytes are not kept, and the next run fetches the new version."""

    exit_code = ExitCode.PARTIAL
    default_remedy = "Nothing to do: the next run fetches the file's new version."


class RemoteError(ReportsyncError):
    """The server refused an operation on a file or folder (missing, permission denied)."""

    exit_code = ExitCode.PARTIAL
    default_remedy = "Check `remote_dir` and your permissions on the server; run `reportsync doctor`."


class HookError(ReportsyncError):
    """A source's ``on_new_report`` hook failed for one archived report (exited non-zero, ran
    past ``hook_timeout``, or could not start): that report's failure; the others go on."""

    exit_code = ExitCode.PARTIAL
    default_remedy = (
        "The report is archived; fix the hook (on_new_report) and it runs again for this report "
        "on the next fetch, or acknowledge it with `reportsync status --ack NAME` to stop that."
    )


class LockHeldError(ReportsyncError):
    exit_code = ExitCode.LOCKED
    default_remedy = "Another reportsync run is active; wait for it to finish."


class InternalError(ReportsyncError):
    """A defect in reportsync itself; the file it hit is retried on the next run."""

    exit_code = ExitCode.PARTIAL
    default_remedy = (
        "This is a bug in reportsync: run again with -vv and report the log "
        "(state_dir/logs/reportsync.log)."
    )
