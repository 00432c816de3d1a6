"""The hands of a room's people, acting on the mailbox store directly (not through any
protocol): book, move and cancel meetings and single occurrences, rename, touch. Shared by
the EWS and the Graph sandbox, which serve one store; each says which ids it hands out
(`_public_id`) and how an id it is given names a stored item (`_store_id`)."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime
from typing import Any

from .model import Item, Occurrence, Recurrence
from .store import Store, StoreError


class StorePeople:
    """Mixed into a sandbox that has `store` and `_lock` (the store's lock)."""

    store: Store
    _lock: threading.RLock

    def _public_id(self, target: Item | Occurrence) -> str:
        raise NotImplementedError

    def _store_id(self, item_id: str) -> str:
        raise NotImplementedError

    # --- acting --------------------------------------------------------------------------

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
        """Put a meeting accepted by the room into its calendar; gives its id (a series: the
        master's) in the sandbox's own protocol. ValueError for naive datetimes or an end
        before the start, KeyError for an unknown mailbox."""
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
            return self._public_id(item)

    def move(self, mailbox: str, item_id: str, start: datetime, end: datetime) -> None:
        """The organizer moves a meeting (or one occurrence, given its id)."""
        with self._lock:
            target = self._target(mailbox, item_id)
            self.store.set_times(target, start.astimezone(UTC), end.astimezone(UTC))
            if isinstance(target, Item) and target.is_all_day:
                self.store.snap_all_day(target)

    def cancel(self, mailbox: str, item_id: str) -> None:
        """The organizer cancels: the room's copy disappears (hard delete)."""
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
        """The organizer (or the RBA rewriting subjects) changes the subject."""
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

    def declines(self, mailbox: str) -> list[dict[str, Any]]:
        """Declines sent on the room's behalf (through either protocol): item_id, subject, start,
        end, organizer, reason (and for Graph ews_id and send_response)."""
        with self._lock:
            return [dict(d) for d in self.store.declines if d["mailbox"] == mailbox.lower()]

    # --- finding -------------------------------------------------------------------------

    def _target(self, mailbox: str, item_id: str) -> Item | Occurrence:
        """The item or occurrence `item_id` (an id of either protocol) names in `mailbox`."""
        try:
            target = self.store.resolve(self._store_id(item_id))
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
