"""XML for the EWS sandbox: namespaces, datetimes and booleans as EWS writes them, SOAP
envelopes, faults and response messages, and reading the calendar items of requests.

Responses always carry ``s:Header/t:ServerVersionInfo`` (15.1.2507.6, V2017_07_11) and write
datetimes as UTC ``YYYY-MM-DDTHH:MM:SSZ`` without fractions (exchangelib reads fractional ``Z``
values as None).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from .model import ExtProp, Recurrence

__all__ = [
    "E",
    "M",
    "S",
    "T",
    "WEEKDAY_NAMES",
    "envelope",
    "fault",
    "fmt_bool",
    "fmt_dt",
    "m",
    "parse_bool",
    "parse_date",
    "parse_dt",
    "parse_ext_uri",
    "parse_item_fields",
    "response_message",
    "sub",
    "t",
]

S = "http://schemas.xmlsoap.org/soap/envelope/"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
E = "http://schemas.microsoft.com/exchange/services/2006/errors"
for _prefix, _uri in (("s", S), ("m", M), ("t", T), ("e", E)):
    ET.register_namespace(_prefix, _uri)

SERVER_VERSION = {
    "MajorVersion": "15",
    "MinorVersion": "1",
    "MajorBuildNumber": "2507",
    "MinorBuildNumber": "6",
    "Version": "V2017_07_11",
}

WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def m(tag: str) -> str:
    return f"{{{M}}}{tag}"


def t(tag: str) -> str:
    return f"{{{T}}}{tag}"


def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    """Append child `tag` (Clark notation) with optional text and attributes; returns it."""
    child = ET.SubElement(parent, tag, attrs)
    if text is not None:
        child.text = text
    return child


def fmt_dt(value: datetime) -> str:
    """UTC, whole seconds, trailing Z: the only datetime form exchangelib reads reliably."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fmt_bool(value: bool) -> str:
    return "true" if value else "false"


def parse_bool(text: str | None) -> bool:
    """EWS booleans arrive as true/false or 1/0."""
    return (text or "").strip().lower() in ("true", "1")


def parse_dt(text: str, zone: ZoneInfo) -> datetime:
    """A request datetime (Z, offset, fractional seconds or naive in `zone`) as aware UTC; raises ValueError."""
    value = datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.astimezone(UTC)


def parse_date(text: str) -> date:
    """A request date, possibly carrying a zone suffix (2025-03-10Z, 2025-03-10+01:00)."""
    return date.fromisoformat(text.strip()[:10])


def envelope(body: ET.Element) -> bytes:
    """A SOAP envelope with ServerVersionInfo in the header and `body` in the body."""
    env = ET.Element(f"{{{S}}}Envelope")
    header = sub(env, f"{{{S}}}Header")
    sub(header, t("ServerVersionInfo"), **SERVER_VERSION)
    sub(env, f"{{{S}}}Body").append(body)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(env)


def fault(code: str, message: str, back_off_ms: int | None = None) -> bytes:
    """A whole-request SOAP fault, e.g. ErrorServerBusy with BackOffMilliseconds."""
    env = ET.Element(f"{{{S}}}Envelope")
    header = sub(env, f"{{{S}}}Header")
    sub(header, t("ServerVersionInfo"), **SERVER_VERSION)
    flt = sub(sub(env, f"{{{S}}}Body"), f"{{{S}}}Fault")
    sub(flt, "faultcode", f"a:{code}").set("xmlns:a", T)
    sub(flt, "faultstring", message).set("{http://www.w3.org/XML/1998/namespace}lang", "en-US")
    detail = sub(flt, "detail")
    sub(detail, f"{{{E}}}ResponseCode", code)
    sub(detail, f"{{{E}}}Message", message)
    if back_off_ms is not None:
        sub(sub(detail, t("MessageXml")), t("Value"), str(back_off_ms), Name="BackOffMilliseconds")
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(env)


