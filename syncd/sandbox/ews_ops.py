"""The EWS operations of the sandbox: each takes the operation element of a SOAP body and
returns the ``m:<Op>Response`` element, reading and changing the `Store`.

Per-item problems become Error response messages (ErrorItemNotFound, ErrorIrresolvableConflict,
ErrorNonExistentMailbox, ...), one message per requested id in request order, as EWS does.
"""

from __future__ import annotations

import base64
import binascii
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from .ews_restrict import matches, sort_key
from .ews_soap import (
    RenderContext,
    Shape,
    m,
    parse_dt,
    parse_item_fields,
    parse_shape,
    render_item,
    response_message,
    sub,
    t,
)
from .ews_store import (
    ExtProp,
    Item,
    Occurrence,
    Store,
    StoreError,
    change_key,
    decode_id,
    encode_id,
    ext_key,
)

__all__ = ["OPERATIONS", "Context", "UnsupportedOperation", "first_mailbox"]

# EWS refuses CalendarView windows longer than two years.
MAX_VIEW = timedelta(days=731)

WELL_KNOWN = {
    "root": ("Folder", None, "Top of Information Store"),
    "msgfolderroot": ("Folder", None, "Top of Information Store"),
    "calendar": ("CalendarFolder", "IPF.Appointment", "Calendar"),
    "inbox": ("Folder", "IPF.Note", "Inbox"),
    "sentitems": ("Folder", "IPF.Note", "Sent Items"),
    "deleteditems": ("Folder", "IPF.Note", "Deleted Items"),
    "drafts": ("Folder", "IPF.Note", "Drafts"),
    "outbox": ("Folder", "IPF.Note", "Outbox"),
    "junkemail": ("Folder", "IPF.Note", "Junk Email"),
    "contacts": ("ContactsFolder", "IPF.Contact", "Contacts"),
    "tasks": ("TasksFolder", "IPF.Task", "Tasks"),
}


class UnsupportedOperation(Exception):
    """The request names an operation (or variant) the sandbox does not implement."""


@dataclass
class Context:
    """One request: the store, the mailbox named by headers, and the client's time zone."""

    store: Store
    mailbox: str | None
    zone: ZoneInfo


def first_mailbox(body: ET.Element) -> str | None:
    """The first t:Mailbox/t:EmailAddress in the body, if any."""
    for box in body.iter(t("Mailbox")):
        email = box.findtext(t("EmailAddress"))
        if email:
            return email.strip().lower()
    return None


def _folder(elem: ET.Element, ctx: Context) -> tuple[str, str]:
    """(mailbox, distinguished name) of a DistinguishedFolderId or FolderId; raises StoreError."""
    if elem.tag == t("DistinguishedFolderId"):
        email = elem.findtext(f"{t('Mailbox')}/{t('EmailAddress')}")
        mailbox = (email or ctx.mailbox or "").strip().lower()
        ctx.store.mailbox(mailbox)
        name = elem.get("Id", "")
        if name not in WELL_KNOWN:
            raise StoreError("ErrorFolderNotFound", f"The folder {name} was not found.")
        return mailbox, name
    parts = decode_id(elem.get("Id", ""))
    if parts is None or parts[0] != "F" or parts[2] not in WELL_KNOWN:
        raise StoreError("ErrorFolderNotFound", "The specified folder could not be found in the store.")
    ctx.store.mailbox(parts[1])
    return parts[1], parts[2]


def _folder_ids(container: ET.Element | None) -> list[ET.Element]:
    return list(container) if container is not None else []


def _children(parent: ET.Element, tag: str) -> list[ET.Element]:
    container = parent.find(tag)
    return list(container) if container is not None else []


