"""Reads follow the hours when bookings change: the day profile, the shaped buckets, and the
24-hour window that keeps the daily budget while the shape moves (pure, virtual time)."""

from __future__ import annotations

import bisect
import json
import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, update
from sqlalchemy.pool import StaticPool

from syncd.engine.cycle import start_run
from syncd.service.bucket import DAY, FLAT, CallWindow, PacerSnapshot, Shape, TokenBucket, epoch
from syncd.service.pacer import Pacer, save_snapshot, start_state
from syncd.service.rates import DayProfile, hour_seconds, read_shape
from syncd.service.readplan import FULL, ReadGrant, ReadPlanner, ReadPolicy
from syncd.store.schema import Base, UltimoBudget
from syncd.ultimo.budget import DailyBudget

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
OFFICE = range(7, 17)          # UTC hours when the changes of these tests happen


def memory_engine():
    engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    Base.metadata.create_all(engine)
    return engine


def office_profile(days: int = 3, per_hour: float = 5.0) -> DayProfile:
    """A profile that saw reads every hour for `days` days, finding changes only in office hours."""
    profile = DayProfile()
    for hour in range(days * 24):
        t = epoch(T0) + hour * 3600.0
        profile.observe(int(per_hour) if hour % 24 in OFFICE else 0, [(t, t + 3600.0, 1.0)], t + 3600.0)
    return profile


# --- shapes --------------------------------------------------------------------------------


def test_a_shape_gives_a_whole_days_worth_in_any_24_hours():
    shape = Shape([3.0 if h in OFFICE else 1.0 for h in range(24)])
    for start in (0.0, 1234.5, 7 * 3600.0, 50_000.0):
        assert shape.integral(start, start + DAY) == pytest.approx(DAY)
    # More in office hours than out of them, an hour at a time.
    assert shape.integral(8 * 3600.0, 9 * 3600.0) == pytest.approx(3 * shape.integral(20 * 3600.0, 21 * 3600.0))


def test_advance_is_the_inverse_of_the_integral():
    shape = Shape([0.0 if h < 6 else 2.0 for h in range(24)])
    for t0 in (0.0, 3 * 3600.0 + 17, 10 * 3600.0, 23.5 * 3600.0):
        for amount in (1.0, 1800.0, 30_000.0, 2.5 * DAY):
            t1 = shape.advance(t0, amount)
            assert shape.integral(t0, t1) == pytest.approx(amount)
    # Nothing accrues in the zero hours: waiting from 01:00 for one weighted hour ends at 06:30.
    assert shape.advance(3600.0, shape.weights[6] * 1800.0) == pytest.approx(6.5 * 3600.0)


def test_the_moment_is_age_squared_when_flat_and_counts_busy_hours_more():
    assert FLAT.moment(100.0, 400.0) == pytest.approx(300.0 ** 2)
    busy = Shape([4.0 if h in OFFICE else 0.25 for h in range(24)])
    # Three hours unread: over the office morning they pile up more than over the night.
    morning = busy.moment(8 * 3600.0, 11 * 3600.0)
    night = busy.moment(1 * 3600.0, 4 * 3600.0)
    assert morning > 10 * night


def test_a_shaped_bucket_refills_faster_in_the_busy_hours():
    shape = Shape([2.0 if h in OFFICE else 0.5 for h in range(24)])
    bucket = TokenBucket(1000, 0.01, 0, T0, shape)
    night = bucket.level(T0 + timedelta(hours=1))
    bucket.take(bucket.level(T0 + timedelta(hours=8)), T0 + timedelta(hours=8))
    day = bucket.level(T0 + timedelta(hours=9))
    assert day == pytest.approx(4 * night)
    # And it says how long a token takes at the hour's pace.
    assert bucket.seconds_until(1, T0 + timedelta(hours=9)) == 0
    bucket.take(bucket.level(T0 + timedelta(hours=9)), T0 + timedelta(hours=9))
    assert bucket.seconds_until(1, T0 + timedelta(hours=9)) == pytest.approx(1 / (0.01 * shape.weights[9]))


