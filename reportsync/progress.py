"""A rich progress bar for a terminal; implements fetch's ``Reporter`` events."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


class ProgressBar:
    def __init__(self, file: TextIO | None = None) -> None:
        """``file``: the terminal to draw on (default: stderr)."""
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(file=file) if file is not None else Console(stderr=True),
            transient=True,
        )
        self._tasks: dict[tuple[str, str], TaskID] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> ProgressBar:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def run_started(self) -> None:
        pass  # the bar shows files; the run's start needs no line of its own

    def file_started(self, source: str, name: str, total: int, already: int) -> None:
        with self._lock:
            label = name if len(name) <= 48 else name[:45] + "..."
            self._tasks[(source, name)] = self._progress.add_task(
                f"{source}: {label}", total=total, completed=already)

    def advance(self, source: str, name: str, nbytes: int) -> None:
        task = self._tasks.get((source, name))
        if task is not None:
            self._progress.advance(task, nbytes)

    def file_finished(self, source: str, name: str) -> None:
        with self._lock:
            task = self._tasks.pop((source, name), None)
        if task is not None:
            self._progress.remove_task(task)
