"""The simulated world of `simulated_day.py`: rooms, their changes on both sides, and the
two reference schedules (uniform polling, square-root allocation with the true rates)
given an exact number of read calls. Figures only; nothing here is syncd's code.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from syncd.ultimo.paging import calls_for_rows

ZONE = ZoneInfo("Europe/Amsterdam")
DAY = 86400.0
NEAR_SHARE = 0.45          # of changes, bookings today or tomorrow
OFFICE = (7, 18)           # local hours of 90 % of the changes (the rest at any hour)


@dataclass
class Change:
    at: float                 # when it happened
    room: int
    side: str                 # "exchange" | "ultimo": where it happened
    start: float              # the booking's start after the change
    near: bool                # inside the near-term window when it happened
    done_at: float | None = None


@dataclass
class Room:
    rows: int                                   # bookings in the window
    ul_rate: float                              # true Ultimo-side changes per day
    pending_ex: list[Change] = field(default_factory=list)
    pending_ul: list[Change] = field(default_factory=list)
    read_once: bool = False


def near_end(t: float, near_days: int = 2) -> float:
    local = datetime.fromtimestamp(t, ZONE).date() + timedelta(days=near_days)
    return datetime(local.year, local.month, local.day, tzinfo=ZONE).timestamp()


def _poisson(rng: random.Random, lam: float) -> int:
    n, p, limit = 0, 1.0, math.exp(-lam)
    while True:
        p *= rng.random()
        if p <= limit:
            return n
        n += 1


def make_world(seed: int, n_rooms: int, start: float, days: int, future_days: int, ex_per_day: float,
               ul_per_day: float, skewed: bool) -> tuple[list[Room], list[Change]]:
    """Rooms of varied size; `days` days of changes, mostly in office hours. Exchange-side
    changes follow size; Ultimo-side ones follow size too (even), or 80 % of them come
    from a random 20 % of the rooms (skewed)."""
    rng = random.Random(seed)
    busy = [rng.lognormvariate(0, 0.6) for _ in range(n_rooms)]
    mean = sum(busy) / n_rooms
    hot = set(rng.sample(range(n_rooms), max(1, n_rooms // 5)))
    rooms = []
    for i, b in enumerate(busy):
        if skewed:
            share = 0.8 / len(hot) if i in hot else 0.2 / (n_rooms - len(hot))
            ul = ul_per_day * n_rooms * share
        else:
            ul = ul_per_day * b / mean
        rooms.append(Room(rows=int(b * 4 * (future_days + 1) * 5 / 7), ul_rate=ul))
    changes = []
    for d in range(days):
        day0 = start + d * DAY
        local_day = datetime.fromtimestamp(day0, ZONE).replace(hour=0, minute=0, second=0).timestamp()
        for i, room in enumerate(rooms):
            for side, rate in (("exchange", ex_per_day * busy[i] / mean), ("ultimo", room.ul_rate)):
                for _ in range(_poisson(rng, rate)):
                    if rng.random() < 0.9:     # office hours
                        at = local_day + rng.uniform(OFFICE[0] * 3600, OFFICE[1] * 3600)
                    else:
                        at = local_day + rng.uniform(0, DAY)
                    at = max(day0, min(day0 + DAY - 1, at))
                    if rng.random() < NEAR_SHARE:
                        b_start = rng.uniform(at, near_end(at))
                    else:
                        b_start = rng.uniform(near_end(at), at + future_days * DAY)
                    changes.append(Change(at, i, side, b_start, b_start < near_end(at)))
    changes.sort(key=lambda c: c.at)
    return rooms, changes


# --- schedules at an exact number of read calls --------------------------------------------


@dataclass
class Schedule:
    """Per room: the times of its near-term reads and of its whole-window reads."""

    near: list[list[float]]
    full: list[list[float]]
    calls: list[float]        # one entry per call (its time)


def _spread(n: int, phase: float, day0: float) -> list[float]:
    return [day0 + ((phase + k) / n) * DAY for k in range(n)] if n > 0 else []


def change_density() -> list[float]:
    """The true rate of changes in each local hour of the day (make_world's), mean 1."""
    raw = [0.9 / (OFFICE[1] - OFFICE[0]) * (OFFICE[0] <= h < OFFICE[1]) + 0.1 / 24 for h in range(24)]
    mean = sum(raw) / 24
    return [x / mean for x in raw]


def _spread_shaped(n: int, phase: float, day0: float, density: list[float]) -> list[float]:
    """`n` times in the day from `day0` (local midnight), spaced evenly in the measure
    whose hourly weights are `density`: denser where it is higher."""
    if n <= 0:
        return []
    total = sum(density)
    out = []
    for k in range(n):
        target = (phase + k) / n * total
        acc = 0.0
        for h, w in enumerate(density):
            if acc + w >= target and w > 0:
                out.append(day0 + (h + (target - acc) / w) * 3600.0)
                break
            acc += w
    return out


def _fill(counts: list[int], costs: list[int], budget: int, order: list[int]) -> list[int]:
    """Add reads (one more to the rooms in `order`, round after round) until not one
    more fits in `budget` calls; gives the counts."""
    left = budget - sum(n * c for n, c in zip(counts, costs, strict=True))
    while left > 0:
        added = False
        for i in order:
            if costs[i] <= left:
                counts[i] += 1
                left -= costs[i]
                added = True
                if left == 0:
                    break
        if not added:
            break
    return counts


def uniform(rooms: list[Room], read_calls: int, day0: float, page_limit: int) -> Schedule:
    """Every room's whole window the same number of times (one more for some), spread
    evenly over the day, `read_calls` calls in all (or as close as whole reads allow)."""
    costs = [calls_for_rows(r.rows, page_limit) for r in rooms]
    n = read_calls // max(1, sum(costs))
    counts = _fill([n] * len(rooms), costs, read_calls, list(range(len(rooms))))
    full = [_spread(c, i / len(rooms), day0) for i, c in enumerate(counts)]
    return Schedule([[] for _ in rooms], full, sorted(t for i, ts in enumerate(full) for t in ts
                                                      for _ in range(costs[i])))


def sqrt_known(rooms: list[Room], read_calls: int, day0: float, page_limit: int, near_share: float,
               near_weight: float) -> Schedule:
    """Square-root allocation with every room's true rate known, over rooms and over the
    hours of the day: near-term reads every sqrt(θ cn / (w φ λ)) and whole-window reads
    every sqrt(θ cf / ((1 - φ) λ)) on average (a room whose near term costs as much as
    the whole reads whole windows only), θ chosen so the reads take `read_calls` calls,
    and each room's reads spread over the day as the square root of the true rate of
    changes in each hour. A lower bound no scheduler that must learn the rates beats."""
    per_day = []
    for r in rooms:
        lam = max(r.ul_rate, 1e-6) / DAY
        cf = calls_for_rows(r.rows, page_limit)
        cn = calls_for_rows(r.rows * 3 / 31, page_limit)
        if cn < cf:
            per_day.append((cn, math.sqrt(near_weight * near_share * lam / cn),
                            cf, math.sqrt((1 - near_share) * lam / cf)))
        else:
            per_day.append((0, 0.0, cf, math.sqrt(lam / cf)))
    # Reads per second of each part = x / sqrt(θ); calls = Σ cost x / sqrt(θ).
    unit = sum(cn * xn + cf * xf for cn, xn, cf, xf in per_day)
    scale = read_calls / (unit * DAY)           # = 1 / sqrt(θ)
    n_near = [int(xn * scale * DAY) for _, xn, _, _ in per_day]
    n_full = [max(1, int(xf * scale * DAY)) for _, _, _, xf in per_day]
    costs_near = [max(1, cn) for cn, _, _, _ in per_day]
    costs_full = [cf for _, _, cf, _ in per_day]
    spent = sum(n * c for n, c in zip(n_near, costs_near, strict=True)) + \
        sum(n * c for n, c in zip(n_full, costs_full, strict=True))
    by_rate = sorted(range(len(rooms)), key=lambda i: -rooms[i].ul_rate)
    n_full = _fill(n_full, costs_full, read_calls - spent + sum(n * c for n, c in zip(n_full, costs_full,
                                                                                            strict=True)), by_rate)
    density = [math.sqrt(x) for x in change_density()]
    near = [_spread_shaped(n, i / len(rooms), day0, density) for i, n in enumerate(n_near)]
    full = [_spread_shaped(n, (i + 0.5) / len(rooms), day0, density) for i, n in enumerate(n_full)]
    calls = [t for i, ts in enumerate(near) for t in ts for _ in range(costs_near[i])]
    calls += [t for i, ts in enumerate(full) for t in ts for _ in range(costs_full[i])]
    return Schedule(near, full, sorted(calls))


def apply_schedule(changes: list[Change], schedule: Schedule, interval: float, n_rooms: int) -> list[float]:
    """Set each change's done_at as the schedule crosses it; gives the write calls' times
    (Exchange-side changes written at the room's next check)."""
    writes = []
    merged = [sorted(a + b) for a, b in zip(schedule.near, schedule.full, strict=True)]
    for c in changes:
        if c.side == "exchange":
            phase = c.room * interval / n_rooms
            c.done_at = c.at + ((phase - c.at) % interval)
            writes.append(c.done_at)
            continue
        times = merged[c.room] if c.near else schedule.full[c.room]
        k = bisect.bisect_right(times, c.at)
        c.done_at = times[k] if k < len(times) else None
    return writes


def most_in(times: list[float], width: float) -> int:
    times = sorted(times)
    best = 0
    for j, t in enumerate(times):
        best = max(best, j - bisect.bisect_right(times, t - width) + 1)
    return best


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]
