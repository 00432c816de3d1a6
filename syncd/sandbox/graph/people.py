"""Acting as people on the Graph sandbox's mailboxes, and looking at them, for tests and the demo.

The same actions as `EwsSandbox` offers (book, move, cancel, a series, one occurrence moved or
cancelled, rename, a change key bumped by the Resource Booking Assistant), on the shared store,
so they work whichever protocol serves it. They take Graph ids or EWS ids and give Graph ids.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from ..ews.model import ExtProp, Item, Occurrence
from ..ews.people import StorePeople
from ..ews.store import Store
from .convert import decode_graph_id, graph_id, graph_to_ews_id, ical_uid

__all__ = ["People", "graph_prop_id"]


def graph_prop_id(prop: ExtProp) -> str:
    """The Graph id of an extended property stored from either protocol."""
    attrs = prop.attrs
    kind = attrs.get("PropertyType", "String")
    if "PropertyTag" in attrs:
        return f"{kind} 0x{int(attrs['PropertyTag'], 0):x}"
    guid = attrs.get("PropertySetId", attrs.get("DistinguishedPropertySetId", ""))
    if "PropertyName" in attrs:
        return f"{kind} {{{guid}}} Name {attrs['PropertyName']}"
    return f"{kind} {{{guid}}} Id 0x{int(attrs.get('PropertyId', '0'), 0):x}"


class People(StorePeople):
    """Mixed into GraphSandbox: needs `store`, `_lock` and `api`."""

    store: Store
    _lock: threading.RLock
    api: Any

    def _public_id(self, target: Item | Occurrence) -> str:
        return graph_id(target)

    def _store_id(self, item_id: str) -> str:
        return (graph_to_ews_id(item_id) if decode_graph_id(item_id) else None) or item_id

    # --- looking -------------------------------------------------------------------------------

    def items(self, mailbox: str) -> list[dict[str, Any]]:
        """The stored items (singles and masters, not expanded), ordered by start."""
        with self._lock:
            stored = sorted(self.store.mailbox(mailbox).values(), key=lambda i: (i.start, i.key))
            return [self._describe(i) for i in stored]

    def occurrences(self, mailbox: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """The expanded calendar view for this window (what calendarView shows)."""
        from .delta import in_window

        lo, hi = start.astimezone(UTC), end.astimezone(UTC)
        with self._lock:
            return [self._describe(x) for x in self.store.expand(mailbox, lo, hi) if in_window(x, lo, hi)]

    def _describe(self, target: Item | Occurrence) -> dict[str, Any]:
        item = target.master if isinstance(target, Occurrence) else target
        occurrence = isinstance(target, Occurrence)
        return {
            "id": graph_id(target),
            "ews_id": target.id,
            "change_key": target.change_key,
            "type": ("exception" if target.override else "occurrence") if isinstance(target, Occurrence)
            else "seriesMaster" if item.recurrence else "singleInstance",
            "series_master_id": graph_id(item) if occurrence else None,
            "original_start": target.original_start if isinstance(target, Occurrence) else None,
            "subject": target.subject,
            "start": target.start,
            "end": target.end,
            "is_all_day": item.is_all_day,
            "uid": item.uid,
            "ical_uid": ical_uid(item, self.api.options.ical_uid),
            "organizer": item.organizer_email,
            "sensitivity": item.sensitivity,
            "location": target.location,
            "extended_properties": {graph_prop_id(p): p.value for p in target.ext.values()},
            "transaction_id": self.api.transaction_of.get((item.mailbox, item.key)),
            "is_meeting": item.is_meeting,
            "source": item.source,
        }


