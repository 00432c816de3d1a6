"""The reading EWS operations of the sandbox: ConvertId, GetFolder, FindItem (CalendarView
and IndexedPageItemView), GetItem and SyncFolderItems. Each takes the operation element and
returns the ``m:<Op>Response`` element.
"""

from __future__ import annotations

import base64
import binascii
import functools
import xml.etree.ElementTree as ET
from datetime import timedelta

from .ops import (
    WELL_KNOWN,
    Context,
    UnsupportedOperation,
    children,
    folder_ids,
    folder_of,
    render,
    resolve_ref,
)
from .render import parse_shape
from .restrict import matches, sort_key
from .soap import m, parse_dt, response_message, sub, t
from .store import Item, Occurrence, StoreError, change_key, encode_id

__all__ = ["convert_id", "find_item", "get_folder", "get_item", "sync_folder_items"]

# EWS refuses CalendarView windows longer than two years.
MAX_VIEW = timedelta(days=731)

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
    for ref in folder_ids(op.find(m("FolderIds"))):
        try:
            mailbox, name = folder_of(ref, ctx)
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
    for ref in folder_ids(op.find(m("ParentFolderIds"))):
        try:
            mailbox, name = folder_of(ref, ctx)
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
            render(items, ctx.store, target, shape)
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
            items.sort(key=functools.partial(sort_key, uri), reverse=field_order.get("Order") == "Descending")
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
    for ref in children(op, m("ItemIds")):
        try:
            target = resolve_ref(ref, ctx)
        except StoreError as err:
            response_message(msgs, "GetItem", err.code, err.message)
            continue
        msg = response_message(msgs, "GetItem")
        render(sub(msg, m("Items")), ctx.store, target, shape)
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
        mailbox, name = folder_of(folder_ref[0], ctx)
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
    sub(msg, m("SyncState"), _state(changes[limit][0] - 1 if truncated else store.seq))
    sub(msg, m("IncludesLastItemInRange"), "false" if truncated else "true")
    out = sub(msg, m("Changes"))
    for _, kind, item in page:
        change = sub(out, t(kind))
        if kind == "Delete":
            sub(change, t("ItemId"), Id=item.id, ChangeKey=change_key(item.seq))
        else:
            render(change, store, item, shape)
    return resp
