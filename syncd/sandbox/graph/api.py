"""What the Graph sandbox's read and write handlers share: the options that settle Graph's
open questions, the per-request context (store, rendering preferences), id resolution and
Graph's error shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from ..ews.model import Item, Occurrence, unstamp
from ..ews.store import Store
from ..httpbase import Request, Response, json_response
from .convert import decode_graph_id, render_event, zone_for
from .delta import DeltaTokens
from .limits import DATA_FAULTS, Faults
from .query import parse_expand, parse_select, prefer

__all__ = ["Api", "GraphError", "GraphOptions", "Rendering", "error"]


@dataclass
class GraphOptions:
    """How the sandbox answers where real Graph's behaviour is not documented (graph.md §11),
    and its limits. Every choice can be changed on a running sandbox (`GraphSandbox.options`).

    - `if_match`: "enforce" (a stale ``If-Match`` on PATCH → 412 ErrorIrresolvableConflict) or
      "ignore" (the PATCH wins, as with no If-Match).
    - `duplicate_transaction`: a POST repeating a `transactionId` whose event still exists:
      "replay" (201 with that same event, nothing new), "409" or "400" (ErrorDuplicateTransactionId).
    - `deleted_get`: after a delete, ``GET /users/{room}/events/{id}``: "404" or "found" (the item
      sits in Deleted Items and is still found by id; the calendar-scoped path 404s either way).
    - `occurrence_deletions`: what the next delta round shows after one occurrence is cancelled:
      "series" (the master and its remaining instances), "tombstone" (also ``@removed`` for the
      occurrence) or "none" (nothing at all).
    - `ical_uid`: the iCalUId of an item whose UID is not a GlobalObjectId (syncd's EWS-created
      events): "goid" (wrapped into a GlobalObjectId, as Exchange does) or "verbatim".
    - `out_of_scope`: the answer for a mailbox outside the app's RBAC scope: "403"
      (ErrorAccessDenied) or "404" (ErrorInvalidUser, as if it did not exist).
    - `concurrency_scope`: "app" (at most `concurrency_limit` requests in flight per app in total)
      or "mailbox" (per app and mailbox); over it: 429 MailboxConcurrency.
    - `mailbox_budget` requests per `budget_window` seconds per app and mailbox (None: no limit);
      over it: 429 ApplicationThrottled with Retry-After.
    - `page_size`: the default page of calendarView, events and delta (`$top` or
      ``Prefer: odata.maxpagesize`` change it, up to `max_page_size`).
    """

    if_match: str = "enforce"
    duplicate_transaction: str = "replay"
    deleted_get: str = "404"
    occurrence_deletions: str = "series"
    ical_uid: str = "goid"
    out_of_scope: str = "403"
    concurrency_scope: str = "app"
    concurrency_limit: int = 4
    mailbox_budget: int | None = None
    budget_window: float = 600.0
    page_size: int = 10
    max_page_size: int = 1000

    _CHOICES = {
        "if_match": ("enforce", "ignore"),
        "duplicate_transaction": ("replay", "409", "400"),
        "deleted_get": ("404", "found"),
        "occurrence_deletions": ("series", "tombstone", "none"),
        "ical_uid": ("goid", "verbatim"),
        "out_of_scope": ("403", "404"),
        "concurrency_scope": ("app", "mailbox"),
    }

    def __setattr__(self, name: str, value: Any) -> None:
        # Checked on every assignment: tests switch variants on a running sandbox.
        allowed = self._CHOICES.get(name)
        if allowed is not None and value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, not {value!r}")
        if name not in self.__dataclass_fields__:
            raise AttributeError(f"GraphOptions has no option {name!r}")
        super().__setattr__(name, value)


class GraphError(Exception):
    """An error answer: HTTP `status`, Graph error `code` and `message`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error(status: int, code: str, message: str) -> Response:
    return json_response(status, {"error": {"code": code, "message": message,
                                            "innerError": {"request-id": "sandbox"}}})


