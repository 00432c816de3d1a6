"""The pacing arithmetic of Ultimo calls: a token bucket, and where a restarted process
may start it. Pure: no I/O, no clock of its own.

Every Ultimo call, read or write, takes a token from one bucket holding at most
`capacity` tokens and refilled at `rate = (daily_call_budget - capacity) / 86400` per
second. A bucket that is never overdrawn lets through at most `capacity + rate * T`
calls in any T seconds: at most `daily_call_budget` in any 24 hours, whichever 24 hours
(and so in any UTC day). A restarted process starts from a level it can prove
(`initial_level`), so the bound holds across restarts too.
"""

from __future__ import annotations

import math
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


class TokenBucket:
    """`capacity` tokens at most, refilled at `rate` per second; `take` may overdraw (a
    call made elsewhere, found in the ledger), which later callers then wait out."""

    def __init__(self, capacity: float, rate: float, level: float, at: datetime) -> None:
        self.capacity = capacity
        self.rate = rate
        self._level = min(level, capacity)
        self._at = epoch(at)

    @property
    def at(self) -> datetime:
        """When the level was last brought up to date."""
        return datetime.fromtimestamp(self._at, UTC)

    def level(self, now: datetime) -> float:
        """Tokens available at `now` (refilled up to then; time never runs backwards here)."""
        t = epoch(now)
        if t > self._at:
            self._level = min(self.capacity, self._level + (t - self._at) * self.rate)
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
        if need > self.capacity:
            return math.inf
        return (need - have) / self.rate


@dataclass(frozen=True, slots=True)
class PacerSnapshot:
    """What a process persists so that its successor can start with a proven level:
    the bucket's level at `at`, and the ledger's count for `ledger_day` at that moment."""

    level: float
    at: datetime
    ledger_day: str
    ledger_calls: int

    def to_json(self) -> dict[str, object]:
        return {"level": round(self.level, 3), "at": self.at.isoformat(), "ledger_day": self.ledger_day,
                "ledger_calls": self.ledger_calls}

    @classmethod
    def from_json(cls, data: object) -> PacerSnapshot | None:
        """The snapshot in `data`, or None when it is missing or malformed."""
        try:
            d = dict(data)  # type: ignore[call-overload]
            return cls(float(d["level"]), utc(datetime.fromisoformat(d["at"])), str(d["ledger_day"]),
                       int(d["ledger_calls"]))
        except (TypeError, KeyError, ValueError):
            return None


def initial_level(
    policy: Paced,
    now: datetime,
    *,
    calls_last_two_days: int,
    snapshot: PacerSnapshot | None = None,
    calls_since_snapshot: int | None = None,
) -> float:
    """The bucket level a new process may start with, never more than a bucket running
    without the restart would hold, so the any-24-hours bound holds across restarts.

    Two lower bounds of that level, the larger wins: `capacity` minus every call of
    yesterday and today (UTC, from the ledger), and the predecessor's snapshot refilled
    since and charged with every call counted since. Without a snapshot the predecessor
    is taken to have left an empty bucket (a predecessor never overdraws it).
    """
    c, r = policy.capacity, policy.rate
    fresh = c - calls_last_two_days
    if snapshot is None or calls_since_snapshot is None or snapshot.at > now:
        return max(0.0, fresh)
    carried = min(c, snapshot.level + (epoch(now) - epoch(snapshot.at)) * r) - calls_since_snapshot
    return max(fresh, carried)
