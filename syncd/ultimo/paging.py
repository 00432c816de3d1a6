"""Where to cut a Get: windows chosen from what the previous read of a space found.

A Get answers at most `page_limit` rows, and a full page may be truncated, so a read is
complete only when every page it took came back short. Halving a window until every
page is short (what a first read does: nothing is known yet) throws away each full
page: a space with 300 reservations costs 7 Gets where 4 would prove completeness.

Once a space has been read, its rows' times are known. The next read cuts its window
where each part is expected to hold at most `ROWS_PER_GET` rows (a tenth below the
page: room for bookings made since), so most reads take the fewest Gets that can prove
completeness. A page that still comes back full is split around the rows it returned.

Pure: no I/O, no clock; thread-safe (one lock around the profiles).
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from syncd.core.model import Reservation, TimeWindow

__all__ = ["ROWS_PER_GET", "ReadProfiles", "calls_for_rows", "cut_rows", "first_read_calls", "split_by_rows",
           "split_full_page"]

ROWS_PER_GET = 90           # rows a density-cut window is expected to hold at most
KEEP_PAST = 7 * 86400.0     # rows ending this long before the newest read's start are forgotten


def first_read_calls(rows: float, page_limit: int) -> int:
    """Gets a read of `rows` evenly spread rows takes when nothing is known of them: the
    window is halved while its page comes back full."""
    if rows < page_limit:
        return 1
    return 1 + 2 * first_read_calls(rows / 2, page_limit)


def calls_for_rows(rows: float, page_limit: int, *, known: bool = True) -> int:
    """Gets one read of `rows` rows is expected to take: windows of at most `ROWS_PER_GET`
    rows when the previous read's rows are `known`, halving otherwise."""
    if not known:
        return first_read_calls(rows, page_limit)
    per = min(ROWS_PER_GET, page_limit - 1)
    return max(1, math.ceil(rows / per))


def _epoch(t: datetime) -> float:
    return t.timestamp()


def _at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def cut_rows(start: float, end: float, rows: Sequence[tuple[float, float]], per: int) -> list[float]:
    """Cut points (whole seconds after `start`, strictly inside (start, end)) so that each
    part [a, b) overlaps at most `per` of `rows` ((start, end) pairs sorted by start) where
    the rows allow it; a part whose rows all begin at one second is left whole."""
    cuts: list[float] = []
    starts = [r[0] for r in rows]
    lo = start
    i = bisect.bisect_left(starts, lo)         # first row starting at or after lo
    while True:
        spanning = sum(1 for s, e in rows[:i] if e > lo)      # begun before lo, still running
        room = per - spanning
        j = i + max(1, room)                   # the first row that no longer fits
        if j >= len(rows):
            break
        cut = start + math.floor(starts[j] - start)
        if cut <= lo:                          # many rows at one second: move past them
            k = bisect.bisect_right(starts, starts[j])
            if k >= len(rows):
                break
            cut = start + math.floor(starts[k] - start)
            if cut <= lo:
                break
        if cut >= end:
            break
        cuts.append(cut)
        lo = cut
        i = bisect.bisect_left(starts, lo)
    return cuts