# --- the profile ---------------------------------------------------------------------------


def test_the_profile_learns_that_changes_come_in_office_hours():
    weights = office_profile().weights()
    assert sum(weights) == pytest.approx(24)
    assert min(weights[h] for h in OFFICE) > 3 * max(weights[h] for h in range(24) if h not in OFFICE)


def test_changes_found_after_a_long_gap_are_spread_over_the_hours_the_profile_expects():
    profile = office_profile()
    before = list(profile.found)
    t = epoch(T0) + 5 * DAY
    profile.observe(12, [(t - 12 * 3600.0, t, 1.0)], t)     # a read covering 12 hours, from midnight
    gained = [a - b * 0.5 ** (DAY * 2 / profile.half_life) for a, b in zip(profile.found, before, strict=True)]
    assert sum(gained) == pytest.approx(12, rel=1e-6)
    assert sum(gained[h] for h in OFFICE) > 0.8 * 12                # most of them in the office morning


def test_finds_spread_over_a_night_by_an_early_guess_are_put_back_where_the_day_shows_them():
    """Each morning's first read, after a night unread, finds the changes of 07:00-07:30;
    reads every half hour after that find a change each. Spread as the profile first
    guessed, the mornings' finds lie partly in the night; refitted, they go to 07:00."""
    prof = DayProfile()
    hour = 3600.0
    for day in range(5):
        d = day * DAY
        for _room in range(10):
            prof.observe(2, [(d - 6 * hour if day else d, d + 7.5 * hour, 1.0)], d + 7.5 * hour)
            for k in range(21):
                t = d + 8 * hour + k * 1800.0
                prof.observe(1, [(t - 1800.0, t, 1.0)], t)
    before, total = prof.weights(), sum(prof.found)
    prof.refit(rounds=20)
    after = prof.weights()
    assert after[7] > 1.15 * before[7]
    assert all(after[h] < before[h] for h in (0, 3, 6, 20))
    assert sum(prof.found) == pytest.approx(total)     # moved, nothing lost or made up


def test_until_a_whole_day_is_read_the_profile_is_mixed_with_a_working_hours_guess():
    """Nothing learned: reads lean to working hours in the configured zone (a first night
    run flat spent the evening's calls by the afternoon). A morning of finds moves the
    shape part of the way to what they say; a whole day, all of it."""
    policy = ReadPolicy.for_budget(5000, 50, interval_seconds=60.0, timezone="Europe/Amsterdam")
    now = datetime(2026, 3, 3, 5, 0, tzinfo=UTC)                  # 06:00 in Amsterdam
    guess = ReadPlanner.shapes_for(policy, None, now)[1].weights
    assert guess[9] == pytest.approx(9 * guess[2])                # 10:00 against 03:00 local
    assert sum(sorted(guess)[12:]) / sum(guess) == pytest.approx(0.9)    # nine changes in ten
    assert guess[6] > guess[5] and guess[17] > guess[18]           # 07:00-19:00 local, in UTC hours
    two_days = office_profile(days=2, per_hour=50.0)             # finds only in OFFICE (UTC hours)
    assert two_days.learned()
    learned = ReadPlanner.shapes_for(policy, two_days, now)[1].weights
    partial = DayProfile()
    partial.load(two_days.to_json())
    assert partial.first is not None and partial.at is not None
    partial.first = partial.at - 0.4 * DAY                        # the same finds, read for 0.4 of a day
    assert sum(partial.found) > 100 and not partial.learned()
    mixed = ReadPlanner.shapes_for(policy, partial, now)[1].weights
    for h in range(24):
        assert mixed[h] == pytest.approx(guess[h] + 0.4 * (learned[h] - guess[h]), rel=1e-6)
    # Kept by a version that did not keep when it began: taken as having read a day.
    old = {k: v for k, v in two_days.to_json().items() if k != "first"}
    learned_reads = ReadPlanner.shapes_for(policy, two_days, now)[0].weights
    assert ReadPlanner.shapes_for(policy, old, now)[0].weights == pytest.approx(learned_reads)
    assert learned_reads != ReadPlanner.shapes_for(policy, None, now)[0].weights


