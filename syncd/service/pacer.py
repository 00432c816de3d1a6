"""The service's gate for Ultimo calls: the token bucket of `syncd.service.readplan`, shared by
threads, in front of the persisted daily ledger (`syncd.ultimo.budget.DailyBudget`).

`Pacer` is what the service hands to `UltimoClient` as its budget: every call, read or
write, waits in `spend()` for a token and for room in the last 24 hours' count
(`syncd.service.bucket.CallWindow`), then is counted in the ledger. Room jobs ask
`claim()` whether they may read Ultimo now. `observe_ledger()` charges the bucket and the
window with calls other processes (`syncd reconcile`) counted in the same ledger, and
`snapshot()` is what the next process starts from (kept in the service's row of table
`runs`, with the window and the learned day profile; `start_state` takes it over).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from syncd.errors import BudgetExhausted, DatabaseError
from syncd.service.bucket import CallWindow, epoch
from syncd.service.rates import RateState
from syncd.service.readplan import (
    PacerSnapshot,
    ReadGrant,
    ReadPlanner,
    ReadPolicy,
    TokenBucket,
    human,
    initial_level,
)
from syncd.store.schema import Run, UltimoBudget
from syncd.ultimo.budget import DailyBudget

SERVICE_RUN_KIND = "service"


class PacingWait(BudgetExhausted):
    """No token within the wait allowed (or the service is stopping): try again later."""

    def __init__(self, message: str, retry_in: float) -> None:
        self.retry_in = retry_in
        super().__init__(message)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Pacer:
    """Thread-safe pacing of Ultimo calls (see the module docstring).

    `now`/`sleep` are injectable so a test can run it on a virtual clock; `hold_off`
    seconds pass after start before the first call, so that a restarted process cannot
    add its calls to its predecessor's in one rate-limit window."""

    def __init__(
        self,
        policy: ReadPolicy,
        rooms: Sequence[str],
        daily: DailyBudget,
        *,
        level: float,
        now: Callable[[], datetime] = _utc_now,
        sleep: Callable[[float], object] = time.sleep,
        max_wait: float = 60.0,
        hold_off: float = 10.0,
        window: CallWindow | None = None,
        profile: dict[str, object] | None = None,
    ) -> None:
        self.policy = policy
        self.daily = daily
        self.limit = daily.limit
        self._now = now
        self._sleep = sleep
        self.max_wait = max_wait
        start = now()
        self._not_before = start + timedelta(seconds=hold_off)
        # The rates' spread is refitted outside the lock (`_refit`): at thousands of rooms a
        # fit takes a second or more, and every room job's Ultimo call would wait for it.
        self.planner = ReadPlanner(policy, rooms, TokenBucket(policy.capacity, policy.rate, level, start),
                                   fit_inline=False)
        if profile is not None:
            self.planner.load_profile(profile, start)
        # The calls of the last 24 hours: no call while they are the daily budget, and the
        # bucket refills slower while spending all it gets would come to that.
        self.window = window if window is not None else CallWindow(policy.daily_budget)
        self._pace: tuple[int, float] | None = None
        self.planner.bucket.pace = self._paced
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._own = 0                       # own calls since the ledger was last observed
        self._seen_day = daily.today()
        self._seen_calls: int | None = None
        self._local = threading.local()
        self._fitting = False
        self.calls = 0

    def _paced(self, t: float, level: float) -> float:
        """`CallWindow.pace` for the main bucket, worked out once a minute (a call changes
        the window and the level alike, so between refills the share holds)."""
        slot = int(t // 60)
        if self._pace is None or self._pace[0] != slot:
            bucket = self.planner.bucket
            self._pace = (slot, self.window.pace(t, level, lambda a, b: bucket.shape.integral(a, b) * bucket.rate))
        return self._pace[1]

    # --- the budget interface UltimoClient uses ---------------------------------------

    def spend(self, n: int = 1) -> None:
        """Wait for `n` tokens and count `n` calls in the ledger. Raises PacingWait when
        they would take longer than `max_wait` (or the service is stopping and they are
        not there yet), BudgetExhausted when the day's ledger is full."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._now()
                wait = max(self.planner.bucket.seconds_until(n, now), (self._not_before - now).total_seconds(),
                           self.window.seconds_until(n, epoch(now)))
                if wait <= 0:
                    self.daily.spend(n)
                    self.window.add(n, epoch(now))
                    self.planner.bucket.take(n, now)
                    self._own += n
                    self.calls += n
                    return
                if self._stopping.is_set() or waited + wait > self.max_wait:
                    self._local.refused = self.refusals_here() + 1
                    raise PacingWait(
                        f"Ultimo calls are paced to the daily budget: the next call is allowed in {human(wait)}",
                        wait,
                    )
            # At least a millisecond: datetimes move in microseconds, a smaller wait could spin.
            wait = max(wait, 0.001)
            self._sleep(wait)
            waited += wait

    def refusals_here(self) -> int:
        """PacingWait raised in this thread so far (a job compares before and after to tell
        a paced system from a failing one)."""
        return int(getattr(self._local, "refused", 0))

    def spent_today(self) -> int:
        return self.daily.spent_today()

    def remaining(self) -> int:
        return self.daily.remaining()

    def today(self) -> str:
        return self.daily.today()

    # --- reads --------------------------------------------------------------------------

    def claim(self, room: str) -> ReadGrant | None:
        """A read of `room` if one is due and tokens allow (see ReadPlanner.claim)."""
        self._refit()
        with self._lock:
            now = self._now()
            if self._stopping.is_set() or now < self._not_before:
                return None
            return self.planner.claim(room, now)

    def done(self, grant: ReadGrant, *, ok: bool, rows: int | None = None, found: int | None = None) -> None:
        with self._lock:
            self.planner.done(grant, self._now(), ok=ok, rows=rows, found=found)
        self._refit()

    def _refit(self) -> None:
        """Fit the rates' spread again when the counts call for it, in this thread and
        outside the lock (one fit at a time); the planner goes on with the last fit
        meanwhile. Alone, as in a simulation, the fit is in place before anything asks
        for a rate, as if it were made where it is needed."""
        with self._lock:
            if self._fitting:
                return
            job = self.planner.pending_fit()
            if job is None:
                return
            self._fitting = True
        try:
            job.run()
        finally:
            with self._lock:
                self._fitting = False
                if job.fitted is not None:
                    self.planner.install_fit(job)

    def take_rates(self) -> dict[str, RateState]:
        """The learned change rates that moved since the last call (to persist)."""
        with self._lock:
            return self.planner.rates.take_dirty()

    def keep_rates(self, rooms: Iterable[str]) -> None:
        """Persisting them failed: they are taken again next time."""
        with self._lock:
            self.planner.rates.put_back(rooms)

    def note_change(self, room: str) -> None:
        with self._lock:
            self.planner.note_change(room, self._now())

    def pause(self, room: str, until: datetime) -> None:
        with self._lock:
            self.planner.pause(room, until)

    def level(self) -> float:
        with self._lock:
            return self.planner.bucket.level(self._now())

    def stop(self) -> None:
        """From now on, calls that would have to wait are refused at once."""
        self._stopping.set()

    # --- the shared ledger ----------------------------------------------------------------

    def observe_ledger(self, engine: Engine | None) -> int:
        """Charge the bucket with calls counted in the ledger by other processes since the
        last look; gives how many. Needs the database (no-op with engine None)."""
        if engine is None:
            return 0
        with self._lock:
            counts = ledger_counts(engine, self._seen_day)
            today = self.daily.today()
            if self._seen_calls is None:
                foreign = 0
            else:
                total = sum(counts.values()) - self._seen_calls
                foreign = max(0, total - self._own)
            if foreign:
                now = self._now()
                self.planner.bucket.take(foreign, now)
                self.window.add(foreign, epoch(now))    # made by now: counted as if now
            self._seen_day, self._seen_calls, self._own = today, counts.get(today, 0), 0
            return foreign

    def snapshot(self) -> PacerSnapshot:
        """The bucket now and the ledger's count of today, read together."""
        with self._lock:
            now = self._now()
            return PacerSnapshot(self.planner.bucket.level(now), now, self.daily.today(), self.daily.spent_today(),
                                 window=tuple(self.window.bins(epoch(now))),
                                 profile=self.planner.profile.to_json())


# --- persistence -------------------------------------------------------------------------


def ledger_counts(engine: Engine, since_day: str) -> dict[str, int]:
    """Calls per UTC day in table ultimo_budget, from `since_day` on. Raises DatabaseError."""
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(UltimoBudget.day, UltimoBudget.calls).where(UltimoBudget.day >= since_day))
            return {day: int(calls or 0) for day, calls in rows}
    except SQLAlchemyError as exc:
        raise DatabaseError(f"cannot read the Ultimo budget table: {exc.__class__.__name__}") from exc


