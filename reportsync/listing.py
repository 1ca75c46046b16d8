"""Which of the files a server lists a source takes: ``include``/``exclude``, then name safety.

One owner, so ``fetch`` and ``retention`` see the same files: a name refused as unsafe is never
recorded in the ledger, warned about as at risk or deleted, whichever command listed it.
"""

from __future__ import annotations

import logging
from operator import attrgetter

from reportsync.config import SourceConfig
from reportsync.errors import ReportsyncError
from reportsync.fsutil import check_remote_name, plainly_safe_names
from reportsync.transports import RemoteFile

log = logging.getLogger(__name__)


def select(source: SourceConfig, listing: list[RemoteFile]
           ) -> tuple[list[RemoteFile], list[tuple[RemoteFile, ReportsyncError]]]:
    """The matching files with safe names, in name order, and the matching ones refused (each with
    the reason); files ``include``/``exclude`` do not select are in neither list."""
    candidates: list[RemoteFile] = []
    refused: list[tuple[RemoteFile, ReportsyncError]] = []
    matches = source.matcher()
    # nearly always every name is plainly safe: found in one scan of them all, not one each
    checked = plainly_safe_names([remote.name for remote in listing])
    for remote in sorted(listing, key=attrgetter("name")):
        if not matches(remote.name):
            continue
        if checked:
            candidates.append(remote)
            continue
        try:
            check_remote_name(remote.name)
        except ReportsyncError as error:
            log.warning("source %s: %s", source.name, error.message)
            refused.append((remote, error))
            continue
        candidates.append(remote)
    return candidates, refused
