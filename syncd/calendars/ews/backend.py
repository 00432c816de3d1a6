"""The EWS backend of the room-calendar interface (`syncd.calendars.base.RoomCalendar`), on exchangelib.

One `EwsCalendar` holds one exchangelib Protocol (one connection pool) for every room, and
one Account per room mailbox. Each public method is one *operation*: it gets a fresh
throttling budget (ErrorServerBusy back-offs are honoured up to
`throttle_max_wait_seconds` in total, then CalendarThrottled), and a dropped connection,
a timeout or a gateway error is retried `reconnect_attempts` times with short sleeps before
CalendarUnreachable. A write retried after a dropped connection first checks whether the
lost attempt took effect (a create looks for its stamp, a move compares the times, a
remove accepts that the item is gone), since EWS has no idempotency key.

Errors raised are those of `syncd.errors`; see `_translate` for the mapping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar
from zoneinfo import ZoneInfo

from exchangelib import DELEGATE, IMPERSONATION, Account, CalendarItem, EWSTimeZone
from exchangelib import errors as ex
from exchangelib.folders import Calendar
from exchangelib.items import ID_ONLY, SEND_ONLY, SEND_TO_NONE
from exchangelib.items.calendar_item import DeclineItem
from exchangelib.properties import ReferenceItemId
from exchangelib.services import SyncFolderItems, UpdateItem
from exchangelib.services.common import EWSService
from exchangelib.util import MNS
from oauthlib.oauth2 import OAuth2Error

from syncd.calendars.base import ThrottleStats
from syncd.calendars.ews.answers import (
    GONE_ERRORS,
    MAILBOX_ERRORS,
    brief,
    raise_if_error,
    retryable,
    root_cause,
    short,
)
from syncd.calendars.ews.connect import HttpStatusError, connect, forget
from syncd.calendars.ews.convert import (
    READ_FIELDS,
    STAMP_FIELD,
    halves,
    in_window,
    split_window,
    to_event,
    to_ews,
    write_zone,
)
from syncd.config.schema import EwsConfig
from syncd.core.model import Event, EventRef, NewEvent, SyncCheck, TimeWindow, event_uid_for, utc
from syncd.errors import (
    CalendarAuthError,
    CalendarError,
    CalendarProtocolError,
    CalendarThrottled,
    CalendarUnreachable,
    EventGone,
    StaleChangeKey,
)
from syncd.logs import get_logger

log = get_logger("syncd.ews")

T = TypeVar("T")

VIEW_CHUNK_DAYS = 60          # a CalendarView may span at most 2 years; keep each request small
VIEW_MAX_ITEMS = 1000         # EWSFindCountLimit's default; a full answer means "split and ask again"
SYNC_PAGE = 512               # SyncFolderItems' largest MaxChangesReturned
RECONNECT_FIRST_WAIT = 0.5    # seconds before the first reconnect; doubles each time

class _SyncFolderItems(SyncFolderItems):
    """exchangelib 5.6.0 reads SyncState before looking at ResponseClass, so an error answer
    without one (ErrorInvalidSyncStateData) surfaces as an AttributeError; this lets the
    error itself be raised."""

    def _get_element_container(self, message, name=None):
        if message.get("ResponseClass") != "Success" and message.find(f"{{{MNS}}}SyncState") is None:
            return EWSService._get_element_container(self, message, name=name)
        return super()._get_element_container(message, name=name)


class EwsCalendar:
    """Room calendars in Exchange through EWS (exchangelib 5.6).

    `retry_sleep` sleeps for throttling back-offs and between reconnects (tests pass a fake);
    `retry_wait` is the first back-off when the server is busy without saying how long
    (HTTP 503); it doubles per retry."""

    def __init__(self, cfg: EwsConfig, *, retry_sleep: Callable[[float], None] = time.sleep,
                 reconnect_attempts: int = 3, retry_wait: float = 10.0):
        self._cfg = cfg
        self._sleep = retry_sleep
        self._reconnect_attempts = reconnect_attempts
        self._tz = EWSTimeZone(cfg.timezone)
        self._zone = ZoneInfo(cfg.timezone)
        self._retry_wait = retry_wait
        self.throttling = ThrottleStats()     # read by the service's metrics
        self._config, self._protocol, self._policy = connect(cfg, retry_sleep, retry_wait, self.throttling)
        self._closed = False
        self._access = IMPERSONATION if cfg.access == "impersonation" else DELEGATE
        self._accounts: dict[str, Account] = {}
        self._lock = threading.Lock()
        self._authenticated = False
        self._who = cfg.username if cfg.auth != "oauth2" else f"client {cfg.client_id}"

    # --- the interface ----------------------------------------------------------------

    def probe(self, mailbox: str) -> str:
        """Read the room's calendar folder (GetFolder); a line saying what was found."""

        def op(_: int) -> str:
            account = self._account(mailbox)
            folder = Calendar.get_distinguished(root=account.root)
            return f"calendar {folder.name or 'Calendar'!r} readable as {self._who} ({self._cfg.access})"

        return self._run(mailbox, "probe", op)

    def list_events(self, mailbox: str, window: TimeWindow) -> list[Event]:
        """Every event overlapping `window`, occurrences expanded, sorted by start; complete or raises."""

        def op(_: int) -> list[Event]:
            calendar = self._calendar(mailbox)
            found: dict[str, Event] = {}
            for piece in split_window(window, VIEW_CHUNK_DAYS):
                for event in self._view(calendar, piece):
                    if not in_window(event, window):
                        continue
                    seen = found.setdefault(event.key, event)
                    if seen.item_id != event.item_id:
                        # Two items claim one meeting (a copied invitation): the first read wins.
                        log.warning("ews_duplicate_key", mailbox=mailbox, key=event.key)
            return sorted(found.values(), key=lambda e: (e.start, e.end, e.key))

        return self._run(mailbox, "list_events", op)

    def check_changes(self, mailbox: str, state: str | None) -> SyncCheck:
        """SyncFolderItems from `state`: one request when nothing changed. An unknown or
        expired state counts as a change and yields a fresh state."""

        def op(_: int) -> SyncCheck:
            calendar = self._calendar(mailbox)
            if state is None:
                return SyncCheck(changed=True, state=self._sync(calendar, None)[1])
            try:
                count, new_state = self._sync(calendar, state)
            except ex.ErrorInvalidSyncStateData:
                log.warning("ews_sync_state_invalid", mailbox=mailbox)
                return SyncCheck(changed=True, state=self._sync(calendar, None)[1])
            return SyncCheck(changed=count > 0, state=new_state)

        return self._run(mailbox, "check_changes", op)

    def get_event(self, mailbox: str, item_id: str) -> Event | None:
        """The event with this id (GetItem), or None when it no longer exists in the calendar."""
        return self._run(mailbox, "get_event", lambda _: self._get(mailbox, item_id))

    def create_event(self, mailbox: str, event: NewEvent) -> EventRef:
        """Create a busy appointment stamped with `event.stamp`, in the configured zone; no invitations."""

        def op(attempt: int) -> EventRef:
            calendar = self._calendar(mailbox)
            if attempt:
                existing = self._stamped(calendar, event.stamp)
                if existing:
                    log.info("ews_create_took_effect", mailbox=mailbox, stamp=event.stamp)
                    return EventRef(existing[0].item_id, existing[0].change_key, existing[0].key)
            tz = write_zone(event.start, event.end, self._tz)
            item = CalendarItem(
                account=calendar.account, folder=calendar, subject=event.subject,
                start=to_ews(event.start, tz), end=to_ews(event.end, tz),
                is_all_day=False, legacy_free_busy_status="Busy", reminder_is_set=False,
                body=event.body or None, uid=event_uid_for(event.stamp), **{STAMP_FIELD: event.stamp},
            )
            item.save(send_meeting_invitations=SEND_TO_NONE)
            return EventRef(item.id, item.changekey, event_uid_for(event.stamp))

        return self._run(mailbox, "create_event", op)

    def move_event(self, mailbox: str, item_id: str, change_key: str, start: datetime, end: datetime) -> EventRef:
        """Move in place if unchanged since read (NeverOverwrite with the change key).

        Raises StaleChangeKey when someone edited it meanwhile, EventGone when it is gone."""
        start, end = utc(start), utc(end)

        def op(attempt: int) -> EventRef:
            calendar = self._calendar(mailbox)
            tz = write_zone(start, end, self._tz)
            item = CalendarItem(account=calendar.account, folder=calendar, id=item_id, changekey=change_key,
                                start=to_ews(start, tz), end=to_ews(end, tz))
            item._start_timezone = item._end_timezone = tz
            try:
                new_id, new_key = UpdateItem(account=calendar.account).get(
                    items=[(item, ["start", "end"])], conflict_resolution="NeverOverwrite",
                    message_disposition="SaveOnly", send_meeting_invitations_or_cancellations=SEND_TO_NONE,
                    suppress_read_receipts=True, expect_result=True,
                )
            except GONE_ERRORS:
                raise EventGone(f"{mailbox}: event {short(item_id)} no longer exists") from None
            except ex.ErrorIrresolvableConflict:
                current = self._get(mailbox, item_id) if attempt else None
                if current and (current.start, current.end) == (start, end):
                    return EventRef(current.item_id, current.change_key)  # the lost attempt did it
                raise StaleChangeKey(f"{mailbox}: event {short(item_id)} changed since it was read; "
                                     "not overwritten") from None
            return EventRef(new_id, new_key)

        return self._run(mailbox, "move_event", op)

    def remove_event(self, mailbox: str, item_id: str, change_key: str) -> None:
        """Delete the event (HardDelete, no cancellations). Raises EventGone if it is not there."""

        def op(attempt: int) -> None:
            calendar = self._calendar(mailbox)
            item = CalendarItem(account=calendar.account, folder=calendar, id=item_id, changekey=change_key)
            try:
                item.delete(send_meeting_cancellations=SEND_TO_NONE)
            except GONE_ERRORS:
                if attempt:
                    return None  # the attempt whose answer was lost deleted it
                raise EventGone(f"{mailbox}: event {short(item_id)} no longer exists") from None
            return None

        self._run(mailbox, "remove_event", op)

    def find_stamped(self, mailbox: str, stamp: str, window: TimeWindow) -> Event | None:
        """The event carrying `stamp` (a restriction on the extended property), preferring
        one overlapping `window` when there are several; None when there is none."""

        def op(_: int) -> Event | None:
            found = self._stamped(self._calendar(mailbox), stamp)
            if len(found) > 1:
                log.warning("ews_stamp_duplicated", mailbox=mailbox, stamp=stamp, count=len(found))
            inside = [e for e in found if in_window(e, window)]
            return (inside or found)[0] if found else None

        return self._run(mailbox, "find_stamped", op)

    def decline(self, mailbox: str, item_id: str, change_key: str, reason: str) -> None:
        """Decline the meeting as the room, telling its organizer `reason` (sent, no copy kept)."""

        def op(attempt: int) -> None:
            account = self._account(mailbox)
            reply = DeclineItem(account=account, reference_item_id=ReferenceItemId(id=item_id, changekey=change_key),
                                body=reason)
            try:
                reply.send(message_disposition=SEND_ONLY)
            except (*GONE_ERRORS, ex.ErrorCalendarIsCancelledForDecline):
                if attempt:
                    return None
                raise EventGone(f"{mailbox}: meeting {short(item_id)} no longer exists") from None
            except (ex.ErrorIrresolvableConflict, ex.ErrorStaleObject):
                raise StaleChangeKey(f"{mailbox}: meeting {short(item_id)} changed since it was read") from None
            return None

        self._run(mailbox, "decline", op)

    def close(self) -> None:
        """Close the connections and forget the cached accounts (a later call reconnects)."""
        with self._lock:
            self._accounts.clear()
            self._closed = True
            forget(self._config)

    # --- helpers ------------------------------------------------------------------------

    def _account(self, mailbox: str) -> Account:
        key = mailbox.lower()
        with self._lock:
            if self._closed:
                self._config, self._protocol, self._policy = connect(
                    self._cfg, self._sleep, self._retry_wait, self.throttling)
                self._closed = False
            account = self._accounts.get(key)
            if account is None:
                account = Account(mailbox, config=self._config, autodiscover=False, access_type=self._access,
                                  default_timezone=self._tz)
                self._accounts[key] = account
            return account

    def _calendar(self, mailbox: str) -> Calendar:
        # GetFolder(root) and GetFolder(calendar) once per room; exchangelib caches the folder.
        return self._account(mailbox).calendar

    def _view(self, calendar: Calendar, window: TimeWindow) -> list[Event]:
        """The events of one CalendarView, split further when the server's answer may be cut."""
        try:
            items = list(
                calendar.view(start=to_ews(window.start, self._tz), end=to_ews(window.end, self._tz),
                              max_items=VIEW_MAX_ITEMS).only(*READ_FIELDS)
            )
        except (ex.ErrorExceededFindCountLimit, ex.ErrorCalendarViewRangeTooBig):
            items = None
        if items is None or len(items) >= VIEW_MAX_ITEMS:
            if (window.end - window.start).total_seconds() <= 3600:
                raise CalendarError(f"{calendar.account.primary_smtp_address}: more than {VIEW_MAX_ITEMS} events "
                                    f"in one hour from {window.start.isoformat()}")
            first, second = halves(window)
            return self._view(calendar, first) + self._view(calendar, second)
        return [to_event(raise_if_error(i), self._zone) for i in items]

    def _sync(self, calendar: Calendar, state: str | None) -> tuple[int, str]:
        """(number of item changes, new state) since `state`, every page consumed, ids only."""
        service = _SyncFolderItems(account=calendar.account)
        count = 0
        while True:
            changes = service.call(folder=calendar, shape=ID_ONLY, additional_fields=set(), sync_state=state,
                                   ignore=None, max_changes_returned=SYNC_PAGE, sync_scope=None)
            for change in changes:
                if isinstance(change, Exception):
                    raise change
                if change[0] != "read_flag_change":
                    count += 1
            if not service.sync_state:
                raise CalendarProtocolError("SyncFolderItems answered without a sync state")
            if service.includes_last_item_in_range or service.sync_state == state:
                return count, service.sync_state
            state = service.sync_state

    def _get(self, mailbox: str, item_id: str) -> Event | None:
        calendar = self._calendar(mailbox)
        fields = (*READ_FIELDS, "parent_folder_id")
        try:
            (item,) = list(calendar.account.fetch(ids=[(item_id, None)], folder=calendar, only_fields=fields))
        except GONE_ERRORS:
            return None
        if isinstance(item, GONE_ERRORS):
            return None
        item = raise_if_error(item)
        parent = item.parent_folder_id
        if parent is not None and calendar.id and parent.id != calendar.id:
            return None  # moved out of the calendar, e.g. to Deleted Items
        return to_event(item, self._zone)

    def _stamped(self, calendar: Calendar, stamp: str) -> list[Event]:
        items = calendar.filter(**{STAMP_FIELD: stamp}).only(*READ_FIELDS)
        return [to_event(raise_if_error(i), self._zone) for i in items]

    def _run(self, mailbox: str, what: str, op: Callable[[int], T]) -> T:
        """Run `op(attempt)` as one operation: reconnects, budget and error translation."""
        attempt = 0
        auth_retried = False
        while True:
            self._policy.start_operation()
            try:
                result = op(attempt)
            except CalendarError:
                raise
            except ex.UnauthorizedError as e:
                # A 401 after earlier successes may be a lost NTLM session or an expired
                # token: one fresh connection, then it is the credentials.
                if self._authenticated and not auth_retried:
                    auth_retried = True   # exchangelib has already retired the session
                    continue
                raise CalendarAuthError(f"EWS at {self._cfg.endpoint} refused the credentials of {self._who}") from e
            except Exception as e:
                if not retryable(e):
                    raise self._translate(e, mailbox) from e
                if attempt >= self._reconnect_attempts:
                    raise CalendarUnreachable(
                        f"EWS at {self._cfg.endpoint} unreachable for {mailbox} ({what}) after "
                        f"{attempt + 1} attempts: {root_cause(e)}") from e
                wait = RECONNECT_FIRST_WAIT * 2**attempt
                # Detail for debugging: the operator's one line is the CalendarUnreachable below.
                log.debug("ews_reconnect", mailbox=mailbox, op=what, attempt=attempt + 1, wait=wait,
                          error=brief(e))
                self._sleep(wait)   # the failed session was retired; the next attempt opens a new one
                attempt += 1
                continue
            self._authenticated = True
            return result

    def _translate(self, e: Exception, mailbox: str) -> Exception:
        """The syncd error for an exchangelib/requests/oauthlib failure."""
        endpoint = self._cfg.endpoint
        if isinstance(e, (ex.RateLimitError, ex.ErrorServerBusy)):
            return CalendarThrottled(f"EWS at {endpoint} is throttling; gave up after waiting "
                                     f"{self._policy.waited:.1f}s (throttle_max_wait_seconds="
                                     f"{self._cfg.throttle_max_wait_seconds:g})")
        if isinstance(e, HttpStatusError):
            if e.status == 403:
                return CalendarAuthError(f"EWS at {endpoint} forbids access for {self._who} (HTTP 403)")
            if e.status == 404:
                return CalendarUnreachable(f"no EWS at {endpoint} (HTTP 404); check calendar.ews.endpoint")
            return CalendarProtocolError(f"EWS at {endpoint} answered HTTP {e.status}")
        if isinstance(e, OAuth2Error):
            return CalendarAuthError(f"token endpoint {self._config.credentials.token_url} refused "
                                     f"{self._who}: {e.error}")
        if isinstance(e, ex.RedirectError):
            return CalendarProtocolError(f"EWS at {endpoint} redirects to {e.url}; configure that URL")
        if isinstance(e, tuple(MAILBOX_ERRORS)):
            what = next(text for cls, text in MAILBOX_ERRORS.items() if isinstance(e, cls))
            return CalendarError(f"room mailbox {mailbox}: {what} ({type(e).__name__})")
        if isinstance(e, (ex.SOAPError, ex.MalformedResponseError)) or (
            isinstance(e, ex.TransportError) and "version" in str(e).lower()
        ):
            return CalendarProtocolError(f"EWS at {endpoint} sent an answer syncd cannot read: {brief(e)}")
        if isinstance(e, ex.ResponseMessageError):
            return CalendarError(f"room mailbox {mailbox}: {type(e).__name__}: {brief(e)}")
        if isinstance(e, ex.EWSError):
            return CalendarError(f"EWS at {endpoint}, room mailbox {mailbox}: {type(e).__name__}: {brief(e)}")
        return e
