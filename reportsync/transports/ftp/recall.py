"""Exact times for a LIST listing: ``MDTM`` where needed, the caller's record where LIST agrees.

A LIST time is a minute (``Nov  2 12:00``) or a day (``Nov  2  2025``) on the server's wall clock,
in a zone it does not name; a file's version is (size, whole-second mtime, UTC), so every file
would need an ``MDTM`` round trip on every run. Most of them were seen before: the ledger has
their exact (name, size, mtime). ``exact_times`` takes a recorded mtime instead of asking when the
listing agrees with it *exactly*, and asks ``MDTM`` for everything else.

Why a recorded mtime ``M`` may stand for a listed (name, size, T):

* ``T`` is the server's minute of the file's mtime in its zone: ``T = floor_minute(t) + o(t)``,
  where ``o(t)`` is the zone's offset at that instant, a whole number of quarter hours (every
  zone's is). The listing never says ``o``; an ``MDTM`` (exact, UTC) of a file in the same
  listing shows it: ``o = T - floor_minute(MDTM)``.
* Offsets are learnt from files of this very listing, at least the oldest and the newest one that
  has a recorded candidate. Between two such samples with the same offset, the offset is taken to
  be that one (a zone changes its offset at most a few times a year, and a change would show as a
  mismatch, which only costs an ``MDTM``); where two neighbouring samples differ (a daylight
  saving change lies between them), the files between are bisected with ``MDTM`` until every one
  is bracketed by samples that agree.
* A listed file takes ``M`` when ``T - floor_minute(M)`` is exactly that offset and no other
  recorded version of the same name and size fits: then the file on the server has the recorded
  size and was last written in the recorded minute. What this cannot see: a file replaced by one
  of exactly the same size within the same minute as the recorded version. That version is taken
  for the recorded one (docs/fetch.md says so); everything else new or changed gets ``MDTM``.
* A day-precision time (files older than six months in ``ls`` style) never stands for a recorded
  one: a day is too coarse; those files are asked about.

Everything that does not fit (a new name or size, a mismatch, an offset that is no quarter hour,
say because the file changed between LIST and MDTM) falls back to ``MDTM``, which is what the
listing cost before: the shortcut can cost round trips, never a wrong version beyond the one
named above. Pure logic: the ``MDTM`` question comes in as a function.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Sequence

from reportsync.transports.ftp.listing import MINUTE, ListEntry

QUARTER_HOUR = 15 * 60
MAX_ZONE_OFFSET = 14 * 3600  # UTC-12 ... UTC+14

Mdtm = Callable[[str], float | None]
"""Asks the server for a file's exact mtime (MDTM): seconds since the epoch, UTC, or None."""


def zone_offset(listed: float, exact: float) -> int | None:
    """The server's offset from UTC that shows ``exact`` (MDTM) as the LIST minute ``listed``, or
    None if no zone's offset does (the file changed in between, or the listing's year was guessed
    wrong)."""
    offset = int(listed) - _minute(exact)
    if offset % QUARTER_HOUR or abs(offset) > MAX_ZONE_OFFSET:
        return None
    return offset


def _minute(seconds: float) -> int:
    return int(seconds) // MINUTE * MINUTE


def recorded_by_name(known: Collection[tuple[str, int, int]]) -> dict[tuple[str, int], list[int]]:
    """The caller's record, (name, size) -> the recorded whole-second mtimes."""
    by_name: dict[tuple[str, int], list[int]] = defaultdict(list)
    for name, size, mtime in known:
        by_name[(name, size)].append(int(mtime))
    return by_name


def exact_times(files: Sequence[ListEntry], known: Collection[tuple[str, int, int]],
                mdtm: Mdtm) -> dict[str, float | None]:
    """Each listed file's exact mtime: recorded (see the module's argument) or from ``mdtm``;
    None where ``mdtm`` could not tell (the caller keeps the listed time then).

    ``files`` are regular files with a size and a listed time.
    """
    record = recorded_by_name(known)
    times: dict[str, float | None] = {}
    # minute-precision files with a recorded candidate can be recalled; the rest are asked
    timeline: list[ListEntry] = []
    for entry in files:
        if entry.precision == MINUTE and entry.mtime is not None and \
                record.get((entry.name, entry.size or 0)):
            timeline.append(entry)
        else:
            times[entry.name] = mdtm(entry.name)
    if not timeline:
        return times
    timeline.sort(key=lambda entry: entry.mtime or 0.0)  # stable: listing order within a minute

    offsets: dict[int, int | None] = {}  # index in the timeline -> the offset its MDTM showed

    def sample(index: int) -> None:
        entry = timeline[index]
        exact = times[entry.name] = mdtm(entry.name)
        assert entry.mtime is not None
        offsets[index] = None if exact is None else zone_offset(entry.mtime, exact)

    sample(0)
    if len(timeline) > 1:
        sample(len(timeline) - 1)
    gaps = [(0, len(timeline) - 1)]
    while gaps:
        first, last = gaps.pop()
        if last - first < 2:
            continue
        offset = offsets[first]
        if offset is None or offset != offsets[last]:
            middle = (first + last) // 2  # a change of offset (or no offset) in between: bisect
            sample(middle)
            gaps += [(first, middle), (middle, last)]
            continue
        for index in range(first + 1, last):
            entry = timeline[index]
            recalled = _recalled(entry, record[(entry.name, entry.size or 0)], offset)
            if recalled is None:
                times[entry.name] = mdtm(entry.name)
            else:
                times[entry.name] = float(recalled)
    return times


def _recalled(entry: ListEntry, recorded: list[int], offset: int) -> int | None:
    """The one recorded mtime that the listed minute shows under ``offset``, or None."""
    assert entry.mtime is not None
    minute = int(entry.mtime) - offset
    fitting = None
    for mtime in recorded:
        if mtime // MINUTE * MINUTE == minute:
            if fitting is not None and fitting != mtime:
                return None  # two recorded versions in that minute: ambiguous
            fitting = mtime
    return fitting
