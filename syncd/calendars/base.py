"""The room-calendar interface, in syncd's own terms.

The reconciler and the executor see only this protocol; the EWS backend (`syncd.calendars.ews.backend`)
implements it today, a Microsoft Graph backend will implement it beside EWS later.
Every method addresses one room mailbox. Errors are those of `syncd.errors`
(CalendarError and its subclasses); nothing from exchangelib leaks out.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

from syncd.core.model import Event, EventRef, NewEvent, SyncCheck, TimeWindow


@dataclass
class ThrottleStats:
    """The waits a backend made because the calendar server throttled it, since start.
    A backend exposes one as its `throttling` attribute; the service's metrics read it."""

    waits: int = 0
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, seconds: float) -> None:
        with self._lock:
            self.waits += 1
            self.seconds += seconds

    def read(self) -> tuple[int, float]:
        """(waits, seconds waited in total)."""
        with self._lock:
            return self.waits, self.seconds


class RoomCalendar(Protocol):
    def probe(self, mailbox: str) -> str:
        """Read (never write) the room's calendar folder; return a short description.

        Raises CalendarAuthError, CalendarUnreachable or CalendarError naming the reason."""

    def list_events(self, mailbox: str, window: TimeWindow) -> list[Event]:
        """Every booking overlapping `window`, occurrences of series expanded, complete.

        Raises rather than returning a partial list."""

    def check_changes(self, mailbox: str, state: str | None) -> SyncCheck:
        """Whether the room's calendar changed since `state` (None: never checked).

        One call for a room with no change. The returned state is stored by the caller."""

    def get_event(self, mailbox: str, item_id: str) -> Event | None:
        """The event with this item id wherever its times now are, or None when it no
        longer exists (deleted). Used to tell a cancellation from a move out of the window.
        For an occurrence id, returns that occurrence."""

    def create_event(self, mailbox: str, event: NewEvent) -> EventRef:
        """Create a blocking event stamped with `event.stamp`; sends no invitations."""

    def move_event(self, mailbox: str, item_id: str, change_key: str, start, end) -> EventRef:  # noqa: ANN001
        """Move an event in place. Raises StaleChangeKey if the item changed since it was
        read (never overwrites a newer edit), EventGone if it no longer exists."""

    def remove_event(self, mailbox: str, item_id: str, change_key: str) -> None:
        """Delete an event syncd owns; sends no cancellations. Raises EventGone."""

    def find_stamped(self, mailbox: str, stamp: str, window: TimeWindow) -> Event | None:
        """The event carrying `stamp`, if any (used to settle an interrupted create)."""

    def decline(self, mailbox: str, item_id: str, change_key: str, reason: str) -> None:
        """Decline a meeting on the room's behalf, telling the organizer `reason`."""

    def close(self) -> None:
        """Release connections."""
