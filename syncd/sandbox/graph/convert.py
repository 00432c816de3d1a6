"""Between the shared mailbox store and Graph's JSON: immutable ids, extended property ids,
dateTimeTimeZone values and event resources.

Ids: a Graph (immutable) id is url-safe base64 of ``gI:<mailbox>:<key>`` for a stored item
and ``gO:<mailbox>:<master key>:<original start>`` for an occurrence; they differ from the EWS
sandbox's ids for the same item, as real Graph and EWS ids do, and `translateExchangeIds`
maps one onto the other.

Extended properties: Graph names a MAPI property ``"<Type> {<guid>} Name <name>"``,
``"<Type> {<guid>} Id 0x<hex>"`` or ``"<Type> 0x<tag>"``; EWS addresses the same property with
ExtendedFieldURI attributes. Both map onto one canonical key, so a stamp written through one
protocol reads back through the other.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from exchangelib.winzone import MS_TIMEZONE_TO_IANA_MAP

from ..ews.model import (
    ExtProp,
    Item,
    Occurrence,
    Recurrence,
    encode_id,
    iana_zone,
    stamp,
    unstamp,
    windows_zone,
)
from ..ews.store import Store

__all__ = [
    "GOID_PREFIX",
    "decode_graph_id",
    "ews_to_graph_id",
    "ext_canonical",
    "ext_value",
    "fmt_offset",
    "graph_ext_attrs",
    "graph_id",
    "graph_to_ews_id",
    "parse_datetime_tz",
    "parse_iso",
    "render_dtz",
    "render_event",
    "zone_for",
]

GOID_PREFIX = "040000008200E00074C5B7101A82E008"
_DISTINGUISHED = {
    "publicstrings": "00020329-0000-0000-c000-000000000046",
    "common": "00062008-0000-0000-c000-000000000046",
    "appointment": "00062002-0000-0000-c000-000000000046",
    "meeting": "6ed8da90-450b-101b-98da-00aa003f1305",
    "address": "00062004-0000-0000-c000-000000000046",
    "internetheaders": "00020386-0000-0000-c000-000000000046",
    "task": "00062003-0000-0000-c000-000000000046",
    "calendarassistant": "11000e07-b51b-40d6-af21-caa85edab1d0",
    "unifiedmessaging": "4442858e-a9e3-4e80-b900-317a210cc15b",
}
_EXT_ID = re.compile(
    r"^\s*(?P<type>\w+)\s+(?:\{(?P<guid>[0-9a-fA-F-]{36})\}\s+(?:Name\s+(?P<name>.+?)|Id\s+(?P<id>0x[0-9a-fA-F]+|\d+))"
    r"|(?P<tag>0x[0-9a-fA-F]+))\s*$"
)
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_SHOW_AS = {"busy": "busy", "free": "free", "tentative": "tentative", "oof": "oof",
            "workingelsewhere": "workingElsewhere", "noData": "unknown"}
_RESPONSE = {"organizer": "organizer", "accept": "accepted", "tentative": "tentativelyAccepted",
             "decline": "declined", "noresponsereceived": "notResponded", "unknown": "none"}


# --- ids -----------------------------------------------------------------------------------


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def graph_id(target: Item | Occurrence) -> str:
    """The immutable Graph id of a stored item or an occurrence."""
    if isinstance(target, Occurrence):
        master = target.master
        return _b64(f"gO:{master.mailbox}:{master.key}:{stamp(target.original_start)}")
    return _b64(f"gI:{target.mailbox}:{target.key}")


def decode_graph_id(value: str) -> list[str] | None:
    """``[kind, mailbox, key(, original stamp)]`` for one of our Graph ids, else None."""
    try:
        text = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    parts = text.split(":")
    if len(parts) < 3 or parts[0] not in ("gI", "gO") or (parts[0] == "gO") != (len(parts) == 4):
        return None
    return parts


def graph_to_ews_id(value: str) -> str | None:
    parts = decode_graph_id(value)
    if parts is None:
        return None
    return encode_id("I" if parts[0] == "gI" else "O", *parts[1:])


def ews_to_graph_id(ews_id: str) -> str | None:
    try:
        text = base64.b64decode(ews_id.encode(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    parts = text.split(":")
    if parts[0] == "I" and len(parts) == 3:
        return _b64(f"gI:{parts[1]}:{parts[2]}")
    if parts[0] == "O" and len(parts) == 4:
        return _b64(f"gO:{parts[1]}:{parts[2]}:{parts[3]}")
    return None


# --- extended properties ---------------------------------------------------------------------


def ext_canonical(attrs: dict[str, str]) -> tuple[str, ...] | None:
    """One key for a MAPI property however EWS attributes name it."""
    kind = attrs.get("PropertyType", "")
    guid = attrs.get("PropertySetId") or _DISTINGUISHED.get(attrs.get("DistinguishedPropertySetId", "").lower())
    if "PropertyTag" in attrs:
        try:
            return (kind, "tag", str(int(attrs["PropertyTag"], 0)))
        except ValueError:
            return None
    if guid is None:
        return None
    if "PropertyName" in attrs:
        return (kind, guid.lower(), "name", attrs["PropertyName"])
    if "PropertyId" in attrs:
        try:
            return (kind, guid.lower(), "id", str(int(attrs["PropertyId"], 0)))
        except ValueError:
            return None
    return None


def graph_ext_attrs(prop_id: str) -> dict[str, str]:
    """The ExtendedFieldURI attributes for a Graph extended property id; raises ValueError."""
    match = _EXT_ID.match(prop_id)
    if match is None:
        raise ValueError(f"'{prop_id}' is not a valid extended property id")
    kind = match["type"]
    if match["tag"]:
        return {"PropertyTag": f"0x{int(match['tag'], 16):04x}", "PropertyType": kind}
    if match["name"] is not None:
        return {"PropertySetId": match["guid"].lower(), "PropertyName": match["name"], "PropertyType": kind}
    return {"PropertySetId": match["guid"].lower(), "PropertyId": str(int(match["id"], 0)), "PropertyType": kind}


def ext_value(ext: dict[Any, ExtProp], prop_id: str) -> str | None:
    """The value of the property `prop_id` (a Graph id) in an item's extended properties."""
    try:
        wanted = ext_canonical(graph_ext_attrs(prop_id))
    except ValueError:
        return None
    for prop in ext.values():
        if wanted is not None and ext_canonical(prop.attrs) == wanted:
            return prop.value if prop.values is None else None
    return None


