"""Learned change rates and the worst-case bound of the read planner (pure, virtual time)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from syncd.service.rates import GRID, ChangeRates, _fit_spread
from syncd.service.readplan import FULL, ReadGrant, ReadPlanner, ReadPolicy, TokenBucket

T0 = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
DAY = 86400.0


def planner(rooms, budget=2000, level=0.0, **kw) -> ReadPlanner:
    policy = ReadPolicy.for_budget(budget, 50, interval_seconds=60.0, **kw)
    return ReadPlanner(policy, list(rooms), TokenBucket(policy.capacity, policy.rate, level, T0))


def test_a_room_whose_reads_find_changes_is_learned_busier_than_its_size_says():
    rooms = ["hot"] + [f"cold{i}" for i in range(19)]
    p = planner(rooms)
    for room in rooms:
        p.load(room, ultimo_read_at=T0, changed_at=None, rows=50)
    assert p._rate("hot") == pytest.approx(p._rate("cold0"))        # the same prior: same size
    for hour in range(1, 25):
        t = T0 + timedelta(hours=hour)
        for room in rooms:
            p.done(_grant(p, room, t), t, ok=True, rows=50, found=3 if room == "hot" else 0)
    assert p._rate("hot") > 10 * p._rate("cold0")
    # 3 changes an hour, learned within a day to within a factor of two.
    assert 1.5 / 3600 < p._rate("hot") < 6 / 3600


def test_the_prior_grows_with_the_rooms_bookings():
    rates = ChangeRates()
    prior = rates.prior({"big": 300, "small": 10})
    assert rates.rate("big", 300, prior) > 10 * rates.rate("small", 10, prior) > 0


def test_counts_decay_over_days_so_a_room_that_quietens_is_read_less():
    rates = ChangeRates(half_life_days=3)
    rates.observe("r", 30, DAY, 0.0)
    busy = rates.rate("r", 10, rates.prior({"r": 10}))
    rates.observe("r", 0, DAY, 9 * DAY)       # three half-lives later, a quiet day
    assert rates.rate("r", 10, rates.prior({"r": 10})) < busy / 4


def test_near_and_full_reads_count_their_share_of_the_exposure():
    rates = ChangeRates(near_share=0.5)
    assert rates.exposure(now=100.0, near_at=80.0, full_at=0.0, full=False) == pytest.approx(10.0)
    assert rates.exposure(now=100.0, near_at=80.0, full_at=0.0, full=True) == pytest.approx(60.0)
    assert rates.exposure(now=100.0, near_at=None, full_at=None, full=True) == 0.0


def test_the_bound_is_twice_uniform_pollings_period():
    p = planner([f"r{i}" for i in range(100)], budget=2000)
    for i in range(100):
        p.load(f"r{i}", ultimo_read_at=T0, changed_at=None, rows=150)      # 2 calls each, cut by density
    period = 200 / p.policy.read_rate
    assert p.bound(T0) == pytest.approx(2 * period)
    assert f"{p.bound(T0) / 3600:.1f} h" in p.estimate(T0).message()


@pytest.mark.parametrize("spread_share", [0.5, 0.0])
def test_no_whole_window_waits_past_the_bound_whatever_the_plan_prefers(spread_share: float):
    """Five rooms change all the time, forty never: the plan prefers the five, but each of
    the forty is still read within the bound, also when every room was last read at once."""
    rooms = [f"hot{i}" for i in range(5)] + [f"cold{i}" for i in range(40)]
    p = planner(rooms, budget=800, level=0.0)
    # As after running a while (the last reads spread over the uniform period), or all at once.
    spread = p.bound(T0) * spread_share
    last = {r: T0 - timedelta(seconds=spread * i / len(rooms)) for i, r in enumerate(rooms)}
    for r in rooms:
        p.load(r, ultimo_read_at=last[r], changed_at=None, rows=150)
    bound = p.bound(T0)
    reads = dict.fromkeys(rooms, 0)
    worst = 0.0
    t = T0
    while t < T0 + timedelta(days=2):
        t += timedelta(seconds=60)
        while (queue := p.queue(t)) and (g := p.claim(queue[0].room, t)) is not None:
            p.bucket.take(g.cost, t)          # the calls the read makes (the pacer's part)
            p.done(g, t, ok=True, rows=150, found=5 if g.room.startswith("hot") else 0)
            reads[g.room] += 1
            if g.scope == FULL:
                worst = max(worst, (t - last[g.room]).total_seconds())
                last[g.room] = t
    worst = max([worst] + [(t - last[r]).total_seconds() for r in rooms])
    assert worst <= bound
    # ... and the busy rooms get far more of the reads than their share of the rooms.
    # (the period cap keeps the cold ones read too: about twice their share, not more)
    assert sum(reads[r] for r in rooms[:5]) > 2 * len(rooms[:5]) / len(rooms) * sum(reads.values())


def _grant(p: ReadPlanner, room: str, t: datetime) -> ReadGrant:
    _, full = p.windows(t)
    return ReadGrant(room, FULL, full, 1)


def _chance(rng: random.Random, mean: float, slices: int = 1000) -> int:
    """Changes in a span cut into `slices`, each holding one with a small chance: Poisson
    with `mean`, near enough."""
    return sum(1 for _ in range(slices) if rng.random() < mean / slices)


def _learned(means: list[float], seed: int = 5) -> tuple[ChangeRates, dict[str, int], list[int]]:
    """Rooms of one size, each read over two days finding what chance gives at its mean."""
    rng = random.Random(seed)
    rates, sizes, counts = ChangeRates(), {}, []
    for i, mean in enumerate(means):
        n = _chance(rng, 2 * mean)
        rates.observe(f"r{i}", n, 2 * DAY, 2 * DAY)
        sizes[f"r{i}"] = 50
        counts.append(n)
    return rates, sizes, counts


def test_where_rooms_change_as_their_size_says_a_quiet_two_days_is_taken_for_chance():
    rates, sizes, counts = _learned([1.5] * 100)
    prior = rates.prior(sizes)
    # The spread learned is narrow: the counts spread no more than chance does.
    assert sum(w for w, g in zip(prior.weights, GRID, strict=True) if 0.5 <= g <= 2) > 0.9
    learned = [rates.rate(f"r{i}", 50, prior) for i in range(100)]
    mean = sum(learned) / len(learned)
    quietest = learned[counts.index(min(counts))]
    assert min(counts) <= 1 and quietest > 0.6 * mean   # not starved for a chance quiet spell


def test_where_a_fifth_of_the_rooms_make_most_changes_each_room_is_learned_at_its_own_rate():
    """Two kinds of room, 6 and 0.375 changes a day: each room's count says which kind it
    is, and it is learned at that kind's rate, not pulled toward the average (a single
    smooth prior learned the busy ones at 9 to 13 times the quiet ones)."""
    rates, sizes, _ = _learned([6.0] * 100 + [0.375] * 400)
    prior = rates.prior(sizes)
    learned = [rates.rate(f"r{i}", 50, prior) * DAY for i in range(500)]
    busy, quiet = sum(learned[:100]) / 100, sum(learned[100:]) / 400
    assert 5.0 < busy < 7.0 and 0.3 < quiet < 0.5
    assert busy / quiet > 13                                          # true ratio 16
    # The spread learned has two humps, with little between them.
    assert sum(w for w, g in zip(prior.weights, GRID, strict=True) if 0.5 <= g <= 2) < 0.2


def test_a_read_moves_its_own_rooms_rate_at_once_and_the_spread_is_fitted_when_enough_is_new():
    rates, sizes, _ = _learned([1.5] * 100)
    prior = rates.prior(sizes)
    before = rates.rate("r0", 50, prior)
    rates.observe("r0", 0, DAY, 3 * DAY)                # a quiet day: not enough to fit again
    assert rates.prior(sizes) is prior
    assert rates.rate("r0", 50, prior) < before
    rates.observe("r1", 2, DAY, 3 * DAY)                # fewer than a fiftieth more changes
    assert rates.prior(sizes) is prior
    rates.observe("r3", 5, DAY, 3 * DAY)                # a fiftieth more (of about 300): fitted again
    refitted = rates.prior(sizes)
    assert refitted is not prior and rates.prior(sizes) is refitted
    rates.load("r2", 5, DAY, 3 * DAY)                    # counts loaded: fitted again
    assert rates.prior(sizes).serial > refitted.serial


def test_a_fit_prepared_and_run_apart_is_the_fit_made_in_place():
    """The service fits outside its lock: prepared from the counts, run, installed. That
    gives exactly what fitting in place gives, first fit and refit alike."""
    in_place, sizes, _ = _learned([6.0] * 20 + [0.375] * 80)
    apart, _, _ = _learned([6.0] * 20 + [0.375] * 80)
    for step in range(2):
        job = apart.prepare(sizes)
        assert job is not None
        job.run()
        assert apart.install(job) == in_place.prior(sizes)
        assert in_place.prior(sizes).serial == step + 1
        assert apart.prepare(sizes) is None                 # nothing new: no fit due
        assert apart.last_fit is apart.prior(sizes)
        for rates in (in_place, apart):
            rates.observe("r0", 12 + step, DAY, (3 + step) * DAY)


def test_what_is_counted_while_a_fit_runs_is_kept_for_the_next():
    rates, sizes, _ = _learned([1.5] * 100)
    first = rates.prior(sizes)
    rates.observe("r3", 10, DAY, 3 * DAY)               # enough to fit again
    job = rates.prepare(sizes)
    assert job is not None
    rates.observe("r4", 10, DAY, 3 * DAY)               # found while it runs
    assert rates.last_fit is first                     # the last fit serves meanwhile
    job.run()
    second = rates.install(job)
    assert second.serial == first.serial + 1 and second.found == job.found
    assert rates.due(sizes)                             # r4's finds call for another
    again = rates.prepare(sizes)
    assert again is not None
    again.run()
    assert rates.install(again).found > second.found
    assert not rates.due(sizes)


def test_a_fit_overtaken_while_it_ran_is_dropped():
    rates, sizes, _ = _learned([1.5] * 100)
    rates.prior(sizes)
    rates.observe("r3", 10, DAY, 3 * DAY)
    slow = rates.prepare(sizes)
    assert slow is not None
    newer = rates.prior(sizes)                          # fitted in place meanwhile
    slow.run()
    assert rates.install(slow) is newer
    rates.load("r5", 9, DAY, 3 * DAY)                   # loaded while a fit runs: not settled by it
    job = rates.prepare(sizes)
    assert job is not None and job.cold
    rates.load("r6", 9, DAY, 3 * DAY)
    job.run()
    rates.install(job)
    assert rates.due(sizes)


def _sized(rate_of: Callable[[int, int], float], seed: int = 7, n: int = 200,
           days: float = 1.0) -> tuple[ChangeRates, dict[str, int], dict[str, float]]:
    """Rooms of varied size (as the simulation's), each read over `days` finding what chance
    gives at `rate_of(i, rows)` a day."""
    rng = random.Random(seed)
    rates, sizes, true = ChangeRates(), {}, {}
    for i in range(n):
        rows = int(88 * rng.lognormvariate(0, 0.6))
        sizes[f"r{i}"], true[f"r{i}"] = rows, rate_of(i, rows)
        rates.observe(f"r{i}", _chance(rng, days * true[f"r{i}"]), days * DAY, days * DAY)
    return rates, sizes, true


def test_whether_size_predicts_a_rooms_rate_is_learned_too():
    """Where rooms change as their size says, size stays the prediction (beta 1). Where a
    fifth of the rooms make most changes whatever their size, size is dropped (beta 0): a big
    quiet room is not taken for a busy one, nor a small busy room for a quiet one, after a
    single day (with size kept, the two kinds blur into each other)."""
    rates, sizes, _ = _sized(lambda i, rows: 1.5 * rows / 88)
    assert rates.prior(sizes).beta == 1.0
    rates, sizes, true = _sized(lambda i, rows: 6.0 if i % 5 == 0 else 0.375)
    prior = rates.prior(sizes)
    assert prior.beta == 0.0
    err = sorted(abs(math.log2(rates.rate(r, sizes[r], prior) * DAY / true[r])) for r in sizes)
    assert err[len(err) // 2] < 0.35                   # half the rooms within a factor of 1.3
    big_quiet = max((r for r in sizes if true[r] < 1), key=lambda r: sizes[r])
    small_busy = min((r for r in sizes if true[r] > 1), key=lambda r: sizes[r])
    assert rates.rate(small_busy, sizes[small_busy], prior) > 4 * rates.rate(big_quiet, sizes[big_quiet], prior)
    # A restart loads the kept counts and learns the same again.
    again = ChangeRates()
    for room in sizes:
        st = rates.state(room)
        again.load(room, st.changes, st.exposure, st.at)
    refitted = again.prior(sizes)
    assert refitted.beta == 0.0
    for room in sizes:
        assert again.rate(room, sizes[room], refitted) == pytest.approx(rates.rate(room, sizes[room], prior), rel=0.01)


def test_the_spread_fit_is_plain_expectation_maximisation():
    """The fit's rounds are sums of products over the rooms in single calls (for speed:
    `benchmarks/rates_fit.py`); they must give what the textbook rounds give, room by room
    and multiplier by multiplier, including a room no multiplier of the spread explains."""
    rng = random.Random(3)
    rooms = [(float(_chance(rng, 4.0 if i % 5 == 0 else 0.3)), rng.uniform(0.2, 2.0)) for i in range(150)]
    rooms.append((400.0, 0.01))              # likely only far above where the start puts weight
    start = [1.0 if g <= 1 else 0.0 for g in GRID]
    start = [w / sum(start) for w in start]
    base = [1.0 / len(GRID)] * len(GRID)

    def textbook(rounds: int) -> tuple[list[float], float]:
        likes = []
        for n, m in rooms:
            logs = [n * math.log(g) - g * m for g in GRID]
            top = max(logs)
            likes.append(([math.exp(x - top) for x in logs], top + (n * math.log(m) if n > 0 else 0.0)))
        weights = list(start)
        for _ in range(rounds):
            acc = [2.0 * b for b in base]
            for like, _ in likes:
                z = sum(weights[j] * like[j] for j in range(len(GRID)))
                if z > 0:
                    for j in range(len(GRID)):
                        acc[j] += weights[j] * like[j] / z
            weights = [a / sum(acc) for a in acc]
        evidence = sum(s + math.log(max(1e-300, sum(w * x for w, x in zip(weights, like, strict=True))))
                       for like, s in likes)
        return weights, evidence

    for rounds in (1, 8, 40):
        weights, evidence = _fit_spread(rooms, start, base, 2.0, rounds=rounds)
        want, want_evidence = textbook(rounds)
        assert weights == pytest.approx(want, rel=1e-9, abs=1e-15)
        assert evidence == pytest.approx(want_evidence, rel=1e-9)
