"""This run's log: the format of the log file, and the lines of one run kept for monitoring.

The CLI writes every run's INFO lines to ``state_dir/logs/reportsync.log`` in ``LOG_FORMAT``.
``RunLog`` keeps the same lines of the current run only, in memory and bounded, so a
healthchecks ping can carry "the last log lines" of the run it reports on (never an earlier
run's, which the file also holds).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOGGER = "reportsync"


class RunLog(logging.Handler):
    """The newest lines of this run, as the log file has them, at most ``limit`` bytes (UTF-8)."""

    def __init__(self, limit: int) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter(LOG_FORMAT))
        self.limit = limit
        self._lines: deque[str] = deque()
        self._size = 0
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # logging must never be the reason a run fails
            self.handleError(record)
            return
        size = len(line.encode("utf-8", "replace")) + 1
        with self._guard:
            self._lines.append(line)
            self._size += size
            while self._size > self.limit and self._lines:
                self._size -= len(self._lines.popleft().encode("utf-8", "replace")) + 1

    def lines(self) -> list[str]:
        with self._guard:
            return list(self._lines)

    @classmethod
    @contextmanager
    def capture(cls, limit: int) -> Iterator[RunLog]:
        """This run's log lines while the block runs (reportsync's own loggers, INFO and up)."""
        handler = cls(limit)
        logger = logging.getLogger(LOGGER)
        logger.addHandler(handler)
        try:
            yield handler
        finally:
            logger.removeHandler(handler)
            handler.close()
