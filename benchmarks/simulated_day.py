"""Three simulated days of `syncd run` on a virtual clock: 200 rooms, booking churn on
both sides, a budget of 5,000 Ultimo calls a day. Prints figures; asserts nothing.

What is real: the read planner and pacer (`syncd.service.readplan`, `.pacer`, `.rates`),
the daily ledger (`syncd.ultimo.budget.DailyBudget`, in memory) and the rate limiter,
all on the virtual clock; the Gets a read takes follow the client's rule
(`syncd.ultimo.paging`: halving on a room's first read, cut by density after). What is
simulated: the two systems. Each room job runs every `interval_seconds` as the service's
does: Exchange-side changes are written to Ultimo at once (one call each, when the pacer
has a token), and an Ultimo read happens when the pacer grants one; it finds the
Ultimo-side changes inside the window it read and tells the planner how many.

Three ways to spend exactly the same number of read calls each day (the plan's):

- plan: what the service does (learned rates and day profile, near-term weighting, the
  worst-case bound and the period cap), starting from nothing learned (the service's
  working-hours guess in its place until it has read a whole day);
- uniform: every room's whole window read equally often, evenly spread over the day;
- sqrt (true rates): square-root allocation knowing each room's true rate and when in the
  day its changes come (reads spread as the square root of that), a lower bound no
  scheduler that must learn the rates beats.

Each runs on an even workload (Ultimo-side changes follow room size) and a skewed one
(20 % of rooms make 80 % of them), over three consecutive days (and a fourth without
new changes, so late changes can cross). 90 % of the changes come in office hours
(07:00-18:00 local). Lag is from a change in Ultimo to its write in Exchange, near-term
(before the end of tomorrow) and further out; also for the days after the first, when
the plan has learned what a service that has run a day knows.

    python benchmarks/simulated_day.py [--rooms 200] [--budget 5000] [--seed 1] [--days 3]
"""

from __future__ import annotations

import argparse
import heapq
import math
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from simworld import (  # noqa: E402
    DAY,
    NEAR_SHARE,
    ZONE,
    Change,
    Room,
    Schedule,
    apply_schedule,
    make_world,
    most_in,
    pct,
    sqrt_known,
    uniform,
)

from syncd.errors import BudgetExhausted  # noqa: E402
from syncd.service.pacer import Pacer  # noqa: E402
from syncd.service.readplan import FULL, ReadPolicy, human  # noqa: E402
from syncd.ultimo.budget import DailyBudget, RateLimiter  # noqa: E402
from syncd.ultimo.paging import calls_for_rows  # noqa: E402


class Clock:
    def __init__(self, start: float) -> None:
        self.t = start

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)

    def mono(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)


def run_plan(rooms: list[Room], changes: list[Change], start: float, end: float, policy: ReadPolicy,
             per10: int, warmup: float) -> tuple[list[float], list[float], Pacer]:
    """The service's way; gives the times of its read calls and of all its calls."""
    clock = Clock(start - warmup)
    names = [f"room{i}" for i in range(len(rooms))]
    pacer = Pacer(policy, names, DailyBudget(None, policy.daily_budget, clock.now), level=policy.read_reserve,
                  now=clock.now, sleep=clock.sleep, max_wait=0.0, hold_off=0.0)
    # As after a night of running: every room read once in the uniform period before (a
    # restart: the client has not read them yet, so their first reads halve).
    period = sum(calls_for_rows(r.rows, policy.page_limit) for r in rooms) / policy.read_rate
    for i, name in enumerate(names):
        pacer.planner.load(name, ultimo_read_at=clock.now() - timedelta(seconds=period * (i + 1) / len(names)),
                           changed_at=None, rows=rooms[i].rows)
    limiter = RateLimiter(per10, 10.0, clock=clock.mono, sleep=clock.sleep)
    reads: list[float] = []
    calls: list[float] = []

    def call() -> None:
        pacer.spend(1)
        with limiter.call():      # answered at once on the virtual clock
            calls.append(clock.t)

    interval = policy.interval_seconds
    ticks = [(start - warmup + i * interval / len(rooms), i) for i in range(len(rooms))]
    heapq.heapify(ticks)
    feed = iter(changes)
    upcoming = next(feed, None)
    full_span = timedelta(days=policy.past_days + policy.future_days)
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
                call()
                room.pending_ex.pop(0).done_at = clock.t
        except BudgetExhausted:
            pass                                   # paced: the rest at the next tick
        grant = pacer.claim(name)
        if grant is not None:
            ok = True
            share = (grant.window.end - grant.window.start) / full_span
            try:
                for _ in range(calls_for_rows(room.rows * share, policy.page_limit, known=room.read_once)):
                    call()
                    reads.append(clock.t)
            except BudgetExhausted:
                ok = False
            seen: list[Change] = []
            if ok:
                room.read_once = True
                window_end = grant.window.end.timestamp()
                seen = [c for c in room.pending_ul if c.start < window_end]
                for c in seen:
                    c.done_at = clock.t
                room.pending_ul = [c for c in room.pending_ul if c.done_at is None]
                found = found or bool(seen)
            pacer.done(grant, ok=ok, rows=room.rows if grant.scope == FULL else None, found=len(seen) if ok else None)
        if found:
            pacer.note_change(name)
        heapq.heappush(ticks, (t + interval, i))
    return reads, calls, pacer


