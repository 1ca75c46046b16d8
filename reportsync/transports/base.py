"""The one interface fetch, retention and doctor talk to, whatever the protocol.

A transport is opened for one source, already logged in and positioned at the source's
``remote_dir``. Names it hands out and takes are plain file names inside that folder. Library
exceptions never leave a transport: they are turned into ``ReportsyncError`` subclasses here, so
the retry policy and exit codes are decided in one place.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from reportsync.errors import (
    ConfigError,
    InternalError,
    NetworkError,
    RemoteChangedError,
    ReportsyncError,
)
from reportsync.fsutil import printable
from reportsync.transports.findings import StepFinding
from reportsync.vocab import CheckStatus, StrEnum

if TYPE_CHECKING:
    from reportsync.config import SecretRef

VersionKey = tuple[str, int, int]
"""(name, size, whole-second mtime): one version of a remote file (``RemoteFile.version``)."""

ProgressCallback = Callable[[int], None]
"""Called with the number of bytes just written, after each chunk."""


class ByteSink(Protocol):
    """Where a download writes: a binary file, or fetch's hashing writer around one."""

    def write(self, data: bytes, /) -> int: ...


@dataclass(frozen=True)
class RemoteFile:
    """A regular file in the remote folder, as the listing describes it.

    ``mtime`` is seconds since the epoch, UTC. Servers differ in resolution (FTP MDTM and many SFTP
    servers give whole seconds), so fetch compares versions at whole-second precision.
    """

    name: str
    size: int
    mtime: float
    # This version's identity, as the ledger keys it: (name, size, whole-second mtime). Made
    # once, a plain attribute (not a property: a run reads it several times for each of 50,000
    # listed files); not compared, not shown, not in JSON.
    version: VersionKey = field(init=False, repr=False, compare=False,
                                metadata={"json": False})

    def __post_init__(self) -> None:
        object.__setattr__(self, "version", (self.name, self.size, int(self.mtime)))


def version_changed(listed: RemoteFile, now: RemoteFile | None, *, mtime_comparable: bool
                    ) -> bool:
    """Whether ``now`` (what the server says of the file at this moment) is another version than
    the one ``listed``: another size, or, where the two clocks agree (``mtime_comparable``),
    another whole-second mtime. ``None`` (the server cannot say) is no evidence of a change."""
    if now is None:
        return False
    if now.size != listed.size:
        return True
    return mtime_comparable and bool(now.mtime) and int(now.mtime) != int(listed.mtime)


def changed_during(listed: RemoteFile, before: RemoteFile | None, after: RemoteFile | None
                   ) -> bool:
    """Whether ``after`` (the server's word once the bytes were read) shows another version than
    ``listed``, or another mtime than ``before`` (asked on the same clock before the transfer):
    the file changed while its bytes were read. ``None`` is no evidence of a change."""
    return after is not None and (after.size != listed.size or (
        before is not None and int(after.mtime) != int(before.mtime)))


def remote_changed(listed: RemoteFile, now: RemoteFile, when: str) -> RemoteChangedError:
    """The error of a file that is no longer the version its listing showed."""
    return RemoteChangedError(
        f"the file changed on the server {when} (listed: {listed.size} bytes, mtime "
        f"{int(listed.mtime)}; now: {now.size} bytes, mtime {int(now.mtime)}): not kept this "
        "run, the next run fetches the new version",
    )


@dataclass
class Download:
    """One file for ``Transport.download_many``: the version the listing showed (``remote``),
    where its bytes go from ``offset`` on (``destination`` is positioned there already)."""

    remote: RemoteFile
    destination: ByteSink
    offset: int = 0
    progress: ProgressCallback | None = None


@dataclass(frozen=True)
class Downloaded:
    """How one ``Download`` ended: ``written`` bytes went to its destination; ``error`` is None
    when they are the listed version's bytes from ``offset`` to the end of the file as the server
    has it (the caller compares the count with the listed size), else why not: a
    ``RemoteChangedError`` (the file is another version now: discard the bytes), a
    ``RemoteError`` (the server refused it), a ``TransferError``."""

    download: Download
    written: int
    error: ReportsyncError | None = None



