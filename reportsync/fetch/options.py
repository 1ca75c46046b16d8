"""What a fetch is asked to do, and the progress events it reports while doing it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class FetchOptions:
    sources: tuple[str, ...] = ()
    dry_run: bool = False
    decrypt: bool = True  # False: --no-decrypt, download only
    jobs: int = 1
    backoff_base: float = 1.0  # seconds before the first retry; doubled each time
    now: float | None = None  # for "at risk" ages; None = the clock


class Reporter(Protocol):
    """Progress events, so the CLI can draw a bar while the core never prints; ``run_started``
    comes once the run holds the state dir's lock (so never for a run that exits 75)."""

    def run_started(self) -> None: ...
    def file_started(self, source: str, name: str, total: int, already: int) -> None: ...
    def advance(self, source: str, name: str, nbytes: int) -> None: ...
    def file_finished(self, source: str, name: str) -> None: ...


class SilentReporter:
    def run_started(self) -> None:
        pass

    def file_started(self, source: str, name: str, total: int, already: int) -> None:
        pass

    def advance(self, source: str, name: str, nbytes: int) -> None:
        pass

    def file_finished(self, source: str, name: str) -> None:
        pass
