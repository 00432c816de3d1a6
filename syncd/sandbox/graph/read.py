"""The reading Graph calls of the sandbox: the calendar, calendarView (series expanded),
event lists with the extended-property filter, one event, a series' instances, delta rounds
and translateExchangeIds. Each takes the shared `Api`, the request and the mailbox, and gives
the response; GraphError and BadQuery become error answers in the server.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from ..ews.model import Item, Occurrence
from ..httpbase import Request, Response
from .api import Api, GraphError, Rendering
from .convert import ews_to_graph_id, ext_value, graph_to_ews_id, ical_uid, parse_iso
from .delta import DeltaRound, compute_entries, in_window, paginate
from .query import BadQuery, EventFilter, parse_filter, query_value, top_of

__all__ = ["calendar", "calendar_view", "delta", "get_event", "instances", "list_events", "translate_ids"]

_DELTA_REFUSED = ("$select", "$expand", "$filter", "$orderby", "$search")


def calendar(api: Api, request: Request, mailbox: str) -> Response:
    how = api.rendering(request)
    cal_id = base64.urlsafe_b64encode(f"gF:{mailbox}:calendar".encode()).decode().rstrip("=")
    return api.answer(200, {
        "id": cal_id, "name": "Calendar", "color": "auto", "isDefaultCalendar": True, "canEdit": True,
        "canShare": True, "canViewPrivateItems": True, "changeKey": "CK0",
        "owner": {"name": mailbox.split("@")[0], "address": mailbox},
    }, how)


def _window(request: Request) -> tuple[datetime, datetime]:
    raw_start = query_value(request, "startDateTime")
    raw_end = query_value(request, "endDateTime")
    if not raw_start or not raw_end:
        raise GraphError(400, "ErrorInvalidParameter", "This request requires a time window specified by the "
                         "query string parameters StartDateTime and EndDateTime.")
    try:
        start, end = parse_iso(raw_start), parse_iso(raw_end)
    except ValueError:
        raise GraphError(400, "ErrorInvalidParameter", "The value of StartDateTime or EndDateTime is not a "
                         "valid date-time.") from None
    if end < start:
        raise GraphError(400, "ErrorInvalidParameter", "EndDateTime is earlier than StartDateTime.")
    return start, end


def _matches(api: Api, target: Item | Occurrence, flt: EventFilter | None) -> bool:
    if flt is None:
        return True
    if flt.prop_id is not None:
        return ext_value(target.ext, flt.prop_id) == flt.value
    item = target.master if isinstance(target, Occurrence) else target
    return ical_uid(item, api.options.ical_uid) == flt.ical_uid


def _page(api: Api, request: Request, how: Rendering, targets: list[Item | Occurrence]) -> Response:
    """One page of `targets` by $top/$skip (or Prefer odata.maxpagesize), with a nextLink."""
    size = top_of(request, api.options.page_size)
    if "$top" not in request.query and "odata.maxpagesize" in how.prefer:
        try:
            size = max(1, int(how.prefer["odata.maxpagesize"]))
        except ValueError:
            pass
        how.applied.append(f"odata.maxpagesize={size}")
    size = min(size, api.options.max_page_size)
    skip = top_of(request, 0, "$skip")
    chunk = targets[skip:skip + size]
    payload: dict[str, Any] = {"@odata.context": f"{api.base_url}/v1.0/$metadata#events",
                               "value": [api.render(t, how) for t in chunk]}
    if skip + size < len(targets):
        query = {k: v[0] for k, v in request.query.items() if k != "$skip"}
        query["$skip"] = str(skip + size)
        payload["@odata.nextLink"] = api.link(request.path, query)
    return api.answer(200, payload, how)


def calendar_view(api: Api, request: Request, mailbox: str) -> Response:
    how = api.rendering(request)
    start, end = _window(request)
    flt = parse_filter(request)
    found = [x for x in api.store.expand(mailbox, start, end) if in_window(x, start, end) and _matches(api, x, flt)]
    return _page(api, request, how, found)


def list_events(api: Api, request: Request, mailbox: str) -> Response:
    """Singles and series masters (never occurrences), optionally filtered."""
    how = api.rendering(request)
    flt = parse_filter(request)
    items = sorted(api.store.mailbox(mailbox).values(), key=lambda i: (i.start, i.key))
    return _page(api, request, how, [i for i in items if _matches(api, i, flt)])


def get_event(api: Api, request: Request, mailbox: str, event_id: str, *, calendar_scoped: bool) -> Response:
    how = api.rendering(request)
    allow_deleted = api.options.deleted_get == "found" and not calendar_scoped
    target = api.resolve(mailbox, event_id, allow_deleted=allow_deleted)
    payload = api.render(target, how)
    if isinstance(target, Item) and target.removed:
        payload["parentFolderId"] = "deleteditems"
    return api.answer(200, payload, how)


def instances(api: Api, request: Request, mailbox: str, event_id: str) -> Response:
    how = api.rendering(request)
    start, end = _window(request)
    master = api.resolve(mailbox, event_id)
    if not isinstance(master, Item) or master.recurrence is None:
        raise GraphError(400, "ErrorInvalidRequest", "The item is not a recurring series master.")
    found = [x for x in api.store.expand(mailbox, start, end)
             if isinstance(x, Occurrence) and x.master is master and in_window(x, start, end)]
    return _page(api, request, how, list(found))


def delta(api: Api, request: Request, mailbox: str, take_fault: Any) -> Response:
    """One page of a delta round. `take_fault(kind)` tells whether a data fault applies."""
    for name in _DELTA_REFUSED:
        if name in request.query:
            raise BadQuery(f"The query option '{name}' is not supported with delta queries.")
    how = api.rendering(request)
    skip = query_value(request, "$skiptoken")
    token = query_value(request, "$deltatoken")
    gone = GraphError(410, "SyncStateNotFound",
                      "The sync state generation is not found; generation=0;sandbox. Start a new round.")
    if skip is not None:
        found = api.tokens.page(skip, mailbox)
        if found is None:
            raise gone
        round_, index = found
    else:
        if token is not None:
            state = api.tokens.state(token, mailbox)
            if state is None:
                raise gone
            start, end, since = state.start, state.end, state.seq
        else:
            start, end = _window(request)
            since = None
        size = api.options.page_size
        if "odata.maxpagesize" in how.prefer:
            try:
                size = max(1, min(int(how.prefer["odata.maxpagesize"]), api.options.max_page_size))
                how.applied.append(f"odata.maxpagesize={size}")
            except ValueError:
                pass
        entries = compute_entries(
            api.store, mailbox, start, end, since, lambda t, sparse: api.render(t, how, sparse),
            occurrence_deletions=api.options.occurrence_deletions,
            tombstone_type=not take_fault("tombstone_without_type"),
        )
        pages = paginate(entries, size, duplicate=take_fault("duplicate_id"))
        round_, index = DeltaRound(mailbox, start, end, pages, api.store.seq), 0
    path = request.path
    payload: dict[str, Any] = {"@odata.context": f"{api.base_url}/v1.0/$metadata#Collection(event)",
                               "value": round_.pages[index]}
    if index + 1 < len(round_.pages):
        payload["@odata.nextLink"] = api.link(path, {"$skiptoken": api.tokens.skip_token(round_, index + 1)})
    else:
        payload["@odata.deltaLink"] = api.link(path, {"$deltatoken": api.tokens.delta_token(round_)})
    return api.answer(200, payload, how)


_ID_TYPES = ("ewsId", "restId", "restImmutableEntryId")


def translate_ids(api: Api, request: Request, mailbox: str) -> Response:
    """translateExchangeIds between ewsId and restId/restImmutableEntryId (the sandbox's Graph
    ids are immutable, so restId and restImmutableEntryId are the same)."""
    how = api.rendering(request)
    try:
        body = request.json()
    except ValueError:
        raise GraphError(400, "BadRequest", "The request body is not valid JSON.") from None
    source, target = body.get("sourceIdType"), body.get("targetIdType")
    ids = body.get("inputIds")
    if source not in _ID_TYPES or target not in _ID_TYPES or not isinstance(ids, list):
        raise GraphError(400, "ErrorInvalidParameter",
                         f"The sandbox translates between {', '.join(_ID_TYPES)} (inputIds, sourceIdType, targetIdType).")
    if len(ids) > 1000:
        raise GraphError(400, "ErrorInvalidParameter", "At most 1000 ids per request.")
    out = []
    for value in ids:
        entry: dict[str, str] = {"sourceId": str(value)}
        if source == target:
            translated: str | None = str(value)
        elif source == "ewsId":
            translated = ews_to_graph_id(str(value))
        else:
            translated = graph_to_ews_id(str(value)) if target == "ewsId" else str(value)
        owner = graph_to_ews_id(translated) if translated and target != "ewsId" else translated
        if translated and owner and _mailbox_of_ews(owner) == mailbox:
            entry["targetId"] = translated
        out.append(entry)
    return api.answer(200, {"@odata.context": f"{api.base_url}/v1.0/$metadata#Collection(convertIdResult)",
                            "value": out}, how)


def _mailbox_of_ews(ews_id: str) -> str | None:
    try:
        parts = base64.b64decode(ews_id.encode(), validate=True).decode().split(":")
    except ValueError:
        return None
    return parts[1] if len(parts) >= 3 else None
