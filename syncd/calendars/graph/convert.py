"""Translation between Microsoft Graph event JSON and syncd's own `Event`.

Keys are those of the EWS backend, so a site moving from EWS keeps its links: a single
meeting's key is its `iCalUId` (the meeting's iCalendar UID, the same value EWS calls UID),
an occurrence or exception of a series is `f"{iCalUId}|{original start}"` with the original
start in UTC as `datetime.isoformat()`. An event without an `iCalUId` falls back to its
(immutable) id.

The stamp is the named property syncd's EWS backend writes, read here as the
singleValueExtendedProperty `GRAPH_STAMP_ID` (the same MAPI property).

Times: requests ask for UTC (`Prefer: outlook.timezone="UTC"`). All-day events are dates:
Graph hands them back as midnight to midnight in the zone asked for, so they are rebuilt
at local midnight in the event's own zone (`originalStartTimeZone`), else the configured one.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from syncd.core.model import Event, NewEvent
from syncd.errors import CalendarProtocolError, UnknownTimeZone
from syncd.logs import get_logger

log = get_logger("syncd.graph")

STAMP_PROPERTY_SET = "364df495-bcb8-4deb-ab44-ea51442f7fd9"
STAMP_PROPERTY_NAME = "SyncdBookingId"
GRAPH_STAMP_ID = f"String {{{STAMP_PROPERTY_SET}}} Name {STAMP_PROPERTY_NAME}"

SELECT = ("id,changeKey,iCalUId,type,seriesMasterId,originalStart,start,end,isAllDay,isCancelled,"
          "subject,organizer,sensitivity,showAs,originalStartTimeZone")
EXPAND = f"singleValueExtendedProperties($filter=id eq '{GRAPH_STAMP_ID}')"
RECURRING_TYPES = frozenset({"occurrence", "exception"})
PRIVATE = frozenset({"private", "confidential"})

# The Windows zone names Exchange uses most for rooms in Europe and the Americas; anything
# else that is not an IANA name falls back to the configured zone (logged).
_WINDOWS_ZONES = {
    "W. Europe Standard Time": "Europe/Berlin", "Romance Standard Time": "Europe/Paris",
    "Central Europe Standard Time": "Europe/Budapest", "Central European Standard Time": "Europe/Warsaw",
    "GMT Standard Time": "Europe/London", "Greenwich Standard Time": "Atlantic/Reykjavik",
    "E. Europe Standard Time": "Europe/Chisinau", "FLE Standard Time": "Europe/Kiev",
    "Eastern Standard Time": "America/New_York", "Central Standard Time": "America/Chicago",
    "Mountain Standard Time": "America/Denver", "Pacific Standard Time": "America/Los_Angeles",
    "UTC": "UTC", "Coordinated Universal Time": "UTC",
}
_FRACTION = re.compile(r"(\.\d{1,6})\d*")


def parse_instant(value: str, zone: str | None = "UTC") -> datetime:
    """A Graph `dateTime` (naive text in `zone`) or DateTimeOffset as an aware UTC datetime."""
    text = _FRACTION.sub(r"\1", value.strip()).replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise CalendarProtocolError(f"Microsoft Graph sent a time syncd cannot read: {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone_of(zone or "UTC"))
    return parsed.astimezone(UTC)


def zone_of(name: str) -> ZoneInfo:
    """The zone named by an IANA or a (common) Windows name. Raises UnknownTimeZone."""
    if name in ("UTC", "tzone://Microsoft/Utc"):
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(_WINDOWS_ZONES.get(name, name))
    except (ZoneInfoNotFoundError, ValueError):
        raise UnknownTimeZone(f"Microsoft Graph named a time zone syncd does not know: {name!r}") from None


def _when(data: Any, what: str) -> tuple[datetime, str]:
    if not isinstance(data, dict) or not isinstance(data.get("dateTime"), str):
        raise CalendarProtocolError(f"Microsoft Graph sent an event without {what}")
    zone = data.get("timeZone") or "UTC"
    if not isinstance(zone, str):
        raise CalendarProtocolError(f"Microsoft Graph sent an event whose {what} has a time zone that is a "
                                    f"{type(zone).__name__}, not a name")
    return parse_instant(data["dateTime"], zone), zone


def event_times(item: dict[str, Any], fallback: ZoneInfo) -> tuple[datetime, datetime]:
    """The event's [start, end) in UTC; all-day events from local midnight to local midnight."""
    start, _ = _when(item.get("start"), "a start")
    end, _ = _when(item.get("end"), "an end")
    if end < start:
        raise CalendarProtocolError(f"Microsoft Graph sent an event that ends ({end.isoformat()}) before it "
                                    f"starts ({start.isoformat()})")
    if not item.get("isAllDay"):
        return start, end
    name = item.get("originalStartTimeZone")
    zone = fallback
    if isinstance(name, str) and name:
        try:
            zone = zone_of(name)
        except UnknownTimeZone:
            log.warning("graph_all_day_zone_unknown", zone=name, assumed_zone=fallback.key)
    first, after = _day(start, zone), _day(end, zone)
    return (datetime.combine(first, time(0), tzinfo=zone).astimezone(UTC),
            datetime.combine(after, time(0), tzinfo=zone).astimezone(UTC))