def lag_row(changes: list[Change], day: tuple[float, float] | None = None) -> dict[str, tuple[float, float]]:
    out = {}
    for label, keep in (("near", lambda c: c.near), ("far", lambda c: not c.near), ("all", lambda c: True)):
        values = [c.done_at - c.at for c in changes if c.side == "ultimo" and keep(c) and c.done_at is not None
                  and (day is None or day[0] <= c.at < day[1])]
        out[label] = (pct(values, .5), pct(values, .95))
    return out


def fmt(pair: tuple[float, float]) -> str:
    return " / ".join("-" if math.isnan(v) else human(v) for v in pair)


def run_workload(args: argparse.Namespace, policy: ReadPolicy, day0: float, skewed: bool) -> None:
    days, total = args.days, args.days + 1
    world = lambda: make_world(args.seed, args.rooms, day0, days, 30, args.exchange_changes,  # noqa: E731
                               args.ultimo_changes, skewed)
    rooms, changes = world()
    started = time.monotonic()
    reads, calls, pacer = run_plan(rooms, changes, day0, day0 + total * DAY, policy, args.per10, 6 * 3600)
    per_day = [sum(1 for t in reads if day0 + d * DAY <= t < day0 + (d + 1) * DAY) for d in range(total)]
    results = {"plan": (changes, [t for t in calls if t >= day0])}     # the warm-up's calls are not counted
    for label in ("uniform", "sqrt (true rates)"):
        r2, c2 = world()
        near_t: list[list[float]] = [[] for _ in r2]
        full_t: list[list[float]] = [[] for _ in r2]
        read_calls: list[float] = []
        for d in range(total):
            if label == "uniform":
                s = uniform(r2, per_day[d], day0 + d * DAY, policy.page_limit)
            else:
                s = sqrt_known(r2, per_day[d], day0 + d * DAY, policy.page_limit, NEAR_SHARE, policy.near_weight)
            for i in range(len(r2)):
                near_t[i] += s.near[i]
                full_t[i] += s.full[i]
            read_calls += s.calls
        writes = apply_schedule(c2, Schedule(near_t, full_t, read_calls), policy.interval_seconds, len(r2))
        results[label] = (c2, sorted(read_calls + writes))
    kind = "skewed (20 % of rooms make 80 % of Ultimo-side changes)" if skewed else "even (changes follow size)"
    ul = sum(1 for c in changes if c.side == "ultimo")
    ex = len(changes) - ul
    print(f"\n== {kind}: {ex} Exchange-side and {ul} Ultimo-side changes over {days} days "
          f"(simulated in {time.monotonic() - started:.0f} s)")
    print(f"read calls per day (every strategy, exactly): {', '.join(str(n) for n in per_day[:days])}"
          f" (and {per_day[days]} on the day after, without new changes)")
    head = f"{'Ultimo -> Exchange lag, p50 / p95':38}" + "".join(f"{k:>22}" for k in results)
    print(head)
    for label in ("near", "far", "all"):
        name = {"near": "near-term", "far": "far horizon", "all": "overall"}[label]
        print(f"{name + f' ({days} days)':38}" + "".join(f"{fmt(lag_row(ch)[label]):>22}" for ch, _ in results.values()))
    for d in range(days):
        span = (day0 + d * DAY, day0 + (d + 1) * DAY)
        print(f"{f'  overall, day {d + 1}':38}" + "".join(f"{fmt(lag_row(ch, span)['all']):>22}"
                                                       for ch, _ in results.values()))
    if days > 1:
        span = (day0 + DAY, day0 + days * DAY)
        print(f"{f'  overall, days 2-{days} (learned)':38}" + "".join(f"{fmt(lag_row(ch, span)['all']):>22}"
                                                                 for ch, _ in results.values()))
    spans = [(f"{days} days", None)] + ([(f"days 2-{days}", (day0 + DAY, day0 + days * DAY))] if days > 1 else [])
    for label, span in spans:
        plan, uni, ref = (lag_row(ch, span)["all"] for ch, _ in results.values())
        print(f"{f'  ratios, {label}':38}p50 plan/uniform {plan[0] / uni[0]:.2f}, plan/sqrt {plan[0] / ref[0]:.2f}; "
              f"p95 plan/uniform {plan[1] / uni[1]:.2f}")
    left = [sum(1 for c in ch if c.side == "ultimo" and c.done_at is None) for ch, _ in results.values()]
    print(f"{'not crossed by the end':38}" + "".join(f"{n:>22}" for n in left))
    print(f"{'calls used (reads + writes)':38}" + "".join(f"{len(cl):>22}" for _, cl in results.values()))
    print(f"{'most calls in any 10 s / any 24 h':38}" + "".join(
        f"{f'{most_in(cl, 10.0)} / {most_in(cl, DAY)}':>22}" for _, cl in results.values()))
    print(f"limits: {args.per10} in any 10 s, {args.budget} in any 24 h; "
          f"worst-case bound {human(pacer.planner.bound())}")
    print(f"learned by the end: {pacer.planner.day_message(ZONE, datetime.fromtimestamp(day0 + days * DAY, UTC))}")
    if skewed:
        busy = [i for i, r in enumerate(rooms) if r.ul_rate > args.ultimo_changes]
        quiet = [i for i, r in enumerate(rooms) if r.ul_rate <= args.ultimo_changes]
        learned = [pacer.planner.learned_rate(f"room{i}") for i in range(len(rooms))]
        true = [r.ul_rate for r in rooms]
        mean_of = lambda ix, xs: sum(xs[i] for i in ix) / len(ix)  # noqa: E731
        print(f"rates learned by the end (the quiet last day lowers both), per day: busy rooms "
              f"{mean_of(busy, learned):.2f}, quiet rooms {mean_of(quiet, learned):.2f}, "
              f"{mean_of(busy, learned) / mean_of(quiet, learned):.1f} times (truly {mean_of(busy, true):.2f} and "
              f"{mean_of(quiet, true):.3f}, {mean_of(busy, true) / mean_of(quiet, true):.1f} times)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rooms", type=int, default=200)
    p.add_argument("--budget", type=int, default=5000)
    p.add_argument("--per10", type=int, default=50)
    p.add_argument("--interval", type=int, default=60)
    p.add_argument("--days", type=int, default=3)
    p.add_argument("--exchange-changes", type=float, default=5.0, help="per room and day (average room)")
    p.add_argument("--ultimo-changes", type=float, default=1.5, help="per room and day (average room)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workload", choices=("even", "skewed", "both"), default="both")
    args = p.parse_args(argv)

    day0 = datetime(2026, 3, 3, tzinfo=ZONE).astimezone(UTC).timestamp()     # a Tuesday, local midnight
    policy = ReadPolicy.for_budget(args.budget, args.per10, interval_seconds=float(args.interval),
                                   past_days=1, future_days=30, near_term_days=2, timezone="Europe/Amsterdam")
    rooms, _ = make_world(args.seed, args.rooms, day0, 1, 30, 0, 0, False)
    sweep = sum(calls_for_rows(r.rows, policy.page_limit) for r in rooms)
    first = sum(calls_for_rows(r.rows, policy.page_limit, known=False) for r in rooms)
    least = sum(max(1, math.ceil(r.rows / (policy.page_limit - 1))) for r in rooms)
    print(f"simulated days: {args.rooms} rooms, Ultimo budget {args.budget}/day and {args.per10}/10 s, checks every "
          f"{args.interval} s, window 1 + 30 days, near term = today and tomorrow")
    print(f"read calls per full sweep: {sweep} cut by known density, {first} halving (a first read); provable "
          f"minimum (every page under {policy.page_limit} rows) {least}: {100 * (sweep / least - 1):.1f} % above it")
    for skewed in {"even": (False,), "skewed": (True,), "both": (False, True)}[args.workload]:
        run_workload(args, policy, day0, skewed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
