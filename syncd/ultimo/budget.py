"""Ultimo's quotas, on syncd's side: a sliding-window rate limiter and a daily call budget.

Ultimo allows 100 requests per 10 seconds and 10,000 per day over all of a customer's
API keys together (reference/ultimo-api.md, "Limits and quotas"). syncd takes a
configured share of each: `RateLimiter` keeps the pace, `DailyBudget` counts every call
(retries included) per UTC day in the database so that restarts and parallel processes
(`syncd reconcile` beside `syncd run`) draw from one count.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from syncd.errors import BudgetExhausted, DatabaseError
from syncd.store.schema import UltimoBudget


class CallBudget(Protocol):
    """What UltimoClient spends every attempt from: DailyBudget, or anything that wraps it
    (the service's pacer). `spend` raises BudgetExhausted when the call may not be made."""

    def spend(self, n: int = 1) -> None: ...

    def spent_today(self) -> int: ...

    def remaining(self) -> int: ...


class RateLimiter:
    """At most `calls` calls in any `per_seconds` long window, as the server counts them.

    Ultimo counts a request when it arrives; syncd only knows when a call starts and when
    its answer arrives, and the arrival lies between the two. So a call counts from the
    moment `acquire()` lets it start until `margin` + `per_seconds` after `release()` (its
    answer arrived, or the attempt failed): no two calls whose arrivals lie within one
    window of each other are ever more than `calls`, however long each took on the way.
    Counting at the start only (as before issue 9) let Ultimo see one call too many when a
    call was slow to arrive. `margin` (0.1 s) covers timer granularity and the two clocks'
    rates.

    `acquire()` blocks (through `sleep`) until a call may start. Every `acquire()` must be
    followed by one `release()`; `call()` pairs them. Thread-safe: waiting callers queue
    on one lock, so they are served in turn.
    """

    def __init__(
        self,
        calls: int,
        per_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        margin: float = 0.1,
    ) -> None:
        if calls < 1:
            raise ValueError("calls must be at least 1")
        if per_seconds <= 0:
            raise ValueError("per_seconds must be positive")
        if margin < 0:
            raise ValueError("margin must not be negative")
        self.calls = calls
        self.per_seconds = per_seconds
        self.margin = margin
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._state = threading.Lock()     # guards _ends and _open; never held while sleeping
        self._ends: deque[float] = deque()  # when each finished call's answer came, in order
        self._open = 0                      # calls started whose answer has not come yet
        self.waited = 0.0   # total seconds spent waiting, for the run summary

    def acquire(self) -> float:
        """Wait until a call may start and count it (in flight); returns the seconds waited."""
        waited = 0.0
        with self._lock:
            while True:
                with self._state:
                    now = self._clock()
                    self._expire(now)
                    if len(self._ends) + self._open < self.calls:
                        self._open += 1
                        self.waited += waited
                        return waited
                    # Full: the oldest finished call leaves the window first; with none
                    # finished, look again shortly (an answer is on its way).
                    pause = (self._ends[0] + self.per_seconds + self.margin - now) if self._ends \
                        else min(self.per_seconds, 0.05)
                pause = max(pause, 0.001)
                self._sleep(pause)
                waited += pause

    def release(self) -> None:
        """The answer of an acquired call arrived (or its attempt failed)."""
        with self._state:
            if self._open > 0:
                self._open -= 1
                self._ends.append(self._clock())

    @contextmanager
    def call(self) -> Iterator[float]:
        """`acquire()` on entry (gives the seconds waited), `release()` on exit."""
        waited = self.acquire()
        try:
            yield waited
        finally:
            self.release()

    def in_window(self) -> int:
        """How many calls the current window holds (those in flight included)."""
        with self._state:
            now = self._clock()
            return self._open + sum(1 for e in self._ends if e > now - self.per_seconds - self.margin)

    def _expire(self, now: float) -> None:
        while self._ends and self._ends[0] <= now - self.per_seconds - self.margin:
            self._ends.popleft()


def _utc_now() -> datetime:
    return datetime.now(UTC)


class DailyBudget:
    """syncd's share of Ultimo's daily quota: `limit` calls per UTC day.

    With an engine the count lives in table `ultimo_budget` (one row per day, atomically
    incremented) and survives restarts; with `engine=None` it is kept in memory.
    """

    def __init__(
        self,
        engine: Engine | None,
        limit: int,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.engine = engine
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._memory: dict[str, int] = {}

    def today(self) -> str:
        """Today's key, `YYYY-MM-DD` in UTC."""
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the budget clock must give aware datetimes")
        return now.astimezone(UTC).date().isoformat()

    def spend(self, n: int = 1) -> None:
        """Count `n` calls against today. Raises BudgetExhausted (counting nothing) when
        today's count would exceed the limit; DatabaseError when the count cannot be stored."""
        if n < 1:
            raise ValueError("n must be at least 1")
        day = self.today()
        if self.engine is None:
            with self._lock:
                spent = self._memory.get(day, 0)
                if spent + n > self.limit:
                    raise self._exhausted(day, spent)
                self._memory[day] = spent + n
            return
        try:
            with self.engine.begin() as conn:
                self._ensure_row(conn, day)
                # One conditional UPDATE is atomic on SQLite and PostgreSQL alike: two
                # processes can never both take the last call.
                result = conn.execute(
                    update(UltimoBudget)
                    .where(UltimoBudget.day == day, UltimoBudget.calls + n <= self.limit)
                    .values(calls=UltimoBudget.calls + n, updated_at=self._clock())
                )
                if result.rowcount == 1:
                    return
                spent = conn.execute(select(UltimoBudget.calls).where(UltimoBudget.day == day)).scalar_one()
        except SQLAlchemyError as exc:
            raise DatabaseError(f"cannot record Ultimo calls in the budget table: {exc.__class__.__name__}") from exc
        raise self._exhausted(day, int(spent))

    def spent_today(self) -> int:
        """Calls counted today (UTC). Raises DatabaseError when the table cannot be read."""
        day = self.today()
        if self.engine is None:
            with self._lock:
                return self._memory.get(day, 0)
        try:
            with self.engine.connect() as conn:
                value = conn.execute(select(UltimoBudget.calls).where(UltimoBudget.day == day)).scalar()
        except SQLAlchemyError as exc:
            raise DatabaseError(f"cannot read the Ultimo budget table: {exc.__class__.__name__}") from exc
        return int(value or 0)

    def remaining(self) -> int:
        """Calls still allowed today."""
        return max(0, self.limit - self.spent_today())

    def _ensure_row(self, conn, day: str) -> None:  # noqa: ANN001 - a SQLAlchemy Connection
        values = {"day": day, "calls": 0, "updated_at": self._clock()}
        dialect = conn.dialect.name
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert
            dialect_insert: Callable[..., Any] = sqlite_insert
        elif dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert
            dialect_insert = pg_insert
        else:   # pragma: no cover - syncd supports SQLite and PostgreSQL only
            try:
                with conn.begin_nested():
                    conn.execute(insert(UltimoBudget).values(**values))
            except IntegrityError:
                pass
            return
        conn.execute(dialect_insert(UltimoBudget).values(**values).on_conflict_do_nothing(index_elements=["day"]))

    def _exhausted(self, day: str, spent: int) -> BudgetExhausted:
        return BudgetExhausted(
            f"syncd's daily Ultimo budget is spent: {spent} of {self.limit} calls used on {day} (UTC); "
            "it resets at 00:00 UTC (ultimo.daily_call_budget)"
        )
