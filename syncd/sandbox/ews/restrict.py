"""FindItem restrictions for the EWS sandbox: And/Or/Not, IsEqualTo, IsNotEqualTo,
IsGreaterThan(OrEqualTo), IsLessThan(OrEqualTo), Exists and Contains over the calendar fields
syncd filters on and over extended properties. Unknown fields have no value (so comparisons
on them are false), which is how EWS treats a property an item does not carry.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from .soap import parse_bool, parse_dt, t
from .store import Item, Occurrence, ext_key

__all__ = ["field_value", "matches", "sort_key"]

_DATETIME_FIELDS = {"calendar:Start", "calendar:End", "item:DateTimeCreated", "item:LastModifiedTime",
                     "item:DateTimeReceived", "item:DateTimeSent"}
_BOOL_FIELDS = {"calendar:IsAllDayEvent", "calendar:IsCancelled", "calendar:IsMeeting", "calendar:IsRecurring"}
_COMPARE = {
    "IsEqualTo": lambda a, b: a == b,
    "IsNotEqualTo": lambda a, b: a != b,
    "IsGreaterThan": lambda a, b: a > b,
    "IsGreaterThanOrEqualTo": lambda a, b: a >= b,
    "IsLessThan": lambda a, b: a < b,
    "IsLessThanOrEqualTo": lambda a, b: a <= b,
}


def field_value(uri: ET.Element | None, target: Item | Occurrence) -> Any:
    """The value of the field `uri` (FieldURI or ExtendedFieldURI element) on `target`, or None."""
    if uri is None:
        return None
    item = target.master if isinstance(target, Occurrence) else target
    if uri.tag == t("ExtendedFieldURI"):
        prop = target.ext.get(ext_key(dict(uri.attrib)))
        if prop is None:
            return None
        return prop.value if prop.values is None else prop.values
    name = uri.get("FieldURI", "")
    simple: dict[str, Any] = {
        "item:Subject": target.subject,
        "item:Sensitivity": item.sensitivity,
        "item:Importance": item.importance,
        "item:ItemClass": "IPM.Appointment",
        "item:Body": item.body,
        "item:DateTimeCreated": item.created,
        "item:DateTimeReceived": item.created,
        "item:DateTimeSent": item.created,
        "item:LastModifiedTime": item.modified,
        "calendar:Start": target.start,
        "calendar:End": target.end,
        "calendar:UID": item.uid,
        "calendar:Location": target.location,
        "calendar:IsAllDayEvent": item.is_all_day,
        "calendar:IsCancelled": item.is_cancelled,
        "calendar:IsMeeting": item.is_meeting,
        "calendar:IsRecurring": item.recurrence is not None,
        "calendar:CalendarItemType": target.kind,
        "calendar:LegacyFreeBusyStatus": item.free_busy,
        "calendar:MyResponseType": item.my_response,
        "calendar:Organizer": item.organizer_email,
    }
    return simple.get(name)


def _constant(uri: ET.Element | None, text: str, zone: ZoneInfo) -> Any:
    name = uri.get("FieldURI", "") if uri is not None else ""
    if name in _DATETIME_FIELDS:
        return parse_dt(text, zone)
    if name in _BOOL_FIELDS:
        return parse_bool(text)
    return text


def _operand(expr: ET.Element) -> ET.Element | None:
    return next((c for c in expr if c.tag in (t("FieldURI"), t("ExtendedFieldURI"), t("IndexedFieldURI"))), None)


def matches(expr: ET.Element, target: Item | Occurrence, zone: ZoneInfo) -> bool:
    """Whether `target` satisfies the restriction expression `expr`; raises ValueError on bad constants."""
    name = expr.tag.rsplit("}", 1)[-1]
    if name == "And":
        return all(matches(c, target, zone) for c in expr)
    if name == "Or":
        return any(matches(c, target, zone) for c in expr)
    if name == "Not":
        return not matches(expr[0], target, zone)
    uri = _operand(expr)
    value = field_value(uri, target)
    if name == "Exists":
        return value is not None
    if name == "Contains":
        constant = expr.find(t("Constant"))
        needle = constant.get("Value", "") if constant is not None else ""
        if not isinstance(value, str):
            return False
        if "IgnoreCase" in expr.get("ContainmentComparison", ""):
            value, needle = value.lower(), needle.lower()
        mode = expr.get("ContainmentMode", "Substring")
        if mode == "FullString":
            return value == needle
        if mode == "Prefixed":
            return value.startswith(needle)
        return needle in value
    compare = _COMPARE.get(name)
    if compare is None:
        raise ValueError(f"unsupported restriction {name}")
    other = expr.find(t("FieldURIOrConstant"))
    if other is None or not len(other):
        return False
    if other[0].tag == t("Constant"):
        expected = _constant(uri, other[0].get("Value", ""), zone)
    else:
        expected = field_value(other[0], target)
    if value is None or expected is None:
        return name == "IsNotEqualTo" and value != expected
    if isinstance(value, list):
        return any(compare(v, expected) for v in value)
    try:
        return bool(compare(value, expected))
    except TypeError:
        return False


def sort_key(uri: ET.Element | None, target: Item | Occurrence) -> tuple[int, Any]:
    """A sort key for SortOrder on `uri`; items without the field sort first."""
    value = field_value(uri, target)
    if value is None:
        return (0, "")
    if isinstance(value, datetime):
        return (1, value.timestamp())
    return (1, value)
