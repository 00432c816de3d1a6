"""The planner's value types: what goes into `syncd.core.planner.plan_room` and what comes out.

Pure data, no I/O. A `RoomSnapshot` (links, both sides as read this pass, open conflicts)
and a `Policy` go in; a `Plan` (ordered actions, conflicts to record, conflicts resolved,
or a halt) comes out. Every action names its booking (`booking_key`), the system it
writes to (`side`: ultimo, exchange, or db for bookkeeping only) and can `describe()`
itself in one human-readable line for dry-run output and logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import ClassVar, Literal

from syncd.core.clashes import summary as clash_summary
from syncd.core.model import (
    Clash,
    ConflictInfo,
    Event,
    NewEvent,
    NewReservation,
    Reservation,
    Room,
    TimeWindow,
    external_id_for,
    stamp_for_reservation,
)

Side = Literal["ultimo", "exchange", "db"]


def span(start: datetime | None, end: datetime | None, tz: tzinfo = UTC) -> str:
    """`2026-11-23 10:00–11:00 CET` in `tz` (both dates shown when the booking crosses midnight)."""
    if start is None or end is None:
        return "(times unknown)"
    start, end = start.astimezone(tz), end.astimezone(tz)
    if start.date() == end.date():
        return f"{start:%Y-%m-%d %H:%M}–{end:%H:%M} {end:%Z}"
    return f"{start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} {end:%Z}"


def _label(subject: str | None) -> str:
    return f"'{subject}' " if subject else ""


@dataclass(frozen=True, slots=True)
class LinkView:
    """A stored link as the planner sees it; `start`/`end` are the last synced UTC times."""

    id: int
    origin: str                      # exchange | ultimo | both
    state: str                       # active | cancelled (tombstone)
    exchange_key: str | None
    exchange_item_id: str | None
    exchange_change_key: str | None
    stamp: str | None
    external_id: str | None
    ultimo_id: str | None
    start: datetime
    end: datetime
    synced_hash: str
    subject: str | None = None
    organizer: str | None = None


@dataclass(frozen=True, slots=True)
class OpenConflict:
    """An open conflict row, reduced to what decides whether to retry or resolve it."""

    id: int
    booking_key: str
    kind: str
    start: datetime | None
    end: datetime | None
    link_id: int | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """The configuration choices the planner applies (from `sync` and `applicants`)."""

    applicant_default: str
    applicants_by_email: dict[str, str]         # keys lower-cased
    description_template: str = "{subject} ({organizer})"
    private_subject: str = "Private meeting"
    mask_private: bool = True
    event_subject_template: str = "{description}"
    on_changed_on_both_sides: str = "record_only"   # record_only | exchange_wins | ultimo_wins
    max_cancellations: int = 20
    # decline_new | decline | record_only (record is its synonym): whether the room declines a
    # new meeting Ultimo refuses (1015); decline_new spares the first pass over a room.
    on_room_unavailable: str = "decline_new"
    display_zone: tzinfo = UTC                      # the zone of times in messages people read

    def shown_subject(self, event: Event) -> str:
        """The event's subject as syncd may show it elsewhere (masked when private)."""
        if event.private and self.mask_private:
            return self.private_subject
        return event.subject

    def applicant_for(self, organizer: str | None) -> str:
        """The Ultimo Employee id for an organizer e-mail (case-insensitive), else the default."""
        if organizer:
            for email, applicant in self.applicants_by_email.items():
                if email.lower() == organizer.lower():
                    return applicant
        return self.applicant_default

    def new_reservation(self, room: Room, event: Event) -> NewReservation:
        """The Ultimo reservation to create for an Exchange booking."""
        subject = self.shown_subject(event)
        organizer = event.organizer or "unknown organizer"
        try:
            description = self.description_template.format(subject=subject, organizer=organizer)
        except (KeyError, IndexError, ValueError, AttributeError):
            description = f"{subject} ({organizer})"
        return NewReservation(
            external_id=external_id_for(room.mailbox, event.key),
            space_id=room.space_id,
            start=event.start,
            end=event.end,
            description=description,
            applicant_id=self.applicant_for(event.organizer),
        )

    def new_event(self, reservation: Reservation) -> NewEvent:
        """The blocking Exchange event to create for an Ultimo reservation, stamped as syncd's."""
        r = reservation
        applicant = r.applicant_name or r.applicant_id or ""
        try:
            subject = self.event_subject_template.format(
                description=r.description, applicant=applicant, ultimo_id=r.ultimo_id)
        except (KeyError, IndexError, ValueError, AttributeError):
            subject = r.description
        return NewEvent(
            subject=subject or f"Ultimo reservation {r.ultimo_id}",
            start=r.start,
            end=r.end,
            stamp=stamp_for_reservation(r.ultimo_id),
            body=f"Room reserved in Ultimo (reservation {r.ultimo_id}); kept in sync by syncd.",
        )


