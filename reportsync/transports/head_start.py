"""The first source's connection, opened on a thread while the rest of the run starts.

A fetch's first byte used to wait for two things one after the other: the start of the run
(importing the fetch machinery, the lock, the ledger: about 0.25 s) and then the login (ssh's
key exchange and authentication, or FTP's greeting and USER/PASS: about 0.25 s over SFTP). They
do not need each other. ``HeadStart`` starts the first selected source's connection as soon as
the config is loaded and hands it to that source's first connect, so the login mostly costs
what is left of it by then (docs/performance.md "Head start").

What stays as it was:

- the connection is the ``open_transport`` the fetch would have made, with the same steps
  (the host key checked before any credential is sent);
- its failure is raised by the source's first connect, in the run's thread, where the retry
  policy takes it as the first attempt (a retryable error is retried as ever);
- only the first selected source starts early, once; every later connection (another source,
  the other ``--jobs``, a reconnect) is opened when asked for;
- a connection nobody claims (the run stopped at the lock, another host holds the source, the
  run failed before it connected) has done nothing but log in: ``close`` ends it.

Nothing else runs on the thread: the run's listing, transfers and ledger writes stay where they
were.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

from reportsync.background import Background
from reportsync.config import Config, SourceConfig
from reportsync.errors import ConfigError
from reportsync.transports import Transport, open_transport, start_connecting

log = logging.getLogger(__name__)

Connect = Callable[[SourceConfig], Transport]
"""How a source's transport is opened: ``open_transport``, or tests' in-memory server's."""

Start = Callable[[SourceConfig], Callable[[], Transport]]
"""``Connect`` in two halves (``transports.start_connecting``): the part without network now,
the rest when the function it returns is called."""


class HeadStart:
    """A ``Connect`` whose first call for ``source`` takes the connection started at
    construction (``source`` None: a plain ``connect``); a context manager (``close`` on the
    way out).

    The first half of the connection (``start``: the protocol's code, the key, known_hosts, the
    engine) runs in the caller's thread, the login on a thread of its own: the first half is
    Python's work, which on a thread would only take turns with the caller's imports and start
    ssh later; the login is ssh's and the server's work, which overlaps them."""

    def __init__(self, source: SourceConfig | None, connect: Connect, start: Start) -> None:
        self._source_name = None if source is None else source.name
        self._connect = connect
        self._state = threading.Lock()  # the claim, and the login's end against ``close``
        self._claimed = source is None
        self._login: Background[Transport] | None = None
        self._start_error: Exception | None = None
        self._logged_in = False  # the login ended (either way)
        self._abandoned = False  # closed while the login ran: it closes what it opened
        if source is None:
            return
        try:
            rest = start(source)
        except Exception as exc:  # raised by the first connect, where the fetch expects it
            self._start_error = exc
            return
        self._login = Background(lambda: self._log_in(rest), f"head-start-{source.name}")

    def _log_in(self, rest: Callable[[], Transport]) -> Transport:
        try:
            transport = rest()
        finally:
            with self._state:
                self._logged_in = True
                abandoned = self._abandoned
        if abandoned:
            transport.close()
        return transport

    def __call__(self, source: SourceConfig) -> Transport:
        with self._state:
            first = source.name == self._source_name and not self._claimed
            self._claimed = self._claimed or first
            login, self._login = (self._login, None) if first else (None, self._login)
        if not first:
            return self._connect(source)
        if login is None:
            assert self._start_error is not None
            error, self._start_error = self._start_error, None
            raise error
        return login.result()

    def close(self) -> None:
        """End the connection if no one took it. A login still running is not waited for (a
        run that stops at the lock exits at once, as ever): it closes what it opens, and a
        process that ends first takes its ssh along (``openssh.py``'s exit cleanup)."""
        with self._state:
            login, self._login = self._login, None
            if login is None:
                return
            if not self._logged_in:
                self._abandoned = True
                return
        try:
            transport = login.result()  # ended already: no wait
        except Exception:  # nobody asked for it: its failure is no one's either
            return
        log.debug("source %s: the connection started ahead was not used; closing it",
                  self._source_name)
        transport.close()

    def __enter__(self) -> HeadStart:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def head_start(config: Config, sources: tuple[str, ...], connect: Connect = open_transport,
               start: Start = start_connecting) -> HeadStart:
    """A head start for the first of the ``sources`` selected (all when none are named); none
    is started when there is no source, or for a name the run itself refuses (the run raises
    that, where it always did)."""
    try:
        selected = config.select(sources)
    except ConfigError:
        selected = []
    return HeadStart(selected[0] if selected else None, connect, start)
