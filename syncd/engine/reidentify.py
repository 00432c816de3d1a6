"""Re-identifying a room's links after `calendar.backend` changed (a site moving from EWS to
Microsoft Graph, or back).

Keys are the same in both backends (the meeting's UID / iCalUId, plus the original start for
occurrences), stamps are the same MAPI property; item ids and change keys are not (EWS ids
vs Graph immutable ids), nor is the change-check state. So before the first pass with the
new backend plans anything, every link of the room is found again through it:

    by key        people's meetings (iCalUId = the UID EWS read)
    by stamp      syncd's own events (Graph may show another iCalUId for an event EWS created)
    by key again  a linked meeting now outside the window: the backend's `find_by_key`
    not found     the old item id is dropped (it means nothing to the new backend); the
                  planner then sees the booking missing, exactly as a read through the old
                  backend would have

and the links get the new backend's key, item id and change key (bookkeeping only: nothing
is written to either system). The room's state then names the new backend and its change-check
state is cleared. A failed read leaves everything as it was, to be tried on the next pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from syncd.core.model import Event, Room, TimeWindow
from syncd.store.schema import LINK_ACTIVE, Link, RoomState

log = structlog.get_logger("syncd.reidentify")

DEFAULT_BACKEND = "ews"   # rooms synced before the backend was recorded were synced through EWS


@dataclass
class Reidentified:
    by_key: int = 0
    by_stamp: int = 0
    looked_up: int = 0
    not_found: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.by_key + self.by_stamp + self.looked_up


def backend_of(state: RoomState | None) -> str | None:
    """The backend a room's stored ids belong to; None for a room never synced."""
    if state is None:
        return None
    return state.calendar_backend or DEFAULT_BACKEND


def needs_reidentify(s: Session, room: Room, backend: str) -> bool:
    stored = backend_of(s.get(RoomState, room.mailbox))
    return stored is not None and stored != backend


def reidentify(s: Session, calendar: Any, room: Room, window: TimeWindow, backend: str, now: datetime,
               *, events: list[Event] | None = None) -> Reidentified:
    """Find every link of `room` again through `calendar` (the new backend) and record what was
    found in `s` (the caller commits). Raises CalendarError when a read fails."""
    if events is None:
        events = calendar.list_events(room.mailbox, window)
    by_key = {e.key: e for e in events}
    by_stamp = {e.stamp: e for e in events if e.stamp}
    find_by_key = getattr(calendar, "find_by_key", None)
    done = Reidentified()
    rows = s.scalars(select(Link).where(Link.room == room.mailbox).order_by(Link.id)).all()
    found: dict[int, Event | None] = {}
    for link in rows:
        if not (link.exchange_key or link.exchange_item_id or link.stamp):
            continue
        event = by_key.get(link.exchange_key or "")
        if event is not None:
            done.by_key += 1
        elif link.stamp and link.stamp in by_stamp:
            event = by_stamp[link.stamp]
            done.by_stamp += 1
        elif link.state == LINK_ACTIVE and link.end > now:
            if link.stamp:
                event = calendar.find_stamped(room.mailbox, link.stamp, window)
            elif link.exchange_key and find_by_key is not None:
                event = find_by_key(room.mailbox, link.exchange_key)
            if event is not None:
                done.looked_up += 1
        if event is None and link.exchange_item_id:
            done.not_found.append(link.exchange_key or link.stamp or f"link {link.id}")
        found[link.id] = event
    for link in rows:
        if link.id not in found:
            continue
        event = found[link.id]
        if event is None:
            link.exchange_item_id = link.exchange_change_key = None
            continue
        link.exchange_item_id, link.exchange_change_key = event.item_id, event.change_key
        if event.key != link.exchange_key and not _key_taken(rows, link, event.key):
            link.exchange_key = event.key
    state = s.get(RoomState, room.mailbox)
    if state is None:
        state = RoomState(room=room.mailbox, space_id=room.space_id)
        s.add(state)
    state.calendar_backend = backend
    state.exchange_sync_state = None
    log.info("calendar.reidentified", room=room.mailbox, backend=backend, by_key=done.by_key,
             by_stamp=done.by_stamp, looked_up=done.looked_up, not_found=len(done.not_found))
    return done


def _key_taken(rows: Any, link: Link, key: str) -> bool:
    """Another link of the room already holds `key` (the unique constraint would refuse it)."""
    return any(other.id != link.id and other.exchange_key == key for other in rows)
