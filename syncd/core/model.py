"""The core's own small value types. Nothing from httpx, exchangelib or SQLAlchemy
crosses into the planner: adapters translate to these frozen dataclasses.

Every datetime here is timezone-aware and in UTC.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime


def utc(value: datetime) -> datetime:
    """Return `value` as an aware UTC datetime; naive values are refused."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: syncd works with aware datetimes only")
    return value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """The half-open interval [start, end) that one read covered."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", utc(self.start))
        object.__setattr__(self, "end", utc(self.end))
        if self.end <= self.start:
            raise ValueError(f"empty window {self.start.isoformat()} .. {self.end.isoformat()}")

    def contains(self, start: datetime, end: datetime) -> bool:
        """True when [start, end) lies wholly inside the window."""
        return self.start <= start and end <= self.end

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return start < self.end and end > self.start


@dataclass(frozen=True, slots=True)
class Event:
    """One booking in a room's Exchange calendar; an occurrence of a series is its own Event.

    `key` is the stable identity: the meeting's UID, plus `|` and the occurrence's original
    start (UTC, ISO 8601) for occurrences of a recurring series. `item_id` and `change_key`
    are only handles for the next write: they change.
    `stamp` is syncd's own identity, carried in an extended property on events syncd created.
    """

    key: str
    item_id: str
    change_key: str
    start: datetime
    end: datetime
    subject: str = ""
    organizer: str | None = None
    private: bool = False
    all_day: bool = False
    cancelled: bool = False
    stamp: str | None = None
    recurring: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", utc(self.start))
        object.__setattr__(self, "end", utc(self.end))


@dataclass(frozen=True, slots=True)
class NewEvent:
    """What syncd writes when a reservation made in Ultimo must block a room's calendar."""

    subject: str
    start: datetime
    end: datetime
    stamp: str
    body: str = ""
    # An idempotency key for this create attempt (Graph's transactionId), fixed by the
    # journal's intent: a retry of the same intent reuses it, a later re-create does not.
    transaction_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", utc(self.start))
        object.__setattr__(self, "end", utc(self.end))


@dataclass(frozen=True, slots=True)
class EventRef:
    """The handles a write returns: the item id and the new change key."""

    item_id: str
    change_key: str
    key: str | None = None   # the event's stable key, when the backend knows it at once


@dataclass(frozen=True, slots=True)
class SyncCheck:
    """Answer of a cheap change check: did the room change since `state`, and the new state."""

    changed: bool
    state: str


@dataclass(frozen=True, slots=True)
class Reservation:
    """One Ultimo reservation of a space, as `REST_GetReservationsForSpace` returns it."""

    ultimo_id: str
    space_id: str
    start: datetime
    end: datetime
    description: str = ""
    applicant_id: str | None = None
    applicant_name: str | None = None
    start_with_preparation: datetime | None = None
    end_with_cleanup: datetime | None = None
    status: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", utc(self.start))
        object.__setattr__(self, "end", utc(self.end))


@dataclass(frozen=True, slots=True)
class NewReservation:
    """The body of `REST_CreateReservation`, in syncd's terms."""

    external_id: str
    space_id: str
    start: datetime
    end: datetime
    description: str
    applicant_id: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", utc(self.start))
        object.__setattr__(self, "end", utc(self.end))


@dataclass(frozen=True, slots=True)
class Room:
    mailbox: str
    space_id: str


