"""Translation between exchangelib calendar items and syncd's own `Event`, and the time helpers.

Keys: a single meeting's key is its iCalendar UID; an occurrence of a recurring series is
`f"{uid}|{original_start}"` with the occurrence's original start in UTC as
`datetime.isoformat()` (e.g. `...|2025-03-10T08:00:00+00:00`), so a moved occurrence keeps
its key and a cancelled one simply disappears. An item without a UID (rare: some
third-party writers) falls back to its item id, which is stable until the item is moved to
another folder.

The stamp: syncd marks the events it creates with the named MAPI property
`String {364df495-bcb8-4deb-ab44-ea51442f7fd9} Name SyncdBookingId`; Microsoft Graph reads the
same property as a singleValueExtendedProperty with that id, so stamps survive a move to Graph.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from exchangelib import CalendarItem, EWSDateTime, EWSTimeZone, ExtendedProperty

from syncd.core.model import Event, TimeWindow
from syncd.errors import CalendarProtocolError
from syncd.logs import get_logger

log = get_logger("syncd.ews")

STAMP_PROPERTY_SET = "364df495-bcb8-4deb-ab44-ea51442f7fd9"
STAMP_PROPERTY_NAME = "SyncdBookingId"
STAMP_FIELD = "syncd_booking_id"
GRAPH_STAMP_ID = f"String {{{STAMP_PROPERTY_SET}}} Name {STAMP_PROPERTY_NAME}"


class SyncdBookingId(ExtendedProperty):
    """The extended property carrying syncd's stamp on the events it created."""

    property_set_id = STAMP_PROPERTY_SET
    property_name = STAMP_PROPERTY_NAME
    property_type = "String"


def _register_stamp() -> None:
    # exchangelib refuses a second registration of the same name (e.g. on a module reload).
    try:
        CalendarItem.get_field_by_fieldname(STAMP_FIELD)
    except Exception:
        CalendarItem.register(STAMP_FIELD, SyncdBookingId)


_register_stamp()

# The fields a read asks for: a fraction of the ~80 exchangelib requests by default.
# StartTimeZone/EndTimeZone come along with start/end (exchangelib adds them).
READ_FIELDS: tuple[str, ...] = (
    "subject", "start", "end", "is_all_day", "uid", "organizer", "sensitivity",
    "is_cancelled", "type", "original_start", STAMP_FIELD,
)

PRIVATE_SENSITIVITIES = frozenset({"Private", "Confidential"})
RECURRING_TYPES = frozenset({"Occurrence", "Exception"})


def utc_from_ews(value: datetime) -> datetime:
    """A plain `datetime` in UTC for an aware (EWS)datetime."""
    offset = value.utcoffset()
    if offset is None:
        raise ValueError(f"naive datetime {value!r} from EWS")
    wall = datetime(value.year, value.month, value.day, value.hour, value.minute, value.second,
                    value.microsecond, tzinfo=UTC)
    return wall - offset


def to_ews(value: datetime, tz: EWSTimeZone) -> EWSDateTime:
    """`value` (aware) as an EWSDateTime in `tz`, the zone Exchange stores the event in."""
    # Converted with a plain ZoneInfo and rebuilt field by field so `fold` survives:
    # EWSTimeZone's conversion drops it and shifts a time in the repeated hour of a DST change.
    local = value.astimezone(ZoneInfo(tz.key))
    return EWSDateTime(local.year, local.month, local.day, local.hour, local.minute, local.second,
                       local.microsecond, tzinfo=tz, fold=local.fold)


def write_zone(start: datetime, end: datetime, tz: EWSTimeZone) -> EWSTimeZone:
    """The zone to write an event's times in: `tz`, or UTC when a time falls in the
    repeated hour of a DST change. exchangelib loses `fold` there: it converts update
    values with EWSTimeZone, and compares start and end by wall-clock time."""
    zone = ZoneInfo(tz.key)
    for value in (start, end):
        local = value.astimezone(zone)
        if local.replace(fold=1 - local.fold).utcoffset() != local.utcoffset():
            return EWSTimeZone("UTC")
    return tz


