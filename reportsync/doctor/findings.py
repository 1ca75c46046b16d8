"""What doctor reports: one ``Finding`` per check, with a stable id, collected in order.

The ids of doctor's own checks are here (``DoctorFinding``); the connection steps' ids belong to
the transports (``transports/findings.py``). docs/troubleshooting.md lists every id of both, and
``tests/test_docs.py`` checks the two sets are the same.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from reportsync.vocab import CheckStatus, StrEnum

log = logging.getLogger(__name__)

PASS = CheckStatus.PASS
WARN = CheckStatus.WARN
FAIL = CheckStatus.FAIL
SKIPPED = CheckStatus.SKIPPED
STATUSES = tuple(CheckStatus)

BUG_REMEDY = ("This is a bug in reportsync doctor: please report it with the bundle "
              "(`reportsync doctor --bundle FILE`).")


class DoctorFinding(StrEnum):
    # any check
    NOT_CHECKED = "not-checked"  # an earlier check failed (or was skipped)
    CHECK_FAILED = "check-failed"  # the check itself raised: a defect
    CHECKS_SKIPPED = "checks.skipped"  # the config did not load: no local check ran
    # config
    PARSE_OK = "parse.ok"
    PARSE_PROBLEM = "parse.problem"
    PARSE_UNREADABLE = "parse.unreadable"
    SOURCE_NONE = "source.none"
    SOURCE_UNKNOWN = "source.unknown"
    SECRET_OK = "secret.ok"
    SECRET_TOO_OPEN = "secret.too-open"
    SECRET_UNREADABLE = "secret.unreadable"
    SECRET_EMPTY = "secret.empty"
    # local: gpg and the keys
    GPG_OK = "gpg.ok"
    GPG_NOT_FOUND = "gpg.not-found"
    GPG_BROKEN = "gpg.broken"
    GPG_NOT_GNUPG = "gpg.not-gnupg"
    GPG_OLD = "gpg.old"
    GNUPG_HOME_OK = "gnupg-home.ok"
    GNUPG_HOME_MISSING = "gnupg-home.missing"
    GNUPG_HOME_NOT_A_FOLDER = "gnupg-home.not-a-folder"
    GNUPG_HOME_SHARED = "gnupg-home.shared"
    GNUPG_HOME_WRITABLE = "gnupg-home.writable-by-others"
    GNUPG_HOME_READABLE = "gnupg-home.readable-by-others"
    GNUPG_HOME_OTHER_OWNER = "gnupg-home.other-owner"
    SECRET_KEY_OK = "secret-key.ok"
    SECRET_KEY_UNLISTABLE = "secret-key.unlistable"
    SECRET_KEY_NONE = "secret-key.none"
    SECRET_KEY_UNUSABLE = "secret-key.unusable"
    SECRET_KEY_EXPIRING = "secret-key.expiring"
    SECRET_KEY_SKIPPED = "secret-key.skipped"
    PASSPHRASE_OK = "passphrase.ok"
    PASSPHRASE_NONE = "passphrase.none-configured"
    PASSPHRASE_WRONG = "passphrase.wrong"
    PASSPHRASE_PROBE_FAILED = "passphrase.probe-failed"
    PASSPHRASE_SKIPPED_NO_KEY = "passphrase.skipped-no-key"
    PASSPHRASE_SKIPPED_UNREADABLE = "passphrase.skipped-unreadable"
    # local: folders, disk, ledger, lock
    FOLDER_OK = "folder.ok"
    FOLDER_WILL_CREATE = "folder.will-create"
    FOLDER_NOT_A_FOLDER = "folder.not-a-folder"
    FOLDER_SHARED = "folder.shared"
    FOLDER_NOT_WRITABLE = "folder.not-writable"
    FOLDER_CANNOT_CREATE = "folder.cannot-create"
    DISK_SPACE_OK = "disk-space.ok"
    DISK_SPACE_UNKNOWN = "disk-space.unknown"
    DISK_SPACE_LOW = "disk-space.low"
    DISK_SPACE_FULL = "disk-space.full"
    LEDGER_NONE = "ledger.none"
    LEDGER_OK = "ledger.ok"
    LEDGER_DAMAGED = "ledger.damaged"
    LEDGER_UNREADABLE = "ledger.unreadable"
    LEDGER_INTEGRITY = "ledger.integrity"
    # local: a shared ledger (settings.ledger_url; doctor/ledger.py)
    LEDGER_SHARED_OK = "ledger.shared-ok"
    LEDGER_SHARED_NONE = "ledger.shared-none"
    LEDGER_UNREACHABLE = "ledger.unreachable"
    LEDGER_AUTH_REFUSED = "ledger.auth-refused"
    LEDGER_SCHEMA_NEWER = "ledger.schema-newer"
    LEDGER_SHARED_CONFIG = "ledger.shared-config"
    LEDGER_SHARED_INTEGRITY = "ledger.shared-integrity"
    LEDGER_SHARED_FAILED = "ledger.shared-failed"
    ARCHIVE_VISIBLE = "archive.visible"
    ARCHIVE_NOT_VISIBLE = "archive.not-visible"
    LOCK_NONE = "lock.none"
    LOCK_FREE = "lock.free"
    LOCK_ACTIVE = "lock.active"
    LOCK_STALE = "lock.stale"
    LOCK_UNOPENABLE = "lock.unopenable"
    # per source, after the connection steps
    LISTING_OK = "listing.ok"
    LISTING_EMPTY = "listing.empty"
    LISTING_UNSAFE_NAMES = "listing.unsafe-names"
    LISTING_NO_MATCH = "listing.no-match"
    LISTING_FAILED = "listing.failed"
    AT_RISK_OK = "at-risk.ok"
    AT_RISK_FILES = "at-risk.files"
    AT_RISK_LOST = "at-risk.lost"
    AT_RISK_LEDGER_UNREADABLE = "at-risk.ledger-unreadable"
    # notifications ([notify]), after the sources
    NOTIFY_NONE = "notify.none"
    NOTIFY_OK = "notify.ok"
    NOTIFY_UNUSABLE = "notify.unusable"
    NOTIFY_REACHABLE = "notify.reachable"
    NOTIFY_UNREACHABLE = "notify.unreachable"
    NOTIFY_UNCHECKED = "notify.unchecked"
    NOTIFY_TEST_SENT = "notify-test.sent"
    NOTIFY_TEST_FAILED = "notify-test.failed"


@dataclass(frozen=True)
class Finding:
    """One check's result: ``scope`` is "config", "local" or a source name; ``finding_id`` is
    the stable name docs/troubleshooting.md documents it under."""

    check: str
    scope: str
    status: str
    finding: str
    remedy: str = ""
    seconds: float = 0.0
    finding_id: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"check": self.check, "scope": self.scope, "status": str(self.status),
                "id": self.finding_id, "finding": self.finding, "remedy": self.remedy,
                "seconds": round(self.seconds, 3)}


class Outcome(Protocol):
    """What a check hands back (a transport's ``StepResult`` is one)."""

    @property
    def status(self) -> CheckStatus: ...
    @property
    def finding_id(self) -> str: ...
    @property
    def finding(self) -> str: ...
    @property
    def remedy(self) -> str: ...


@dataclass(frozen=True)
class Verdict:
    """An ``Outcome`` of one of doctor's own checks."""

    status: CheckStatus
    finding_id: DoctorFinding
    finding: str
    remedy: str = ""


def one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def without_doctor_advice(remedy: str) -> str:
    """The transports' remedies end with "run `reportsync doctor`": inside doctor, drop that."""
    kept: list[str] = []
    for clause in re.split(r"(?<=[.;])\s+", remedy):
        if "`reportsync doctor" not in clause:
            kept.append(clause)
            continue
        before = re.match(r"(.*?),\s*then run `reportsync doctor", clause)
        if before is not None:
            kept.append(before.group(1) + ".")
    text = " ".join(kept).strip()
    return text[:-1] + "." if text.endswith(";") else text


class Findings:
    """The findings of one run, in the order the checks ran."""

    def __init__(self) -> None:
        self.items: list[Finding] = []

    def add(self, check: str, scope: str, status: str, finding_id: str, finding: str,
            remedy: str = "", seconds: float = 0.0) -> Finding:
        item = Finding(check=str(check), scope=scope, status=status, finding=one_line(finding),
                       remedy=without_doctor_advice(one_line(remedy)), seconds=seconds,
                       finding_id=str(finding_id))
        self.items.append(item)
        return item

    def record(self, check: str, scope: str, outcome: Outcome, seconds: float = 0.0) -> Finding:
        return self.add(check, scope, outcome.status, outcome.finding_id, outcome.finding,
                        outcome.remedy, seconds)


T = TypeVar("T")


def guarded(out: Findings, check: str, run: Callable[[], T], default: T, *,
            scope: str = "local") -> T:
    """Run one check; an unexpected exception becomes its FAIL finding, never a crash."""
    try:
        return run()
    except Exception as exc:
        log.debug("doctor: check %s/%s failed unexpectedly", scope, check, exc_info=True)
        out.add(check, scope, FAIL, DoctorFinding.CHECK_FAILED,
                f"the check itself failed: {type(exc).__name__}: {exc}", BUG_REMEDY)
        return default
