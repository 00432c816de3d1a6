"""Rendering calendar items for the EWS sandbox: the requested ItemShape (BaseShape plus
FieldURIs and ExtendedFieldURIs) decides which elements a t:CalendarItem carries, written in
XSD order. Fields the sandbox does not model are left out, which exchangelib reads as None.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import date, timedelta

from .model import Item, Occurrence, encode_id, ext_key
from .soap import WEEKDAY_NAMES, fmt_bool, fmt_dt, sub, t

__all__ = ["RenderContext", "Shape", "parse_shape", "render_item"]


# --- shapes -------------------------------------------------------------------------------

_DEFAULT_FIELDS = frozenset({
    "item:Subject", "item:Sensitivity", "item:Importance", "item:DateTimeCreated", "item:LastModifiedTime",
    "item:HasAttachments", "item:ItemClass", "calendar:UID", "calendar:Start", "calendar:End",
    "calendar:IsAllDayEvent", "calendar:LegacyFreeBusyStatus", "calendar:Location", "calendar:CalendarItemType",
    "calendar:Organizer", "calendar:MyResponseType", "calendar:IsCancelled", "calendar:IsRecurring",
    "calendar:IsMeeting", "calendar:Duration", "calendar:StartTimeZone", "calendar:EndTimeZone",
    "calendar:RecurrenceId", "calendar:OriginalStart", "calendar:AppointmentState",
})


@dataclass
class Shape:
    """Which fields a response should carry: FieldURIs and ExtendedFieldURI attribute sets."""

    fields: set[str] = field(default_factory=set)
    ext: list[dict[str, str]] = field(default_factory=list)


def parse_shape(shape_elem: ET.Element | None) -> Shape:
    """The requested ItemShape (BaseShape + AdditionalProperties)."""
    shape = Shape()
    if shape_elem is None:
        return shape
    base = (shape_elem.findtext(t("BaseShape")) or "IdOnly").strip()
    if base in ("Default", "AllProperties"):
        shape.fields |= _DEFAULT_FIELDS
        if base == "AllProperties":
            shape.fields |= {"item:Body", "calendar:Recurrence", "calendar:FirstOccurrence",
                             "calendar:LastOccurrence", "calendar:ModifiedOccurrences",
                             "calendar:DeletedOccurrences", "item:ParentFolderId"}
    props = shape_elem.find(t("AdditionalProperties"))
    if props is not None:
        for child in props:
            if child.tag == t("FieldURI"):
                shape.fields.add(child.get("FieldURI", ""))
            elif child.tag == t("ExtendedFieldURI"):
                shape.ext.append(dict(child.attrib))
    return shape


# --- rendering items --------------------------------------------------------------------


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    out = "P" + (f"{days}D" if days else "")
    clock = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "") + (f"{secs}S" if secs else "")
    return out + ("T" + clock if clock else ("" if days else "T0S"))


def _mailbox(parent: ET.Element, tag: str, name: str, email: str) -> None:
    box = sub(sub(parent, t(tag)), t("Mailbox"))
    sub(box, t("Name"), name)
    sub(box, t("EmailAddress"), email)
    sub(box, t("RoutingType"), "SMTP")
    sub(box, t("MailboxType"), "Mailbox")


def _occurrence_elem(parent: ET.Element, tag: str, occ: Occurrence) -> None:
    elem = sub(parent, t(tag))
    sub(elem, t("ItemId"), Id=occ.id, ChangeKey=occ.change_key)
    sub(elem, t("Start"), fmt_dt(occ.start))
    sub(elem, t("End"), fmt_dt(occ.end))
    sub(elem, t("OriginalStart"), fmt_dt(occ.original_start))


def _recurrence_elem(parent: ET.Element, master: Item, first_local: date) -> None:
    rec = master.recurrence
    assert rec is not None
    elem = sub(parent, t("Recurrence"))
    if rec.kind == "daily":
        pattern = sub(elem, t("DailyRecurrence"))
        sub(pattern, t("Interval"), str(rec.interval))
    else:
        pattern = sub(elem, t("WeeklyRecurrence"))
        sub(pattern, t("Interval"), str(rec.interval))
        days = sorted(set(rec.weekdays or (first_local.weekday(),)))
        sub(pattern, t("DaysOfWeek"), " ".join(WEEKDAY_NAMES[d] for d in days))
        sub(pattern, t("FirstDayOfWeek"), "Monday")
    if rec.count is not None:
        boundary = sub(elem, t("NumberedRecurrence"))
        sub(boundary, t("StartDate"), first_local.isoformat())
        sub(boundary, t("NumberOfOccurrences"), str(rec.count))
    elif rec.until is not None:
        boundary = sub(elem, t("EndDateRecurrence"))
        sub(boundary, t("StartDate"), first_local.isoformat())
        sub(boundary, t("EndDate"), rec.until.isoformat())
    else:
        boundary = sub(elem, t("NoEndRecurrence"))
        sub(boundary, t("StartDate"), first_local.isoformat())


@dataclass(frozen=True)
class RenderContext:
    """What rendering needs beyond the item: the expansion helpers of the store."""

    first: Occurrence | None = None
    last: Occurrence | None = None
    modified: tuple[Occurrence, ...] = ()
    first_local: date | None = None


def render_item(
    parent: ET.Element, target: Item | Occurrence, shape: Shape, ctx: RenderContext | None = None
) -> ET.Element:
    """Append a t:CalendarItem for `target` with the fields in `shape`, in XSD order."""
    ctx = ctx or RenderContext()
    occ = target if isinstance(target, Occurrence) else None
    item = occ.master if occ else target
    assert isinstance(item, Item)
    want = shape.fields
    elem = sub(parent, t("CalendarItem"))
    sub(elem, t("ItemId"), Id=target.id, ChangeKey=target.change_key)
    if "item:ParentFolderId" in want:
        sub(elem, t("ParentFolderId"), Id=encode_id("F", item.mailbox, "calendar"), ChangeKey="AQAAAA==")
    if "item:ItemClass" in want:
        sub(elem, t("ItemClass"), "IPM.Appointment")
    if "item:Subject" in want:
        sub(elem, t("Subject"), target.subject)
    if "item:Sensitivity" in want:
        sub(elem, t("Sensitivity"), item.sensitivity)
    if "item:Body" in want and item.body is not None:
        sub(elem, t("Body"), item.body, BodyType="Text")
    if "item:DateTimeReceived" in want:
        sub(elem, t("DateTimeReceived"), fmt_dt(item.created))
    if "item:Size" in want:
        sub(elem, t("Size"), str(512 + len(item.subject) + len(item.body or "")))
    if "item:Importance" in want:
        sub(elem, t("Importance"), item.importance)
    for tag in ("IsSubmitted", "IsDraft", "IsFromMe", "IsResend"):
        if f"item:{tag}" in want:
            sub(elem, t(tag), "false")
    if "item:IsUnmodified" in want:
        sub(elem, t("IsUnmodified"), fmt_bool(item.seq == item.created_seq))
    if "item:DateTimeSent" in want:
        sub(elem, t("DateTimeSent"), fmt_dt(item.created))
    if "item:DateTimeCreated" in want:
        sub(elem, t("DateTimeCreated"), fmt_dt(item.created))
    if "item:ReminderIsSet" in want:
        sub(elem, t("ReminderIsSet"), fmt_bool(item.reminder_is_set))
    if "item:ReminderMinutesBeforeStart" in want:
        sub(elem, t("ReminderMinutesBeforeStart"), str(item.reminder_minutes))
    if "item:HasAttachments" in want:
        sub(elem, t("HasAttachments"), "false")
    stored = target.ext
    for attrs in shape.ext:
        prop = stored.get(ext_key(attrs))
        if prop is None:
            continue
        ext_elem = sub(elem, t("ExtendedProperty"))
        sub(ext_elem, t("ExtendedFieldURI"), **prop.attrs)
        if prop.values is not None:
            values = sub(ext_elem, t("Values"))
            for value in prop.values:
                sub(values, t("Value"), value)
        else:
            sub(ext_elem, t("Value"), prop.value or "")
    if "item:Culture" in want:
        sub(elem, t("Culture"), "en-US")
    if "item:LastModifiedName" in want:
        sub(elem, t("LastModifiedName"), item.organizer_name)
    if "item:LastModifiedTime" in want:
        sub(elem, t("LastModifiedTime"), fmt_dt(item.modified))
    if "item:IsAssociated" in want:
        sub(elem, t("IsAssociated"), "false")
    if "calendar:UID" in want:
        sub(elem, t("UID"), item.uid)
    if occ is not None and "calendar:RecurrenceId" in want:
        sub(elem, t("RecurrenceId"), fmt_dt(occ.original_start))
    if "calendar:Start" in want:
        sub(elem, t("Start"), fmt_dt(target.start))
    if "calendar:End" in want:
        sub(elem, t("End"), fmt_dt(target.end))
    if occ is not None and "calendar:OriginalStart" in want:
        sub(elem, t("OriginalStart"), fmt_dt(occ.original_start))
    if "calendar:IsAllDayEvent" in want:
        sub(elem, t("IsAllDayEvent"), fmt_bool(item.is_all_day))
    if "calendar:LegacyFreeBusyStatus" in want:
        sub(elem, t("LegacyFreeBusyStatus"), item.free_busy)
    if "calendar:Location" in want and target.location is not None:
        sub(elem, t("Location"), target.location)
    if "calendar:IsMeeting" in want:
        sub(elem, t("IsMeeting"), fmt_bool(item.is_meeting))
    if "calendar:IsCancelled" in want:
        sub(elem, t("IsCancelled"), fmt_bool(item.is_cancelled))
    if "calendar:IsRecurring" in want:
        sub(elem, t("IsRecurring"), fmt_bool(item.recurrence is not None))
    if "calendar:MeetingRequestWasSent" in want:
        sub(elem, t("MeetingRequestWasSent"), "false")
    if "calendar:IsResponseRequested" in want:
        sub(elem, t("IsResponseRequested"), fmt_bool(item.is_meeting))
    if "calendar:CalendarItemType" in want:
        sub(elem, t("CalendarItemType"), target.kind)
    if "calendar:MyResponseType" in want:
        sub(elem, t("MyResponseType"), item.my_response)
    if "calendar:Organizer" in want:
        _mailbox(elem, "Organizer", item.organizer_name, item.organizer_email)
    if "calendar:ConflictingMeetingCount" in want:
        sub(elem, t("ConflictingMeetingCount"), "0")
    if "calendar:AdjacentMeetingCount" in want:
        sub(elem, t("AdjacentMeetingCount"), "0")
    if "calendar:Duration" in want:
        sub(elem, t("Duration"), _duration(target.end - target.start))
    if "calendar:AppointmentSequenceNumber" in want:
        sub(elem, t("AppointmentSequenceNumber"), "0")
    if "calendar:AppointmentState" in want:
        state = (1 | (0 if item.my_response == "Organizer" else 2)) if item.is_meeting else 0
        sub(elem, t("AppointmentState"), str(state | (4 if item.is_cancelled else 0)))
    if occ is None and item.recurrence is not None:
        if "calendar:Recurrence" in want and ctx.first_local is not None:
            _recurrence_elem(elem, item, ctx.first_local)
        if "calendar:FirstOccurrence" in want and ctx.first is not None:
            _occurrence_elem(elem, "FirstOccurrence", ctx.first)
        if "calendar:LastOccurrence" in want and ctx.last is not None:
            _occurrence_elem(elem, "LastOccurrence", ctx.last)
        if "calendar:ModifiedOccurrences" in want and ctx.modified:
            mods = sub(elem, t("ModifiedOccurrences"))
            for mod in ctx.modified:
                _occurrence_elem(mods, "Occurrence", mod)
        if "calendar:DeletedOccurrences" in want and item.deleted:
            dels = sub(elem, t("DeletedOccurrences"))
            for original in sorted(item.deleted):
                sub(sub(dels, t("DeletedOccurrence")), t("Start"), fmt_dt(original))
    if "calendar:StartTimeZone" in want:
        sub(elem, t("StartTimeZone"), Id=item.start_tz, Name=item.start_tz)
    if "calendar:EndTimeZone" in want:
        sub(elem, t("EndTimeZone"), Id=item.end_tz, Name=item.end_tz)
    if "calendar:AllowNewTimeProposal" in want:
        sub(elem, t("AllowNewTimeProposal"), "true")
    if "calendar:IsOnlineMeeting" in want:
        sub(elem, t("IsOnlineMeeting"), "false")
    return elem