@dataclass(frozen=True, slots=True)
class Clash:
    """What a conflicting booking clashes with (the report's `clashes_with`).

    `kind`: `reservation` (an Ultimo reservation occupying the room; `origin` says who booked
    it: `ultimo` a person in Ultimo, `exchange` syncd's copy of another Outlook meeting),
    `exchange_version` / `ultimo_version` (the two sides' times of a booking changed on both),
    or `attempt` (what syncd asked of Ultimo and Ultimo's `message`). `buffer_only`: the
    times themselves do not overlap; only preparation or cleanup buffers reach.
    `pending_key`: a reservation syncd was creating in the same pass (no UltimoId yet)."""

    kind: str
    start: datetime | None = None
    end: datetime | None = None
    ultimo_id: str | None = None
    description: str | None = None
    origin: str | None = None
    buffer_only: bool = False
    preparation_minutes: int | None = None
    cleanup_minutes: int | None = None
    action: str | None = None
    message: str | None = None
    pending_key: str | None = None

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, utc(value))

    def as_dict(self) -> dict[str, object]:
        """JSON-ready: times as ISO 8601 in UTC with offset, unset fields left out."""
        out: dict[str, object] = {"kind": self.kind}
        for name in ("ultimo_id", "description", "origin", "start", "end", "buffer_only", "preparation_minutes",
                     "cleanup_minutes", "action", "message"):
            value = getattr(self, name)
            if isinstance(value, datetime):
                value = value.isoformat(timespec="seconds")
            if name == "buffer_only" and self.kind != "reservation":
                continue
            if value is not None:
                out[name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Clash:
        """The inverse of `as_dict`; unknown keys are ignored."""
        def when(name: str) -> datetime | None:
            value = data.get(name)
            return datetime.fromisoformat(value) if isinstance(value, str) and value else None

        def text(name: str) -> str | None:
            value = data.get(name)
            return None if value is None else str(value)

        def minutes(name: str) -> int | None:
            value = data.get(name)
            return value if isinstance(value, int) else None

        return cls(kind=str(data.get("kind") or "reservation"), start=when("start"), end=when("end"),
                   ultimo_id=text("ultimo_id"), description=text("description"), origin=text("origin"),
                   buffer_only=bool(data.get("buffer_only")), preparation_minutes=minutes("preparation_minutes"),
                   cleanup_minutes=minutes("cleanup_minutes"), action=text("action"), message=text("message"))


@dataclass(frozen=True, slots=True)
class ConflictInfo:
    """A conflict as the planner or executor reports it; the database gives it an id.
    `clashes_with`: what it clashes with; `outcome`: what syncd did about it (a decline)."""

    kind: str
    message: str
    booking_key: str
    code: str | None = None
    subject: str | None = None
    organizer: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    ultimo_id: str | None = None
    clashes_with: tuple[Clash, ...] = ()
    outcome: str | None = None


# Conflict kinds (interface.md, "Conflict report").
ROOM_UNAVAILABLE = "room_unavailable"
RESERVATION_IN_PAST = "reservation_in_past"
CHANGED_ON_BOTH_SIDES = "changed_on_both_sides"
REJECTED_BY_ULTIMO = "rejected_by_ultimo"
MASS_CANCELLATION = "mass_cancellation_blocked"


def short_hash(*parts: str, length: int = 20) -> str:
    """A short, stable, case-insensitive-safe digest of `parts` (base32, lower case)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return base64.b32encode(digest).decode().rstrip("=").lower()[:length]


def external_id_for(mailbox: str, event_key: str) -> str:
    """The ExternalId syncd gives Ultimo for an Exchange booking: stable, unique per
    booking and room, and short (23 characters)."""
    return "sx-" + short_hash(mailbox.lower(), event_key)


def stamp_for_reservation(ultimo_id: str) -> str:
    """The stamp syncd writes on an event it creates for an Ultimo reservation."""
    return f"syncd:u:{ultimo_id}"


def event_uid_for(stamp: str) -> str:
    """The iCalendar UID syncd gives an event it creates: fixed by the stamp, so the event's
    key is known when it is written, without reading it back."""
    return "syncd-" + short_hash(stamp, length=32)


def synced_hash(start: datetime, end: datetime) -> str:
    """Hash of the fields that sync between the sides (the times, normalised to UTC).

    Subjects are not synced (Ultimo's Update takes only times), so they are not in it:
    a subject edit on either side never triggers a write.
    """
    return short_hash(utc(start).isoformat(), utc(end).isoformat(), length=16)
