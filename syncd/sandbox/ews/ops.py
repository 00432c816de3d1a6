"""What the EWS operations of the sandbox share (ews_read, ews_write): the request context,
folder and item-id resolution, and rendering with series information.

Per-item problems become Error response messages (ErrorItemNotFound, ErrorIrresolvableConflict,
ErrorNonExistentMailbox, ...), one message per requested id in request order, as EWS does.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from .render import RenderContext, Shape, render_item
from .soap import t
from .store import Item, Occurrence, Store, StoreError, decode_id

__all__ = [
    "WELL_KNOWN",
    "Context",
    "UnsupportedOperation",
    "children",
    "first_mailbox",
    "folder_ids",
    "folder_of",
    "render",
    "render_context",
    "resolve_ref",
]

# Distinguished folders: (element tag, FolderClass, DisplayName).
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


def folder_of(elem: ET.Element, ctx: Context) -> tuple[str, str]:
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


def folder_ids(container: ET.Element | None) -> list[ET.Element]:
    return list(container) if container is not None else []


def children(parent: ET.Element, tag: str) -> list[ET.Element]:
    container = parent.find(tag)
    return list(container) if container is not None else []


def resolve_ref(elem: ET.Element, ctx: Context) -> Item | Occurrence:
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


def render(parent: ET.Element, store: Store, target: Item | Occurrence, shape: Shape) -> None:
    render_item(parent, target, shape, render_context(store, target))