def response_message(
    parent: ET.Element, op: str, code: str = "NoError", message: str | None = None
) -> ET.Element:
    """Append an `<op>ResponseMessage` (Success for NoError, Error otherwise) and return it."""
    msg = sub(parent, m(f"{op}ResponseMessage"), ResponseClass="Success" if code == "NoError" else "Error")
    if code != "NoError":
        sub(msg, m("MessageText"), message or code)
    sub(msg, m("ResponseCode"), code)
    if code != "NoError":
        sub(msg, m("DescriptiveLinkKey"), "0")
    return msg


def parse_ext_uri(elem: ET.Element) -> dict[str, str]:
    """The attributes of a t:ExtendedFieldURI, in document order."""
    return dict(elem.attrib)


# --- parsing items ------------------------------------------------------------------------


def parse_ext_prop(elem: ET.Element) -> ExtProp:
    """A t:ExtendedProperty element as an ExtProp."""
    uri = elem.find(t("ExtendedFieldURI"))
    attrs = parse_ext_uri(uri) if uri is not None else {}
    values = elem.find(t("Values"))
    if values is not None:
        return ExtProp(attrs, values=[v.text or "" for v in values.findall(t("Value"))])
    return ExtProp(attrs, value=elem.findtext(t("Value")) or "")


def parse_recurrence(elem: ET.Element) -> Recurrence:
    """A t:Recurrence with a Daily or Weekly pattern; raises ValueError for other patterns."""
    daily = elem.find(t("DailyRecurrence"))
    weekly = elem.find(t("WeeklyRecurrence"))
    if daily is not None:
        rec = Recurrence("daily", interval=int(daily.findtext(t("Interval")) or 1))
    elif weekly is not None:
        names = (weekly.findtext(t("DaysOfWeek")) or "").split()
        rec = Recurrence(
            "weekly",
            interval=int(weekly.findtext(t("Interval")) or 1),
            weekdays=tuple(sorted(WEEKDAY_NAMES.index(n) for n in names if n in WEEKDAY_NAMES)) or None,
        )
    else:
        raise ValueError("only daily and weekly recurrences are supported")
    numbered = elem.find(t("NumberedRecurrence"))
    end_date = elem.find(t("EndDateRecurrence"))
    if numbered is not None:
        rec.count = int(numbered.findtext(t("NumberOfOccurrences")) or 1)
    elif end_date is not None:
        rec.until = parse_date(end_date.findtext(t("EndDate")) or "")
    return rec


def parse_item_fields(elem: ET.Element, zone: ZoneInfo) -> dict[str, object]:
    """The writable fields present in a request's t:CalendarItem, keyed by store attribute names.
    Start/End stay raw strings (under `_start`/`_end`) because they are read in the item's zone."""
    out: dict[str, object] = {}
    ext: list[ExtProp] = []
    for child in elem:
        name = child.tag.rsplit("}", 1)[-1]
        text = child.text or ""
        if name == "Subject":
            out["subject"] = text
        elif name == "Body":
            out["body"] = text
        elif name == "Sensitivity":
            out["sensitivity"] = text
        elif name == "Importance":
            out["importance"] = text
        elif name == "ReminderIsSet":
            out["reminder_is_set"] = parse_bool(text)
        elif name == "ReminderMinutesBeforeStart":
            out["reminder_minutes"] = int(text or 0)
        elif name == "ExtendedProperty":
            ext.append(parse_ext_prop(child))
        elif name == "Start":
            out["_start"] = text
        elif name == "End":
            out["_end"] = text
        elif name == "IsAllDayEvent":
            out["is_all_day"] = parse_bool(text)
        elif name == "LegacyFreeBusyStatus":
            out["free_busy"] = text
        elif name == "Location":
            out["location"] = text
        elif name == "UID":
            out["uid"] = text
        elif name == "Recurrence":
            out["recurrence"] = parse_recurrence(child)
        elif name == "StartTimeZone":
            out["start_tz"] = child.get("Id") or child.get("Name") or ""
        elif name == "EndTimeZone":
            out["end_tz"] = child.get("Id") or child.get("Name") or ""
        elif name == "MeetingTimeZone":
            out.setdefault("start_tz", child.get("TimeZoneName") or "")
    if ext:
        out["ext"] = ext
    return out