def _midnight_utc(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(tz.key)).astimezone(UTC)


def item_times(item: CalendarItem, fallback_tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The item's [start, end) in UTC.

    exchangelib hands all-day items back as dates, converted in the item's start zone, with
    an *inclusive* end date (it subtracts a day); syncd wants instants with an exclusive end,
    so the end is midnight after the last day. Without a known zone the configured one is used.
    """
    start, end = item.start, item.end
    if isinstance(start, datetime) and isinstance(end, datetime):
        return utc_from_ews(start), utc_from_ews(end)
    tz = item._start_timezone
    if tz is None:
        log.warning("ews_all_day_without_zone", item_id=item.id, assumed_zone=fallback_tz.key)
        tz = fallback_tz
    start_day = start if not isinstance(start, datetime) else start.astimezone(tz).date()
    end_day = end if not isinstance(end, datetime) else end.astimezone(tz).date()
    return _midnight_utc(start_day, tz), _midnight_utc(end_day + timedelta(days=1), tz)


def event_key(item: CalendarItem) -> str:
    """The stable identity of one booking (see the module docstring)."""
    base = item.uid or item.id
    if item.type in RECURRING_TYPES:
        original = item.original_start or item.start
        if isinstance(original, datetime):
            return f"{base}|{utc_from_ews(original).isoformat()}"
        log.warning("ews_occurrence_without_original_start", item_id=item.id)
    return base


def to_event(item: CalendarItem, fallback_tz: ZoneInfo) -> Event:
    """syncd's Event for one calendar item (a single meeting or one occurrence).

    Raises CalendarProtocolError for an item without an id, without readable times
    (exchangelib reads an unparseable or impossible date as None) or ending before it
    starts: such an answer is malformed, not a booking to act on."""
    if not item.id:
        raise CalendarProtocolError("EWS sent a calendar item without an ItemId")
    for name in ("start", "end"):
        if getattr(item, name) is None:
            raise CalendarProtocolError(f"EWS sent calendar item {item.id[-10:]} without a readable {name} time")
    if item._start_timezone is None and isinstance(item.start, datetime):
        # EWS gives UTC instants anyway: only the zone's name was not understood (logged by
        # exchangelib as a warning naming it); the times stay right.
        log.warning("ews_unknown_time_zone", item_id=item.id)
    start, end = item_times(item, fallback_tz)
    if end < start:   # Exchange refuses to save such an item (ErrorCalendarEndDateIsEarlierThanStartDate)
        raise CalendarProtocolError(f"EWS sent calendar item {item.id[-10:]} that ends before it starts")
    organizer = item.organizer.email_address if item.organizer is not None else None
    return Event(
        key=event_key(item),
        item_id=item.id,
        change_key=item.changekey,
        start=start,
        end=end,
        subject=item.subject or "",
        organizer=organizer,
        private=item.sensitivity in PRIVATE_SENSITIVITIES,
        all_day=bool(item.is_all_day),
        cancelled=bool(item.is_cancelled),
        stamp=getattr(item, STAMP_FIELD, None),
        recurring=item.type in RECURRING_TYPES,
    )


def in_window(event: Event, window: TimeWindow) -> bool:
    """True when the event really overlaps the half-open window.

    A CalendarView also returns items that merely touch its start; a zero-length
    event counts when its instant lies inside the window."""
    if event.start == event.end:
        return window.start <= event.start < window.end
    return window.overlaps(event.start, event.end)


def split_window(window: TimeWindow, days: int) -> Iterator[TimeWindow]:
    """`window` cut into consecutive pieces of at most `days` days."""
    step = timedelta(days=days)
    start = window.start
    while start < window.end:
        end = min(start + step, window.end)
        yield TimeWindow(start, end)
        start = end


def halves(window: TimeWindow) -> tuple[TimeWindow, TimeWindow]:
    """The two halves of `window` (cut on a whole second)."""
    middle = window.start + timedelta(seconds=int((window.end - window.start).total_seconds() // 2))
    return TimeWindow(window.start, middle), TimeWindow(middle, window.end)