def _day(instant: datetime, zone: ZoneInfo) -> date:
    """The date an all-day boundary means: local midnight already, or midnight in the
    zone the request asked for (UTC), whose date is the organizer's."""
    local = instant.astimezone(zone)
    return local.date() if local.time() == time(0) else instant.date()


def stamp_of(item: dict[str, Any]) -> str | None:
    for prop in item.get("singleValueExtendedProperties") or ():
        if isinstance(prop, dict) and str(prop.get("id", "")).lower() == GRAPH_STAMP_ID.lower():
            value = prop.get("value")
            return str(value) if value is not None else None
    return None


def event_key(item: dict[str, Any]) -> str:
    """The stable identity of one booking (see the module docstring)."""
    base = item.get("iCalUId") or item.get("id")
    if not base:
        raise CalendarProtocolError("Microsoft Graph sent an event without an id")
    if item.get("type") in RECURRING_TYPES:
        original = item.get("originalStart")
        if isinstance(original, str) and original:
            return f"{base}|{parse_instant(original).isoformat()}"
        start, _ = _when(item.get("start"), "a start")     # an unmodified occurrence starts where it was
        return f"{base}|{start.isoformat()}"
    return str(base)


# The fields syncd reads and the JSON types Graph gives them (null allowed for each): an
# answer that breaks this is malformed, never read as something else (a string "false" for
# isCancelled is not a cancellation).
_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,), "changeKey": (str,), "@odata.etag": (str,), "iCalUId": (str,), "type": (str,),
    "originalStart": (str,), "originalStartTimeZone": (str,), "subject": (str,), "sensitivity": (str,),
    "isAllDay": (bool,), "isCancelled": (bool,), "organizer": (dict,), "singleValueExtendedProperties": (list,),
}


def _check_types(item: dict[str, Any]) -> None:
    for name, kinds in _TYPES.items():
        value = item.get(name)
        if value is not None and not isinstance(value, kinds):
            raise CalendarProtocolError(f"Microsoft Graph sent an event whose {name} is a {type(value).__name__}")
    sender = (item.get("organizer") or {}).get("emailAddress")
    if sender is not None and not (isinstance(sender, dict) and isinstance(sender.get("address"), str | None)):
        raise CalendarProtocolError("Microsoft Graph sent an event whose organizer has no readable address")


def to_event(item: dict[str, Any], fallback: ZoneInfo) -> Event:
    """syncd's Event for one Graph event (a single meeting, an occurrence or an exception).
    Raises CalendarProtocolError for an event syncd cannot read whole."""
    if not isinstance(item, dict):
        raise CalendarProtocolError(f"Microsoft Graph sent an event that is a {type(item).__name__}, not an object")
    _check_types(item)
    start, end = event_times(item, fallback)
    organizer = ((item.get("organizer") or {}).get("emailAddress") or {}).get("address")
    change_key = item.get("changeKey") or _etag_key(item.get("@odata.etag"))
    if not item.get("id") or not change_key:
        raise CalendarProtocolError("Microsoft Graph sent an event without id or changeKey")
    return Event(
        key=event_key(item),
        item_id=str(item["id"]),
        change_key=str(change_key),
        start=start,
        end=end,
        subject=str(item.get("subject") or ""),
        organizer=str(organizer) if organizer else None,
        private=str(item.get("sensitivity") or "").lower() in PRIVATE,
        all_day=bool(item.get("isAllDay")),
        cancelled=bool(item.get("isCancelled")),
        stamp=stamp_of(item),
        recurring=item.get("type") in RECURRING_TYPES,
    )


def _etag_key(etag: Any) -> str | None:
    """`W/"<changeKey>"` -> `<changeKey>`."""
    if not isinstance(etag, str) or not etag:
        return None
    return etag.removeprefix("W/").strip('"') or None


def if_match(change_key: str) -> str:
    """The If-Match header for a change key (Graph's etags are `W/"<changeKey>"`)."""
    return change_key if change_key.startswith("W/") else f'W/"{change_key}"'


def graph_time(value: datetime) -> dict[str, str]:
    """`{"dateTime", "timeZone": "UTC"}` for an aware datetime (written in UTC: no DST ambiguity)."""
    v = value.astimezone(UTC)
    return {"dateTime": v.replace(tzinfo=None).isoformat(timespec="seconds"), "timeZone": "UTC"}


def create_body(event: NewEvent, transaction_id: str) -> dict[str, Any]:
    """The POST body of a blocking event: busy, no reminder, no attendees, stamped."""
    return {
        "subject": event.subject,
        "body": {"contentType": "text", "content": event.body or ""},
        "start": graph_time(event.start),
        "end": graph_time(event.end),
        "showAs": "busy",
        "isReminderOn": False,
        "isAllDay": False,
        "transactionId": transaction_id,
        "singleValueExtendedProperties": [{"id": GRAPH_STAMP_ID, "value": event.stamp}],
    }


def in_window_bounds(start: datetime, end: datetime, wstart: datetime, wend: datetime) -> bool:
    if start == end:
        return wstart <= start < wend
    return start < wend and end > wstart


def iso(value: datetime) -> str:
    """A query parameter time: UTC, seconds, `Z`."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def day_floor(value: datetime) -> datetime:
    v = value.astimezone(UTC)
    return datetime.combine(v.date(), time(0), tzinfo=UTC)


DAY = timedelta(days=1)