KnownVersions = Collection[tuple[str, int, int]]
"""Versions of a folder's files the caller has on record, as (name, size, whole-second mtime):
the ledger's keys for the source (``Ledger.versions_by_key``)."""


# --- connection steps (issue 12): what opening a transport does, one typed step at a time ------
#
# Each protocol's ``Connector`` lists the steps that open its connection (resolve, connect, the
# banner, TLS, the host key, the login, the remote folder). ``connect`` runs them for fetch and
# raises the first failure's error; doctor runs the very same steps and shows each one's
# ``StepResult``. So fetch and doctor take one code path, and a fix in a step reaches both.


class Check(StrEnum):
    """A step's name, as doctor shows it (``Finding.check``)."""

    DNS = "dns"
    TCP = "tcp"
    BANNER = "banner"
    TLS = "tls"
    HOST_KEY = "host key"
    AUTH = "auth"
    REMOTE_FOLDER = "remote folder"
    DATA_CHANNEL = "data channel"
    SSH_ENGINE = "ssh engine"
    # the files a transport reads before it touches the network (doctor's config checks)
    KEY_FILE = "key file"
    KNOWN_HOSTS = "known_hosts"
    CA_FILE = "ca_file"


@dataclass(frozen=True)
class StepResult:
    """What one step found: doctor's line (``finding``, ``remedy``, a stable ``finding_id`` that
    docs/troubleshooting.md documents) and, for a FAIL, the ``error`` a fetch raises. The two
    texts may differ: doctor can say more than an error message should."""

    check: Check
    status: CheckStatus
    finding_id: StepFinding
    finding: str
    remedy: str = ""
    error: ReportsyncError | None = None

    @classmethod
    def passed(cls, check: Check, finding_id: StepFinding, finding: str) -> StepResult:
        return cls(check, CheckStatus.PASS, finding_id, finding)

    @classmethod
    def warned(cls, check: Check, finding_id: StepFinding, finding: str, remedy: str
               ) -> StepResult:
        return cls(check, CheckStatus.WARN, finding_id, finding, remedy)

    @classmethod
    def skipped(cls, check: Check, finding_id: StepFinding, reason: str) -> StepResult:
        return cls(check, CheckStatus.SKIPPED, finding_id, f"not checked: {reason}")

    @classmethod
    def failed(cls, check: Check, finding_id: StepFinding, error: ReportsyncError, *,
               finding: str | None = None, remedy: str | None = None) -> StepResult:
        """A FAIL: doctor shows ``finding``/``remedy`` (default: the error's own words)."""
        return cls(check, CheckStatus.FAIL, finding_id,
                   error.message if finding is None else finding,
                   error.remedy if remedy is None else remedy, error)


class StepFailure(Exception):
    """Raised inside a step by the code that knows what went wrong: the finding it stands for,
    the error a fetch reports, and doctor's own words where they differ from the error's."""

    def __init__(self, finding_id: StepFinding, error: ReportsyncError, *,
                 finding: str | None = None, remedy: str | None = None) -> None:
        super().__init__(error.message)
        self.finding_id = finding_id
        self.error = error
        self.finding = finding
        self.remedy = remedy

    def result(self, check: Check) -> StepResult:
        return StepResult.failed(check, self.finding_id, self.error, finding=self.finding,
                                 remedy=self.remedy)


@dataclass(frozen=True)
class Step:
    check: Check
    run: Callable[[], StepResult]


