"""doctor's checks of a shared ledger (``settings.ledger_url``): the connection (reachable,
credentials accepted, a schema this version reads) and, per source, whether the archived reports
the ledger records are visible from this host.

Several hosts fetching one source share its ``download_dir`` and ``output_dir``: the ledger says a
report is archived, and the next host believes it. A path the ledger records that this host
cannot see means the archive is on another host's own disk: the run here would re-check against
nothing, and retention could not verify a copy before deleting. The embedded SQLite ledger is
checked by ``local.py``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from reportsync.config import Config, SourceConfig
from reportsync.doctor.findings import FAIL, PASS, SKIPPED, WARN, DoctorFinding, Findings, guarded
from reportsync.errors import (
    AuthenticationError,
    ConfigError,
    LedgerVersionError,
    NetworkError,
    ReportsyncError,
)
from reportsync.ledger import Ledger, open_shared_ledger

SCOPE = "local"
CHECK = "ledger"
ARCHIVE_CHECK = "archive visible"
SHOWN_PATHS = 3  # paths named in the finding; the count says how many more


def check_shared_ledger(config: Config, sources: list[SourceConfig], out: Findings) -> None:
    """The ledger database's connection, then each source's archived paths (when it answered)."""
    ledger, why_not = _connect(config, out)
    if ledger is None:
        for source in sources:
            out.add(ARCHIVE_CHECK, source.name, SKIPPED, DoctorFinding.NOT_CHECKED,
                    f"not checked: {why_not}")
        return
    with ledger:
        for source in sources:
            guarded(out, ARCHIVE_CHECK,
                    functools.partial(_check_archive_visible, ledger, source, out), None,
                    scope=source.name)


def _connect(config: Config, out: Findings) -> tuple[Ledger | None, str]:
    """The ledger, or None and why not (its finding is added)."""
    settings = config.settings
    assert settings.ledger_url is not None
    try:
        ledger = open_shared_ledger(settings, environ=config.environ, create=False)
        if ledger is None:
            out.add(CHECK, SCOPE, PASS, DoctorFinding.LEDGER_SHARED_NONE,
                    f"no ledger yet in the database {settings.ledger_url}: the first fetch "
                    "creates its tables")
            return None, "nothing is archived yet"
        try:
            result = ledger.integrity_check()
            version = ledger.schema_version
            files = ledger.count("remote_files")
            failures = len(ledger.open_failures())
        except BaseException:
            ledger.close()
            raise
    except ReportsyncError as error:
        out.add(CHECK, SCOPE, FAIL, _finding_of(error), error.message, error.remedy)
        return None, "the ledger database did not answer"
    if result != "ok":
        ledger.close()
        out.add(CHECK, SCOPE, FAIL, DoctorFinding.LEDGER_SHARED_INTEGRITY,
                f"the shared ledger {ledger.location} is incomplete: {result}",
                "Restore the database from its last backup (pg_dump), or drop it and move the "
                "SQLite ledger in again (`reportsync ledger migrate`).")
        return None, "the shared ledger is incomplete"
    out.add(CHECK, SCOPE, PASS, DoctorFinding.LEDGER_SHARED_OK,
            f"shared ledger {ledger.location}: reachable, login accepted, schema {version}, "
            f"{files} file version(s) recorded, {failures} open failure(s)")
    return ledger, ""


def _finding_of(error: ReportsyncError) -> DoctorFinding:
    if isinstance(error, NetworkError):
        return DoctorFinding.LEDGER_UNREACHABLE
    if isinstance(error, AuthenticationError):
        return DoctorFinding.LEDGER_AUTH_REFUSED
    if isinstance(error, LedgerVersionError):
        return DoctorFinding.LEDGER_SCHEMA_NEWER
    if isinstance(error, ConfigError):  # the driver missing, no such database, a password file
        return DoctorFinding.LEDGER_SHARED_CONFIG
    return DoctorFinding.LEDGER_SHARED_FAILED


def _check_archive_visible(ledger: Ledger, source: SourceConfig, out: Findings) -> None:
    archived = [version.output_path for version in ledger.versions(source.name)
                if version.in_archive and version.output_path is not None]
    unseen = [path for path in archived if not os.path.lexists(path)]
    if not unseen:
        out.add(ARCHIVE_CHECK, source.name, PASS, DoctorFinding.ARCHIVE_VISIBLE,
                f"all {len(archived)} archived report(s) the shared ledger records are visible "
                "from this host")
        return
    shown = ", ".join(unseen[:SHOWN_PATHS])
    more = f" and {len(unseen) - SHOWN_PATHS} more" if len(unseen) > SHOWN_PATHS else ""
    folders = sorted({str(Path(path).parent) for path in unseen})
    out.add(ARCHIVE_CHECK, source.name, WARN, DoctorFinding.ARCHIVE_NOT_VISIBLE,
            f"{len(unseen)} of {len(archived)} archived report(s) the shared ledger records are "
            f"not visible from this host: {shown}{more}",
            f"When several hosts fetch source {source.name!r}, its download_dir and output_dir "
            f"must be storage all of them see (NFS, SMB, a shared volume): mount "
            f"{', '.join(folders[:SHOWN_PATHS])} here at the same path, or let only the host "
            "that has them fetch this source. If they were deleted, run `reportsync verify`.")
