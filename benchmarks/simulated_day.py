"""A simulated day of `syncd run` on a virtual clock: 200 rooms, booking churn on both
sides, a budget of 5,000 Ultimo calls. Prints figures; asserts nothing.

What is real: the read planner and pacer (`syncd.service.readplan`, `syncd.service.pacer`), the daily
ledger (`syncd.ultimo.budget.DailyBudget`, in memory) and the rate limiter
(`syncd.ultimo.budget.RateLimiter`), all on the virtual clock. What is simulated: the two
systems. Each room job runs every `interval_seconds` as the service's does: a free
Exchange change check, Exchange-side changes written to Ultimo at once (one call each,
when the pacer has a token, else at the next tick), and an Ultimo read when the pacer
grants one (one call per page of rows; the near-term window or the whole one), which
finds the Ultimo-side changes inside the window it read.

Lag is the time from a change on one side to its write on the other, per direction,
split by where the booking lies: near-term (before the end of tomorrow, local time) or
further out. Three ways to spend the same budget on the same day: "planned" (near-term
and whole-window reads, as the planner chooses), "whole windows" (the planner, every
read of the whole window: what the service does while the cycle cannot read part of a
window) and "uniform" (every room's whole window in turn, as often as the calls left
after the same writes allow, spread over the UTC day).

    python benchmarks/simulated_day.py [--rooms 200] [--budget 5000] [--seed 1]
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from syncd.errors import BudgetExhausted  # noqa: E402
from syncd.service.pacer import Pacer  # noqa: E402
from syncd.service.readplan import FULL, ReadPolicy, calls_for_rows, human  # noqa: E402
from syncd.ultimo.budget import DailyBudget, RateLimiter  # noqa: E402

ZONE = ZoneInfo("Europe/Amsterdam")
DAY = 86400.0


class Clock:
    def __init__(self, start: datetime) -> None:
        self.t = start.timestamp()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)

    def mono(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)


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
    rows: int                                   # bookings in the window (both systems hold them all)
    pending_ex: list[Change] = field(default_factory=list)    # happened in Exchange, not yet written
    pending_ul: list[Change] = field(default_factory=list)    # happened in Ultimo, not yet seen


def near_end(t: float, near_days: int) -> float:
    local = datetime.fromtimestamp(t, ZONE).date() + timedelta(days=near_days)
    return datetime(local.year, local.month, local.day, tzinfo=ZONE).timestamp()


def make_world(rng: random.Random, n_rooms: int, start: float, near_days: int, future_days: int,
               ex_per_day: float, ul_per_day: float) -> tuple[list[Room], list[Change]]:
    """Rooms of varied busyness and one day of changes, mostly in working hours."""
    rooms, changes = [], []
    for i in range(n_rooms):
        busy = rng.lognormvariate(0, 0.6)
        rooms.append(Room(rows=int(busy * 4 * (future_days + 1) * 5 / 7)))
        for side, rate in (("exchange", ex_per_day), ("ultimo", ul_per_day)):
            for _ in range(_poisson(rng, rate * busy)):
                local_day = datetime.fromtimestamp(start, ZONE).replace(hour=0, minute=0, second=0)
                if rng.random() < 0.9:     # office hours
                    at = local_day.timestamp() + rng.uniform(7 * 3600, 18 * 3600)
                else:
                    at = local_day.timestamp() + rng.uniform(0, DAY)
                at = max(start, min(start + DAY - 1, at))
                if rng.random() < 0.45:    # today or tomorrow
                    b_start = rng.uniform(at, near_end(at, near_days))
                else:
                    b_start = rng.uniform(near_end(at, near_days), at + future_days * DAY)
                changes.append(Change(at, i, side, b_start, b_start < near_end(at, near_days)))
    changes.sort(key=lambda c: c.at)
    return rooms, changes


def _poisson(rng: random.Random, lam: float) -> int:
    n, p, limit = 0, 1.0, math.exp(-lam)
    while True:
        p *= rng.random()
        if p <= limit:
            return n
        n += 1


class Calls:
    """Every Ultimo call's time, through the day's ledger and the 10-second limiter."""

    def __init__(self, clock: Clock, per10: int) -> None:
        self.times: list[float] = []
        self.limiter = RateLimiter(per10, 10.0, clock=clock.mono, sleep=clock.sleep)
        self.clock = clock

    def call(self) -> None:
        with self.limiter.call():      # answered at once on the virtual clock
            self.times.append(self.clock.t)

    def most_in(self, width: float) -> int:
        best = 0
        for j, t in enumerate(self.times):
            best = max(best, j - bisect.bisect_right(self.times, t - width) + 1)
        return best


def run_planned(rooms: list[Room], changes: list[Change], start: float, policy: ReadPolicy, per10: int,
                warmup: float) -> Calls:
    """The service's way: change checks, writes at once, paced and prioritised reads."""
    clock = Clock(datetime.fromtimestamp(start - warmup, UTC))
    names = [f"room{i}" for i in range(len(rooms))]
    ledger = DailyBudget(None, policy.daily_budget, clock.now)
    pacer = Pacer(policy, names, ledger, level=policy.read_reserve, now=clock.now, sleep=clock.sleep,
                  max_wait=0.0, hold_off=0.0)
    # As after a night of running: every room read once in the hours before.
    for i, name in enumerate(names):
        pacer.planner.load(name, ultimo_read_at=clock.now() - timedelta(seconds=warmup * (i + 1) / len(names)),
                           changed_at=None, rows=rooms[i].rows)
    calls = Calls(clock, per10)
    interval = policy.interval_seconds
    ticks = [(start - warmup + i * interval / len(rooms), i) for i in range(len(rooms))]
    heapq.heapify(ticks)
    feed = iter(changes)
    upcoming = next(feed, None)
    end = start + DAY
    while ticks:
        t, i = heapq.heappop(ticks)
        if t >= end:
            break
        clock.t = max(clock.t, t)
        while upcoming is not None and upcoming.at <= clock.t:
            room = rooms[upcoming.room]
            (room.pending_ex if upcoming.side == "exchange" else room.pending_ul).append(upcoming)
            upcoming = next(feed, None)
        room, name = rooms[i], names[i]
        found = bool(room.pending_ex)
        try:
            while room.pending_ex:                 # Exchange -> Ultimo: one write each, at once
                pacer.spend(1)
                calls.call()
                room.pending_ex.pop(0).done_at = clock.t
        except BudgetExhausted:
            pass                                   # paced: the rest at the next tick
        grant = pacer.claim(name)
        if grant is not None:
            ok = True
            try:
                share = (grant.window.end - grant.window.start) / timedelta(days=policy.past_days + policy.future_days)
                for _ in range(calls_for_rows(room.rows * share, policy.page_limit)):
                    pacer.spend(1)
                    calls.call()
            except BudgetExhausted:
                ok = False
            if ok:
                window_end = grant.window.end.timestamp()
                seen = [c for c in room.pending_ul if c.start < window_end]
                for c in seen:
                    c.done_at = clock.t
                room.pending_ul = [c for c in room.pending_ul if c.done_at is None]
                found = found or bool(seen)
            pacer.done(grant, ok=ok, rows=room.rows if grant.scope == FULL else None)
        if found:
            pacer.note_change(name)
        heapq.heappush(ticks, (t + interval, i))
    return calls