def test_the_first_days_guess_follows_the_configured_busy_hours():
    """`sync.busy_hours`: the guess leans to those local hours; round the clock, it is even
    (a site booking at night is not read at the quiet-hours floor all its first night)."""
    now = datetime(2026, 3, 3, 5, 0, tzinfo=UTC)                  # 06:00 in Amsterdam (UTC+1)
    late = ReadPolicy.for_budget(5000, 50, timezone="Europe/Amsterdam", busy_hours=(12, 22))
    reads, changes = ReadPlanner.shapes_for(late, None, now)
    assert changes.weights[11] == pytest.approx(9 * changes.weights[5])    # 12:00 against 06:00 local
    assert changes.weights[20] > changes.weights[21]                       # 21:00 busy, 22:00 not
    assert reads.weights[11] > 1 > reads.weights[5]
    always = ReadPolicy.for_budget(5000, 50, timezone="Europe/Amsterdam", busy_hours=(0, 24))
    assert ReadPlanner.shapes_for(always, None, now) == (FLAT, FLAT)
    planner = ReadPlanner(always, ["a"], TokenBucket(500, 1.0, 0, now))
    assert "spread evenly over the day" in planner.day_message(ZoneInfo("Europe/Amsterdam"), now)
    planner = ReadPlanner(late, ["a"], TokenBucket(500, 1.0, 0, now))
    assert "(12:00-22:00 Europe/Amsterdam)" in planner.day_message(ZoneInfo("Europe/Amsterdam"), now)


def test_nothing_learned_means_a_flat_day_and_flat_buckets():
    policy = ReadPolicy.for_budget(5000, 50)
    assert DayProfile().weights() == pytest.approx([1.0] * 24)
    assert ReadPlanner.shapes_for(policy, None) == (FLAT, FLAT)
    assert ReadPlanner.shapes_for(policy, {"found": "garbage"}) == (FLAT, FLAT)
    # Five changes at nine are not yet a day's pattern: still even, and status says so.
    few = DayProfile()
    t = epoch(T0) + 10 * 3600.0
    few.observe(5, [(t - 3600.0, t, 1.0)], t)
    assert ReadPlanner.shapes_for(policy, few) == (FLAT, FLAT)
    assert ReadPlanner.shapes_for(policy, office_profile())[0] != FLAT


def test_reads_follow_the_square_root_of_the_changes_but_never_below_the_floor():
    weights = office_profile().weights()
    reads = read_shape(weights, 0.6)
    assert sum(reads) == pytest.approx(24)
    assert min(reads) == pytest.approx(0.6, abs=1e-6)
    assert reads[9] > 1.3
    # Between two busy hours the reads are as the square roots of their changes.
    hi, lo = max(OFFICE, key=lambda h: weights[h]), min(OFFICE, key=lambda h: weights[h])
    assert reads[hi] / reads[lo] == pytest.approx(math.sqrt(weights[hi] / weights[lo]), rel=1e-6)


def test_reads_stay_at_the_busy_pace_for_two_hours_after_the_last_busy_hour():
    """The changes piled up in the last busy hour need a sweep at the busy pace to be read."""
    weights = office_profile().weights()
    last = max(OFFICE)
    reads = read_shape(weights, 0.45)
    assert weights[last + 1] < 0.5 < 1.5 < weights[last]
    assert reads[last + 1] == pytest.approx(reads[last]) and reads[last + 2] == pytest.approx(reads[last])
    assert reads[last + 3] == pytest.approx(reads[3], rel=0.05)      # then the night's pace
    assert reads[3] < 0.4 * reads[last]


