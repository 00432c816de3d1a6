"""The planner's conflict rules: which open conflicts a booking carries, whether Ultimo may
be asked again after a refusal (`create_gated`), whether this pass's read shows the room
free (buffers included), recording a new conflict, and resolving conflicts whose booking
vanished. Mixed into the planner, whose snapshot and working sets it reads."""

from __future__ import annotations

from datetime import datetime, timedelta

from syncd.core.model import (
    REJECTED_BY_ULTIMO,
    RESERVATION_IN_PAST,
    ROOM_UNAVAILABLE,
    ConflictInfo,
    Event,
    Reservation,
)
from syncd.core.plan import LinkView, OpenConflict, Policy, RoomSnapshot


def booking_key(link: LinkView) -> str:
    """The booking key of a link: the event key for Exchange-origin bookings, else ultimo:<id>."""
    if link.origin != "ultimo" and link.exchange_key:
        return link.exchange_key
    if link.ultimo_id:
        return f"ultimo:{link.ultimo_id}"
    return link.exchange_key or f"link:{link.id}"



class ConflictRules:
    """The conflict half of the planner (state set up by `_Planner.__post_init__`)."""

    s: RoomSnapshot
    policy: Policy
    events: list[Event]
    reservations: dict[str, Reservation]
    conflicts: list[ConflictInfo]
    resolved: set[str]
    conflicts_by_key: dict[str, list[OpenConflict]]
    conflicts_by_link: dict[int | None, list[OpenConflict]]

    def _open(self, key: str, link_id: int | None) -> list[OpenConflict]:
        found = self.conflicts_by_key.get(key, []) + self.conflicts_by_link.get(link_id, [])
        return list({c.id: c for c in found}.values())

    def _ultimo_allowed(self, key: str, link_id: int | None, start: datetime, end: datetime, *,
                        create: bool, own: str | None) -> bool:
        """create_gated: may Ultimo be asked again, given the open conflicts of this booking?"""
        for c in self._open(key, link_id):
            changed = c.start is not None and c.end is not None and (c.start, c.end) != (start, end)
            if c.kind == RESERVATION_IN_PAST and (create or not changed):
                return False
            if c.kind == REJECTED_BY_ULTIMO and not changed:
                return False
            if c.kind == ROOM_UNAVAILABLE and not changed and not self._room_free(start, end, own):
                return False
        return True

    def _room_free(self, start: datetime, end: datetime, own: str | None) -> bool:
        """True when this pass's Ultimo read shows nothing within reach of [start, end).

        Ultimo counts preparation and cleanup on both sides of a clash, and the new booking
        gets the space's buffers too; they are not known in advance, so the largest seen on
        the room's reservations stands in for them."""
        w = self.s.ultimo_window
        if self.s.ultimo is None or w is None or not w.contains(start, end):
            return False
        zero = timedelta(0)
        prep = max((r.start - r.start_with_preparation for r in self.reservations.values()
                    if r.start_with_preparation), default=zero)
        cleanup = max((r.end_with_cleanup - r.end for r in self.reservations.values()
                       if r.end_with_cleanup), default=zero)
        want_start, want_end = start - max(prep, zero), end + max(cleanup, zero)
        for r in self.reservations.values():
            r_start = r.start_with_preparation or r.start
            r_end = r.end_with_cleanup or r.end
            if r.ultimo_id != own and r_start < want_end and r_end > want_start:
                return False
        return True

    def _conflict(self, kind: str, lk: LinkView, key: str, ev: Event | None,
                  start: datetime, end: datetime, message: str) -> None:
        self.conflicts.append(ConflictInfo(
            kind=kind, message=message, booking_key=key, subject=self._label(lk, ev),
            organizer=(ev.organizer if ev else None) or lk.organizer, start=start, end=end,
            ultimo_id=lk.ultimo_id))

    def _resolve(self, key: str, link_id: int | None = None) -> None:
        self.resolved.update(c.booking_key for c in self._open(key, link_id))

    def _resolve_vanished(self) -> None:
        """conflict_resolved for bookings without a link: gone from the side they came from."""
        s = self.s
        known = {lk.id for lk in s.links}
        link_keys = {booking_key(lk) for lk in s.links}
        by_key: dict[str, Event] = {}
        for e in self.events:
            by_key.setdefault(e.key, e)
        for c in s.open_conflicts:
            if c.link_id in known or c.booking_key in link_keys:
                continue
            if c.booking_key.startswith("ultimo:"):
                uid = c.booking_key.removeprefix("ultimo:")
                w = s.ultimo_window
                if (s.ultimo is not None and uid not in self.reservations and w is not None
                        and c.start is not None and c.end is not None and w.contains(c.start, c.end)):
                    self.resolved.add(c.booking_key)
            elif s.exchange is not None:
                seen = by_key.get(c.booking_key)
                w = s.exchange_window
                if (seen is not None and seen.cancelled) or (
                        seen is None and w is not None and c.start is not None and c.end is not None
                        and w.overlaps(c.start, c.end)):
                    self.resolved.add(c.booking_key)

    def _label(self, lk: LinkView, ev: Event | None) -> str | None:
        return self.policy.shown_subject(ev) if ev is not None else lk.subject
