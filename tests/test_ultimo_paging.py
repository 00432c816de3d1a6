"""Reads cut by known density: the real client against the Ultimo sandbox over loopback.

A space read before is read in windows its previous rows suggest, so a read takes the
fewest Gets that prove completeness (every page short); what changed since is still
read completely; a first read halves as before.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from syncd.config.schema import UltimoConfig
from syncd.core.model import Reservation, TimeWindow
from syncd.sandbox.ultimo.server import UltimoSandbox
from syncd.ultimo.budget import DailyBudget, RateLimiter
from syncd.ultimo.client import UltimoClient
from syncd.ultimo.paging import ROWS_PER_GET, ReadProfiles, calls_for_rows, cut_rows, first_read_calls

AMS = ZoneInfo("Europe/Amsterdam")
BASE = (datetime.now(AMS) + timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
WINDOW = TimeWindow(BASE - timedelta(days=1), BASE + timedelta(days=31))


@pytest.fixture
def sandbox():
    with UltimoSandbox(rate_limit=10**6, daily_limit=10**6) as sb:
        sb.add_space("S-1", 0, 0)
        yield sb


@pytest.fixture
def client(sandbox):
    cfg = UltimoConfig(base_url=sandbox.url, api_key="sandbox-key")
    with UltimoClient(cfg, budget=DailyBudget(None, 10**6), limiter=RateLimiter(10**6, 10.0),
                      sleep=lambda s: None) as c:
        yield c


def book(sandbox: UltimoSandbox, n: int, rng: random.Random, days: int = 30, slots: int = 20) -> set[str]:
    """`n` half-hour bookings in distinct slots over `days` days (07:00-17:00)."""
    ids = set()
    for slot in rng.sample(range(days * slots), n):
        start = BASE + timedelta(days=slot // slots, hours=7, minutes=30 * (slot % slots))
        ids.add(sandbox.reserve("S-1", start, start + timedelta(minutes=25), force=True))
    return ids


def read(client: UltimoClient, sandbox: UltimoSandbox) -> tuple[set[str], int]:
    before = sandbox.calls("get")
    rows = client.get_reservations("S-1", WINDOW)
    ids = [r.ultimo_id for r in rows]
    assert len(ids) == len(set(ids))
    return set(ids), sandbox.calls("get") - before


def test_a_known_space_is_read_in_the_fewest_gets_that_prove_completeness(sandbox, client):
    booked = book(sandbox, 300, random.Random(1))
    first, first_calls = read(client, sandbox)
    assert first == booked
    assert first_calls == first_read_calls(300, 100) == 7        # halving: every full page thrown away
    again, calls = read(client, sandbox)
    assert again == booked
    assert calls == math.ceil(300 / 99) == 4                     # the provable minimum


def test_bookings_made_since_the_last_read_are_still_all_read(sandbox, client):
    rng = random.Random(2)
    booked = book(sandbox, 170, rng, days=30)
    assert read(client, sandbox)[0] == booked
    # Fifty more, all on one day: a part cut for ~90 rows now holds far more.
    day = BASE + timedelta(days=12)
    for k in range(50):
        start = day + timedelta(hours=6, minutes=12 * k)
        booked.add(sandbox.reserve("S-1", start, start + timedelta(minutes=10), force=True))
    found, calls = read(client, sandbox)
    assert found == booked
    assert calls <= first_read_calls(220, 100)
    # The read after that knows the new density again.
    found, calls = read(client, sandbox)
    assert found == booked
    assert calls == math.ceil(220 / ROWS_PER_GET)


def test_cancellations_and_moves_since_are_seen(sandbox, client):
    booked = book(sandbox, 250, random.Random(3))
    read(client, sandbox)
    gone = sorted(booked)[:40]
    for uid in gone:
        sandbox.cancel(uid)
    moved = sorted(booked)[40]
    sandbox.move(moved, BASE + timedelta(days=29, hours=22), BASE + timedelta(days=29, hours=23), force=True)
    rows = {r.ultimo_id: r for r in client.get_reservations("S-1", WINDOW)}
    assert set(rows) == booked - set(gone)
    assert rows[moved].start == (BASE + timedelta(days=29, hours=22)).astimezone(UTC)


def test_a_clustered_space_is_cut_where_its_rows_are(sandbox, client):
    booked = set()
    day = BASE + timedelta(days=5)
    for k in range(180):       # 180 on one day, a few elsewhere
        start = day + timedelta(minutes=5 * k)
        booked.add(sandbox.reserve("S-1", start, start + timedelta(minutes=4), force=True))
    booked |= book(sandbox, 10, random.Random(4), days=4)
    assert read(client, sandbox)[0] == booked
    found, calls = read(client, sandbox)
    assert found == booked
    assert calls == math.ceil(190 / ROWS_PER_GET)     # parts of at most 90 rows: a margin for new ones


def test_rows_at_one_second_do_not_stop_the_cutting():
    rows = [(100.0, 200.0)] * 150 + [(float(300 + k), float(301 + k)) for k in range(50)]
    cuts = cut_rows(0.0, 1000.0, rows, 90)
    assert cuts == sorted(set(cuts)) and all(0 < c < 1000 for c in cuts)


def test_the_planners_cost_follows_the_same_rule():
    assert calls_for_rows(300, 100) == 4 and calls_for_rows(300, 100, known=False) == 7
    assert calls_for_rows(0, 100) == 1 and calls_for_rows(90, 100) == 1 and calls_for_rows(91, 100) == 2


def test_the_part_of_a_window_not_read_before_counts_as_busy_as_the_rest():
    profiles = ReadProfiles(100)
    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    rows = [Reservation(str(k), "S", t0 + timedelta(hours=k), t0 + timedelta(hours=k, minutes=30), "", "", "")
            for k in range(150)]
    profiles.record("S", TimeWindow(t0, t0 + timedelta(hours=150)), rows)
    parts = profiles.windows("S", TimeWindow(t0, t0 + timedelta(hours=300)))
    assert parts is not None and len(parts) == math.ceil(300 / 90)
    assert parts[0].start == t0 and parts[-1].end == t0 + timedelta(hours=300)
    assert profiles.windows("T", TimeWindow(t0, t0 + timedelta(hours=1))) is None


def test_reservations_syncd_made_count_for_the_next_reads_cuts(sandbox, client):
    from syncd.core.model import NewReservation

    booked = book(sandbox, 100, random.Random(5), days=10)
    assert read(client, sandbox)[0] == booked
    for slot in random.Random(6).sample(range(20 * 20), 200):     # 200 more, made by syncd, days 10-29
        start = BASE + timedelta(days=10 + slot // 20, hours=7, minutes=30 * (slot % 20))
        booked.add(client.create_reservation(NewReservation(f"x-{slot}", "S-1", start, start + timedelta(minutes=25),
                                                            "Made in Outlook", "00042")))
    found, calls = read(client, sandbox)
    assert found == booked
    assert calls == math.ceil(300 / ROWS_PER_GET)
