"""The writing Graph calls of the sandbox: create (with transactionId), update (with If-Match),
delete, and a room's answer to a meeting (decline, accept, tentativelyAccept).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

from ..ews.model import Item, Occurrence, Recurrence
from ..httpbase import Request, Response
from .api import Api, GraphError
from .convert import graph_id, parse_datetime_tz, set_ext

__all__ = ["create_event", "delete_event", "respond", "update_event"]

_SENSITIVITY = {"normal": "Normal", "personal": "Personal", "private": "Private", "confidential": "Confidential"}
_SHOW_AS = {"free": "Free", "tentative": "Tentative", "busy": "Busy", "oof": "OOF",
            "workingelsewhere": "WorkingElsewhere", "unknown": "NoData"}
_IMPORTANCE = {"low": "Low", "normal": "Normal", "high": "High"}
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _body(request: Request) -> dict[str, Any]:
    try:
        body = request.json()
    except ValueError:
        raise GraphError(400, "BadRequest", "Unable to read JSON request payload.") from None
    if not isinstance(body, dict):
        raise GraphError(400, "BadRequest", "The request body must be a JSON object.")
    return body


def _bad(message: str) -> GraphError:
    return GraphError(400, "ErrorInvalidRequest", message)


def _choice(table: dict[str, str], value: Any, name: str) -> str:
    if not isinstance(value, str) or value.lower() not in table:
        raise _bad(f"Invalid value '{value}' for {name}.")
    return table[value.lower()]


def _fields(body: dict[str, Any]) -> dict[str, Any]:
    """The store fields a create or update body sets (times excluded)."""
    out: dict[str, Any] = {}
    if "subject" in body:
        out["subject"] = str(body["subject"] or "")
    if isinstance(body.get("body"), dict):
        out["body"] = str(body["body"].get("content") or "")
    if "sensitivity" in body:
        out["sensitivity"] = _choice(_SENSITIVITY, body["sensitivity"], "sensitivity")
    if "showAs" in body:
        out["free_busy"] = _choice(_SHOW_AS, body["showAs"], "showAs")
    if "importance" in body:
        out["importance"] = _choice(_IMPORTANCE, body["importance"], "importance")
    if "isReminderOn" in body:
        out["reminder_is_set"] = bool(body["isReminderOn"])
    if "reminderMinutesBeforeStart" in body:
        out["reminder_minutes"] = int(body["reminderMinutesBeforeStart"] or 0)
    if isinstance(body.get("location"), dict):
        out["location"] = body["location"].get("displayName") or None
    if "isAllDay" in body:
        out["is_all_day"] = bool(body["isAllDay"])
    return out


def _times(body: dict[str, Any]) -> tuple[datetime | None, str | None, datetime | None, str | None]:
    try:
        start, start_tz = parse_datetime_tz(body["start"]) if "start" in body else (None, None)
        end, end_tz = parse_datetime_tz(body["end"]) if "end" in body else (None, None)
    except ValueError as exc:
        raise _bad(f"Invalid start or end: {exc}.") from None
    return start, start_tz, end, end_tz


def _recurrence(value: Any) -> Recurrence | None:
    if value is None:
        return None
    try:
        pattern, rng = value["pattern"], value["range"]
        kind = pattern["type"]
        if kind not in ("daily", "weekly"):
            raise _bad(f"The sandbox supports daily and weekly recurrences, not '{kind}'.")
        weekdays = tuple(_WEEKDAYS.index(d.lower()) for d in pattern.get("daysOfWeek") or ()) or None
        until = date.fromisoformat(rng["endDate"]) if rng.get("type") == "endDate" else None
        count = int(rng["numberOfOccurrences"]) if rng.get("type") == "numbered" else None
        return Recurrence(kind, interval=int(pattern.get("interval") or 1), count=count, until=until,
                          weekdays=weekdays if kind == "weekly" else None)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, GraphError):
            raise
        raise _bad(f"Invalid recurrence: {exc}.") from None


def _ext(body: dict[str, Any]) -> list[tuple[str, str]]:
    props = body.get("singleValueExtendedProperties") or []
    if not isinstance(props, list):
        raise _bad("singleValueExtendedProperties must be a list.")
    out = []
    for prop in props:
        if not isinstance(prop, dict) or not isinstance(prop.get("id"), str):
            raise _bad("Each extended property needs an id and a value.")
        out.append((prop["id"], str(prop.get("value") or "")))
    return out


def _invite(api: Api, mailbox: str, target: Item | Occurrence, body: dict[str, Any]) -> bool:
    attendees = body.get("attendees") or []
    for attendee in attendees:
        address = ((attendee or {}).get("emailAddress") or {}).get("address")
        api.invitations.append({"mailbox": mailbox, "event_id": graph_id(target), "to": address,
                                "subject": target.subject, "time": datetime.now(UTC)})
    return bool(attendees)


def create_event(api: Api, request: Request, mailbox: str) -> Response:
    how = api.rendering(request)
    body = _body(request)
    store = api.store
    txid = body.get("transactionId")
    if txid is not None and not isinstance(txid, str):
        raise _bad("transactionId must be a string.")
    if txid:
        key = api.transactions.get((mailbox, txid))
        existing = store.mailbox(mailbox).get(key) if key else None
        if existing is not None:
            if api.options.duplicate_transaction == "replay":
                return api.answer(201, api.render(existing, how), how)
            raise GraphError(int(api.options.duplicate_transaction), "ErrorDuplicateTransactionId",
                             "An event with this transactionId already exists.")
    start, start_tz, end, end_tz = _times(body)
    if start is None or end is None:
        raise GraphError(400, "ErrorPropertyValidationFailure", "Start and End are required.")
    if end < start:
        raise GraphError(400, "ErrorCalendarEndDateIsEarlierThanStartDate", "The end date is earlier than the start.")
    fields = _fields(body)
    if fields.get("is_all_day") and (start.astimezone(store.zone_of(start_tz)).time() != time(0)
                                     or end.astimezone(store.zone_of(end_tz)).time() != time(0)):
        raise GraphError(400, "ErrorPropertyValidationFailure",
                         "An all-day event must start and end at midnight in its time zone.")
    ext = _ext(body)
    subject = fields.pop("subject", "")
    item = store.create(
        mailbox, subject=subject, start=start, end=end, start_tz=start_tz, end_tz=end_tz or start_tz,
        organizer_email=mailbox, source="graph", my_response="Organizer",
        recurrence=_recurrence(body.get("recurrence")), **fields,
    )
    for prop_id, value in ext:
        set_ext(item.ext, prop_id, value)
    if _invite(api, mailbox, item, body):
        item.is_meeting = True
    if txid:
        api.transactions[(mailbox, txid)] = item.key
        api.transaction_of[(mailbox, item.key)] = txid
    location = f"{api.base_url}/v1.0/users/{mailbox}/events/{graph_id(item)}"
    return api.answer(201, api.render(item, how), how, {"Location": location})


def _etag_matches(header: str, change_key: str) -> bool:
    value = header.strip()
    if value == "*":
        return True
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"') == change_key


def update_event(api: Api, request: Request, mailbox: str, event_id: str) -> Response:
    how = api.rendering(request)
    target = api.resolve(mailbox, event_id)
    body = _body(request)
    if_match = request.header("If-Match")
    if if_match and api.options.if_match == "enforce" and not _etag_matches(if_match, target.change_key):
        raise GraphError(412, "ErrorIrresolvableConflict",
                         "The send or update operation could not be performed because the change key passed in "
                         "the request does not match the current change key for the item.")
    if "transactionId" in body:
        raise _bad("transactionId cannot be changed after the event was created.")
    store = api.store
    start, _stz, end, _etz = _times(body)
    fields = _fields(body)
    ext = _ext(body)
    if (start or target.start) > (end or target.end):
        raise GraphError(400, "ErrorCalendarEndDateIsEarlierThanStartDate", "The end date is earlier than the start.")
    if isinstance(target, Occurrence):
        override = store.touch_occurrence(target)
        override.start = start or override.start
        override.end = end or override.end
        if "subject" in fields:
            override.subject = fields["subject"]
        if "location" in fields:
            override.location = fields["location"]
        if ext:
            override.ext = dict(override.ext if override.ext is not None else target.master.ext)
            for prop_id, value in ext:
                set_ext(override.ext, prop_id, value)
        _invite(api, mailbox, target, body)
        fresh = store.occurrence_at(target.master, target.original_start)
        assert fresh is not None
        return api.answer(200, api.render(fresh, how), how)
    item = target
    for name, value in fields.items():
        setattr(item, name, value)
    for prop_id, value in ext:
        set_ext(item.ext, prop_id, value)
    if "recurrence" in body:
        item.recurrence = _recurrence(body["recurrence"])
        item.overrides.clear()
        item.deleted.clear()
        if item.recurrence is not None:
            store.snap_master(item)
    store.set_times(item, start, end)
    if item.is_all_day:
        store.snap_all_day(item)
    if _invite(api, mailbox, item, body):
        item.is_meeting = True
    return api.answer(200, api.render(item, how), how)


def delete_event(api: Api, request: Request, mailbox: str, event_id: str) -> Response:
    target = api.resolve(mailbox, event_id)
    if isinstance(target, Occurrence):
        api.store.delete_occurrence(target)
    else:
        api.store.remove(target)
    return Response(204, b"", "text/plain")


def respond(api: Api, request: Request, mailbox: str, event_id: str, action: str) -> Response:
    """decline / accept / tentativelyAccept as the room. A declined meeting leaves the room's
    calendar (as the Resource Booking Assistant removes declined meetings); the decline is
    recorded in the store's `declines` with its comment and whether a response was sent."""
    target = api.resolve(mailbox, event_id)
    body = _body(request) if request.body else {}
    item = target.master if isinstance(target, Occurrence) else target
    if item.my_response == "Organizer" and item.organizer_email == mailbox:
        raise _bad("Your request can't be completed. You can't respond to this meeting because you're the "
                   "meeting organizer.")
    store = api.store
    if action in ("accept", "tentativelyAccept"):
        item.my_response = "Accept" if action == "accept" else "Tentative"
        store.touch(item)
        return Response(202, b"", "text/plain")
    send = body.get("sendResponse", True)
    store.declines.append({
        "mailbox": item.mailbox,
        "item_id": graph_id(target),
        "ews_id": target.id,          # the store's own id, as the EWS side shows the item
        "master_id": graph_id(item) if isinstance(target, Occurrence) else None,
        "subject": target.subject,
        "start": target.start,
        "end": target.end,
        "organizer": item.organizer_email,
        "reason": str(body.get("comment") or ""),
        "send_response": bool(send),
        "via": "graph",
        "time": datetime.now(UTC),
    })
    if isinstance(target, Occurrence):
        item.declined_occurrences.append(target.original_start)
        store.delete_occurrence(target)
    else:
        item.declined_to = item.organizer_email if send else None
        store.remove(item)
    return Response(202, b"", "text/plain")
