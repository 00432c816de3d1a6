"""How often each room changes in Ultimo, learned from what its reads find.

A room's rate is the number of Ultimo-side changes (reservations made, moved or
cancelled there, not by syncd) per second. Each complete read reports how many it found
and the read planner says how long the part it read had been unread (its exposure);
near-term and far reads see their own share of a room's changes (`near_share`).

The estimate is Poisson with a gamma prior: (changes + prior rate x prior time) /
(exposure + prior time). The prior rate grows with the room's bookings (busier rooms
change more), at a rate per booking pooled over every room (so that a quiet estate
does not keep the default). Changes and exposure decay with a half-life of days, so a
room that quietens down is read less within a few days, not never. The counts are kept
in the database (`room_state.ultimo_changes`, `ultimo_exposure_s`, `rates_at`): a
restarted service starts from what it had learned.

Pure: no I/O, no clock; times are epoch seconds passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ChangeRates", "RateState"]

DAY = 86400.0


@dataclass(slots=True)
class RateState:
    """One room's decayed counts at `at` (epoch seconds; None: nothing seen yet)."""

    changes: float = 0.0
    exposure: float = 0.0
    at: float | None = None

    def decayed(self, t: float, half_life: float) -> tuple[float, float]:
        if self.at is None or t <= self.at:
            return self.changes, self.exposure
        f = 0.5 ** ((t - self.at) / half_life)
        return self.changes * f, self.exposure * f


class ChangeRates:
    """The learned change rate of every room (see the module docstring)."""

    def __init__(self, *, half_life_days: float = 3.0, prior_days: float = 0.5,
                 default_per_booking_day: float = 0.01, near_share: float = 0.5) -> None:
        self.half_life = half_life_days * DAY
        self.prior_time = prior_days * DAY
        self.default_kappa = default_per_booking_day / DAY   # changes per second per booking
        self.near_share = near_share
        self._rooms: dict[str, RateState] = {}
        self._dirty: set[str] = set()
        self._kappa: tuple[int, float] | None = None
        self._version = 0

    def state(self, room: str) -> RateState:
        return self._rooms.setdefault(room, RateState())

    def load(self, room: str, changes: float | None, exposure: float | None, at: float | None) -> None:
        """Seed a room with what the database kept."""
        self._rooms[room] = RateState(max(0.0, changes or 0.0), max(0.0, exposure or 0.0), at)
        self._version += 1

    def exposure(self, *, now: float, near_at: float | None, full_at: float | None, full: bool) -> float:
        """Seconds of a read's exposure: the near-term share of changes since the near term
        was last read, and (a full read) the far share since the whole window was."""
        if full_at is None:
            return 0.0
        near_since = now - (near_at if near_at is not None else full_at)
        out = self.near_share * max(0.0, near_since)
        if full:
            out += (1 - self.near_share) * max(0.0, now - full_at)
        return out

    def observe(self, room: str, found: int, exposure: float, at: float) -> None:
        """A read at `at` found `found` changes over `exposure` seconds."""
        if exposure <= 0 and found <= 0:
            return
        st = self.state(room)
        changes, exp = st.decayed(at, self.half_life)
        st.changes, st.exposure, st.at = changes + max(0, found), exp + max(0.0, exposure), at
        self._dirty.add(room)
        self._version += 1

    def kappa(self, sizes: dict[str, int | None]) -> float:
        """Changes per second per booking over every room (the prior's scale), with the
        prior time of the default's weight."""
        if self._kappa is not None and self._kappa[0] == self._version:
            return self._kappa[1]
        weight = self.prior_time * sum(_size(sizes.get(r)) for r in sizes)
        num = self.default_kappa * weight
        den = weight
        for room, st in self._rooms.items():
            num += st.changes
            den += st.exposure * _size(sizes.get(room))
        k = num / den if den > 0 else self.default_kappa
        self._kappa = (self._version, k)
        return k

    def rate(self, room: str, rows: int | None, kappa: float) -> float:
        """Changes per second expected of `room` (with `rows` bookings)."""
        st = self._rooms.get(room)
        prior = kappa * _size(rows)
        if st is None:
            return prior
        return (st.changes + prior * self.prior_time) / (st.exposure + self.prior_time)

    def take_dirty(self) -> dict[str, RateState]:
        """The rooms whose counts changed since the last call (to persist)."""
        out = {r: RateState(self._rooms[r].changes, self._rooms[r].exposure, self._rooms[r].at) for r in self._dirty}
        self._dirty.clear()
        return out

    def put_back(self, rooms: Iterable[str]) -> None:
        """Persisting failed: keep these dirty."""
        self._dirty.update(rooms)


def _size(rows: int | None) -> float:
    return float((rows or 0) + 10)
