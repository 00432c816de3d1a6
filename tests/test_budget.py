"""The rate limiter and the daily Ultimo budget (syncd.ultimo.budget)."""

from __future__ import annotations

import os
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from syncd.errors import BudgetExhausted
from syncd.store.schema import Base
from syncd.ultimo.budget import DailyBudget, RateLimiter


class FakeClock:
    """A monotonic clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds


def max_in_any_window(stamps: list[float], width: float) -> int:
    stamps = sorted(stamps)
    return max(sum(1 for t in stamps if s <= t < s + width) for s in stamps)


# --- RateLimiter ----------------------------------------------------------------------------


def answered(limiter: RateLimiter) -> float:
    """One call answered at once: acquire, then release; gives the seconds waited."""
    with limiter.call() as waited:
        return waited


def test_limiter_never_allows_more_than_n_in_any_window():
    clock = FakeClock()
    limiter = RateLimiter(5, 10.0, clock=clock, sleep=clock.sleep, margin=0.0)
    stamps = []
    for _ in range(23):
        answered(limiter)
        stamps.append(clock())
    assert max_in_any_window(stamps, 10.0) == 5
    # It waits only as long as needed: 23 calls at 5 per 10 s take 40 s, not more.
    assert clock.now - 1000.0 == pytest.approx(40.0)


def test_limiter_does_not_wait_while_under_the_limit():
    clock = FakeClock()
    limiter = RateLimiter(3, 10.0, clock=clock, sleep=clock.sleep, margin=0.0)
    assert [answered(limiter) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert clock.sleeps == []
    assert answered(limiter) == pytest.approx(10.0)
    assert limiter.in_window() == 1


def test_limiter_is_a_sliding_window_not_fixed_buckets():
    clock = FakeClock()
    limiter = RateLimiter(2, 10.0, clock=clock, sleep=clock.sleep, margin=0.0)
    answered(limiter)
    clock.now += 9.0
    answered(limiter)
    # A fixed bucket starting at 10 s would allow a burst here; the sliding window waits
    # until the first call is 10 s old.
    clock.now += 1.5
    assert answered(limiter) == 0.0          # t=10.5: the call at t=0 has left the window
    answered(limiter)
    assert clock() - 1000.0 == pytest.approx(19.0)   # waits until the call at t=9 is 10 s old


def test_limiter_holds_across_threads():
    clock = FakeClock()
    limiter = RateLimiter(4, 10.0, clock=clock, sleep=clock.sleep, margin=0.0)
    stamps: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(6):
            answered(limiter)
            with lock:
                stamps.append(clock())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(stamps) == 24
    assert max_in_any_window(stamps, 10.0) <= 4


def test_a_call_counts_from_its_start_until_its_answer_arrived():
    """Ultimo counts a call when it arrives, which may be as late as when its answer comes:
    the window of a slow call starts at its answer, not at its start."""
    clock = FakeClock()
    limiter = RateLimiter(2, 10.0, clock=clock, sleep=clock.sleep, margin=0.0)
    limiter.acquire()                  # t=0: starts, slow to arrive
    clock.now += 3.0
    limiter.release()                  # t=3: its answer; Ultimo may have counted it at t=3
    answered(limiter)                  # t=3
    waited = answered(limiter)
    assert waited == pytest.approx(10.0)      # t=13: ten seconds after the slow call's answer
    assert limiter.in_window() == 1           # the two answered at t=3 have left the window


def test_calls_in_flight_fill_the_window():
    clock = FakeClock()
    limiter = RateLimiter(2, 10.0, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    limiter.acquire()
    assert limiter.in_window() == 2
    done = threading.Event()

    def third() -> None:
        answered(limiter)
        done.set()

    thread = threading.Thread(target=third)
    thread.start()
    assert not done.wait(0.2)          # both in flight: the third waits, however long that takes
    limiter.release()                  # an answer arrives at t (now); the third may go 10.1 s later
    released_at = clock()
    thread.join(5)
    assert done.is_set()
    assert clock() >= released_at + 10.0 + limiter.margin - 0.06


def test_limiter_rejects_nonsense():
    with pytest.raises(ValueError):
        RateLimiter(0)
    with pytest.raises(ValueError):
        RateLimiter(5, 0)


# --- DailyBudget ----------------------------------------------------------------------------


class DayClock:
    def __init__(self) -> None:
        self.now = datetime(2024, 3, 30, 23, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_in_memory_budget_counts_and_refuses_past_the_limit():
    budget = DailyBudget(None, 3)
    budget.spend()
    budget.spend(2)
    assert budget.spent_today() == 3
    assert budget.remaining() == 0
    with pytest.raises(BudgetExhausted, match="3 of 3"):
        budget.spend()
    assert budget.spent_today() == 3


def test_budget_resets_at_utc_midnight_not_local_midnight():
    clock = DayClock()
    budget = DailyBudget(None, 2, clock=clock)
    budget.spend(2)
    # 00:30 in Amsterdam on the 31st is still the 30th in UTC.
    clock.now = datetime(2024, 3, 30, 23, 30, tzinfo=UTC)
    with pytest.raises(BudgetExhausted):
        budget.spend()
    clock.now += timedelta(hours=1)
    budget.spend()
    assert budget.spent_today() == 1


def test_budget_refuses_naive_clock():
    budget = DailyBudget(None, 2, clock=lambda: datetime(2024, 1, 1))
    with pytest.raises(ValueError):
        budget.spend()


@pytest.fixture
def sqlite_engine(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'budget.db'}")
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


def test_budget_survives_a_restart(tmp_path, sqlite_engine):
    clock = DayClock()
    DailyBudget(sqlite_engine, 5, clock=clock).spend(4)
    sqlite_engine.dispose()
    # A new process: a new engine and budget on the same file.
    engine2 = sa.create_engine(f"sqlite:///{tmp_path / 'budget.db'}")
    again = DailyBudget(engine2, 5, clock=clock)
    assert again.spent_today() == 4
    assert again.remaining() == 1
    again.spend()
    with pytest.raises(BudgetExhausted):
        again.spend()
    assert again.spent_today() == 5   # the refused call was not counted
    clock.now += timedelta(days=1)
    assert again.spent_today() == 0
    engine2.dispose()


def test_budget_refuses_a_batch_that_does_not_fit(sqlite_engine):
    budget = DailyBudget(sqlite_engine, 5)
    budget.spend(3)
    with pytest.raises(BudgetExhausted):
        budget.spend(3)
    assert budget.spent_today() == 3


def hammer(engine, limit: int, threads: int, tries: int) -> tuple[int, int, int]:
    """Spend from `threads` budgets at once; gives (granted, refused, recorded)."""
    granted = refused = 0
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def worker() -> None:
        nonlocal granted, refused
        budget = DailyBudget(engine, limit)
        start.wait()
        for _ in range(tries):
            try:
                budget.spend()
                ok = True
            except BudgetExhausted:
                ok = False
            with lock:
                granted += ok
                refused += not ok

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    return granted, refused, DailyBudget(engine, limit).spent_today()


def test_budget_is_exact_under_concurrent_spending_sqlite(sqlite_engine):
    assert hammer(sqlite_engine, limit=40, threads=6, tries=10) == (40, 20, 40)


@pytest.mark.postgres
def test_budget_is_exact_under_concurrent_spending_postgres():
    url = os.environ.get("SYNCD_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("SYNCD_TEST_POSTGRES_URL not set (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)")
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    name = f"syncd_budget_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine = sa.create_engine(sa.make_url(url).set(database=name), pool_size=8)
    try:
        Base.metadata.create_all(engine)
        assert hammer(engine, limit=40, threads=6, tries=10) == (40, 20, 40)
        assert DailyBudget(sa.create_engine(sa.make_url(url).set(database=name)), 40).remaining() == 0
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