@dataclass(frozen=True, slots=True)
class RoomSnapshot:
    """Everything known about one room this pass.

    `exchange`/`ultimo` are None when that side was not read this pass (or the read
    failed). `exchange` may hold linked events outside `exchange_window`, fetched by item
    id; a linked event absent from `exchange` after a complete read is really gone, unless
    its link is in `exchange_unknown` (its lookup by id failed: nothing is concluded about it).
    `previous_*_count`: bookings seen in the last full read (None: never read)."""

    room: Room
    now: datetime
    links: tuple[LinkView, ...]
    exchange: tuple[Event, ...] | None
    exchange_window: TimeWindow | None
    ultimo: tuple[Reservation, ...] | None
    ultimo_window: TimeWindow | None
    open_conflicts: tuple[OpenConflict, ...] = ()
    previous_exchange_count: int | None = None
    previous_ultimo_count: int | None = None
    exchange_unknown: frozenset[int] = frozenset()


# --- actions ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateReservation:
    """Create the Ultimo reservation for an Exchange booking (`link_id`: an existing link
    whose Ultimo side was never created, e.g. a retried create).

    On success the link (new, origin exchange, keyed by the event; or `link_id`) records the
    UltimoId, `new.external_id` and the event's ids, and its synced times become `new`'s."""

    side: ClassVar[Side] = "ultimo"
    booking_key: str
    event: Event
    new: NewReservation
    link_id: int | None = None
    clashes: tuple[Clash, ...] = ()   # what occupies the room within reach, should Ultimo refuse (1015)
    decline: bool = False             # on 1015 the room declines the meeting (policy, not a first pass)

    def describe(self, tz: tzinfo = UTC) -> str:
        return f"create Ultimo reservation for {_label(self.new.description)}{span(self.new.start, self.new.end, tz)}"


@dataclass(frozen=True, slots=True)
class CreateEvent:
    """Create the blocking event for an Ultimo reservation (`link_id` when retrying).

    On success the link (new, origin ultimo; or `link_id`) records the event's key, item id
    and change key and `new.stamp`; its synced times become `new`'s."""

    side: ClassVar[Side] = "exchange"
    booking_key: str
    reservation: Reservation
    new: NewEvent
    link_id: int | None = None

    def describe(self, tz: tzinfo = UTC) -> str:
        return (f"create Exchange event for Ultimo reservation {self.reservation.ultimo_id} "
                f"{_label(self.new.subject)}{span(self.new.start, self.new.end, tz)}")


@dataclass(frozen=True, slots=True)
class MoveReservation:
    """Update the reservation's times in place; on success the link's synced times become
    `start`/`end`. `old_*` are the reservation's current times, for display."""

    side: ClassVar[Side] = "ultimo"
    booking_key: str
    link_id: int
    ultimo_id: str
    start: datetime
    end: datetime
    subject: str | None = None
    old_start: datetime | None = None
    old_end: datetime | None = None
    clashes: tuple[Clash, ...] = ()

    def describe(self, tz: tzinfo = UTC) -> str:
        return (f"move Ultimo reservation {self.ultimo_id} {_label(self.subject)}"
                f"from {span(self.old_start, self.old_end, tz)} to {span(self.start, self.end, tz)}")


@dataclass(frozen=True, slots=True)
class MoveEvent:
    """Move the event in place (stale change key: fail, never overwrite); on success the link
    takes `start`/`end` and the item id/change key the write returned."""

    side: ClassVar[Side] = "exchange"
    booking_key: str
    link_id: int
    item_id: str
    change_key: str
    start: datetime
    end: datetime
    subject: str | None = None
    old_start: datetime | None = None
    old_end: datetime | None = None

    def describe(self, tz: tzinfo = UTC) -> str:
        return (f"move Exchange event {_label(self.subject)}"
                f"from {span(self.old_start, self.old_end, tz)} to {span(self.start, self.end, tz)}")


@dataclass(frozen=True, slots=True)
class CancelReservation:
    """The Exchange booking is gone: cancel its reservation; the link becomes a tombstone."""

    side: ClassVar[Side] = "ultimo"
    booking_key: str
    link_id: int
    ultimo_id: str
    start: datetime | None = None
    end: datetime | None = None
    subject: str | None = None

    def describe(self, tz: tzinfo = UTC) -> str:
        return f"cancel Ultimo reservation {self.ultimo_id} {_label(self.subject)}{span(self.start, self.end, tz)}"


