"""The writing EWS operations of the sandbox: CreateItem (calendar items and meeting
responses), UpdateItem and DeleteItem. Each takes the operation element and returns the
``m:<Op>Response`` element.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

from .ops import Context, children, folder_of, resolve_ref
from .soap import m, parse_dt, parse_item_fields, response_message, sub, t
from .store import ExtProp, Item, Occurrence, StoreError, ext_key, windows_zone

__all__ = ["create_item", "delete_item", "update_item"]

def _times(fields: dict[str, object], target: Item | Occurrence, ctx: Context) -> tuple[datetime | None, ...]:
    item = target.master if isinstance(target, Occurrence) else target
    zone = ctx.store.zone_of(str(fields.get("start_tz") or item.start_tz))
    out: list[datetime | None] = []
    for key in ("_start", "_end"):
        raw = fields.get(key)
        try:
            out.append(parse_dt(str(raw), zone) if raw else None)
        except ValueError:
            raise StoreError("ErrorInvalidValueForProperty", f"Invalid datetime {raw!r}.") from None
    return tuple(out)


def create_item(op: ET.Element, ctx: Context) -> ET.Element:
    resp = ET.Element(m("CreateItemResponse"))
    msgs = sub(resp, m("ResponseMessages"))
    store = ctx.store
    folder_elem = op.find(m("SavedItemFolderId"))
    for elem in children(op, m("Items")):
        name = elem.tag.rsplit("}", 1)[-1]
        try:
            if folder_elem is not None and len(folder_elem):
                mailbox, _ = folder_of(folder_elem[0], ctx)
            else:
                mailbox = ctx.mailbox or ""
                store.mailbox(mailbox)
            if name == "CalendarItem":
                item = _create_calendar_item(elem, mailbox, ctx)
                msg = response_message(msgs, "CreateItem")
                sub(sub(sub(msg, m("Items")), t("CalendarItem")), t("ItemId"), Id=item.id, ChangeKey=item.change_key)
            elif name in ("DeclineItem", "AcceptItem", "TentativelyAcceptItem", "CancelCalendarItem"):
                ref = elem.find(t("ReferenceItemId"))
                if ref is None:
                    raise StoreError("ErrorInvalidReferenceItem", "ReferenceItemId is missing.")
                target = store.resolve(ref.get("Id", ""))
                sent_key = ref.get("ChangeKey")
                if sent_key and sent_key != target.change_key:
                    # Answering an outdated version of a meeting is refused, as Exchange does.
                    raise StoreError("ErrorStaleObject", "The item has been changed since it was read.")
                _respond(name, target, elem.findtext(t("Body")) or "", ctx)
                sub(response_message(msgs, "CreateItem"), m("Items"))
            else:
                raise StoreError("ErrorInvalidItemForOperation", f"The sandbox cannot create {name} items.")
        except StoreError as err:
            response_message(msgs, "CreateItem", err.code, err.message)
    return resp


def _create_calendar_item(elem: ET.Element, mailbox: str, ctx: Context) -> Item:
    fields = parse_item_fields(elem, ctx.zone)
    start_tz = str(fields.pop("start_tz", "") or "") or None
    end_tz = str(fields.pop("end_tz", "") or "") or start_tz
    zone = ctx.store.zone_of(start_tz) if start_tz else ctx.zone
    raw_start, raw_end = fields.pop("_start", None), fields.pop("_end", None)
    if not raw_start or not raw_end:
        raise StoreError("ErrorMissingInformation", "Start and End are required.")
    try:
        start, end = parse_dt(str(raw_start), zone), parse_dt(str(raw_end), zone)
    except ValueError:
        raise StoreError("ErrorInvalidValueForProperty", "Start or End is not a valid datetime.") from None
    ext = fields.pop("ext", [])
    uid = fields.pop("uid", None)
    subject = str(fields.pop("subject", "") or "")
    assert isinstance(ext, list)
    item = ctx.store.create(
        mailbox, subject=subject, start=start, end=end,
        start_tz=start_tz or windows_zone(ctx.zone), end_tz=end_tz or start_tz or windows_zone(ctx.zone),
        **fields,  # type: ignore[arg-type]  # parsed item fields, checked by the store
    )
    item.ext = {p.key: p for p in ext}
    if uid:
        item.uid = str(uid)
    return item


def _respond(kind: str, target: Item | Occurrence, reason: str, ctx: Context) -> None:
    """What the room's answer to a meeting does: a decline or cancel removes it (the Resource
    Booking Assistant deletes declined meetings), an accept records the response."""
    store = ctx.store
    item = target.master if isinstance(target, Occurrence) else target
    if kind in ("AcceptItem", "TentativelyAcceptItem"):
        item.my_response = "Accept" if kind == "AcceptItem" else "Tentative"
        store.touch(item)
        return
    if kind == "DeclineItem":
        store.declines.append({
            "mailbox": item.mailbox,
            "item_id": target.id,
            "master_id": item.id if isinstance(target, Occurrence) else None,
            "subject": target.subject,
            "start": target.start,
            "end": target.end,
            "organizer": item.organizer_email,
            "reason": reason,
            "time": datetime.now(UTC),
        })
    if isinstance(target, Occurrence):
        if kind == "DeclineItem":
            item.declined_occurrences.append(target.original_start)
        store.delete_occurrence(target)
    else:
        item.declined_to = item.organizer_email if kind == "DeclineItem" else None
        store.remove(item)


def update_item(op: ET.Element, ctx: Context) -> ET.Element:
    resp = ET.Element(m("UpdateItemResponse"))
    msgs = sub(resp, m("ResponseMessages"))
    resolution = op.get("ConflictResolution", "AutoResolve")
    changes = op.find(m("ItemChanges"))
    for change in list(changes if changes is not None else []):
        ref = next((c for c in change if c.tag in (t("ItemId"), t("OccurrenceItemId"), t("RecurringMasterItemId"))),
                   None)
        try:
            if ref is None:
                raise StoreError("ErrorInvalidIdMalformed", "Id is malformed.")
            target = resolve_ref(ref, ctx)
            sent_key = ref.get("ChangeKey")
            if resolution == "NeverOverwrite" and sent_key and sent_key != target.change_key:
                raise StoreError(
                    "ErrorIrresolvableConflict",
                    "The send or update operation could not be performed because the change key passed in the "
                    "request does not match the current change key for the item.",
                )
            _apply_updates(target, change.find(t("Updates")), ctx)
        except StoreError as err:
            response_message(msgs, "UpdateItem", err.code, err.message)
            continue
        msg = response_message(msgs, "UpdateItem")
        returned_id = ref.get("Id") if ref.tag == t("ItemId") else target.id
        fresh = ctx.store.resolve(target.id)
        sub(sub(sub(msg, m("Items")), t("CalendarItem")), t("ItemId"), Id=returned_id or target.id,
            ChangeKey=fresh.change_key)
        sub(sub(msg, m("ConflictResults")), t("Count"), "0")
    return resp


def _apply_updates(target: Item | Occurrence, updates: ET.Element | None, ctx: Context) -> None:
    set_fields: dict[str, object] = {}
    deleted_uris: list[str] = []
    deleted_ext: list[dict[str, str]] = []
    for upd in list(updates if updates is not None else []):
        kind = upd.tag.rsplit("}", 1)[-1]
        uri = upd.find(t("FieldURI"))
        ext_uri = upd.find(t("ExtendedFieldURI"))
        if kind == "DeleteItemField":
            if uri is not None:
                deleted_uris.append(uri.get("FieldURI", ""))
            elif ext_uri is not None:
                deleted_ext.append(dict(ext_uri.attrib))
            continue
        holder = upd.find(t("CalendarItem"))
        if holder is None:
            holder = next((c for c in upd if c.tag not in (t("FieldURI"), t("ExtendedFieldURI"),
                                                           t("IndexedFieldURI"))), None)
        if holder is None:
            continue
        fields = parse_item_fields(holder, ctx.zone)
        if "ext" in fields:
            set_fields.setdefault("ext", [])
            added = fields.pop("ext")
            assert isinstance(added, list)
            existing = set_fields["ext"]
            assert isinstance(existing, list)
            existing.extend(added)
        set_fields.update(fields)
    start, end = _times(set_fields, target, ctx)
    if (start or target.start) > (end or target.end):
        raise StoreError("ErrorCalendarEndDateIsEarlierThanStartDate", "End is earlier than Start.")
    store = ctx.store
    ext: list[ExtProp] = list(set_fields.pop("ext", []))  # type: ignore[call-overload]
    if isinstance(target, Occurrence):
        override = store.touch_occurrence(target)
        override.start = start or override.start
        override.end = end or override.end
        if "subject" in set_fields:
            override.subject = str(set_fields["subject"])
        if "location" in set_fields:
            override.location = str(set_fields["location"])
        if ext or deleted_ext:
            merged = dict(override.ext if override.ext is not None else target.master.ext)
            merged.update({p.key: p for p in ext})
            for attrs in deleted_ext:
                merged.pop(ext_key(attrs), None)
            override.ext = merged
        return
    item = target
    for name in ("subject", "body", "sensitivity", "importance", "reminder_is_set", "reminder_minutes",
                 "is_all_day", "free_busy", "location", "start_tz", "end_tz", "recurrence"):
        if name in set_fields:
            setattr(item, name, set_fields[name])
    for uri_name in deleted_uris:
        if uri_name == "calendar:Location":
            item.location = None
        elif uri_name == "item:Body":
            item.body = None
    item.ext.update({p.key: p for p in ext})
    for attrs in deleted_ext:
        item.ext.pop(ext_key(attrs), None)
    if "recurrence" in set_fields and item.recurrence is not None:
        # A new pattern replaces the series: its exceptions and deletions no longer apply.
        item.overrides.clear()
        item.deleted.clear()
        store.snap_master(item)
    store.set_times(item, start, end)
    if item.is_all_day:
        store.snap_all_day(item)


def delete_item(op: ET.Element, ctx: Context) -> ET.Element:
    resp = ET.Element(m("DeleteItemResponse"))
    msgs = sub(resp, m("ResponseMessages"))
    for ref in children(op, m("ItemIds")):
        try:
            target = resolve_ref(ref, ctx)
        except StoreError as err:
            response_message(msgs, "DeleteItem", err.code, err.message)
            continue
        if isinstance(target, Occurrence):
            ctx.store.delete_occurrence(target)
        else:
            ctx.store.remove(target)
        response_message(msgs, "DeleteItem")
    return resp