def set_ext(ext: dict[Any, ExtProp], prop_id: str, value: str) -> None:
    """Store `value` under the Graph id `prop_id`, replacing the same property however named."""
    attrs = graph_ext_attrs(prop_id)
    wanted = ext_canonical(attrs)
    for key, prop in list(ext.items()):
        if ext_canonical(prop.attrs) == wanted:
            del ext[key]
    prop = ExtProp(attrs, value=value)
    ext[prop.key] = prop


# --- times -----------------------------------------------------------------------------------


def zone_for(name: str | None) -> ZoneInfo | None:
    """The zone a Graph timeZone (Windows or IANA name, or UTC) denotes; None when unknown."""
    if not name:
        return ZoneInfo("UTC")
    if name.upper() in ("UTC", "GMT") or name == "tzone://Microsoft/Utc":
        return ZoneInfo("UTC")
    if name in MS_TIMEZONE_TO_IANA_MAP:
        return iana_zone(name, ZoneInfo("UTC"))
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def parse_iso(text: str) -> datetime:
    """An ISO 8601 date-time; without an offset it is UTC. Raises ValueError."""
    text = text.strip().replace("Z", "+00:00").replace(" ", "+")
    main, dot, rest = text.partition(".")
    if dot:   # Graph writes 7 fraction digits; Python reads 6 at most
        digits = re.match(r"\d*", rest)
        frac = digits.group(0) if digits else ""
        text = f"{main}.{frac[:6].ljust(6, '0')}{rest[len(frac):]}"
    value = datetime.fromisoformat(text)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def parse_datetime_tz(value: Any) -> tuple[datetime, str]:
    """A dateTimeTimeZone object as an aware UTC datetime and the Windows zone id to keep;
    raises ValueError."""
    if not isinstance(value, dict) or not isinstance(value.get("dateTime"), str):
        raise ValueError("a dateTimeTimeZone needs dateTime and timeZone")
    zone = zone_for(value.get("timeZone"))
    if zone is None:
        raise ValueError(f"unknown time zone {value.get('timeZone')!r}")
    local = parse_iso(value["dateTime"].rstrip("Z")) if "+" not in value["dateTime"][10:] else None
    if local is None:
        raise ValueError("dateTime must not carry an offset")
    moment = local.replace(tzinfo=zone).astimezone(UTC)
    return moment, ("UTC" if zone.key == "UTC" else windows_zone(zone))


