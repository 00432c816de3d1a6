"""Acting as people on the Graph sandbox's mailboxes, and looking at them, for tests and the demo.

The same actions as `EwsSandbox` offers (book, move, cancel, a series, one occurrence moved or
cancelled, rename, a change key bumped by the Resource Booking Assistant), on the shared store,
so they work whichever protocol serves it. They take Graph ids or EWS ids and give Graph ids.
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime
from typing import Any

from ..ews.model import ExtProp, Item, Occurrence, Recurrence
from ..ews.store import Store, StoreError
from .convert import decode_graph_id, graph_id, graph_to_ews_id, ical_uid

__all__ = ["People", "graph_prop_id"]


def graph_prop_id(prop: ExtProp) -> str:
    """The Graph id of an extended property stored from either protocol."""
    attrs = prop.attrs
    kind = attrs.get("PropertyType", "String")
    if "PropertyTag" in attrs:
        return f"{kind} 0x{int(attrs['PropertyTag'], 0):x}"
    guid = attrs.get("PropertySetId", attrs.get("DistinguishedPropertySetId", ""))
    if "PropertyName" in attrs:
        return f"{kind} {{{guid}}} Name {attrs['PropertyName']}"
    return f"{kind} {{{guid}}} Id 0x{int(attrs.get('PropertyId', '0'), 0):x}"


class People:
    """Mixed into GraphSandbox: needs `store`, `_lock` and `api`."""

    store: Store
    _lock: threading.RLock
    api: Any

    # --- acting --------------------------------------------------------------------------------

    def book(
        self,
        mailbox: str,
        *,
        subject: str,
        start: datetime | date,
        end: datetime | date,
        organizer: str = "alice@example.com",
        private: bool = False,
        all_day: bool = False,
        recurrence: Recurrence | None = None,
        timezone: str = "W. Europe Standard Time",
    ) -> str:
        """Put a meeting accepted by the room into its calendar; gives its Graph id (a series:
        the master's). ValueError for naive datetimes or an end before the start, KeyError for
        an unknown mailbox."""
        for value in (start, end):
            if isinstance(value, datetime) and value.tzinfo is None:
                raise ValueError("book() needs timezone-aware datetimes")
        with self._lock:
            try:
                item = self.store.create(
                    mailbox, subject=subject, start=start, end=end, start_tz=timezone, end_tz=timezone,
                    organizer_email=organizer, is_meeting=True, my_response="Accept", source="book",
                    sensitivity="Private" if private else "Normal", is_all_day=all_day, recurrence=recurrence,
                )
            except StoreError as err:
                if err.code == "ErrorNonExistentMailbox":
                    raise KeyError(err.message) from None
                raise ValueError(err.message) from None
            return graph_id(item)

    def move(self, mailbox: str, item_id: str, start: datetime, end: datetime) -> None:
        """The organizer moves a meeting (or one occurrence, given its id)."""
        with self._lock:
            target = self._target(mailbox, item_id)
            self.store.set_times(target, start.astimezone(UTC), end.astimezone(UTC))
            if isinstance(target, Item) and target.is_all_day:
                self.store.snap_all_day(target)

    def cancel(self, mailbox: str, item_id: str) -> None:
        """The organizer cancels: the room's copy disappears."""
        with self._lock:
            target = self._target(mailbox, item_id)
            if isinstance(target, Occurrence):
                self.store.delete_occurrence(target)
            else:
                self.store.remove(target)

    def move_occurrence(self, mailbox: str, master_id: str, original_start: datetime, start: datetime,
                        end: datetime) -> None:
        """The organizer moves one occurrence of a series: it becomes an exception."""
        with self._lock:
            occ = self._occurrence(mailbox, master_id, original_start)
            self.store.set_times(occ, start.astimezone(UTC), end.astimezone(UTC))

    def cancel_occurrence(self, mailbox: str, master_id: str, original_start: datetime) -> None:
        """The organizer cancels one occurrence of a series."""
        with self._lock:
            self.store.delete_occurrence(self._occurrence(mailbox, master_id, original_start))

    def rename(self, mailbox: str, item_id: str, subject: str) -> None:
        with self._lock:
            target = self._target(mailbox, item_id)
            if isinstance(target, Occurrence):
                self.store.touch_occurrence(target).subject = subject
            else:
                target.subject = subject
                self.store.touch(target)

    def touch(self, mailbox: str, item_id: str) -> None:
        """A new change key and nothing else, as the Resource Booking Assistant does."""
        with self._lock:
            target = self._target(mailbox, item_id)
            if isinstance(target, Occurrence):
                self.store.touch_occurrence(target)
            else:
                self.store.touch(target)

    def _target(self, mailbox: str, item_id: str) -> Item | Occurrence:
        ews_id = graph_to_ews_id(item_id) if decode_graph_id(item_id) else item_id
        try:
            target = self.store.resolve(ews_id or item_id)
        except StoreError as err:
            raise KeyError(f"{item_id}: {err.message}") from None
        owner = target.master.mailbox if isinstance(target, Occurrence) else target.mailbox
        if owner != mailbox.lower():
            raise KeyError(f"{item_id} is not in {mailbox}")
        return target

    def _occurrence(self, mailbox: str, master_id: str, original_start: datetime) -> Occurrence:
        master = self._target(mailbox, master_id)
        if not isinstance(master, Item) or master.recurrence is None:
            raise KeyError(f"{master_id} is not a recurring master")
        occ = self.store.occurrence_at(master, original_start.astimezone(UTC))
        if occ is None:
            raise KeyError(f"no occurrence of {master_id} starts at {original_start.isoformat()}")
        return occ

    # --- looking -------------------------------------------------------------------------------

    def items(self, mailbox: str) -> list[dict[str, Any]]:
        """The stored items (singles and masters, not expanded), ordered by start."""
        with self._lock:
            stored = sorted(self.store.mailbox(mailbox).values(), key=lambda i: (i.start, i.key))
            return [self._describe(i) for i in stored]

    def occurrences(self, mailbox: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """The expanded calendar view for this window (what calendarView shows)."""
        from .delta import in_window

        lo, hi = start.astimezone(UTC), end.astimezone(UTC)
        with self._lock:
            return [self._describe(x) for x in self.store.expand(mailbox, lo, hi) if in_window(x, lo, hi)]

    def declines(self, mailbox: str) -> list[dict[str, Any]]:
        """Declines sent on the room's behalf (through either protocol): item_id, subject, start,
        end, organizer, reason, and for Graph send_response."""
        with self._lock:
            return [dict(d) for d in self.store.declines if d["mailbox"] == mailbox.lower()]

    def _describe(self, target: Item | Occurrence) -> dict[str, Any]:
        item = target.master if isinstance(target, Occurrence) else target
        occurrence = isinstance(target, Occurrence)
        return {
            "id": graph_id(target),
            "ews_id": target.id,
            "change_key": target.change_key,
            "type": ("exception" if target.override else "occurrence") if isinstance(target, Occurrence)
            else "seriesMaster" if item.recurrence else "singleInstance",
            "series_master_id": graph_id(item) if occurrence else None,
            "original_start": target.original_start if isinstance(target, Occurrence) else None,
            "subject": target.subject,
            "start": target.start,
            "end": target.end,
            "is_all_day": item.is_all_day,
            "uid": item.uid,
            "ical_uid": ical_uid(item, self.api.options.ical_uid),
            "organizer": item.organizer_email,
            "sensitivity": item.sensitivity,
            "location": target.location,
            "extended_properties": {graph_prop_id(p): p.value for p in target.ext.values()},
            "transaction_id": self.api.transaction_of.get((item.mailbox, item.key)),
            "is_meeting": item.is_meeting,
            "source": item.source,
        }