def split_by_rows(window: TimeWindow, found: Iterable[Reservation], parts: int) -> list[TimeWindow]:
    """`window` cut into up to `parts` windows holding about as many of `found` (the rows
    of a full page) each; at least two when whole seconds allow, else the window halved."""
    start, end = _epoch(window.start), _epoch(window.end)
    starts = sorted(max(start, _epoch(r.start)) for r in found)
    cuts: list[float] = []
    for n in range(1, max(2, parts)):
        if not starts:
            break
        q = starts[min(len(starts) - 1, n * len(starts) // max(2, parts))]
        c = start + math.floor(q - start)
        if start < c < end and (not cuts or c > cuts[-1]):
            cuts.append(c)
    if not cuts:
        middle = start + math.floor((end - start) / 2)
        cuts = [middle] if start < middle < end else []
    edges = [start, *cuts, end]
    return [TimeWindow(_at(a), _at(b)) for a, b in zip(edges, edges[1:], strict=False)]


@dataclass(slots=True)
class _Profile:
    start: float                              # the span the rows are known for
    end: float
    rows: list[tuple[float, float]]           # (start, end) of each live row, sorted by start


class ReadProfiles:
    """What the last reads of each space found, to cut the next read's windows."""

    def __init__(self, page_limit: int, per: int = ROWS_PER_GET) -> None:
        self.page_limit = page_limit
        self.per = min(per, page_limit - 1)
        self._lock = threading.Lock()
        self._spaces: dict[str, _Profile] = {}

    def known(self, space_id: str) -> bool:
        with self._lock:
            return space_id in self._spaces

    def windows(self, space_id: str, window: TimeWindow) -> list[TimeWindow] | None:
        """`window` cut where each part is expected to hold at most `per` rows; None when
        nothing is known of the space there (a first read: the caller halves)."""
        start, end = _epoch(window.start), _epoch(window.end)
        with self._lock:
            p = self._spaces.get(space_id)
            if p is None or p.end <= start or p.start >= end or p.end <= p.start:
                return None
            lo, hi = max(start, p.start), min(end, p.end)
            rows = [r for r in p.rows if r[0] < hi and r[1] > lo]
            density = len(rows) / (hi - lo) if hi > lo else 0.0
        # Parts of the window the profile does not cover (the days added since, or the
        # past) are taken to be as busy as the part it does.
        rows += _synthetic(start, lo, density) + _synthetic(hi, end, density)
        rows.sort()
        edges = [start, *cut_rows(start, end, rows, self.per), end]
        return [TimeWindow(_at(a), _at(b)) for a, b in zip(edges, edges[1:], strict=False)]

    def record(self, space_id: str, window: TimeWindow, found: Iterable[Reservation]) -> None:
        """The rows a complete read of `window` found: they replace what was known there."""
        start, end = _epoch(window.start), _epoch(window.end)
        new = [(_epoch(r.start), _epoch(r.end)) for r in found]
        with self._lock:
            p = self._spaces.get(space_id)
            if p is None or p.end < start or p.start > end:
                p = _Profile(start, end, [])
            keep = [r for r in p.rows if not (r[0] < end and r[1] > start)]
            p.start, p.end = min(p.start, start), max(p.end, end)
            horizon = start - KEEP_PAST
            if p.start < horizon:
                p.start = horizon
                keep = [r for r in keep if r[1] > horizon]
            p.rows = sorted(keep + new)
            self._spaces[space_id] = p


    def add(self, space_id: str, start: datetime, end: datetime) -> None:
        """A reservation syncd itself made (or moved to) [start, end): counted in the
        space's known rows, so the next read is cut for it too."""
        with self._lock:
            p = self._spaces.get(space_id)
            if p is not None and p.start < _epoch(end) and _epoch(start) < p.end:
                bisect.insort(p.rows, (_epoch(start), _epoch(end)))


def split_full_page(window: TimeWindow, found: Sequence[Reservation], parts: int) -> list[TimeWindow]:
    """How to read again a window whose page came back full. When the page's rows come in
    order of start (as the sandbox, and every Ultimo seen, gives them), the rows that begin
    before the last one's start are likely all there: cut at that second, so the first
    part comes back short and the rest is read on. Otherwise cut around the rows returned
    (`split_by_rows`). Either way every part is read until its page is short."""
    starts = [_epoch(r.start) for r in found]
    start, end = _epoch(window.start), _epoch(window.end)
    if starts and starts == sorted(starts):
        cut = start + math.floor(starts[-1] - start)
        if start < cut < end:
            return [TimeWindow(window.start, _at(cut)), TimeWindow(_at(cut), window.end)]
    return split_by_rows(window, found, parts)


def _synthetic(a: float, b: float, density: float) -> list[tuple[float, float]]:
    n = int((b - a) * density) if b > a else 0
    return [(a + (k + 0.5) * (b - a) / n, a + (k + 0.5) * (b - a) / n + 1) for k in range(n)]

