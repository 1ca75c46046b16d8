"""One piece of work on a thread of its own, its result (or its exception) taken by the caller.

For waits that need not be one after the other: a login while the rest of the run starts
(``transports/head_start.py``), the ledger's rows read while the server lists the folder
(``fetch/runner.py``). The work's exception is raised where the caller takes the result, in the
caller's thread, as if it had run there; nothing is lost if the result is never taken, and
``wait`` lets the caller know the thread is done with what it shared.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar, cast

T = TypeVar("T")


class Background(Generic[T]):
    """``work()`` running on a daemon thread named ``name`` from construction on."""

    def __init__(self, work: Callable[[], T], name: str) -> None:
        self._work = work
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._work()
        except BaseException as exc:  # raised by ``result``, in the caller's thread
            self._error = exc

    def wait(self) -> None:
        """Until the work has ended, whichever way."""
        self._thread.join()

    def result(self) -> T:
        """The work's value (waiting for it), or its exception raised."""
        self.wait()
        if self._error is not None:
            raise self._error
        return cast(T, self._value)  # the work returned it (T may itself admit None)