def _fmt_local(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.0000000")


def fmt_offset(value: datetime) -> str:
    """A DateTimeOffset as Graph writes it in UTC."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fmt_stamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def render_dtz(value: datetime, zone: ZoneInfo, label: str, all_day_date: date | None = None) -> dict[str, str]:
    """A dateTimeTimeZone for `value` in `zone` (named `label`); all-day values are floating dates."""
    if all_day_date is not None:
        return {"dateTime": f"{all_day_date.isoformat()}T00:00:00.0000000", "timeZone": label}
    return {"dateTime": _fmt_local(value.astimezone(zone)), "timeZone": label}


# --- events ----------------------------------------------------------------------------------


def ical_uid(item: Item, mode: str) -> str:
    """The iCalUId Graph shows for `item`: its UID verbatim, or (mode "goid") a UID that is not a
    GlobalObjectId wrapped into one, as Exchange stores a foreign iCalendar UID."""
    if mode != "goid" or item.uid.upper().startswith(GOID_PREFIX):
        return item.uid
    data = b"vCal-Uid" + (1).to_bytes(4, "little") + item.uid.encode() + b"\x00"
    return (GOID_PREFIX + "00000000" + "00" * 8 + "00" * 8 + len(data).to_bytes(4, "little").hex()
            + data.hex()).upper()


def _recurrence(item: Item, zone: ZoneInfo) -> dict[str, Any]:
    rec: Recurrence | None = item.recurrence
    assert rec is not None
    first = item.start.astimezone(zone).date()
    pattern: dict[str, Any] = {"type": rec.kind, "interval": rec.interval, "month": 0, "dayOfMonth": 0,
                               "firstDayOfWeek": "sunday", "index": "first"}
    if rec.kind == "weekly":
        pattern["daysOfWeek"] = [_WEEKDAYS[d] for d in sorted(set(rec.weekdays or (first.weekday(),)))]
    kind = "numbered" if rec.count is not None else "endDate" if rec.until is not None else "noEnd"
    return {"pattern": pattern, "range": {
        "type": kind, "startDate": first.isoformat(),
        "endDate": rec.until.isoformat() if rec.until else "0001-01-01",
        "recurrenceTimeZone": item.start_tz, "numberOfOccurrences": rec.count or 0,
    }}


def render_event(
    store: Store,
    target: Item | Occurrence,
    *,
    zone: ZoneInfo,
    zone_label: str,
    select: set[str] | None = None,
    expand_ext: list[str] | None = None,
    sparse: bool = False,
    uid_mode: str = "goid",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The event resource for a stored item (single or series master) or an occurrence.
    `select` keeps only those properties (id and @odata.etag always); `expand_ext` lists the
    extended property ids to return; `sparse` gives what delta returns for an occurrence."""
    item = target.master if isinstance(target, Occurrence) else target
    tz_local = store.zone_of(item.start_tz)
    if isinstance(target, Occurrence):
        kind = "exception" if target.override else "occurrence"
    else:
        kind = "seriesMaster" if item.recurrence is not None else "singleInstance"
    all_day_start = target.start.astimezone(tz_local).date() if item.is_all_day else None
    all_day_end = None
    if item.is_all_day:
        all_day_end = target.end.astimezone(store.zone_of(item.end_tz)).date()
        if all_day_start is not None and all_day_end <= all_day_start:
            all_day_end = all_day_start + timedelta(days=1)
    etag = f'W/"{target.change_key}"'
    base: dict[str, Any] = {
        "@odata.type": "#microsoft.graph.event",
        "@odata.etag": etag,
        "id": graph_id(target),
        "type": kind,
        "seriesMasterId": graph_id(item) if isinstance(target, Occurrence) else None,
        "start": render_dtz(target.start, zone, zone_label, all_day_start),
        "end": render_dtz(target.end, zone, zone_label, all_day_end),
    }
    if sparse:
        return base
    subject = target.subject
    full: dict[str, Any] = {
        **base,
        "createdDateTime": _fmt_stamp(item.created),
        "lastModifiedDateTime": _fmt_stamp(item.modified),
        "changeKey": target.change_key,
        "categories": [],
        "originalStartTimeZone": item.start_tz,
        "originalEndTimeZone": item.end_tz,
        "iCalUId": ical_uid(item, uid_mode),
        "reminderMinutesBeforeStart": item.reminder_minutes,
        "isReminderOn": item.reminder_is_set,
        "hasAttachments": False,
        "subject": subject,
        "bodyPreview": (item.body or "")[:255],
        "importance": item.importance.lower(),
        "sensitivity": item.sensitivity.lower(),
        "isAllDay": item.is_all_day,
        "isCancelled": item.is_cancelled,
        "isOrganizer": item.my_response == "Organizer",
        "responseRequested": True,
        "showAs": _SHOW_AS.get(item.free_busy.lower(), "busy") if item.free_busy else "busy",
        "originalStart": fmt_offset(target.original_start) if isinstance(target, Occurrence) else None,
        "responseStatus": {"response": _RESPONSE.get(item.my_response.lower(), "none"),
                           "time": "0001-01-01T00:00:00Z"},
        "body": {"contentType": "text", "content": item.body or ""},
        "location": {"displayName": target.location or "", "locationType": "default"},
        "locations": [{"displayName": target.location}] if target.location else [],
        "recurrence": _recurrence(item, tz_local) if kind == "seriesMaster" else None,
        "attendees": [],
        "organizer": {"emailAddress": {"name": item.organizer_name, "address": item.organizer_email}},
    }
    full.update(extra or {})
    if select:
        full = {k: v for k, v in full.items() if k in select or k in ("@odata.etag", "id", "@odata.type")}
    found = []
    for prop_id in expand_ext or []:
        value = ext_value(target.ext, prop_id)
        if value is not None:
            found.append({"id": prop_id, "value": value})
    if found:
        full["singleValueExtendedProperties"] = found
    return full


def parse_original(stamp_text: str) -> datetime:
    return unstamp(stamp_text)
