"""The pacing arithmetic of Ultimo calls: a token bucket, and where a restarted process
may start it. Pure: no I/O, no clock of its own.

Every Ultimo call, read or write, takes a token from one bucket holding at most
`capacity` tokens and refilled at `rate = (daily_call_budget - capacity) / 86400` per
second on average over the day. The refill follows a `Shape`: more in the hours when
bookings change (learned, `syncd.service.rates.DayProfile`), less in the quiet ones, the
same over any whole day. A flat bucket that is never overdrawn lets through at most
`capacity + rate * T` calls in any T seconds: at most `daily_call_budget` in any 24
hours, whichever 24 hours (and so in any UTC day). A fixed shape keeps that; a shape
that has just moved could let slightly more through in the 24 hours around the move,
so every call also passes a `CallWindow`, which counts the calls of the last 24 hours
and holds a call while they are `daily_call_budget`; before it comes to that, the bucket
refills only as fast as spending all it gets would keep within it (`CallWindow.pace`).
A restarted process starts from a level it can prove (`initial_level`) and a window that
holds at least its predecessors' calls, so the bound holds across restarts too.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from syncd.core.model import utc


class Paced(Protocol):
    """What `initial_level` needs of a policy (syncd.service.readplan.ReadPolicy)."""

    @property
    def capacity(self) -> float: ...

    @property
    def rate(self) -> float: ...


def epoch(t: datetime) -> float:
    return utc(t).timestamp()


def from_epoch(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC)


HOUR = 3600.0
DAY = 86400.0


class Shape:
    """How a rate varies over the day: 24 weights, one per UTC hour, of mean 1 (so a
    shaped rate gives as much over any whole day as the flat one). UTC hours, not local
    ones: a day is then always 24 of them, and a fixed shape gives exactly the daily
    amount in any 24 hours, whatever the clocks do. Pure; times are epoch seconds.

    Every question is answered in constant time from two running sums over the day
    (weighted seconds, and weighted seconds times the time of day), so a planner can ask
    them of every room at every look."""

    __slots__ = ("_cum", "_memo", "_mom", "_mom_day", "flat", "weights")

    def __init__(self, weights: Sequence[float] | None = None) -> None:
        w = [1.0] * 24 if weights is None else [max(0.0, float(x)) for x in weights]
        if len(w) != 24 or not sum(w) > 0:
            raise ValueError("a shape has 24 hourly weights, not all zero")
        mean = sum(w) / 24
        self.weights: tuple[float, ...] = tuple(x / mean for x in w)
        self.flat = all(abs(x - 1.0) < 1e-12 for x in self.weights)
        cum, mom = [0.0], [0.0]
        for h, x in enumerate(self.weights):
            cum.append(cum[-1] + x * HOUR)
            mom.append(mom[-1] + x * (((h + 1) * HOUR) ** 2 - (h * HOUR) ** 2) / 2)
        self._cum, self._mom = tuple(cum), tuple(mom)
        self._mom_day = mom[-1]
        self._memo: dict[float, tuple[float, float]] = {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Shape) and self.weights == other.weights

    def __hash__(self) -> int:
        return hash(self.weights)

    def __repr__(self) -> str:
        return "Shape(flat)" if self.flat else f"Shape({', '.join(f'{w:.2f}' for w in self.weights)})"

    def at(self, t: float) -> float:
        """The weight at epoch second `t`."""
        return self.weights[int(math.floor(t / HOUR)) % 24]

    def _f(self, x: float) -> float:
        """Weighted seconds from 0 to `x` (signed), 0 being some midnight UTC."""
        k = math.floor(x / DAY)
        u = x - k * DAY
        h = min(23, int(u // HOUR))
        return k * DAY + self._cum[h] + self.weights[h] * (u - h * HOUR)

    def _g(self, x: float) -> float:
        """The integral of w(s) s ds from 0 to `x` (signed)."""
        k = math.floor(x / DAY)
        u = x - k * DAY
        h = min(23, int(u // HOUR))
        within = self._cum[h] + self.weights[h] * (u - h * HOUR)
        g_day = self._mom[h] + self.weights[h] * (u * u - (h * HOUR) ** 2) / 2
        return DAY * DAY * k * (k - 1) / 2 + k * self._mom_day + k * DAY * within + g_day

    def integral(self, t0: float, t1: float) -> float:
        """Weighted seconds from `t0` to `t1` (t1 - t0 when flat; 0 when t1 <= t0)."""
        if t1 <= t0:
            return 0.0
        if self.flat:
            return t1 - t0
        ref = math.floor(t1 / DAY) * DAY
        return self._f(t1 - ref) - self._f(t0 - ref)

    def advance(self, t0: float, amount: float) -> float:
        """The time from which `amount` weighted seconds have passed since `t0`."""
        if amount <= 0:
            return t0
        if self.flat:
            return t0 + amount
        ref = math.floor(t0 / DAY) * DAY
        target = self._f(t0 - ref) + amount
        k = math.floor(target / DAY)
        rest = target - k * DAY
        # The hour where the running sum reaches `rest` (an hour of weight 0 never does).
        h = min(23, max(0, bisect.bisect_right(self._cum, rest) - 1))
        while self.weights[h] <= 0:
            h -= 1
        return ref + k * DAY + h * HOUR + (rest - self._cum[h]) / self.weights[h]

    def moment(self, since: float, t: float) -> float:
        """2 x the integral of w(s) (t - s) ds from `since` to `t`: the waiting a rate of this
        shape has piled up since `since` (age squared when flat)."""
        if t <= since:
            return 0.0
        if self.flat:
            return (t - since) ** 2
        ref = math.floor(t / DAY) * DAY
        a, b = since - ref, t - ref
        # A room's last read stays put while `t` moves on: its sums are looked up, not redone.
        sums = self._memo.get(a)
        if sums is None:
            if len(self._memo) > 8192:
                self._memo.clear()
            sums = self._memo[a] = (self._f(a), self._g(a))
        return max(0.0, 2 * (b * (self._f(b) - sums[0]) - (self._g(b) - sums[1])))


FLAT = Shape()


class TokenBucket:
    """`capacity` tokens at most, refilled at `rate` per second (times the `shape`'s
    weight of the hour: over a whole day, `rate` on average); `take` may overdraw (a call
    made elsewhere, found in the ledger), which later callers then wait out."""

    def __init__(self, capacity: float, rate: float, level: float, at: datetime, shape: Shape = FLAT) -> None:
        self.capacity = capacity
        self.rate = rate
        self.shape = shape
        self._level = min(level, capacity)
        self._at = epoch(at)
        # (epoch, level) -> the share of the refill to take (`CallWindow.pace`), or None.
        self.pace: Callable[[float, float], float] | None = None

    def reshape(self, shape: Shape, now: datetime) -> None:
        """Refill at `shape` from `now` on (what came before is filled at the old one)."""
        self.level(now)
        self.shape = shape

    @property
    def at(self) -> datetime:
        """When the level was last brought up to date."""
        return datetime.fromtimestamp(self._at, UTC)

    def level(self, now: datetime) -> float:
        """Tokens available at `now` (refilled up to then; time never runs backwards here)."""
        t = epoch(now)
        if t > self._at:
            share = 1.0 if self.pace is None else self.pace(self._at, self._level)
            self._level = min(self.capacity, self._level + self.shape.integral(self._at, t) * self.rate * share)
            self._at = t
        return self._level

    def take(self, n: float, now: datetime) -> None:
        """Spend `n` tokens at `now`."""
        self.level(now)
        self._level -= n

    def seconds_until(self, need: float, now: datetime) -> float:
        """Seconds from `now` until `need` tokens are there (0 when they already are);
        infinite when `need` exceeds the capacity."""
        have = self.level(now)
        if have >= need:
            return 0.0
        if need > self.capacity or self.rate <= 0:
            return math.inf
        t = epoch(now)
        return self.shape.advance(t, (need - have) / self.rate) - t


@dataclass(frozen=True, slots=True)
class PacerSnapshot:
    """What a process persists so that its successor can start with a proven level:
    the bucket's level at `at`, and the ledger's count for `ledger_day` at that moment;
    the calls of the 24 hours before (`window`, CallWindow bins; None: not known) and the
    learned day profile (`profile`, `syncd.service.rates.DayProfile.to_json`)."""

    level: float
    at: datetime
    ledger_day: str
    ledger_calls: int
    window: tuple[tuple[int, int], ...] | None = None
    profile: dict[str, object] | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"level": round(self.level, 3), "at": self.at.isoformat(),
                                  "ledger_day": self.ledger_day, "ledger_calls": self.ledger_calls}
        if self.window is not None:
            out["window"] = [list(b) for b in self.window]
        if self.profile is not None:
            out["profile"] = self.profile
        return out

    @classmethod
    def from_json(cls, data: object) -> PacerSnapshot | None:
        """The snapshot in `data`, or None when it is missing or malformed (a malformed
        window is taken as unknown, a malformed profile as none)."""
        try:
            d = dict(data)  # type: ignore[call-overload]
            base = (float(d["level"]), utc(datetime.fromisoformat(d["at"])), str(d["ledger_day"]),
                    int(d["ledger_calls"]))
        except (TypeError, KeyError, ValueError):
            return None
        window: tuple[tuple[int, int], ...] | None
        try:
            window = tuple((int(k), int(n)) for k, n in d["window"])
        except (TypeError, KeyError, ValueError):
            window = None
        profile = d.get("profile")
        return cls(*base, window=window, profile=profile if isinstance(profile, dict) else None)


def initial_level(
    policy: Paced,
    now: datetime,
    *,
    calls_last_two_days: int,
    snapshot: PacerSnapshot | None = None,
    calls_since_snapshot: int | None = None,
    shape: Shape = FLAT,
) -> float:
    """The bucket level a new process may start with, never more than a bucket running
    without the restart would hold, so the any-24-hours bound holds across restarts.

    Two lower bounds of that level, the larger wins: `capacity` minus every call of
    yesterday and today (UTC, from the ledger), and the predecessor's snapshot refilled
    since and charged with every call counted since. Without a snapshot the predecessor
    is taken to have left an empty bucket (a predecessor never overdraws it). `shape`:
    the refill's shape the predecessor had (the one its snapshot's profile gives).
    """
    c, r = policy.capacity, policy.rate
    fresh = c - calls_last_two_days
    if snapshot is None or calls_since_snapshot is None or snapshot.at > now:
        return max(0.0, fresh)
    carried = min(c, snapshot.level + shape.integral(epoch(snapshot.at), epoch(now)) * r) - calls_since_snapshot
    return max(fresh, carried)


class CallWindow:
    """The calls of the last 24 hours, the hard backstop of the daily budget: a call may go
    out only while the 24 hours before it hold fewer than `limit`. The bucket keeps the
    pace; this holds the bound when the pace's shape has just changed (a learned profile
    moved) or a predecessor's calls are only known by day.

    Calls are kept in 10-minute bins, each counted until 24 hours after its bin ends
    (never shorter than the call itself counts). Pure: epoch seconds passed in."""

    BIN = 600.0

    def __init__(self, limit: int, bins: Sequence[tuple[int, int]] = ()) -> None:
        self.limit = limit
        self._bins: dict[int, int] = {}
        for k, n in bins:
            if n > 0:
                self._bins[int(k)] = self._bins.get(int(k), 0) + int(n)

    def _expire(self, t: float) -> None:
        oldest = math.floor((t - DAY) / self.BIN)      # a bin k counts until (k + 1) * BIN + DAY
        for k in [k for k in self._bins if k < oldest]:
            del self._bins[k]

    def add(self, n: int, t: float) -> None:
        if n > 0:
            k = math.floor(t / self.BIN)
            self._bins[k] = self._bins.get(k, 0) + n

    def count(self, t: float) -> int:
        self._expire(t)
        return sum(self._bins.values())

    def seconds_until(self, n: int, t: float) -> float:
        """Seconds from `t` until `n` more calls fit (0 when they do now; infinite when
        `n` exceeds the limit)."""
        if n > self.limit:
            return math.inf
        held = self.count(t)
        if held + n <= self.limit:
            return 0.0
        for k in sorted(self._bins):
            held -= self._bins[k]
            if held + n <= self.limit:
                return max(0.0, (k + 1) * self.BIN + DAY - t)
        return 0.0

    def pace(self, t: float, level: float, refill: Callable[[float, float], float]) -> float:
        """The share (0 to 1) of its refill a bucket holding `level` at `t` may take so that,
        were it to spend everything it holds and gets, no 24 hours would hold more than
        `limit` calls; `refill(t, u)`: what it would get from `t` to `u` at the full pace.
        1 whenever the bucket has kept a fixed shape (its own bound suffices); below 1
        after the shape moved or calls were made elsewhere, which spreads the shortfall
        over the hours until the calls that cause it leave the window, instead of
        stopping every call when the window fills."""
        self._expire(t)
        if not self._bins:
            return 1.0
        share = 1.0
        held = sum(self._bins.values())
        for k in sorted(self._bins):
            # Just before bin k stops counting, at u, the window still holds `held`.
            u = (k + 1) * self.BIN + DAY
            if u > t:
                get = refill(t, u)
                if get > 0:
                    share = min(share, (self.limit - held - max(0.0, level)) / get)
            held -= self._bins[k]
        return max(0.0, share)

    def bins(self, t: float) -> list[tuple[int, int]]:
        """The bins still counting at `t` (for a snapshot)."""
        self._expire(t)
        return sorted(self._bins.items())
