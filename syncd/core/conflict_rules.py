"""The planner's conflict rules: which open conflicts a booking carries, whether Ultimo may
be asked again after a refusal (`create_gated`), whether this pass's read shows the room
free (buffers included), recording a new conflict, and resolving conflicts whose booking
vanished. Mixed into the planner, whose snapshot and working sets it reads."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from syncd.core import clashes
from syncd.core.model import (
    REJECTED_BY_ULTIMO,
    RESERVATION_IN_PAST,
    ROOM_UNAVAILABLE,
    Clash,
    ConflictInfo,
    Event,
    Reservation,
)
from syncd.core.plan import (
    Action,
    CancelReservation,
    CreateReservation,
    LinkView,
    MoveReservation,
    OpenConflict,
    Policy,
    RoomSnapshot,
    span,
)


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
        the room's reservations stand in for them (`clashes.room_buffers`)."""
        w = self.s.ultimo_window
        if self.s.ultimo is None or w is None or not w.contains(start, end):
            return False
        return not clashes.occupying(start, end, self.reservations.values(), own=own)

    def _declines(self) -> bool:
        """Whether the room declines a new meeting Ultimo refuses (1015): always with
        `decline`; with `decline_new` not on the first pass over a room (nothing linked yet,
        its calendar never read), whose clashes predate syncd and are only reported."""
        rule = self.policy.on_room_unavailable
        first_pass = not self.s.links and self.s.previous_exchange_count is None
        return rule == "decline" or (rule == "decline_new" and not first_pass)

    def _with_clashes(self, ordered: list[Action]) -> tuple[Action, ...]:
        """Each Ultimo create and move, with what occupies the room within its reach when it
        runs: the reservations read this pass (as moved or cancelled by the actions before
        it) and the reservations created before it in this pass. Should Ultimo refuse with
        1015, these are named in the conflict and in the room's decline."""
        origins = {lk.ultimo_id: "exchange" for lk in self.s.links if lk.ultimo_id and lk.origin == "exchange"}
        room = dict(self.reservations)
        buffers = clashes.room_buffers(room.values())
        pending: list[tuple[str, datetime, datetime, str]] = []
        out: list[Action] = []
        for a in ordered:
            if isinstance(a, CancelReservation):
                room.pop(a.ultimo_id, None)
            elif isinstance(a, CreateReservation | MoveReservation):
                own = a.ultimo_id if isinstance(a, MoveReservation) else None
                start, end = (a.new.start, a.new.end) if isinstance(a, CreateReservation) else (a.start, a.end)
                found = list(clashes.occupying(start, end, room.values(), own=own, origins=origins, buffers=buffers))
                for key, p_start, p_end, label in pending:
                    clash = clashes.planned(key, p_start, p_end, label, meeting=(start, end), buffers=buffers)
                    if clash is not None:
                        found.append(clash)
                a = replace(a, clashes=tuple(found))
                if isinstance(a, CreateReservation):
                    pending.append((a.booking_key, start, end, a.new.description))
                elif a.ultimo_id in room:
                    room[a.ultimo_id] = replace(room[a.ultimo_id], start=start, end=end,
                                                start_with_preparation=start - buffers[0],
                                                end_with_cleanup=end + buffers[1])
            out.append(a)
        return tuple(out)

    def _conflict(self, kind: str, lk: LinkView, key: str, ev: Event | None,
                  start: datetime, end: datetime, message: str, clashes_with: tuple[Clash, ...] = ()) -> None:
        self.conflicts.append(ConflictInfo(
            kind=kind, message=message, booking_key=key, subject=self._label(lk, ev),
            organizer=(ev.organizer if ev else None) or lk.organizer, start=start, end=end,
            ultimo_id=lk.ultimo_id, clashes_with=clashes_with))

    def _into_past(self, lk: LinkView, key: str, ev: Event | None, start: datetime, end: datetime, *,
                   moved_in: str) -> None:
        """move_into_past: a booking moved to times already over on one side is not copied."""
        other = "Ultimo" if moved_in == "Exchange" else "Exchange"
        tried = (f"move Ultimo reservation {lk.ultimo_id}" if other == "Ultimo" else "move the Exchange meeting")
        self._conflict(RESERVATION_IN_PAST, lk, key, ev, start, end,
                       f"moved into the past in {moved_in} ({self._span(start, end)}); {other} not changed",
                       (Clash(kind="attempt", start=start, end=end, ultimo_id=lk.ultimo_id,
                              action=f"{tried} into the past (not sent)",
                              message="a booking that is over is read-only"),))

    def _span(self, start: datetime, end: datetime) -> str:
        return span(start, end, self.policy.display_zone)

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