def _resolve_ref(elem: ET.Element, ctx: Context) -> Item | Occurrence:
    """The item an ItemId / OccurrenceItemId / RecurringMasterItemId names; raises StoreError."""
    store = ctx.store
    if elem.tag == t("OccurrenceItemId"):
        master = store.resolve(elem.get("RecurringMasterId", ""))
        if not isinstance(master, Item):
            raise StoreError("ErrorItemNotFound", "The specified object was not found in the store.")
        return store.occurrence_by_index(master, int(elem.get("InstanceIndex", "0")))
    if elem.tag == t("RecurringMasterItemId"):
        target = store.resolve(elem.get("OccurrenceId", ""))
        master = target.master if isinstance(target, Occurrence) else target
        if master.recurrence is None:
            raise StoreError("ErrorItemNotFound", "The item is not an occurrence of a series.")
        return master
    return store.resolve(elem.get("Id", ""))


def render_context(store: Store, target: Item | Occurrence) -> RenderContext:
    """First/last/modified occurrences of a master, for rendering its series fields."""
    if isinstance(target, Occurrence) or target.recurrence is None:
        return RenderContext()
    live = [o for o in store.pattern(target) if o.original_start not in target.deleted]
    bounded = target.recurrence.count is not None or target.recurrence.until is not None
    return RenderContext(
        first=live[0] if live else None,
        last=live[-1] if live and bounded else None,
        modified=tuple(o for o in live if o.override is not None),
        first_local=target.start.astimezone(store.zone_of(target.start_tz)).date(),
    )


def _render(parent: ET.Element, store: Store, target: Item | Occurrence, shape: Shape) -> None:
    render_item(parent, target, shape, render_context(store, target))


# --- operations ---------------------------------------------------------------------------


def convert_id(op: ET.Element, ctx: Context) -> ET.Element:
    """Answer every id as malformed: all exchangelib needs is the version header around it."""
    resp = ET.Element(m("ConvertIdResponse"))
    msgs = sub(resp, m("ResponseMessages"))
    ids = op.find(m("SourceIds"))
    for _ in (list(ids) if ids is not None else [None]) or [None]:
        response_message(msgs, "ConvertId", "ErrorInvalidIdMalformed", "Id is malformed.")
    return resp


def get_folder(op: ET.Element, ctx: Context) -> ET.Element:
    resp = ET.Element(m("GetFolderResponse"))
    msgs = sub(resp, m("ResponseMessages"))
    for ref in _folder_ids(op.find(m("FolderIds"))):
        try:
            mailbox, name = _folder(ref, ctx)
        except StoreError as err:
            response_message(msgs, "GetFolder", err.code, err.message)
            continue
        msg = response_message(msgs, "GetFolder")
        tag, folder_class, display = WELL_KNOWN[name]
        folder = sub(sub(msg, m("Folders")), t(tag))
        sub(folder, t("FolderId"), Id=encode_id("F", mailbox, name), ChangeKey="AQAAAA==")
        if name not in ("root",):
            sub(folder, t("ParentFolderId"), Id=encode_id("F", mailbox, "root"), ChangeKey="AQAAAA==")
        if folder_class:
            sub(folder, t("FolderClass"), folder_class)
        sub(folder, t("DisplayName"), display)
        count = len(ctx.store.mailbox(mailbox)) if name == "calendar" else 0
        sub(folder, t("TotalCount"), str(count))
        sub(folder, t("ChildFolderCount"), "0" if name not in ("root", "msgfolderroot") else str(len(WELL_KNOWN) - 2))
        if name != "calendar":
            sub(folder, t("UnreadCount"), "0")
    return resp


def find_item(op: ET.Element, ctx: Context) -> ET.Element:
    resp = ET.Element(m("FindItemResponse"))
    msgs = sub(resp, m("ResponseMessages"))
    shape = parse_shape(op.find(m("ItemShape")))
    view = op.find(m("CalendarView"))
    paged = op.find(m("IndexedPageItemView"))
    if view is None and paged is None and op.find(m("FractionalPageItemView")) is not None:
        raise UnsupportedOperation("FractionalPageItemView")
    for ref in _folder_ids(op.find(m("ParentFolderIds"))):
        try:
            mailbox, name = _folder(ref, ctx)
            if view is not None:
                found, total, last = _calendar_view(view, mailbox, name, ctx)
                offset = None
            else:
                found, total, last, offset = _paged_view(op, paged, mailbox, name, ctx)
        except StoreError as err:
            response_message(msgs, "FindItem", err.code, err.message)
            continue
        msg = response_message(msgs, "FindItem")
        attrs = {"TotalItemsInView": str(total), "IncludesLastItemInRange": "true" if last else "false"}
        if offset is not None:
            attrs["IndexedPagingOffset"] = str(offset)
        items = sub(sub(msg, m("RootFolder"), **attrs), t("Items"))
        for target in found:
            _render(items, ctx.store, target, shape)
    return resp


