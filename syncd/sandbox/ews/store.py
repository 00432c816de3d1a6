"""The state behind the EWS sandbox: mailboxes, calendar items, recurrence expansion,
change keys and the change log that SyncFolderItems reads.

Everything here is plain data and functions over it; the operations (`ews_read`,
`ews_write`) turn requests into calls on `Store` and render what it returns. Datetimes are
aware UTC throughout; an item remembers its Windows time zone id so that a recurring series
keeps its local wall-clock time across DST changes, as Exchange does.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from .model import (
    ExtProp,
    Item,
    Occurrence,
    Override,
    Recurrence,
    StoreError,
    change_key,
    decode_id,
    encode_id,
    ext_key,
    iana_zone,
    unstamp,
    windows_zone,
)

__all__ = [
    "ExtProp",
    "Item",
    "Occurrence",
    "Recurrence",
    "Store",
    "StoreError",
    "change_key",
    "decode_id",
    "encode_id",
    "ext_key",
    "iana_zone",
    "pattern_dates",
    "windows_zone",
]

# A recurring series without an end is expanded at most this far (a guard, not a limit EWS has).
_MAX_OCCURRENCES = 5000


def _local_midnight(value: datetime | date, zone: ZoneInfo, *, ceil: bool) -> datetime:
    """Midnight in `zone` at or before (or, with `ceil`, at or after) `value`, in UTC."""
    if isinstance(value, datetime):
        local = value.astimezone(zone)
        day = local.date()
        if ceil and local.time() != time(0, 0):
            day += timedelta(days=1)
    else:
        day = value
    return datetime.combine(day, time(0, 0), tzinfo=zone).astimezone(UTC)


def _to_utc(local_day: date, local_time: time, zone: ZoneInfo) -> datetime:
    return datetime.combine(local_day, local_time, tzinfo=zone).astimezone(UTC)


def pattern_dates(master: Item, zone: ZoneInfo) -> Iterator[date]:
    """The local dates of every occurrence of `master` (deleted ones included), in order."""
    rec = master.recurrence
    assert rec is not None
    first = master.start.astimezone(zone).date()
    step = max(1, rec.interval)
    produced = 0

    def done(day: date) -> bool:
        return (rec.count is not None and produced >= rec.count) or (rec.until is not None and day > rec.until)

    if rec.kind == "daily":
        for n in itertools.count():
            day = first + timedelta(days=n * step)
            if done(day) or produced >= _MAX_OCCURRENCES:
                return
            produced += 1
            yield day
    weekdays = sorted(set(rec.weekdays or (first.weekday(),)))
    week0 = first - timedelta(days=first.weekday())
    for n in itertools.count():
        week = week0 + timedelta(weeks=n * step)
        for wd in weekdays:
            day = week + timedelta(days=wd)
            if day < first:
                continue
            if done(day) or produced >= _MAX_OCCURRENCES:
                return
            produced += 1
            yield day


class Store:
    """All mailboxes of one sandbox. Not thread-safe by itself: every server serving it (EWS,
    Graph, or both on one shared store) holds `lock` around its calls."""

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self.lock = threading.RLock()
        self.mailboxes: dict[str, dict[str, Item]] = {}
        self.seq = 0
        self._keys = itertools.count(1)
        self.declines: list[dict[str, object]] = []
        self.tombstones: dict[str, dict[str, Item]] = {}

    # --- bookkeeping ------------------------------------------------------------------

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def add_mailbox(self, smtp: str) -> None:
        self.mailboxes.setdefault(smtp.lower(), {})
        self.tombstones.setdefault(smtp.lower(), {})

    def mailbox(self, smtp: str | None) -> dict[str, Item]:
        """The items of mailbox `smtp`; raises StoreError(ErrorNonExistentMailbox)."""
        if smtp is None or smtp.lower() not in self.mailboxes:
            raise StoreError("ErrorNonExistentMailbox", f"The SMTP address has no mailbox associated with it: {smtp}")
        return self.mailboxes[smtp.lower()]

    def new_key(self, mailbox: str) -> str:
        """A deterministic, unique item key."""
        return hashlib.sha1(f"{mailbox}:{next(self._keys)}".encode()).hexdigest()[:32]

    def zone_of(self, windows_id: str | None) -> ZoneInfo:
        return iana_zone(windows_id, self.zone)

    # --- creating and finding ---------------------------------------------------------

    def create(
        self,
        mailbox: str,
        *,
        subject: str,
        start: datetime | date,
        end: datetime | date,
        start_tz: str | None = None,
        end_tz: str | None = None,
        organizer_email: str | None = None,
        organizer_name: str | None = None,
        **fields: object,
    ) -> Item:
        """Store a new item in `mailbox` and give it back; all-day items snap to local midnights and a
        recurring master starts at its first occurrence."""
        items = self.mailbox(mailbox)
        mailbox = mailbox.lower()
        start_tz = start_tz or windows_zone(self.zone)
        end_tz = end_tz or start_tz
        zone = self.zone_of(start_tz)
        all_day = bool(fields.get("is_all_day"))
        if all_day:
            start_utc = _local_midnight(start, zone, ceil=False)
            end_utc = _local_midnight(end, self.zone_of(end_tz), ceil=True)
            if end_utc <= start_utc:
                end_utc = start_utc + timedelta(days=1)
        else:
            if not isinstance(start, datetime) or not isinstance(end, datetime):
                raise StoreError("ErrorInvalidRequest", "start and end must be datetimes")
            start_utc, end_utc = start.astimezone(UTC), end.astimezone(UTC)
        if end_utc < start_utc:
            raise StoreError("ErrorCalendarEndDateIsEarlierThanStartDate", "End date is earlier than start date.")
        now = datetime.now(UTC).replace(microsecond=0)
        seq = self.next_seq()
        key = self.new_key(mailbox)
        item = Item(
            key=key,
            mailbox=mailbox,
            subject=subject,
            start=start_utc,
            end=end_utc,
            start_tz=start_tz,
            end_tz=end_tz,
            uid=("040000008200E00074C5B7101A82E008" + hashlib.md5(key.encode()).hexdigest()).upper(),
            organizer_email=(organizer_email or mailbox).lower(),
            organizer_name=organizer_name or (organizer_email or mailbox).split("@")[0].title(),
            created=now,
            modified=now,
            seq=seq,
            created_seq=seq,
            history=[seq],
            **fields,  # type: ignore[arg-type]
        )
        if item.recurrence is not None:
            self.snap_master(item)
        items[key] = item
        return item

    def snap_master(self, item: Item) -> None:
        """Move a master's start/end onto its first occurrence (Exchange does the same)."""
        zone = self.zone_of(item.start_tz)
        duration = item.end - item.start
        local_time = item.start.astimezone(zone).time()
        first = next(pattern_dates(item, zone), None)
        if first is None:
            raise StoreError("ErrorOccurrenceCrossingBoundary", "The recurrence has no occurrences.")
        item.start = _to_utc(first, local_time, zone)
        item.end = item.start + duration

    def resolve(self, item_id: str) -> Item | Occurrence:
        """The live item or occurrence an id denotes; raises StoreError(ErrorItemNotFound),
        (ErrorCalendarOccurrenceIsDeletedFromRecurrence) for an occurrence deleted from its
        series, or (ErrorInvalidIdMalformed)."""
        parts = decode_id(item_id)
        if parts is None or parts[0] == "F":
            raise StoreError("ErrorInvalidIdMalformed", "Id is malformed.")
        items = self.mailboxes.get(parts[1])
        item = items.get(parts[2]) if items is not None and len(parts) > 2 else None
        if item is None:
            raise StoreError("ErrorItemNotFound", "The specified object was not found in the store.")
        if parts[0] == "I":
            return item
        if len(parts) != 4 or item.recurrence is None:
            raise StoreError("ErrorItemNotFound", "The specified object was not found in the store.")
        try:
            original = unstamp(parts[3])
        except ValueError:
            raise StoreError("ErrorInvalidIdMalformed", "Id is malformed.") from None
        if original in item.deleted:
            # Exchange's own answer for the id of an occurrence removed from its series.
            raise StoreError("ErrorCalendarOccurrenceIsDeletedFromRecurrence",
                             "Occurrence with this index was previously deleted from the recurrence.")
        occurrence = self.occurrence_at(item, original)
        if occurrence is None:
            raise StoreError("ErrorItemNotFound", "The specified object was not found in the store.")
        return occurrence

    def occurrence_at(self, master: Item, original: datetime) -> Occurrence | None:
        """The live occurrence of `master` originally starting at `original`, if any."""
        if original in master.deleted:
            return None
        for occ in self.pattern(master):
            if occ.original_start == original:
                return occ
            if occ.original_start > original:
                return None
        return None

    def occurrence_by_index(self, master: Item, index: int) -> Occurrence:
        """Occurrence number `index` (1-based) of `master`; raises StoreError."""
        if master.recurrence is None:
            raise StoreError("ErrorItemNotFound", "The item is not a recurring master.")
        for occ in self.pattern(master):
            if occ.index == index:
                if occ.original_start in master.deleted:
                    raise StoreError(
                        "ErrorCalendarOccurrenceIsDeletedFromRecurrence", "The occurrence was deleted from the series."
                    )
                return occ
            if occ.index > index:
                break
        raise StoreError(
            "ErrorCalendarOccurrenceIndexIsOutOfRecurrenceRange", "The occurrence index is out of range."
        )

    def pattern(self, master: Item) -> Iterator[Occurrence]:
        """Every occurrence of `master` by pattern (deleted ones included), with overrides applied."""
        zone = self.zone_of(master.start_tz)
        local_time = master.start.astimezone(zone).time()
        duration = master.end - master.start
        for index, day in enumerate(pattern_dates(master, zone), start=1):
            original = _to_utc(day, local_time, zone)
            override = master.overrides.get(original)
            start, end = (override.start, override.end) if override else (original, original + duration)
            yield Occurrence(master, index, original, start, end, override)

    def expand(self, mailbox: str, start: datetime, end: datetime) -> list[Item | Occurrence]:
        """What a CalendarView from `start` to `end` shows: singles and occurrences that overlap the
        window (items ending exactly at `start` included, as real EWS does), sorted by start."""
        found: list[Item | Occurrence] = []
        for item in self.mailbox(mailbox).values():
            if item.recurrence is None:
                if item.start < end and item.end >= start:
                    found.append(item)
                continue
            for occ in self.pattern(item):
                if occ.original_start in item.deleted:
                    continue
                if occ.start < end and occ.end >= start:
                    found.append(occ)
                elif occ.original_start >= end and all(o < occ.original_start for o in item.overrides):
                    break  # later originals can only show up here if one was moved in
        found.sort(key=lambda x: (x.start, x.end, x.id))
        return found

    # --- writing ----------------------------------------------------------------------

    def touch(self, item: Item) -> None:
        """Give `item` a new change key and log the change for SyncFolderItems."""
        item.seq = self.next_seq()
        item.history.append(item.seq)
        item.modified = datetime.now(UTC).replace(microsecond=0)

    def touch_occurrence(self, occ: Occurrence) -> Override:
        """The override for `occ` (created if needed) with a new change key; also touches the master."""
        master = occ.master
        override = master.overrides.get(occ.original_start)
        if override is None:
            override = Override(start=occ.start, end=occ.end)
            master.overrides[occ.original_start] = override
        self.touch(master)
        override.seq = master.seq
        return override

    def snap_all_day(self, item: Item) -> None:
        """Push an all-day item's start back and end forward to local midnights."""
        item.start = _local_midnight(item.start, self.zone_of(item.start_tz), ceil=False)
        item.end = _local_midnight(item.end, self.zone_of(item.end_tz), ceil=True)
        if item.end <= item.start:
            item.end = item.start + timedelta(days=1)

    def remove(self, item: Item) -> None:
        """Hard-delete `item`, leaving a tombstone for SyncFolderItems."""
        items = self.mailbox(item.mailbox)
        items.pop(item.key, None)
        item.removed = True
        item.seq = self.next_seq()
        item.history.append(item.seq)
        self.tombstones[item.mailbox][item.key] = item

    def delete_occurrence(self, occ: Occurrence) -> None:
        master = occ.master
        master.overrides.pop(occ.original_start, None)
        master.deleted.add(occ.original_start)
        self.touch(master)
        master.occurrence_deletions.add(master.seq)

    def set_times(self, target: Item | Occurrence, start: datetime | None, end: datetime | None) -> None:
        """Move an item or occurrence; moving a master moves the whole series and drops its exceptions."""
        if isinstance(target, Occurrence):
            override = self.touch_occurrence(target)
            override.start = start or override.start
            override.end = end or override.end
            return
        moved = (start is not None and start != target.start) or (end is not None and end != target.end)
        target.start = start or target.start
        target.end = end or target.end
        if target.recurrence is not None and moved:
            target.overrides.clear()
            target.deleted.clear()
            self.snap_master(target)
        self.touch(target)

    # --- sync -------------------------------------------------------------------------

    def changes_since(self, mailbox: str, since: int | None) -> list[tuple[int, str, Item]]:
        """One (first change, Create|Update|Delete, item) per item written after sequence `since`
        (None: the start), ordered by each item's first write after `since`.

        A client holding state `since` knows every item as it was then, so an item is a Create
        if it did not exist then, a Delete if it existed then and is gone now, an Update otherwise.
        Ordering by the first write lets a page cut at the next entry's first write minus one
        stand for a consistent state: every item written up to the cut is in the page."""
        base = since or 0
        self.mailbox(mailbox)
        out: list[tuple[int, str, Item]] = []
        candidates = [*self.mailboxes[mailbox.lower()].values(), *self.tombstones[mailbox.lower()].values()]
        for item in candidates:
            later = [s for s in item.history if s > base]
            if not later:
                continue
            existed = item.created_seq <= base
            if item.removed:
                if existed:
                    out.append((later[0], "Delete", item))
            else:
                out.append((later[0], "Update" if existed else "Create", item))
        out.sort(key=lambda entry: entry[0])
        return out
