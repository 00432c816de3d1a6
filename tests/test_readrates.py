"""Learned change rates and the worst-case bound of the read planner (pure, virtual time)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from syncd.service.rates import ChangeRates
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
    k = rates.kappa({"big": 300, "small": 10})
    assert rates.rate("big", 300, k) > 10 * rates.rate("small", 10, k) > 0


def test_counts_decay_over_days_so_a_room_that_quietens_is_read_less():
    rates = ChangeRates(half_life_days=3)
    rates.observe("r", 30, DAY, 0.0)
    busy = rates.rate("r", 10, rates.kappa({"r": 10}))
    rates.observe("r", 0, DAY, 9 * DAY)       # three half-lives later, a quiet day
    assert rates.rate("r", 10, rates.kappa({"r": 10})) < busy / 4


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
    kappa = rates.kappa(sizes)
    assert rates.strength(sizes, kappa) >= 10          # the counts spread no more than chance does
    learned = [rates.rate(f"r{i}", 50, kappa, rates.strength(sizes, kappa)) for i in range(100)]
    mean = sum(learned) / len(learned)
    quietest = learned[counts.index(min(counts))]
    assert min(counts) <= 1 and quietest > 0.6 * mean   # not starved for a chance quiet spell


def test_where_a_fifth_of_the_rooms_make_most_changes_each_rooms_count_decides():
    rates, sizes, counts = _learned([6.0] * 100 + [0.375] * 400)
    kappa = rates.kappa(sizes)
    strength = rates.strength(sizes, kappa)
    assert strength < 2
    learned = [rates.rate(f"r{i}", 50, kappa, strength) for i in range(500)]
    fixed = [rates.rate(f"r{i}", 50, kappa) for i in range(500)]      # the prior of half a day, as before
    ratio = (sum(learned[:100]) / 100) / (sum(learned[100:]) / 400)
    assert ratio > 10                                                 # true ratio 16
    assert ratio > 1.1 * (sum(fixed[:100]) / 100) / (sum(fixed[100:]) / 400)      # that one: about 9