def _calendar_view(
    view: ET.Element, mailbox: str, folder: str, ctx: Context
) -> tuple[list[Item | Occurrence], int, bool]:
    try:
        start = parse_dt(view.get("StartDate", ""), ctx.zone)
        end = parse_dt(view.get("EndDate", ""), ctx.zone)
    except ValueError:
        raise StoreError("ErrorInvalidRequest", "The CalendarView dates are invalid.") from None
    if end < start:
        raise StoreError("ErrorCalendarEndDateIsEarlierThanStartDate", "EndDate is earlier than StartDate.")
    if end - start > MAX_VIEW:
        raise StoreError(
            "ErrorCalendarViewRangeTooBig", "The time range of the CalendarView exceeds the maximum of 2 years."
        )
    found = ctx.store.expand(mailbox, start, end) if folder == "calendar" else []
    limit = view.get("MaxEntriesReturned")
    total = len(found)
    if limit is not None and total > int(limit):
        return found[: int(limit)], total, False
    return found, total, True


def _paged_view(
    op: ET.Element, paged: ET.Element | None, mailbox: str, folder: str, ctx: Context
) -> tuple[list[Item | Occurrence], int, bool, int]:
    items: list[Item | Occurrence] = list(ctx.store.mailbox(mailbox).values()) if folder == "calendar" else []
    restriction = op.find(m("Restriction"))
    if restriction is not None and len(restriction):
        items = [i for i in items if matches(restriction[0], i, ctx.zone)]
    items.sort(key=lambda i: (i.start, i.end, i.id))
    order = op.find(m("SortOrder"))
    if order is not None:
        for field_order in reversed(list(order)):
            uri = field_order[0] if len(field_order) else None
            items.sort(key=lambda i, u=uri: sort_key(u, i), reverse=field_order.get("Order") == "Descending")
    total = len(items)
    offset = int(paged.get("Offset", "0")) if paged is not None else 0
    limit = paged.get("MaxEntriesReturned") if paged is not None else None
    if paged is not None and paged.get("BasePoint") == "End":
        stop = total - offset
        begin = max(0, stop - int(limit)) if limit else 0
        page = items[begin:stop]
        return page, total, begin == 0, offset + len(page)
    page = items[offset: offset + int(limit)] if limit else items[offset:]
    return page, total, offset + len(page) >= total, offset + len(page)


def get_item(op: ET.Element, ctx: Context) -> ET.Element:
    resp = ET.Element(m("GetItemResponse"))
    msgs = sub(resp, m("ResponseMessages"))
    shape = parse_shape(op.find(m("ItemShape")))
    for ref in _children(op, m("ItemIds")):
        try:
            target = _resolve_ref(ref, ctx)
        except StoreError as err:
            response_message(msgs, "GetItem", err.code, err.message)
            continue
        msg = response_message(msgs, "GetItem")
        _render(sub(msg, m("Items")), ctx.store, target, shape)
    return resp


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
    for elem in _children(op, m("Items")):
        name = elem.tag.rsplit("}", 1)[-1]
        try:
            if folder_elem is not None and len(folder_elem):
                mailbox, _ = _folder(folder_elem[0], ctx)
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
                _respond(name, store.resolve(ref.get("Id", "")), elem.findtext(t("Body")) or "", ctx)
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
        start_tz=start_tz or _windows_of(ctx.zone), end_tz=end_tz or start_tz or _windows_of(ctx.zone),
        **fields,
    )
    item.ext = {p.key: p for p in ext}
    if uid:
        item.uid = str(uid)
    return item


