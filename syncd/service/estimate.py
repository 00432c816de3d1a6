"""What the Ultimo budget allows: the steady-state staleness per room, and the bound
on the worst case. Pure arithmetic, no clock; `syncd.service.readplan` feeds it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from syncd.service.readplan import ReadPolicy

__all__ = ["DAY", "Estimate", "RoomStaleness", "carried_over", "estimate", "human"]

DAY = 86400.0


@dataclass(frozen=True, slots=True)
class RoomStaleness:
    room: str
    near_seconds: float     # longest time between reads of the near-term window
    far_seconds: float      # ... of the rest of the window


@dataclass(frozen=True, slots=True)
class Estimate:
    """What the budget allows: reads per day, the calls keeping every room read every
    interval would need, and the staleness per room."""

    read_calls_per_day: float
    needed_calls_per_day: float
    interval_seconds: float
    rooms: tuple[RoomStaleness, ...] = field(default_factory=tuple)
    bound_seconds: float | None = None     # no part of any room's window goes unread longer

    def bound_message(self) -> str:
        """The worst-case bound, as `syncd status` and the start-up message say it."""
        if self.bound_seconds is None:
            return ""
        return (f"no part of any room's window goes unread longer than {human(self.bound_seconds)} "
                f"(twice uniform polling's period with the same calls)")

    @property
    def fresh(self) -> bool:
        return self.read_calls_per_day >= self.needed_calls_per_day

    @property
    def worst(self) -> RoomStaleness:
        return max(self.rooms, key=lambda r: (r.near_seconds, r.far_seconds))

    def message(self) -> str:
        """One line an operator can act on."""
        n = len(self.rooms)
        if self.fresh:
            return (f"Ultimo budget allows reading each of {n} rooms every {human(self.interval_seconds)} "
                    f"({self.needed_calls_per_day:.0f} of {self.read_calls_per_day:.0f} read calls a day)"
                    + (f"; {self.bound_message()}" if self.bound_seconds is not None else ""))
        near = sorted(r.near_seconds for r in self.rooms)
        far = sorted(r.far_seconds for r in self.rooms)
        return (f"Ultimo budget cannot keep {n} rooms fresh: reading each every {human(self.interval_seconds)} "
                f"needs {self.needed_calls_per_day:.0f} calls a day, {self.read_calls_per_day:.0f} are left for "
                f"reads; Ultimo-side changes will reach Exchange within about {human(near[n // 2])} "
                f"(busiest room {human(near[-1])}) for near-term bookings and {human(far[n // 2])} "
                f"({human(far[-1])}) further out "
                "(raise ultimo.daily_call_budget or sync.interval_seconds, or sync fewer rooms)"
                + (f"; {self.bound_message()}" if self.bound_seconds is not None else ""))


def estimate(policy: ReadPolicy, rooms: dict[str, tuple[int, int, float]], *, bound: float | None = None) -> Estimate:
    """Steady-state staleness per room when every read goes to the most value per call.

    `rooms`: name -> (near-term read calls, full read calls, change rate). A read happens
    when its value per call (weight x rate x age² / calls) reaches a common threshold θ,
    so a part costing c calls is read every sqrt(θ c / (weight x rate)) seconds; θ is
    where the calls add up to what is left for reads after writes. With a `bound`, no
    part waits longer than the policy's `force_share` of it (the planner forces a read)."""
    p = policy
    reads_per_s = (p.daily_budget - p.capacity) * (1 - p.write_share) / DAY
    wn = p.near_weight
    total, shapes = 0.0, {}
    for room, (cn, cf, lam) in rooms.items():
        if cf <= cn or not p.split_reads:
            k = wn + 1.0
            t_near = t_far = math.sqrt(cf / (lam * k))          # times sqrt(θ)
            total += cf / t_near
        else:
            # Between full reads the near term is read alone; at a full read its age is on
            # average a third of its interval squared.
            t_near = math.sqrt(cn / (lam * wn))
            t_far = math.sqrt((cf - cn / 3) / lam)
            total += cn / t_near + cf / t_far
        shapes[room] = (t_near, t_far)
    root_theta = total / reads_per_s if reads_per_s > 0 else math.inf
    cap = math.inf if bound is None else max(p.interval_seconds, p.force_share * bound)
    staleness = tuple(
        RoomStaleness(room, min(cap, max(p.interval_seconds, root_theta * a)),
                      min(cap, max(p.interval_seconds, root_theta * b)))
        for room, (a, b) in shapes.items()
    )
    needed = sum(cf for _, cf, _ in rooms.values()) * DAY / p.interval_seconds
    return Estimate(reads_per_s * DAY, needed, p.interval_seconds, staleness, bound)


def carried_over(calls: int, level: float, capacity: float, rate: float, daily_budget: int) -> str | None:
    """What a starting service says when calls made before it (a `syncd reconcile`, or
    its predecessor) left it short of its burst: None when at least half is there.
    `calls` are those of the last 24 hours, `level` of `capacity` the burst it starts
    with, `rate` the bucket's refill per second."""
    if calls <= 0 or level >= capacity / 2:
        return None
    back = (capacity - level) / rate if rate > 0 else math.inf
    return (f"{calls:,} Ultimo calls of the last 24 hours, made before this start (by syncd reconcile, or by "
            f"the service before a restart), count against ultimo.daily_call_budget ({daily_budget:,}): the "
            f"service starts with {level:,.0f} of its {capacity:,.0f} calls of burst, so the first reads go at "
            f"the budget's steady pace; the burst is back in about {human(back)} if nothing is spent meanwhile")


def human(seconds: float) -> str:
    """`45 s`, `12 min`, `3.5 h`, `2.1 days`."""
    if math.isinf(seconds):
        return "never"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * DAY:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / DAY:.1f} days"
