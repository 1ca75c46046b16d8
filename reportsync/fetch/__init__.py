"""The fetch use-case: list → plan → execute (download → archive → record) → retention.

The rooms, in the order one source passes through them:

- ``runner``: ``run``, the whole command (lock, ledger, each source, the run recorded) and one
  source's orchestration in one screen. A dry run stops after the plan.
- ``plan``: pure. Listing + the ledger's versions + options → outcomes decided without work
  (refused, skipped, acknowledged, would-fetch) and ``Job``s.
- ``executor``: runs the jobs over up to ``jobs`` connections and emits their outcomes; decides
  what fails one file and what stops the source.
- ``transfer`` (download into ``download_dir``) and ``archive`` (decrypt or copy into
  ``output_dir``, ``LazyGpg``): the steps of one job, each ending with a rename into place.
- ``record``: every ledger write of the run, after the rename it records.
- ``results``, ``options``, ``credentials``: what a run returns, what it is asked, and the
  credentials it warns about.

Retries are not here: the transport is a ``transports.retry.RetryingTransport``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reportsync.fetch.archive import LazyGpg
    from reportsync.fetch.options import FetchOptions, Reporter, SilentReporter
    from reportsync.fetch.plan import Job, SourcePlan, plan_source, select_files
    from reportsync.fetch.results import AtRisk, FetchResult, FileOutcome, SourceResult
    from reportsync.fetch.runner import run

# The package's names load with their room on first use (PEP 562): rendering a result needs
# only ``results``, and a fetch's login runs while the rest loads (transports/head_start.py).
_ROOM_OF = {
    "LazyGpg": "archive", "FetchOptions": "options", "Reporter": "options",
    "SilentReporter": "options", "Job": "plan", "SourcePlan": "plan", "plan_source": "plan",
    "select_files": "plan", "AtRisk": "results", "FetchResult": "results",
    "FileOutcome": "results", "SourceResult": "results", "run": "runner",
}

__all__ = ["AtRisk", "FetchOptions", "FetchResult", "FileOutcome", "Job", "LazyGpg", "Reporter",
           "SilentReporter", "SourcePlan", "SourceResult", "plan_source", "run", "select_files"]


def __getattr__(name: str) -> object:
    room = _ROOM_OF.get(name)
    if room is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{room}"), name)
    globals()[name] = value
    return value
