"""A finished fetch as monitoring sees it, and which of the events in ``notify.on`` it is."""

from __future__ import annotations

from dataclasses import dataclass

from reportsync.config import NOTIFY_EVENTS
from reportsync.errors import ExitCode, ReportsyncError
from reportsync.fetch import FetchResult
from reportsync.results import exit_code_of

FAIL, WARN, NEW, SUCCESS = NOTIFY_EVENTS


@dataclass(frozen=True)
class RunOutcome:
    """One fetch: the sources it was for, its result, or the error that stopped it as a whole
    (a config problem, the ledger or the state folder unusable)."""

    host: str
    sources: tuple[str, ...]
    result: FetchResult | None = None
    error: ReportsyncError | None = None
    finished_at: float = 0.0  # seconds since the epoch

    @property
    def exit_code(self) -> ExitCode:
        return exit_code_of(self.result, self.error)


def events_of(outcome: RunOutcome) -> dict[str, tuple[str, ...]]:
    """Each event the run is, with the sources it concerns, in NOTIFY_EVENTS order: ``fail``
    (exit code other than 0; a run that exits 75 is never monitored), ``warn`` (files at risk,
    lost files, stale feeds, credentials ending within 30 days), ``new`` (reports archived),
    ``success`` (exit code 0)."""
    happened: dict[str, tuple[str, ...]] = {}
    result = outcome.result
    if outcome.exit_code != ExitCode.OK:
        if result is not None:
            happened[FAIL] = tuple(source.name for source in result.sources
                                   if source.exit_code != ExitCode.OK)
        else:
            assert outcome.error is not None
            happened[FAIL] = (outcome.error.source,) if outcome.error.source else outcome.sources
    if result is not None:
        warned = [source.name for source in result.sources
                  if source.at_risk or source.lost or source.stale_days is not None]
        warned += [expiry.source for expiry in result.expiring if expiry.source]
        if warned or result.expiring:
            happened[WARN] = tuple(dict.fromkeys(warned))
        new = tuple(source.name for source in result.sources if source.count("archived"))
        if new:
            happened[NEW] = new
    if outcome.exit_code == ExitCode.OK:
        happened[SUCCESS] = outcome.sources
    return {event: happened[event] for event in NOTIFY_EVENTS if event in happened}