def start_hold_off(engine: Engine, now: datetime, per_seconds: float = 10.0) -> float:
    """Seconds a starting process waits before its first Ultimo call, so that its calls
    and its predecessor's never share one rate-limit window: a new rate limiter knows
    nothing of the old one, the ledger does. A call goes out at most `per_seconds` after
    it is counted (the limiter's wait), so two windows after the last count are safe
    (0 when the ledger never counted a call)."""
    try:
        with engine.connect() as conn:
            last = conn.execute(select(func.max(UltimoBudget.updated_at))).scalar()
    except SQLAlchemyError as exc:
        raise DatabaseError(f"cannot read the Ultimo budget table: {exc.__class__.__name__}") from exc
    if last is None:
        return 0.0
    if last.tzinfo is None:   # a raw MAX() bypasses the column type on some databases
        last = last.replace(tzinfo=UTC)
    span = 2 * per_seconds
    return min(span, max(0.0, span - (now - last).total_seconds()))


def last_snapshot(engine: Engine) -> PacerSnapshot | None:
    """The newest pacer snapshot a service left in table runs, if any."""
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(Run.summary).where(Run.kind == SERVICE_RUN_KIND).order_by(Run.id.desc()).limit(5)
            ).all()
    except SQLAlchemyError as exc:
        raise DatabaseError(f"cannot read table runs: {exc.__class__.__name__}") from exc
    for (summary,) in rows:
        try:
            data = json.loads(summary or "null")
        except ValueError:
            continue
        if isinstance(data, dict) and (snap := PacerSnapshot.from_json(data.get("pacer"))) is not None:
            return snap
    return None


