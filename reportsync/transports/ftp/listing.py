"""FTP directory listings, parsed: MLSD, LIST in Unix and Windows/IIS styles, MDTM times.

Pure functions: text in, entries out, no I/O. A LIST that cannot be read as a whole is rejected
(``parse_list`` returns None) so the caller falls back to NLST with SIZE and MDTM per file.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

SECOND, MINUTE, DAY = 1, 60, 86400
"""How exact a listed time is, in seconds (``ListEntry.precision``)."""


@dataclass(frozen=True, slots=True)
class ListEntry:
    """One line of a directory listing.

    ``kind`` is "file", "dir", "link" or "other". ``mtime`` is seconds since the epoch, UTC, as far as
    the listing tells (LIST gives minutes at best, and the server's idea of the time zone); ``None``
    when the listing does not say. ``precision`` is what that time is exact to, in seconds:
    ``SECOND`` for MLSD's ``modify`` fact (UTC by RFC 3659), ``MINUTE`` for a LIST time of day
    (``Nov  2 12:00``, in the server's zone), ``DAY`` for a LIST date with a year (``Nov  2  2025``).
    """

    name: str
    kind: str
    size: int | None
    mtime: float | None
    precision: int = SECOND


_MONTHS = {name: number for number, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}

_UNIX_LINE = re.compile(
    r"""^(?P<mode>[-dlbcpsD?][-rwxsStTlL]{9})[.+@]?\s+
        (?P<links>\d+)\s+
        (?P<owner>\S+)\s+
        (?:(?P<group>\S+)\s+)?
        (?P<size>\d+)\s+
        (?P<month>[A-Za-z]{3})\s+
        (?P<day>\d{1,2})\s+
        (?:(?P<hour>\d{1,2}):(?P<minute>\d{2})|(?P<year>\d{4}))
        \s(?P<name>.+)$""",
    re.VERBOSE,
)

_WINDOWS_LINE = re.compile(
    r"""^(?P<month>\d{1,2})-(?P<day>\d{1,2})-(?P<year>\d{2}|\d{4})\s+
        (?P<hour>\d{1,2}):(?P<minute>\d{2})\s*(?P<ampm>[AaPp][Mm])?\s+
        (?:(?P<dir><DIR>)|(?P<size>\d+))
        \s+(?P<name>.+)$""",
    re.VERBOSE,
)

_UNIX_KINDS = {"-": "file", "d": "dir", "l": "link"}
_TOTAL = re.compile(r"total\s+\d+")


@functools.lru_cache(maxsize=4096)
def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0,
         second: int = 0) -> float | None:
    """The moment as seconds since the epoch, or None if there is no such date. Cached: the files
    of a listing share their dates, and 50,000 lines are parsed on every run of a big folder."""
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    except ValueError:
        return None
    return moment.timestamp()


@functools.lru_cache(maxsize=4096)
def _recent(month: int, day: int, hour: int, minute: int, reference: int) -> float | None:
    """A LIST time without a year: the latest such moment not more than a day after
    ``reference`` (seconds since the epoch, whole: the cache's key)."""
    year_now = datetime.fromtimestamp(reference, timezone.utc).year
    latest = reference + 86400
    for year in (year_now + 1, year_now, year_now - 1,
                 year_now - 4):  # -4: a 29 Feb seen from a later year
        candidate = _utc(year, month, day, hour, minute)
        if candidate is not None and candidate <= latest:
            return candidate
    return None


def parse_unix_list_line(line: str, now: float | None = None) -> ListEntry | None:
    """A ``ls -l`` style LIST line, or None if it is not one.

    Without a year (``Nov  2 12:00``) the date is the latest one not in the future relative to
    ``now`` (a day of slack for time zones), as ``ls`` shows times only for recent files.
    """
    match = _UNIX_LINE.match(line.rstrip("\r\n"))
    if match is None:
        return None
    # one call for every group: this runs once per line of listings 50,000 lines long
    mode, _links, _owner, _group, size, month_name, day, hour, minute, year, name = match.groups()
    month = _MONTHS.get(month_name.lower())
    if month is None:
        return None
    kind = _UNIX_KINDS.get(mode[0], "other")
    if kind == "link" and " -> " in name:
        name = name.split(" -> ", 1)[0]
    if year is not None:
        mtime = _utc(int(year), month, int(day))
        precision = DAY
    else:
        precision = MINUTE
        reference = int(time.time() if now is None else now)
        mtime = _recent(month, int(day), int(hour), int(minute), reference)
    if mtime is None or not name:
        return None
    return ListEntry(name, kind, int(size), mtime, precision)


def parse_windows_list_line(line: str) -> ListEntry | None:
    """An IIS / Windows style LIST line (``11-02-26  12:00PM  1234 name``), or None."""
    match = _WINDOWS_LINE.match(line.rstrip("\r\n"))
    if match is None:
        return None
    year = int(match["year"])
    if year < 100:
        year += 1900 if year >= 70 else 2000
    hour, minute = int(match["hour"]), int(match["minute"])
    ampm = (match["ampm"] or "").upper()
    if ampm:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if ampm == "PM" else 0)
    mtime = _utc(year, int(match["month"]), int(match["day"]), hour, minute)
    if mtime is None:
        return None
    if match["dir"]:
        return ListEntry(name=match["name"], kind="dir", size=None, mtime=mtime, precision=MINUTE)
    return ListEntry(name=match["name"], kind="file", size=int(match["size"]), mtime=mtime,
                     precision=MINUTE)


def parse_list_line(line: str, now: float | None = None) -> ListEntry | None:
    """A LIST line in either style, or None if it is neither."""
    return parse_unix_list_line(line, now) or parse_windows_list_line(line)


def parse_list(lines: Iterable[str], now: float | None = None) -> list[ListEntry] | None:
    """Every entry of a LIST reply, or None if any line is not understood.

    One line we cannot read could be the one file that matters, so an unreadable listing is
    rejected as a whole (the caller falls back to NLST). ``total N`` and blank lines are skipped.
    """
    entries: list[ListEntry] = []
    if now is None:
        now = time.time()  # once: every line's year is judged from the same moment
    for line in lines:
        text = line.rstrip("\r\n")
        if not text.strip() or (text.lstrip().startswith("total")
                                and _TOTAL.fullmatch(text.strip())):
            continue
        entry = parse_list_line(text, now)
        if entry is None:
            return None
        if entry.name in (".", "..") and entry.kind == "dir":
            continue  # a *file* named "." or ".." is a lie: kept, so fetch refuses and reports it
        entries.append(entry)
    return entries


def parse_ftp_time(value: str) -> float | None:
    """``YYYYMMDDHHMMSS[.sss]`` (MLSD ``modify``, MDTM) as seconds since the epoch, UTC."""
    match = re.fullmatch(r"(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:\.(\d{1,9}))?", value.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    seconds = _utc(year, month, day, hour, minute, second)
    if seconds is None:
        return None
    fraction = match.group(7)
    return seconds + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def parse_mlsd_line(line: str) -> ListEntry | None:
    """An MLSD line (``type=file;size=12;modify=20261102120000; name``), or None."""
    text = line.rstrip("\r\n")
    facts_text, separator, name = text.partition(" ")
    if not separator:
        return None  # an empty name is kept: fetch refuses it and says so
    facts: dict[str, str] = {}
    for fact in facts_text.split(";"):
        key, equals, value = fact.partition("=")
        if equals:
            facts[key.strip().lower()] = value
    kind_fact = facts.get("type", "").lower()
    kind = {"file": "file", "dir": "dir", "cdir": "dir", "pdir": "dir"}.get(kind_fact, "other")
    if kind_fact.startswith("os.unix=slink") or kind_fact.startswith("os.unix=symlink"):
        kind = "link"
    size: int | None = None
    if facts.get("size", "").isdigit():
        size = int(facts["size"])
    mtime = parse_ftp_time(facts["modify"]) if "modify" in facts else None
    return ListEntry(name=name, kind=kind, size=size, mtime=mtime)


def size_of(reply: str | None) -> int | None:
    """The size a ``213`` reply to SIZE gives, or None."""
    if reply is None or not reply[3:].strip().isdigit():
        return None
    return int(reply[3:].strip())


def time_of(reply: str | None) -> float | None:
    """The mtime a ``213`` reply to MDTM gives, or None."""
    return None if reply is None else parse_ftp_time(reply[3:])


def mlst_facts(reply: str | None) -> ListEntry | bool:
    """MLST's facts of one file (one round trip for size and time); False if the server
    refused (no such file), True if it answered something unreadable."""
    if reply is None:
        return False
    for line in reply.splitlines()[1:-1]:  # 250-..., " facts; path", 250 End
        entry = parse_mlsd_line(line.lstrip(" "))
        if entry is not None:
            return entry
    return True