def run_uniform(rooms: list[Room], changes: list[Change], start: float, policy: ReadPolicy,
                writes: int) -> float:
    """Uniform polling within the same budget: each room's whole window in turn, as often
    as the calls left after `writes` allow. Gives the read period."""
    costs = [calls_for_rows(r.rows, policy.page_limit) for r in rooms]
    period = sum(costs) * DAY / max(1, policy.daily_budget - writes)
    n = len(rooms)
    for c in changes:
        if c.side == "exchange":
            # Checked every interval, written at once (tokens never short: no pacing).
            tick_phase = (c.room * policy.interval_seconds / n)
            c.done_at = c.at + ((tick_phase - c.at) % policy.interval_seconds)
        else:
            phase = c.room * period / n
            c.done_at = c.at + ((phase - c.at) % period)
    return period


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def lags(changes: list[Change], side: str, near: bool, end: float) -> tuple[list[float], int]:
    """Lags of changes made on `side` (near-term or not); and how many were still pending at the end."""
    done, pending = [], 0
    for c in changes:
        if c.side != side or c.near != near:
            continue
        if c.done_at is None or c.done_at > end:
            pending += 1
        else:
            done.append(c.done_at - c.at)
    return done, pending


def fmt(seconds: float) -> str:
    return "-" if math.isnan(seconds) else human(seconds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rooms", type=int, default=200)
    p.add_argument("--budget", type=int, default=5000)
    p.add_argument("--per10", type=int, default=50)
    p.add_argument("--interval", type=int, default=60)
    p.add_argument("--exchange-changes", type=float, default=5.0, help="per room and day (average room)")
    p.add_argument("--ultimo-changes", type=float, default=1.5, help="per room and day (average room)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)

    started = time.monotonic()
    day = datetime(2026, 3, 3, tzinfo=ZONE).astimezone(UTC).timestamp()     # a Tuesday, local midnight
    policy = ReadPolicy.for_budget(args.budget, args.per10, interval_seconds=float(args.interval),
                                   past_days=1, future_days=30, near_term_days=2, timezone="Europe/Amsterdam")

    def scenario() -> tuple[list[Room], list[Change]]:
        return make_world(random.Random(args.seed), args.rooms, day, 2, 30, args.exchange_changes,
                          args.ultimo_changes)

    def lag_table(changes: list[Change]) -> dict[tuple[str, bool], tuple[list[float], int]]:
        return {(s, n): lags(changes, s, n, day + DAY) for s in ("exchange", "ultimo") for n in (True, False)}

    rooms, changes = scenario()
    calls = run_planned(rooms, changes, day, policy, args.per10, warmup=6 * 3600)
    in_day = [t for t in calls.times if day <= t < day + DAY]
    planned = lag_table(changes)
    writes = sum(1 for c in changes if c.side == "exchange")

    rooms_w, changes_w = scenario()
    run_planned(rooms_w, changes_w, day, replace(policy, split_reads=False), args.per10, warmup=6 * 3600)
    whole = lag_table(changes_w)

    rooms_u, changes_u = scenario()
    period = run_uniform(rooms_u, changes_u, day, policy, writes)
    uniform = lag_table(changes_u)

    est = Pacer(policy, [f"r{i}" for i in range(len(rooms))], DailyBudget(None, policy.daily_budget),
                level=0).planner
    for i, r in enumerate(rooms):
        est.load(f"r{i}", ultimo_read_at=None, changed_at=None, rows=r.rows)

    costs = [calls_for_rows(r.rows, policy.page_limit) for r in rooms]
    print(f"simulated day: {args.rooms} rooms, Ultimo budget {args.budget}/day and {args.per10}/10 s, "
          f"checks every {args.interval} s, window 1 + 30 days, near term = today and tomorrow")
    print(f"churn: {writes} Exchange-side and {len(changes) - writes} Ultimo-side changes; "
          f"{sum(r.rows for r in rooms)} bookings in the window; a whole-window read takes 1-{max(costs)} calls "
          f"(mean {statistics.mean(costs):.2f})")
    print()
    print(f"Ultimo calls in the day: {len(in_day)} of {args.budget} ({writes} writes, {len(in_day) - writes} reads); "
          f"largest in any 24 h: {calls.most_in(DAY)}; largest in any 10 s: {calls.most_in(10.0)} of {args.per10}")
    print(f"  (a steady day leaves the pacing bank of {policy.capacity:.0f} unspent: that is what keeps any 24 h,"
          " not only each UTC day, within the budget)")
    print()
    head = "lag from a change to the other side"
    print(f"{head:36}{'planned':>17}{'whole windows':>17}{'uniform':>17}{'changes':>9}")
    print(f"{'':36}{'p50 / p95':>17}{'p50 / p95':>17}{'p50 / p95':>17}{'(left)':>9}")
    for side, label in (("exchange", "Exchange -> Ultimo"), ("ultimo", "Ultimo -> Exchange")):
        for near, where in ((True, "near-term"), (False, "far horizon")):
            cells = []
            for table in (planned, whole, uniform):
                values, _ = table[(side, near)]
                cells.append(f"{fmt(pct(values, .5))} / {fmt(pct(values, .95))}")
            done, left = planned[(side, near)]
            print(f"{label + ', ' + where:36}{cells[0]:>17}{cells[1]:>17}{cells[2]:>17}"
                  f"{len(done) + left:>6} ({left})")
    print()
    print(f"uniform polling reads each room's whole window every {human(period)}, spending all "
          f"{args.budget - writes} calls left after the writes (per UTC day, no bound over any 24 h)")
    print(f"start-up estimate: {est.estimate(datetime.fromtimestamp(day, UTC)).message()}")
    print(f"(simulated in {time.monotonic() - started:.0f} s; 'left' = changes not yet across at the day's end)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