def start_level(engine: Engine, policy: ReadPolicy, now: datetime) -> float:
    """The level a starting service may give its bucket (readplan.initial_level), from
    the ledger and the predecessor's snapshot."""
    return start_state(engine, policy, now).level


@dataclass(frozen=True, slots=True)
class StartState:
    """What a starting service takes over: its bucket's level, the calls of the last 24
    hours, and the learned day profile (None: nothing learned yet)."""

    level: float
    window: CallWindow
    profile: dict[str, object] | None


def start_state(engine: Engine, policy: ReadPolicy, now: datetime) -> StartState:
    """From the ledger and the predecessor's snapshot (see `initial_level`): the window
    holds the snapshot's calls and every call the ledger counted since, each placed as
    late as it can have been made (so it counts at least as long as it should); without
    a snapshot, yesterday's calls (UTC) are placed at midnight and today's now. Calls of
    the days before yesterday are over 24 hours old."""
    today = now.astimezone(UTC).date()
    yesterday = (today - timedelta(days=1)).isoformat()
    counts = ledger_counts(engine, yesterday)
    two_days = counts.get(yesterday, 0) + counts.get(today.isoformat(), 0)
    snap = last_snapshot(engine)
    since = None
    unknown = {d: counts.get(d, 0) for d in (yesterday, today.isoformat())}
    window = CallWindow(policy.daily_budget)
    if snap is not None and date.fromisoformat(snap.ledger_day) <= today:
        later = ledger_counts(engine, snap.ledger_day)
        since = max(0, sum(later.values()) - snap.ledger_calls)
        if snap.window is not None:
            window = CallWindow(policy.daily_budget, snap.window)
            unknown = {d: n - (snap.ledger_calls if d == snap.ledger_day else 0) for d, n in later.items()}
    midnight = datetime.combine(today, datetime.min.time(), UTC).timestamp()
    for day, n in unknown.items():
        if day == today.isoformat():
            window.add(max(0, n), epoch(now))
        elif day == yesterday:
            window.add(max(0, n), midnight - 1.0)
    profile = snap.profile if snap is not None else None
    shape = ReadPlanner.shapes_for(policy, profile, now)[0]
    level = initial_level(policy, now, calls_last_two_days=two_days, snapshot=snap, calls_since_snapshot=since,
                          shape=shape)
    return StartState(level, window, profile)


def save_snapshot(engine: Engine, run_id: int, snapshot: PacerSnapshot, extra: dict[str, object] | None = None,
                  *, status: str | None = None, finished_at: datetime | None = None) -> None:
    """Keep `snapshot` (and `extra`) in the service's run row; `status`/`finished_at` at the end."""
    from syncd.store.db import session_factory

    try:
        with session_factory(engine).begin() as s:
            run = s.get(Run, run_id)
            if run is None:
                return
            run.summary = json.dumps({"pacer": snapshot.to_json(), **(extra or {})})
            if status is not None:
                run.status = status
            if finished_at is not None:
                run.finished_at = finished_at
    except SQLAlchemyError as exc:
        raise DatabaseError(f"cannot write table runs: {exc.__class__.__name__}") from exc
