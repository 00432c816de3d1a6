"""The Microsoft Graph backend of the room-calendar interface (`syncd.calendars.base.RoomCalendar`),
on httpx and MSAL, with the same keys, stamps and errors as the EWS backend.

    method          Graph request(s)
    probe           GET /users/{room}/calendar, then a calendarView of one day ($top=1)
    list_events     GET /users/{room}/calendar/calendarView (every nextLink; $select, stamp $expand)
    check_changes   calendarView/delta rounds (`delta`)
    get_event       GET /users/{room}/calendar/events/{id}                 404 -> None (*)
    create_event    POST /users/{room}/calendar/events (transactionId, stamp, no attendees)
    move_event      PATCH /users/{room}/events/{id} with If-Match          412 -> StaleChangeKey
    remove_event    DELETE /users/{room}/events/{id}                       404 -> EventGone
    decline         POST /users/{room}/events/{id}/decline (comment, sendResponse)
    find_stamped    GET /users/{room}/calendar/events?$filter=singleValueExtendedProperties/Any(...)

    (*) a 404 that carries Graph's own error; a 404 page of a proxy says nothing about the item

Each public method is one operation with its own throttling budget (see `http`). A write
whose answer was lost and was sent again checks what the lost attempt did: a create finds
its stamp (and carries a transactionId, so Graph itself refuses a duplicate), a move
compares the times, a remove or a decline accepts that the item is gone.

Errors: 401 / refused credentials -> CalendarAuthError (exit 3); 403 -> CalendarError
naming the mailbox as outside the app's scope (only that room fails); unknown mailbox
-> CalendarError; throttled past the budget -> CalendarThrottled; unreachable ->
CalendarUnreachable; an unreadable answer -> CalendarProtocolError.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote
from zoneinfo import ZoneInfo

from syncd.calendars.graph.auth import TokenSource
from syncd.calendars.graph.convert import (
    EXPAND,
    GRAPH_STAMP_ID,
    SELECT,
    create_body,
    graph_time,
    if_match,
    in_window_bounds,
    iso,
    to_event,
)
from syncd.calendars.graph.delta import DeltaReader, delta_window
from syncd.calendars.graph.http import GraphError, GraphHttp, GraphThrottled, GraphUnreachable
from syncd.config.schema import GraphConfig
from syncd.core.model import Event, EventRef, NewEvent, SyncCheck, TimeWindow, utc
from syncd.errors import (
    CalendarError,
    CalendarProtocolError,
    CalendarThrottled,
    CalendarUnreachable,
    EventGone,
    StaleChangeKey,
)
from syncd.logs import get_logger

log = get_logger("syncd.graph")

T = TypeVar("T")

_ITEM_GONE = frozenset({"erroritemnotfound", "itemnotfound", "resourcenotfound"})
_NO_MAILBOX = frozenset({"errorinvaliduser", "mailboxnotenabledforrestapi", "errornonexistentmailbox",
                         "mailboxnotfound", "request_resourcenotfound", "errorinvalidsmtpaddress"})


def scope_command(client_id: str, mailbox: str) -> str:
    """The Exchange Online command an administrator runs to see whether the app may use `mailbox`."""
    return f"Test-ServicePrincipalAuthorization -Identity {client_id} -Resource {mailbox}"


class GraphCalendar:
    """Room calendars in Exchange Online through Microsoft Graph.

    `sync_days` is (past_days, future_days) of the sync window: change checks cover it.
    `retry_sleep` sleeps for back-offs and before resending (tests pass a fake)."""

    def __init__(self, cfg: GraphConfig, *, sync_days: tuple[int, int] = (1, 30),
                 retry_sleep: Callable[[float], None] = time.sleep, reconnect_attempts: int = 3,
                 backoff_first: float = 2.0, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._cfg = cfg
        self._zone = ZoneInfo(cfg.timezone)
        self._sync_days = sync_days
        self._clock = clock
        self.tokens = TokenSource(cfg)
        self._http = GraphHttp(cfg, self.tokens, sleep=retry_sleep, reconnect_attempts=reconnect_attempts,
                               backoff_first=backoff_first)
        self.throttling = self._http.throttling
        self._delta = DeltaReader(self._http)
        self._lock = threading.Lock()
        self.who = self.tokens.who

    @property
    def requests(self) -> int:
        """Requests sent to Graph so far (token requests not included)."""
        return self._http.requests

    # --- the interface ----------------------------------------------------------------

    def probe(self, mailbox: str) -> str:
        """A token, the calendar folder, one day of its view: a line saying what was found."""

        def op() -> str:
            self.tokens.token()
            folder = self._http.get_json(self._url(mailbox, "calendar"), params={"$select": "id,name"})
            now = self._clock()
            self._http.get_json(self._url(mailbox, "calendar/calendarView"), params={
                "startDateTime": iso(now), "endDateTime": iso(now + timedelta(days=1)), "$select": "id",
                "$top": "1"})
            return (f"token obtained, mailbox in the app's scope, calendar {folder.get('name') or 'Calendar'!r} "
                    f"readable as {self.who}")

        return self._run(mailbox, "probe", op)

    def list_events(self, mailbox: str, window: TimeWindow) -> list[Event]:
        """Every event overlapping `window`, occurrences expanded, sorted by start; complete or raises."""

        def op() -> list[Event]:
            found: dict[str, Event] = {}
            params = {"startDateTime": iso(window.start), "endDateTime": iso(window.end), "$select": SELECT,
                      "$expand": EXPAND}
            for page in self._http.pages(self._url(mailbox, "calendar/calendarView"), params=params):
                for item in _values(page):
                    if item.get("type") == "seriesMaster":
                        continue
                    event = to_event(item, self._zone)
                    if not in_window_bounds(event.start, event.end, window.start, window.end):
                        continue
                    seen = found.setdefault(event.key, event)
                    if seen.item_id != event.item_id:
                        log.warning("graph_duplicate_key", mailbox=mailbox, key=event.key)
            return sorted(found.values(), key=lambda e: (e.start, e.end, e.key))

        return self._run(mailbox, "list_events", op)

    def check_changes(self, mailbox: str, state: str | None) -> SyncCheck:
        """One delta request when nothing changed; a new round (changed) when needed."""
        window = delta_window(self._clock(), *self._sync_days)
        return self._run(mailbox, "check_changes", lambda: self._delta.check(self._path(mailbox, "calendar"), state,
                                                                            window))

    def get_event(self, mailbox: str, item_id: str) -> Event | None:
        """The event with this id wherever its times now are; None when it is gone from the calendar."""
        return self._run(mailbox, "get_event", lambda: self._get(mailbox, item_id))

    def create_event(self, mailbox: str, event: NewEvent) -> EventRef:
        """A busy event stamped with `event.stamp`, no attendees (no invitations); its key read back."""
        transaction_id = event.transaction_id or f"syncd-{uuid.uuid4().hex}"

        def op() -> EventRef:
            try:
                response = self._http.send("POST", self._url(mailbox, "calendar/events"),
                                           json=create_body(event, transaction_id))
            except GraphError as e:
                if e.status not in (400, 409) or e.code.lower() in _NO_MAILBOX:
                    raise
                # A duplicate transactionId (the lost attempt of this create took effect), or a
                # refusal: what is in the calendar decides.
                existing = self._stamped(mailbox, event.stamp)
                if not existing:
                    raise
                log.info("graph_create_took_effect", mailbox=mailbox, stamp=event.stamp, status=e.status)
                return EventRef(existing[0].item_id, existing[0].change_key, existing[0].key)
            created = _json(response)
            if not created.get("iCalUId") or not created.get("changeKey"):
                got = self._get(mailbox, str(created.get("id") or ""))
                if got is None:
                    raise CalendarProtocolError(f"{mailbox}: Microsoft Graph created an event it cannot find")
                return EventRef(got.item_id, got.change_key, got.key)
            made = to_event(created, self._zone)
            return EventRef(made.item_id, made.change_key, made.key)

        return self._run(mailbox, "create_event", op)

    def move_event(self, mailbox: str, item_id: str, change_key: str, start: datetime, end: datetime) -> EventRef:
        """PATCH start and end if the change key still holds (If-Match). Raises StaleChangeKey
        when someone edited it meanwhile, EventGone when it is gone."""
        start, end = utc(start), utc(end)

        def op() -> EventRef:
            if self._cfg.check_change_key_before_write:
                current = self._get(mailbox, item_id)
                if current is None:
                    raise EventGone(f"{mailbox}: event {_short(item_id)} no longer exists")
                if current.change_key != change_key:
                    raise StaleChangeKey(f"{mailbox}: event {_short(item_id)} changed since it was read; "
                                         "not overwritten")
            try:
                response = self._http.send("PATCH", self._url(mailbox, f"events/{_seg(item_id)}"),
                                           json={"start": graph_time(start), "end": graph_time(end)},
                                           headers={"If-Match": if_match(change_key)})
            except GraphError as e:
                if _gone(e):
                    raise EventGone(f"{mailbox}: event {_short(item_id)} no longer exists") from None
                if e.status not in (409, 412):
                    raise
                current = self._get(mailbox, item_id)
                if current is not None and (current.start, current.end) == (start, end):
                    return EventRef(current.item_id, current.change_key, current.key)  # the lost attempt did it
                raise StaleChangeKey(f"{mailbox}: event {_short(item_id)} changed since it was read; "
                                     "not overwritten") from None
            body = _json(response) if response.content else {}
            if body.get("changeKey"):
                return EventRef(str(body.get("id") or item_id), str(body["changeKey"]))
            got = self._get(mailbox, item_id)
            if got is None:
                raise EventGone(f"{mailbox}: event {_short(item_id)} no longer exists")
            return EventRef(got.item_id, got.change_key, got.key)

        return self._run(mailbox, "move_event", op)

    def remove_event(self, mailbox: str, item_id: str, change_key: str) -> None:
        """DELETE (an event without attendees: no cancellation is sent). Raises EventGone."""

        def op() -> None:
            try:
                self._http.send("DELETE", self._url(mailbox, f"events/{_seg(item_id)}"))
            except GraphError as e:
                if _gone(e):
                    if self._http.resent:
                        return None   # the attempt whose answer was lost deleted it
                    raise EventGone(f"{mailbox}: event {_short(item_id)} no longer exists") from None
                raise
            return None

        self._run(mailbox, "remove_event", op)

    def find_stamped(self, mailbox: str, stamp: str, window: TimeWindow) -> Event | None:
        """The event carrying `stamp` (the extended-property filter), preferring one in `window`."""

        def op() -> Event | None:
            found = self._stamped(mailbox, stamp)
            if len(found) > 1:
                log.warning("graph_stamp_duplicated", mailbox=mailbox, stamp=stamp, count=len(found))
            inside = [e for e in found if in_window_bounds(e.start, e.end, window.start, window.end)]
            best = inside or found
            return best[0] if best else None

        return self._run(mailbox, "find_stamped", op)

    def find_by_key(self, mailbox: str, key: str) -> Event | None:
        """The event whose key is `key` wherever it now is (`$filter=iCalUId eq ...`, then the
        series' instances around the original start); None when there is none."""

        def op() -> Event | None:
            uid, _, original = key.partition("|")
            escaped = uid.replace("'", "''")
            params = {"$filter": f"iCalUId eq '{escaped}'", "$select": SELECT, "$expand": EXPAND}
            items = [i for page in self._http.pages(self._url(mailbox, "calendar/events"), params=params)
                     for i in _values(page)]
            for item in items:
                if item.get("type") == "seriesMaster" and original:
                    master = item.get("id")
                    if not isinstance(master, str) or not master:
                        raise CalendarProtocolError("Microsoft Graph sent a series without an id")
                    return self._instance(mailbox, master, key, datetime.fromisoformat(original))
                if item.get("type") != "seriesMaster" and not original:
                    return to_event(item, self._zone)
            return None

        return self._run(mailbox, "find_by_key", op)

    def decline(self, mailbox: str, item_id: str, change_key: str, reason: str) -> None:
        """Decline the meeting as the room; the organizer is told `reason` (sendResponse)."""

        def op() -> None:
            try:
                self._http.send("POST", self._url(mailbox, f"events/{_seg(item_id)}/decline"),
                                json={"comment": reason, "sendResponse": True})
            except GraphError as e:
                if _gone(e):
                    if self._http.resent:
                        return None
                    raise EventGone(f"{mailbox}: meeting {_short(item_id)} no longer exists") from None
                raise
            return None

        self._run(mailbox, "decline", op)

    def close(self) -> None:
        self._http.close()

    # --- helpers ------------------------------------------------------------------------

    def _path(self, mailbox: str, rest: str) -> str:
        return f"users/{quote(mailbox, safe='@')}/{rest}"

    def _url(self, mailbox: str, rest: str) -> str:
        return self._http.url(self._path(mailbox, rest))

    def _get(self, mailbox: str, item_id: str) -> Event | None:
        if not item_id:
            return None
        try:
            item = self._http.get_json(self._url(mailbox, f"calendar/events/{_seg(item_id)}"),
                                       params={"$select": SELECT, "$expand": EXPAND})
        except GraphError as e:
            if _gone(e):
                return None
            raise
        return to_event(item, self._zone)

    def _stamped(self, mailbox: str, stamp: str) -> list[Event]:
        value = stamp.replace("'", "''")
        params = {"$filter": f"singleValueExtendedProperties/Any(ep: ep/id eq '{GRAPH_STAMP_ID}' and "
                             f"ep/value eq '{value}')", "$select": SELECT, "$expand": EXPAND}
        return [to_event(i, self._zone) for page in self._http.pages(self._url(mailbox, "calendar/events"),
                                                                     params=params)
                for i in _values(page) if i.get("type") != "seriesMaster"]

    def _instance(self, mailbox: str, master_id: str, key: str, original: datetime) -> Event | None:
        """The occurrence of a series whose key is `key`, looked for a week around its original start."""
        params = {"startDateTime": iso(original - timedelta(days=7)), "endDateTime": iso(original + timedelta(days=7)),
                  "$select": SELECT, "$expand": EXPAND}
        for page in self._http.pages(self._url(mailbox, f"calendar/events/{_seg(master_id)}/instances"),
                                     params=params):
            for item in _values(page):
                event = to_event(item, self._zone)
                if event.key == key:
                    return event
        return None

    def _run(self, mailbox: str, what: str, op: Callable[[], T]) -> T:
        """`op()` as one operation: a fresh budget and the translation of errors."""
        self._http.start_operation()
        try:
            return op()
        except CalendarError:
            raise
        except GraphThrottled as e:
            raise CalendarThrottled(f"Microsoft Graph is throttling {mailbox} ({what}); gave up after waiting "
                                    f"{e.waited:.1f}s (throttle_max_wait_seconds="
                                    f"{self._cfg.throttle_max_wait_seconds:g})") from None
        except GraphUnreachable as e:
            raise CalendarUnreachable(f"Microsoft Graph at {self._cfg.graph_url} unreachable for {mailbox} "
                                      f"({what}): {e}") from None
        except GraphError as e:
            raise self._translate(e, mailbox, what) from None

    def _translate(self, e: GraphError, mailbox: str, what: str) -> CalendarError:
        code = e.code.lower()
        if e.status == 403 or code in ("erroraccessdenied", "accessdenied"):
            return CalendarError(
                f"room mailbox {mailbox} is outside the app's scope (HTTP {e.status} {e.code or 'Forbidden'}): "
                f"{self.who} may not use it; an Exchange administrator checks with: "
                f"{scope_command(self._cfg.client_id, mailbox)}")
        if not code and e.status not in (400, 409, 412):
            return CalendarProtocolError(f"Microsoft Graph at {self._cfg.graph_url} answered {what} for {mailbox} "
                                         f"with HTTP {e.status} and no Graph error (a proxy or gateway between?)")
        if code in _NO_MAILBOX or (e.status == 404 and what in ("probe", "list_events", "check_changes")):
            return CalendarError(f"room mailbox {mailbox}: no such mailbox in Exchange Online "
                                 f"(HTTP {e.status} {e.code})")
        if e.status >= 500:
            return CalendarProtocolError(f"Microsoft Graph failed {what} for {mailbox}: {e}")
        return CalendarError(f"room mailbox {mailbox}: Microsoft Graph refused {what}: {e}")


def _values(page: dict[str, Any]) -> list[dict[str, Any]]:
    """The page's events; an entry that is not an object fails the read (dropping it would
    read as an event gone)."""
    items = page.get("value")
    if not isinstance(items, list):
        raise CalendarProtocolError("Microsoft Graph sent a collection page without a value list")
    for item in items:
        if not isinstance(item, dict):
            raise CalendarProtocolError(f"Microsoft Graph sent a collection page holding a "
                                        f"{type(item).__name__} where an event belongs")
    return items


def _gone(e: GraphError) -> bool:
    """Graph says the item is not there: a 404 with Graph's own error (not a proxy's page,
    which says nothing about the item), or an item-not-found code."""
    code = e.code.lower()
    return code in _ITEM_GONE or (e.status == 404 and bool(code) and code not in _NO_MAILBOX)


def _json(response: Any) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise CalendarProtocolError("Microsoft Graph answered a write with something that is not JSON") from None
    if not isinstance(data, dict):
        raise CalendarProtocolError("Microsoft Graph answered a write with JSON that is not an object")
    return data


def _seg(item_id: str) -> str:
    return quote(item_id, safe="")


def _short(item_id: str) -> str:
    return item_id if len(item_id) <= 24 else f"{item_id[:10]}…{item_id[-10:]}"