class Connector(abc.ABC):
    """Opens one source's transport, step by step.

    A fetch calls ``prepare`` (every local problem raised before the network is touched), runs
    ``steps`` in order and takes ``transport``; ``connect`` does exactly that. Doctor calls
    ``config_checks`` instead of ``prepare`` (each local problem a finding, nothing raised), shows
    every step's result, then runs the ``probes`` a fetch does not need. ``close`` releases
    whatever is open, the transport too.
    """

    source_name: str
    known_versions: KnownVersions = ()
    """The ledger's versions of this source, if the caller read them before the steps (doctor
    does): the listing a probe or ``list_files`` makes is ``Transport.list_files_knowing``'s."""

    @abc.abstractmethod
    def prepare(self) -> None:
        """Read and check the local files and secrets the connection needs; raise the first
        problem (ConfigError)."""

    @abc.abstractmethod
    def config_checks(self) -> list[StepResult]:
        """Doctor's view of the same files: a result for each, nothing raised. A step whose
        prerequisite is missing then says SKIPPED."""

    @abc.abstractmethod
    def steps(self) -> Sequence[Step]:
        """The steps that open the connection, in order; each needs the ones before it."""

    def probes(self) -> Sequence[Step]:
        """Steps after the connection is up that only doctor runs (FTP's data channel)."""
        return ()

    @abc.abstractmethod
    def transport(self) -> Transport:
        """The logged-in transport, once every step passed (the same one on every call)."""

    def list_files(self) -> list[RemoteFile]:
        """The remote folder's listing: the one a probe already made, else a new one."""
        return self.transport().list_files_knowing(self.known_versions)

    @abc.abstractmethod
    def close(self) -> None:
        """Close whatever is open; never raises."""


def run_steps(connector: Connector) -> None:
    """``prepare``, then every step in order, as a fetch runs them: the first failure is raised
    (``connector`` stays open either way)."""
    connector.prepare()
    for step in connector.steps():
        _raise_failure(connector, step.run())


def _raise_failure(connector: Connector, result: StepResult) -> None:
    if result.status in (CheckStatus.FAIL, CheckStatus.SKIPPED):
        if result.error is not None:
            raise result.error.with_context(source=connector.source_name)
        raise InternalError(f"opening the connection stopped at {result.check}: "
                            f"{result.finding}", source=connector.source_name)


def connect(connector: Connector) -> Transport:
    """Run ``connector``'s steps as a fetch does: the transport, or the first failure raised."""
    return prepared(connector)()


def prepared(connector: Connector) -> Callable[[], Transport]:
    """``connector.prepare()`` now (what needs no network: reading the key and known_hosts,
    choosing the engine), the network steps when the function returned is called: the
    transport, or the first failure raised, as ``connect``."""
    try:
        connector.prepare()
    except BaseException:
        connector.close()
        raise

    def network_steps() -> Transport:
        try:
            for step in connector.steps():
                _raise_failure(connector, step.run())
            return connector.transport()
        except BaseException:
            connector.close()
            raise

    return network_steps


def first_problem(error: ConfigError) -> str:
    """The first problem a ConfigError lists (what a finding about one file or secret shows)."""
    return str(error.problems[0]) if error.problems else error.message


def shown_names(names: Iterable[str], limit: int = 5) -> str:
    """Up to ``limit`` names for a message, escaped, with how many more there are."""
    listed = list(names)
    shown = ", ".join(printable(name, quote=False) for name in listed[:limit])
    return shown + (f" (and {len(listed) - limit} more)" if len(listed) > limit else "")


def secret_where(ref: SecretRef) -> str:
    """Where a configured secret is read from, for a message (never its value)."""
    if ref.env is not None:
        return f"environment variable {ref.env}"
    if ref.file is not None:
        return f"file {ref.file}"
    return "the config file (inline)"


# --- the transport ------------------------------------------------------------------------------