def _windows_of(zone: ZoneInfo) -> str:
    from .ews_store import windows_zone

    return windows_zone(zone)


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
            target = _resolve_ref(ref, ctx)
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
            assert isinstance(fields["ext"], list)
            set_fields["ext"].extend(fields.pop("ext"))  # type: ignore[union-attr]
        set_fields.update(fields)
    start, end = _times(set_fields, target, ctx)
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
        if override.end < override.start:
            raise StoreError("ErrorCalendarEndDateIsEarlierThanStartDate", "End is earlier than Start.")
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
    if (start or item.start) > (end or item.end):
        raise StoreError("ErrorCalendarEndDateIsEarlierThanStartDate", "End is earlier than Start.")
    store.set_times(item, start, end)
    if item.is_all_day:
        store.snap_all_day(item)


def delete_item(op: ET.Element, ctx: Context) -> ET.Element:
    resp = ET.Element(m("DeleteItemResponse"))
    msgs = sub(resp, m("ResponseMessages"))
    for ref in _children(op, m("ItemIds")):
        try:
            target = _resolve_ref(ref, ctx)
        except StoreError as err:
            response_message(msgs, "DeleteItem", err.code, err.message)
            continue
        if isinstance(target, Occurrence):
            ctx.store.delete_occurrence(target)
        else:
            ctx.store.remove(target)
        response_message(msgs, "DeleteItem")
    return resp


def _parse_state(text: str | None) -> int | None:
    if not text or not text.strip():
        return None
    try:
        raw = base64.b64decode(text.strip().encode(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    if not raw.startswith("S:") or not raw[2:].isdigit():
        raise StoreError("ErrorInvalidSyncStateData", "Synchronization state data is corrupt or otherwise invalid.")
    return int(raw[2:])


def _state(seq: int) -> str:
    return base64.b64encode(f"S:{seq}".encode()).decode()


def sync_folder_items(op: ET.Element, ctx: Context) -> ET.Element:
    resp = ET.Element(m("SyncFolderItemsResponse"))
    msgs = sub(resp, m("ResponseMessages"))
    shape = parse_shape(op.find(m("ItemShape")))
    store = ctx.store
    try:
        folder_ref = op.find(m("SyncFolderId"))
        if folder_ref is None or not len(folder_ref):
            raise StoreError("ErrorInvalidRequest", "SyncFolderId is required.")
        mailbox, name = _folder(folder_ref[0], ctx)
        since = _parse_state(op.findtext(m("SyncState")))
        if since is not None and since > store.seq:
            raise StoreError("ErrorInvalidSyncStateData", "Synchronization state data is corrupt or otherwise invalid.")
        limit = max(1, min(512, int(op.findtext(m("MaxChangesReturned")) or 100)))
        changes = store.changes_since(mailbox, since) if name == "calendar" else []
    except StoreError as err:
        # Exchange keeps the (empty) sync elements in error answers; exchangelib reads SyncState first.
        msg = response_message(msgs, "SyncFolderItems", err.code, err.message)
        sub(msg, m("SyncState"), "")
        sub(msg, m("IncludesLastItemInRange"), "true")
        return resp
    truncated = len(changes) > limit
    page = changes[:limit]
    msg = response_message(msgs, "SyncFolderItems")
    sub(msg, m("SyncState"), _state(page[-1][1].seq if truncated else store.seq))
    sub(msg, m("IncludesLastItemInRange"), "false" if truncated else "true")
    out = sub(msg, m("Changes"))
    for kind, item in page:
        change = sub(out, t(kind))
        if kind == "Delete":
            sub(change, t("ItemId"), Id=item.id, ChangeKey=change_key(item.seq))
        else:
            _render(change, store, item, shape)
    return resp


OPERATIONS: dict[str, Callable[[ET.Element, Context], ET.Element]] = {
    "ConvertId": convert_id,
    "GetFolder": get_folder,
    "FindItem": find_item,
    "GetItem": get_item,
    "CreateItem": create_item,
    "UpdateItem": update_item,
    "DeleteItem": delete_item,
    "SyncFolderItems": sync_folder_items,
}