@dataclass(frozen=True, slots=True)
class RemoveEvent:
    """Delete an event syncd created (it carries syncd's stamp). With `link_id` the link
    becomes a tombstone; `link_id=None` (a duplicate or orphan of ours) touches no link."""

    side: ClassVar[Side] = "exchange"
    booking_key: str
    link_id: int | None
    item_id: str
    change_key: str
    start: datetime | None = None
    end: datetime | None = None
    subject: str | None = None

    def describe(self, tz: tzinfo = UTC) -> str:
        return f"remove Exchange event {_label(self.subject)}{span(self.start, self.end, tz)}"


@dataclass(frozen=True, slots=True)
class DeclineEvent:
    """The room declines a person's meeting whose Ultimo reservation was cancelled; the
    link (if any) becomes a tombstone."""

    side: ClassVar[Side] = "exchange"
    booking_key: str
    link_id: int | None
    item_id: str
    change_key: str
    reason: str
    start: datetime | None = None
    end: datetime | None = None
    subject: str | None = None

    def describe(self, tz: tzinfo = UTC) -> str:
        return f"decline Exchange meeting {_label(self.subject)}{span(self.start, self.end, tz)}: {self.reason}"


@dataclass(frozen=True, slots=True)
class LinkPair:
    """Equal bookings already on both sides (first run): link them, copy nothing.

    The link's synced times are the event's. `origin` is `both` for a first-run pair and
    `ultimo` when syncd adopts its own stamped event (a create interrupted before the link
    was stored). `link_id`: fill in that existing link (whose Ultimo side was never
    recorded) instead of adding one."""

    side: ClassVar[Side] = "db"
    booking_key: str
    event: Event
    reservation: Reservation
    origin: str = "both"
    link_id: int | None = None

    def describe(self, tz: tzinfo = UTC) -> str:
        return (f"link Exchange event {_label(self.event.subject)}to Ultimo reservation "
                f"{self.reservation.ultimo_id} {span(self.event.start, self.event.end, tz)}")


@dataclass(frozen=True, slots=True)
class RefreshLink:
    """Bookkeeping only: set the link's exchange key, item id, change key and synced times
    (ids churned, a stamped event's key learned, or both sides moved to the same times)."""

    side: ClassVar[Side] = "db"
    booking_key: str
    link_id: int
    exchange_key: str | None
    item_id: str | None
    change_key: str | None
    start: datetime
    end: datetime

    def describe(self, tz: tzinfo = UTC) -> str:
        return f"refresh link {self.link_id} ({self.booking_key}) {span(self.start, self.end, tz)}"


@dataclass(frozen=True, slots=True)
class Tombstone:
    """Bookkeeping only: the booking is gone on both sides; never resurrect it."""

    side: ClassVar[Side] = "db"
    booking_key: str
    link_id: int
    start: datetime | None = None
    end: datetime | None = None

    def describe(self, tz: tzinfo = UTC) -> str:
        return f"mark link {self.link_id} ({self.booking_key}) cancelled on both sides"


Action = (CreateReservation | CreateEvent | MoveReservation | MoveEvent | CancelReservation | RemoveEvent
          | DeclineEvent | LinkPair | RefreshLink | Tombstone)
CANCELLATIONS = (CancelReservation, RemoveEvent, DeclineEvent)


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do for one room, in execution order.

    `conflicts` are recorded (or refreshed) as open; `resolved` lists booking keys whose
    open conflicts no longer hold; `halted` says why nothing was planned (mass
    cancellation guard); `deferred_cancellations` were held back by the cap."""

    room: Room
    actions: tuple[Action, ...] = ()
    conflicts: tuple[ConflictInfo, ...] = ()
    resolved: tuple[str, ...] = ()
    halted: str | None = None
    deferred_cancellations: int = 0

    @property
    def writes(self) -> tuple[Action, ...]:
        """The actions that write to Ultimo or Exchange (not database bookkeeping)."""
        return tuple(a for a in self.actions if a.side != "db")

    @property
    def is_empty(self) -> bool:
        """True when there is nothing to do, record or resolve."""
        return not self.actions and not self.conflicts and not self.resolved and self.halted is None

    def describe(self, tz: tzinfo = UTC) -> list[str]:
        """One line per action, then per conflict, for dry-run output; times in `tz`."""
        lines = []
        for a in self.actions:
            lines.append(a.describe(tz))
            if isinstance(a, CreateReservation | MoveReservation) and a.clashes:
                ahead = "; ".join(clash_summary(c, a.new.start if isinstance(a, CreateReservation) else a.start, tz)
                                  for c in a.clashes)
                then = "; the room would then decline the meeting" if isinstance(a, CreateReservation) and a.decline else ""
                lines.append(f"  (Ultimo will likely refuse it: the room is occupied by {ahead}{then})")
        lines += [f"conflict {c.kind}: {c.message}" for c in self.conflicts]
        if self.halted:
            lines.append(f"halted: {self.halted}")
        if self.deferred_cancellations:
            lines.append(f"{self.deferred_cancellations} cancellation(s) deferred to the next cycle (cap)")
        return lines