def test_hour_seconds_splits_a_span_over_the_utc_hours():
    secs = hour_seconds(epoch(T0) + 1800.0, epoch(T0) + 2 * 3600.0 + 600.0)
    assert secs[0] == 1800.0 and secs[1] == 3600.0 and secs[2] == 600.0 and sum(secs) == 6000.0
    assert hour_seconds(0.0, 2 * DAY + 60.0)[0] == 2 * 3600.0 + 60.0


def test_the_planner_learns_the_profile_from_its_reads_and_shapes_its_buckets():
    policy = ReadPolicy.for_budget(5000, 50, interval_seconds=60.0)
    rooms = [f"r{i}" for i in range(10)]
    p = ReadPlanner(policy, rooms, TokenBucket(policy.capacity, policy.rate, 0, T0))
    for room in rooms:
        p.load(room, ultimo_read_at=T0, changed_at=None, rows=50)
    for hour in range(1, 3 * 24):
        t = T0 + timedelta(hours=hour)
        for room in rooms:
            near, full = p.windows(t)
            p.done(ReadGrant(room, FULL, full, 1), t, ok=True, rows=50, found=2 if (hour - 1) % 24 in OFFICE else 0)
    p.claim("r0", T0 + timedelta(days=3, hours=1))            # the shapes follow at the next claim
    assert p.reads.shape.weights[9] > 1.3 > 0.7 > p.reads.shape.weights[22]
    assert p.bucket.shape == p.reads.shape                                # every call follows the reads
    assert p.changes_shape.weights[9] > 3 * p.changes_shape.weights[22]


# --- the 24-hour window --------------------------------------------------------------------


def test_the_window_holds_a_call_while_the_last_24_hours_hold_the_budget():
    w = CallWindow(10)
    w.add(6, 1000.0)
    w.add(4, 5000.0)
    assert w.count(5000.0) == 10
    assert w.seconds_until(1, 5000.0) == pytest.approx(1200.0 + DAY - 5000.0)    # the 10-minute bin of 1000 s ends at 1200 s
    assert w.seconds_until(5, 5000.0) == pytest.approx(1200.0 + DAY - 5000.0)
    assert w.seconds_until(7, 5000.0) == pytest.approx(5400.0 + DAY - 5000.0)
    assert w.seconds_until(11, 5000.0) == math.inf
    assert w.count(1200.0 + DAY) == 4


def test_a_pacer_never_lets_more_than_the_budget_through_in_24_hours_even_with_a_generous_bucket():
    policy = ReadPolicy.for_budget(100, 50, interval_seconds=60.0)
    clock = [T0]
    pacer = Pacer(policy, ["a"], DailyBudget(None, 100, lambda: clock[0]), level=policy.capacity,
                  now=lambda: clock[0], sleep=lambda s: None, max_wait=0.0, hold_off=0.0)
    pacer.window.add(95, epoch(T0) - 3600.0)               # calls of an hour ago, e.g. a predecessor's
    for _ in range(5):
        pacer.spend(1)
    with pytest.raises(Exception, match="paced"):
        pacer.spend(1)