class Transport(abc.ABC):
    """A logged-in connection to one source's remote folder."""

    source_name: str
    stat_mtime_matches_listing: bool = False
    """Whether ``stat``'s mtime is on the same clock as ``list_files``' (SFTP: one attribute;
    FTP: MDTM against MLSD/LIST, which some servers report in different time zones)."""

    @abc.abstractmethod
    def list_files(self) -> list[RemoteFile]:
        """Every regular file in the remote folder (not subfolders, not links to folders)."""

    def list_files_knowing(self, known: KnownVersions) -> list[RemoteFile]:
        """``list_files``, told the versions on record (the ledger's, for this source).

        A transport whose listing is not exact (FTP's LIST: minutes, in the server's zone) may
        give a listed file the recorded mtime the listing agrees with, instead of asking the
        server about every file on every run; what the record does not explain is asked about as
        ``list_files`` would. The result is what ``list_files`` returns. The default ignores the
        record (SFTP's listing is exact)."""
        return self.list_files()

    @abc.abstractmethod
    def download(
        self,
        name: str,
        destination: ByteSink,
        *,
        offset: int = 0,
        progress: ProgressCallback | None = None,
    ) -> int:
        """Write the file's bytes from ``offset`` on to ``destination``; return how many were written.

        ``destination`` is already positioned at ``offset``. A connection lost part-way raises
        ``NetworkError`` after some bytes may have been written: the caller keeps them for a resume.
        """

    def stat(self, name: str) -> RemoteFile | None:
        """The file's current size and mtime, asked of the server now (not from the listing), or
        None if this server cannot say. Fetch compares it with the listing before and after a
        download, so a file that changes meanwhile is never archived as a mix of versions."""
        return None

    def download_many(self, downloads: Iterable[Download]) -> Iterator[Downloaded]:
        """Download several files, each checked against the version its listing showed; yield
        each one's ``Downloaded`` as it ends (not necessarily in the order given).

        The guarantee is ``stat``'s, taken over by the transport: a file that is not the listed
        version when its bytes are read, or changed while they were, ends with a
        ``RemoteChangedError``, so a mix of versions is never kept. An error of one file (the
        server refused it, it changed) is that file's ``Downloaded.error``, and the others go on.
        A ``NetworkError`` ends the batch: it is raised after the files that ended before it were
        yielded; the others did not end (their destinations may hold part of their bytes, to
        resume from). An exception raised by a destination or a progress callback passes through
        unchanged, and the downloads not yielded by then did not end either.

        This default takes one file after the other: ``stat``, ``download``, ``stat``. A protocol
        that can keep several files in flight overrides it (SFTP on one connection, plain FTP
        over several control connections: ``transports/ftp/lanes.py``).
        """
        for item in downloads:
            yield self.download_checked(item)

    def download_checked(self, item: Download) -> Downloaded:
        """One ``Download`` as ``download_many`` takes it, one round of requests after another:
        the server's size and mtime before the transfer, the bytes, the size and mtime after."""
        listed = item.remote
        sink = CountingSink(item.destination)
        try:
            before = self.stat(listed.name)
            if version_changed(listed, before, mtime_comparable=self.stat_mtime_matches_listing):
                assert before is not None
                return Downloaded(item, 0, remote_changed(listed, before, "after it was listed"))
            if item.offset < listed.size or listed.size == 0:
                self.download(listed.name, sink, offset=item.offset, progress=item.progress)
                after = self.stat(listed.name)  # the same clock as ``before``: any change shows
                if changed_during(listed, before, after):
                    assert after is not None
                    return Downloaded(item, sink.written,
                                      remote_changed(listed, after, "during the download"))
        except ReportsyncError as error:
            if isinstance(error, NetworkError) or sink.failed is not None:
                raise
            return Downloaded(item, sink.written, error)
        return Downloaded(item, sink.written)

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Remove the file from the server."""

    @abc.abstractmethod
    def close(self) -> None:
        """Log out and close the connection; never raises."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class CountingSink:
    """Passes writes on, counts them, and remembers an exception raised by the destination itself
    (disk full, more bytes than listed): no retry can help with it, and ``download_many`` passes
    it through unchanged, whatever its type."""

    def __init__(self, destination: ByteSink) -> None:
        self._destination = destination
        self.written = 0
        self.failed: BaseException | None = None

    def write(self, data: bytes, /) -> int:
        try:
            self._destination.write(data)
        except BaseException as exc:
            self.failed = exc
            raise
        self.written += len(data)
        return len(data)
