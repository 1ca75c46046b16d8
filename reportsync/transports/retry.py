"""The one retry policy: transient errors are retried with backoff, everything else fails at once.

``RetryingTransport`` wraps a transport the way restic's ``backend/retry`` and rclone's
``fserrors`` do: fetch and retention talk to it like to any transport, and it reconnects and
tries again where a retry may help. A download cut short resumes from the bytes already written
to its sink (the sink only ever appends). What the errors themselves say decides: ``retryable``
(network errors, a transfer that ended early), never the message text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from reportsync.errors import ReportsyncError, TooManyConnectionsError, TransferError
from reportsync.fsutil import printable
from reportsync.transports.base import (
    ByteSink,
    CountingSink,
    KnownVersions,
    ProgressCallback,
    RemoteFile,
    Transport,
)
from reportsync.units import MAX_BACKOFF

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` more attempts after the first, waiting ``backoff_base`` seconds before the
    first retry and twice as long before each later one, at most ``max_backoff``."""

    retries: int
    backoff_base: float = 1.0
    max_backoff: float = MAX_BACKOFF
    sleep: Callable[[float], None] = time.sleep

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1 = the first)."""
        return float(min(self.backoff_base * (2 ** (attempt - 1)), self.max_backoff))

    def call(self, action: Callable[[], T], what: str, *,
             retry_if: Callable[[ReportsyncError], bool] = lambda error: error.retryable,
             attempts_made: int = 0) -> T:
        """``action()``, again after each error ``retry_if`` accepts, until the retries are used
        up; then, and for any other error, the error is raised as it is. ``attempts_made``: failed
        attempts that count already (made another way; the first call here is a retry then)."""
        attempt = attempts_made
        while True:
            attempt += 1
            try:
                return action()
            except ReportsyncError as error:
                if attempt > self.retries or not retry_if(error):
                    raise
                delay = self.delay(attempt)
                log.info("%s failed: %s; retry %d of %d in %.1fs", what, error.message, attempt,
                         self.retries, delay)
                self.sleep(delay)


def incomplete_transfer(received: int, expected: int) -> TransferError:
    """The error of a transfer that ended cleanly but short of the listed size."""
    return TransferError(f"transfer incomplete: got {received} of {expected} bytes "
                         "(the server ended the transfer early)")


class RetryingTransport(Transport):
    """A transport that connects when first used, reconnects after a transient error and retries
    the operation under ``policy``.

    Once reconnecting has failed after every retry, the transport is ``down``: every later call
    raises that error at once, so a source whose server went away stops instead of waiting out
    the backoff again for each remaining file.
    """

    def __init__(self, opener: Callable[[], Transport], policy: RetryPolicy,
                 source_name: str) -> None:
        self._open = opener
        self._policy = policy
        self._inner: Transport | None = None
        self.source_name = source_name
        self.down: ReportsyncError | None = None
        self.connections = 0  # opened so far

    def connect(self, *, retry_refused: bool = True) -> Transport:
        """The connected transport, opened (with retries) if there is none. ``retry_refused``
        False: a server refusing one more session (TooManyConnectionsError) is not asked again
        (a caller with other connections goes on with those)."""
        if self.down is not None:
            raise self.down
        if self._inner is None:
            what = f"source {self.source_name}: " + ("connect" if not self.connections
                                                     else "reconnect")
            def worth_retrying(error: ReportsyncError) -> bool:
                return error.retryable and (
                    retry_refused or not isinstance(error, TooManyConnectionsError))

            try:
                self._inner = self._policy.call(self._open, what, retry_if=worth_retrying)
            except ReportsyncError as error:
                self.down = error
                raise
            self.connections += 1
            self.stat_mtime_matches_listing = self._inner.stat_mtime_matches_listing
        return self._inner

    def drop(self) -> None:
        """Close the connection (it is unusable after a transfer cut short); the next call opens
        a new one."""
        if self._inner is not None:
            self._inner.close()
            self._inner = None

    def _retried(self, operation: Callable[[Transport], T], what: str, *,
                 given_up: Callable[[], bool] = lambda: False, attempts_made: int = 0) -> T:
        def attempt() -> T:
            transport = self.connect()
            try:
                return operation(transport)
            except ReportsyncError as error:
                if error.retryable:
                    self.drop()
                raise

        def worth_retrying(error: ReportsyncError) -> bool:
            return error.retryable and self.down is None and not given_up()

        return self._policy.call(attempt, f"source {self.source_name}: {what}",
                                 retry_if=worth_retrying, attempts_made=attempts_made)

    def list_files(self) -> list[RemoteFile]:
        return self._retried(lambda transport: transport.list_files(), "list")

    def list_files_knowing(self, known: KnownVersions) -> list[RemoteFile]:
        return self._retried(lambda transport: transport.list_files_knowing(known), "list")

    def stat(self, name: str) -> RemoteFile | None:
        return self._retried(lambda transport: transport.stat(name), f"stat {printable(name)}")

    def delete(self, name: str) -> None:
        self._retried(lambda transport: transport.delete(name), f"delete {printable(name)}")

    def download(
        self,
        name: str,
        destination: ByteSink,
        *,
        offset: int = 0,
        progress: ProgressCallback | None = None,
        expected_size: int | None = None,
        attempts_made: int = 0,
    ) -> int:
        """As ``Transport.download``; a retry continues where the bytes written so far end.
        ``expected_size``: the file's listed size; a transfer that ends cleanly short of it is a
        transient error too (retried, resuming). An error of ``destination`` itself is never
        retried. ``attempts_made``: attempts at this file that failed already (a batch's)."""
        sink = CountingSink(destination)

        def from_where_it_ended(transport: Transport) -> int:
            try:
                transport.download(name, sink, offset=offset + sink.written, progress=progress)
            except BaseException:
                if sink.failed is not None:
                    self.drop()  # the transfer was abandoned half-way: the session is unusable
                raise
            if expected_size is not None and offset + sink.written < expected_size:
                raise incomplete_transfer(offset + sink.written, expected_size)
            return sink.written

        return self._retried(from_where_it_ended, f"download {printable(name)}",
                             given_up=lambda: sink.failed is not None,
                             attempts_made=attempts_made)

    def close(self) -> None:
        self.drop()

    def __enter__(self) -> RetryingTransport:
        return self