def test_a_restart_takes_over_the_window_the_profile_and_the_calls_since(tmp_path):
    engine = memory_engine()
    policy = ReadPolicy.for_budget(1000, 50)
    now = T0 + timedelta(hours=12)
    profile = office_profile().to_json()
    snap = PacerSnapshot(10.0, now, now.date().isoformat(), 300, window=((int(epoch(now) // 600) - 6, 300),),
                         profile=profile)
    run = start_run(engine, "service", now)
    save_snapshot(engine, run, snap)
    with engine.begin() as conn:      # the ledger: 300 at the snapshot, 40 more since
        conn.execute(UltimoBudget.__table__.insert().values(day=now.date().isoformat(), calls=340, updated_at=now))
    later = now + timedelta(minutes=5)
    state = start_state(engine, policy, later)
    assert state.window.count(epoch(later)) == 340
    assert state.profile == json.loads(json.dumps(profile))
    pacer = Pacer(policy, ["a"], DailyBudget(engine, 1000, lambda: later), level=state.level, window=state.window,
                  profile=state.profile, now=lambda: later, max_wait=0.0, hold_off=0.0)
    assert pacer.planner.reads.shape.weights[9] > 1.3


def test_without_a_snapshot_yesterdays_calls_count_until_tomorrows_midnight():
    engine = memory_engine()
    policy = ReadPolicy.for_budget(1000, 50)
    now = T0 + timedelta(days=1, hours=20)
    with engine.begin() as conn:
        conn.execute(UltimoBudget.__table__.insert().values(day=T0.date().isoformat(), calls=700, updated_at=T0))
        conn.execute(UltimoBudget.__table__.insert().values(day=now.date().isoformat(), calls=200, updated_at=now))
    window = start_state(engine, policy, now).window
    assert window.count(epoch(now)) == 900
    assert window.count(epoch(T0 + timedelta(days=2)) + 1) == 200      # yesterday's are out at midnight
    assert window.count(epoch(now + timedelta(days=1)) + 601) == 0
    with engine.begin() as conn:
        conn.execute(update(UltimoBudget).values(calls=0))
    assert start_state(engine, policy, now).window.count(epoch(now)) == 0


def test_a_moving_shape_never_lets_more_than_the_budget_through_in_any_24_hours():
    """Evening-heavy for a day, then morning-heavy: a bucket whose shape moved would give
    an evening's and a morning's worth in one 24 hours; the window holds the budget."""
    budget = 1000
    policy = ReadPolicy.for_budget(budget, 50, interval_seconds=60.0)
    now = [T0]
    pacer = Pacer(policy, ["a"], DailyBudget(None, budget, lambda: now[0]), level=0.0,
                  now=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + timedelta(seconds=s)),
                  max_wait=DAY, hold_off=0.0)
    evening = Shape([6.0 if h >= 18 else 0.2 for h in range(24)])
    morning = Shape([6.0 if h < 6 else 0.2 for h in range(24)])
    pacer.planner.bucket.reshape(evening, now[0])
    calls: list[float] = []
    while now[0] < T0 + timedelta(days=3):
        if now[0] >= T0 + timedelta(days=1) and pacer.planner.bucket.shape is evening:
            pacer.planner.bucket.reshape(morning, now[0])
        pacer.spend(1)                       # as fast as the pacer lets it
        calls.append(epoch(now[0]))
    most = max(j - bisect.bisect_right(calls, t - DAY) + 1 for j, t in enumerate(calls))
    assert budget - 10 <= most <= budget     # the budget is reached, never passed


def test_after_the_shape_moves_the_calls_slow_down_evenly_instead_of_stopping():
    """A service that ran flat through the night learns in the morning that the day is
    busy: spending the busy hours' pace at once would fill the 24-hour window by the
    afternoon and stop every call for hours; the bucket refills slower instead, so each
    busy hour gets its share."""
    budget = 1000
    policy = ReadPolicy.for_budget(budget, 50, interval_seconds=60.0)
    now = [T0 - timedelta(hours=8)]
    pacer = Pacer(policy, ["a"], DailyBudget(None, budget, lambda: now[0]), level=0.0,
                  now=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + timedelta(seconds=s)),
                  max_wait=DAY, hold_off=0.0)
    office = Shape([3.0 if 8 <= h < 18 else 0.5 for h in range(24)])
    calls: list[float] = []
    while now[0] < T0 + timedelta(days=2):
        if now[0] >= T0 + timedelta(hours=8) and pacer.planner.bucket.shape is not office:
            pacer.planner.bucket.reshape(office, now[0])
        pacer.spend(1)                       # as fast as the pacer lets it
        calls.append(epoch(now[0]))
    per_hour = [sum(1 for t in calls if epoch(T0) + h * 3600 <= t < epoch(T0) + (h + 1) * 3600) for h in range(48)]
    busy = per_hour[8:18]
    assert min(busy) >= 0.9 * max(busy) > 0        # every busy hour its share (the window alone: 73, then 0)
    most = max(j - bisect.bisect_right(calls, t - DAY) + 1 for j, t in enumerate(calls))
    assert most <= budget


def test_what_a_service_learned_survives_its_restart():
    """The pacer's snapshot carries the profile and the last 24 hours' calls; the next
    process starts with the same shapes and the same count."""
    engine = memory_engine()
    policy = ReadPolicy.for_budget(1000, 50, interval_seconds=60.0)
    clock = [T0 + timedelta(days=3, hours=10)]
    pacer = Pacer(policy, ["a"], DailyBudget(engine, 1000, lambda: clock[0]), level=policy.capacity,
                  profile=office_profile().to_json(), now=lambda: clock[0], max_wait=0.0, hold_off=0.0)
    for _ in range(30):
        pacer.spend(1)
    save_snapshot(engine, start_run(engine, "service", clock[0]), pacer.snapshot())
    clock[0] += timedelta(minutes=3)
    taken = start_state(engine, policy, clock[0])
    after = Pacer(policy, ["a"], DailyBudget(engine, 1000, lambda: clock[0]), level=taken.level,
                  window=taken.window, profile=taken.profile, now=lambda: clock[0], max_wait=0.0, hold_off=0.0)
    assert after.planner.reads.shape == pacer.planner.reads.shape != FLAT
    assert after.window.count(epoch(clock[0])) == 30


def test_the_learned_hours_stay_on_the_local_clock_when_the_clocks_change():
    """A site in Amsterdam busy 08:00-18:00, learned in winter (UTC+1). When the clocks go
    forward (29 March 2026: UTC+2) the learned UTC hours turn with them, so the reads' busy
    pace still starts at 08:00 local and `syncd status` still says so; back again in
    October. A profile kept across the change (the service stopped over it) is turned
    when it is loaded."""
    zone = ZoneInfo("Europe/Amsterdam")
    policy = ReadPolicy.for_budget(5000, 50, interval_seconds=60.0, timezone="Europe/Amsterdam")
    winter, summer, autumn = (datetime(2026, 3, 6, 12, tzinfo=UTC), datetime(2026, 4, 1, 12, tzinfo=UTC),
                              datetime(2026, 11, 2, 12, tzinfo=UTC))
    kept = office_profile(days=3, per_hour=50.0).to_json()        # finds in UTC 07-17 (08-18 local)
    planner = ReadPlanner(policy, ["r"], TokenBucket(policy.capacity, policy.rate, 0.0, winter))
    planner.load_profile(kept, winter)
    assert "08:00-18:00" in planner.day_message(zone, winter)
    before = planner.changes_shape.weights
    assert before[7] > 1.0 > before[6]                            # busy from 07:00 UTC
    saved = planner.profile.to_json()
    assert saved["offset"] == 3600
    planner.claim("r", summer)                                    # the service runs on past the change
    assert "08:00-18:00" in planner.day_message(zone, summer)
    after = planner.changes_shape.weights
    assert after[6] > 1.0 > after[16]                             # busy from 06:00 UTC: 08:00 local
    assert after[6] == pytest.approx(before[7])
    assert planner.profile.to_json()["offset"] == 7200
    # Stopped in winter and started in summer: turned as it is loaded, buckets included.
    started = ReadPlanner(policy, ["r"], TokenBucket(policy.capacity, policy.rate, 0.0, summer))
    started.load_profile(saved, summer)
    assert started.changes_shape.weights == pytest.approx(after)
    assert ReadPlanner.shapes_for(policy, saved, summer)[0].weights == pytest.approx(started.bucket.shape.weights)
    planner.claim("r", autumn)                                    # and back when winter time returns
    assert "08:00-18:00" in planner.day_message(zone, autumn)
    assert planner.changes_shape.weights == pytest.approx(before)