NOT_FOUND = (404, "ErrorItemNotFound", "The specified object was not found in the store.")


@dataclass
class Rendering:
    """How one request wants events: time zone, $select, expanded extended properties."""

    zone: ZoneInfo
    zone_label: str
    select: set[str] | None
    expand: list[str]
    prefer: dict[str, str]
    applied: list[str] = field(default_factory=list)


@dataclass
class Api:
    """The state the handlers share beyond the store."""

    store: Store
    options: GraphOptions
    base_url: str = ""
    tokens: DeltaTokens = field(default_factory=DeltaTokens)
    transactions: dict[tuple[str, str], str] = field(default_factory=dict)   # (mailbox, txid) -> key
    transaction_of: dict[tuple[str, str], str] = field(default_factory=dict)  # (mailbox, key) -> txid
    invitations: list[dict[str, Any]] = field(default_factory=list)
    faults: Faults | None = None

    def data_fault(self, mailbox: str) -> Callable[[str], bool]:
        """A check `kind -> bool` that spends an injected delta data fault when one applies."""
        faults = self.faults
        if faults is None:
            return lambda kind: False
        return lambda kind: kind in DATA_FAULTS and faults.take("delta", mailbox, (kind,)) is not None

    def rendering(self, request: Request) -> Rendering:
        prefs = prefer(request)
        label = prefs.get("outlook.timezone") or "UTC"
        zone = zone_for(label)
        applied = []
        if zone is None:
            zone, label = ZoneInfo("UTC"), "UTC"
        if "outlook.timezone" in prefs:
            applied.append(f'outlook.timezone="{label}"')
        if prefs.get("idtype", "").lower() == "immutableid":
            applied.append('IdType="ImmutableId"')
        return Rendering(zone, label, parse_select(request), parse_expand(request), prefs, applied)

    def render(self, target: Item | Occurrence, how: Rendering, sparse: bool = False) -> dict[str, Any]:
        item = target.master if isinstance(target, Occurrence) else target
        txid = self.transaction_of.get((item.mailbox, item.key)) if not isinstance(target, Occurrence) else None
        return render_event(
            self.store, target, zone=how.zone, zone_label=how.zone_label, select=None if sparse else how.select,
            expand_ext=[] if sparse else how.expand, sparse=sparse, uid_mode=self.options.ical_uid,
            extra={"transactionId": txid} if txid else None,
        )

    def answer(self, status: int, payload: Any, how: Rendering, headers: dict[str, str] | None = None) -> Response:
        response = json_response(status, payload, headers)
        if how.applied:
            response.headers["Preference-Applied"] = ", ".join(how.applied)
        return response

    def resolve(self, mailbox: str, event_id: str, *, allow_deleted: bool = False) -> Item | Occurrence:
        """The live item or occurrence `event_id` names in `mailbox`; raises GraphError (400 for
        an id that is not a Graph id, 404 when gone). `allow_deleted` also finds deleted items."""
        parts = decode_graph_id(event_id)
        if parts is None:
            raise GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
        if parts[1] != mailbox:
            raise GraphError(*NOT_FOUND)
        item = self.store.mailbox(mailbox).get(parts[2])
        if item is None and allow_deleted:
            item = self.store.tombstones.get(mailbox, {}).get(parts[2])
        if item is None:
            raise GraphError(*NOT_FOUND)
        if parts[0] == "gI":
            return item
        if item.recurrence is None or item.removed:
            raise GraphError(*NOT_FOUND)
        try:
            original = unstamp(parts[3])
        except ValueError:
            raise GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.") from None
        occ = self.store.occurrence_at(item, original)
        if occ is None:
            raise GraphError(*NOT_FOUND)
        return occ

    def link(self, path: str, query: dict[str, str]) -> str:
        encoded = urlencode(query, safe="$'(),:/", quote_via=quote)
        return f"{self.base_url}{path}?{encoded}"
