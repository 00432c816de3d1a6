"""The executor: carries out one room's plan, journalling every remote write.

For every write to Ultimo or Exchange, three steps, each its own transaction:

    1. intent   a `journal` row (status `pending`) and the link's `intent` are committed
    2. write    the call to Ultimo or Exchange
    3. outcome  the link advances, the journal row is settled (`done` / `failed`) and the
                intent cleared, together

A crash between 1 and 3 leaves a pending journal row and a link with an intent.
`settle_room` (syncd/settle.py) runs before anything else touches that room again and decides from the
remote side whether the write happened: an Ultimo create is recognised by an unlinked
reservation with the intended times (Ultimo does not return ExternalIds), an Exchange
create by syncd's stamp. So a crash at any instant never duplicates a booking.

One failing action does not stop the others; a link advances only when its write
succeeded. A failure of a whole system (unreachable, credentials, quota) stops the
remaining writes to that system for this room: they would fail the same way.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.orm import Session, sessionmaker

from syncd.calendars.base import RoomCalendar
from syncd.core.model import (
    CHANGED_ON_BOTH_SIDES,
    REJECTED_BY_ULTIMO,
    RESERVATION_IN_PAST,
    ROOM_UNAVAILABLE,
    ConflictInfo,
    Room,
    synced_hash,
)
from syncd.core.plan import (
    Action,
    CancelReservation,
    CreateEvent,
    CreateReservation,
    DeclineEvent,
    LinkPair,
    MoveEvent,
    MoveReservation,
    Plan,
    RefreshLink,
    RemoveEvent,
    Tombstone,
)
from syncd.engine import conflicts
from syncd.engine.settle import Settling, detach_journal
from syncd.errors import (
    BudgetExhausted,
    CalendarAuthError,
    CalendarError,
    CalendarThrottled,
    CalendarUnreachable,
    EventGone,
    ReservationInPast,
    RoomUnavailable,
    StaleChangeKey,
    UltimoAuthError,
    UltimoError,
    UltimoNotFound,
    UltimoRejected,
    UltimoTransient,
)
from syncd.store.schema import (
    LINK_ACTIVE,
    LINK_CANCELLED,
    ORIGIN_BOTH,
    ORIGIN_EXCHANGE,
    ORIGIN_ULTIMO,
    JournalEntry,
    Link,
)
from syncd.ultimo.client import UltimoOutcomeUnknown

log = structlog.get_logger("syncd.executor")

# Errors that say a whole system is out of reach for now, not that one booking failed.
SYSTEM_FAILURES: tuple[type[Exception], ...] = (
    UltimoTransient, UltimoAuthError, UltimoNotFound, BudgetExhausted,
    CalendarUnreachable, CalendarAuthError, CalendarThrottled,
)

CONFLICT_KINDS = (ROOM_UNAVAILABLE, RESERVATION_IN_PAST, CHANGED_ON_BOTH_SIDES, REJECTED_BY_ULTIMO)

WRITE_KEYS = ("ultimo_created", "ultimo_moved", "ultimo_cancelled", "exchange_created", "exchange_moved",
              "exchange_removed", "exchange_declined", "linked")


@dataclass
class ApplyResult:
    """What applying one plan did."""

    writes: Counter[str] = field(default_factory=Counter)
    conflicts_new: int = 0
    resolved: int = 0
    errors: list[str] = field(default_factory=list)
    failed_system: str | None = None


class SideDown(Exception):
    """Raised inside the executor to skip the remaining writes to one system."""


class Executor(Settling):
    """Applies plans for one configuration; one instance serves every room."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        calendar: RoomCalendar,
        ultimo: Any,
        *,
        on_room_unavailable: str = "record_only",
        private_subject: str = "Private meeting",
        mask_private: bool = True,
        clock: Callable[[], datetime],
        run_id: int | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.sessions = sessions
        self.calendar = calendar
        self.ultimo = ultimo
        self.on_room_unavailable = on_room_unavailable
        self.private_subject = private_subject
        self.mask_private = mask_private
        self.clock = clock
        self.run_id = run_id
        self.stop = stop or threading.Event()

    # --- applying a plan --------------------------------------------------------------

    def apply(self, room: Room, plan: Plan) -> ApplyResult:
        """Carry out `plan` for `room`; never raises for a failed action (see ApplyResult)."""
        result = ApplyResult()
        now = self.clock()
        with self.sessions.begin() as s:
            for key in plan.resolved:
                result.resolved += conflicts.resolve(s, room=room.mailbox, booking_key=key, now=now)
            for info in plan.conflicts:
                before = _open_count(s, room.mailbox, info.booking_key, info.kind)
                conflicts.record(s, room=room.mailbox, space_id=room.space_id, info=info, link_id=None, now=now)
                result.conflicts_new += 0 if before else 1
                # The booking's newest problem replaces the older ones (whose cause is gone).
                result.resolved += conflicts.resolve(s, room=room.mailbox, booking_key=info.booking_key, now=now,
                                                     kinds=[k for k in CONFLICT_KINDS if k != info.kind])
        down: set[str] = set()
        for action in plan.actions:
            if action.side in down:
                continue
            if action.side != "db" and self.stop.is_set():
                break
            try:
                self._apply_one(room, action, result)
            except SideDown as e:
                down.add(action.side)
                result.failed_system = result.failed_system or action.side
                result.errors.append(str(e))
        return result

    def _apply_one(self, room: Room, action: Action, result: ApplyResult) -> None:
        handler = {
            CreateReservation: self._create_reservation,
            CreateEvent: self._create_event,
            MoveReservation: self._move_reservation,
            MoveEvent: self._move_event,
            CancelReservation: self._cancel_reservation,
            RemoveEvent: self._remove_event,
            DeclineEvent: self._decline_event,
            LinkPair: self._link_pair,
            RefreshLink: self._refresh_link,
            Tombstone: self._tombstone,
        }[type(action)]
        handler(room, action, result)  # type: ignore[operator]

    # --- journal ----------------------------------------------------------------------

    def _begin(self, s: Session, room: Room, link: Link | None, side: str, kind: str,
               payload: dict[str, Any]) -> JournalEntry:
        """Step 1: the intent, in the caller's transaction (committed before the write)."""
        now = self.clock()
        if link is not None:
            link.intent = f"{kind}_{side}"
            link.intent_at = now
            s.flush()
        entry = JournalEntry(run_id=self.run_id, link_id=link.id if link is not None else None, room=room.mailbox,
                             side=side, action=kind, payload=json.dumps(payload, default=str), status="pending",
                             created_at=now)
        s.add(entry)
        s.flush()
        return entry

    def _finish(self, s: Session, entry_id: int, status: str, error: str | None = None) -> None:
        entry = s.get(JournalEntry, entry_id)
        if entry is not None:
            entry.status = status
            entry.error = error
            entry.finished_at = self.clock()
        if entry is not None and entry.link_id is not None:
            link = s.get(Link, entry.link_id)
            if link is not None:
                link.intent = None
                link.intent_at = None

    def _failed(self, entry_id: int, error: Exception, *, drop_link: bool = False) -> None:
        """Step 3 for a write that did not happen: settle the journal, keep the link as it was."""
        with self.sessions.begin() as s:
            entry = s.get(JournalEntry, entry_id)
            link_id = entry.link_id if entry is not None else None
            self._finish(s, entry_id, "failed", str(error))
            if drop_link and link_id is not None:
                link = s.get(Link, link_id)
                if link is not None:
                    detach_journal(s, link_id)
                    s.delete(link)

    def _conflict(self, room: Room, info: ConflictInfo, link_id: int | None, result: ApplyResult) -> None:
        with self.sessions.begin() as s:
            before = _open_count(s, room.mailbox, info.booking_key, info.kind)
            conflicts.record(s, room=room.mailbox, space_id=room.space_id, info=info, link_id=link_id,
                             now=self.clock())
        result.conflicts_new += 0 if before else 1

    def _give_up(self, entry_id: int, e: Exception, what: str, side: str, result: ApplyResult, *,
                 drop_link: bool = False) -> None:
        """A write failed: settle its journal row, report it, and stop writing to `side`
        for this room when the whole system is failing."""
        self._failed(entry_id, e, drop_link=drop_link)
        result.errors.append(f"{what}: {e}")
        self._system_check(e, side)

    def _system_check(self, error: Exception, side: str) -> None:
        if isinstance(error, SYSTEM_FAILURES):
            raise SideDown(f"{side}: {error}") from error

    # --- Exchange -> Ultimo -----------------------------------------------------------

    def _create_reservation(self, room: Room, a: CreateReservation, result: ApplyResult) -> None:
        ev = a.event
        with self.sessions.begin() as s:
            link = s.get(Link, a.link_id) if a.link_id is not None else None
            if link is None:
                link = Link(room=room.mailbox, space_id=room.space_id, origin=ORIGIN_EXCHANGE, state=LINK_ACTIVE,
                            exchange_key=ev.key, exchange_item_id=ev.item_id, exchange_change_key=ev.change_key,
                            external_id=a.new.external_id, start=ev.start, end=ev.end,
                            synced_hash=synced_hash(ev.start, ev.end), subject=self._subject(ev.subject, ev.private),
                            organizer=ev.organizer)
                s.add(link)
                s.flush()
            entry = self._begin(s, room, link, "ultimo", "create", {
                "external_id": a.new.external_id, "space_id": a.new.space_id, "start": a.new.start.isoformat(),
                "end": a.new.end.isoformat(), "description": a.new.description,
                "applicant_id": a.new.applicant_id})
            entry_id, link_id = entry.id, link.id
        try:
            ultimo_id = self.ultimo.create_reservation(a.new)
        except UltimoOutcomeUnknown as e:
            # The reservation may exist: leave the intent pending for settle_room.
            result.errors.append(f"create for {a.booking_key}: {e} (will be settled before the next write)")
            raise SideDown(f"ultimo: {e}") from e
        except UltimoRejected as e:
            self._failed(entry_id, e, drop_link=True)
            self._rejected(room, a, e, result)
            return
        except UltimoError as e:
            self._give_up(entry_id, e, f"create Ultimo reservation for {a.booking_key}", "ultimo", result, drop_link=True)
            return
        with self.sessions.begin() as s:
            link = s.get(Link, link_id)
            assert link is not None
            link.ultimo_id = ultimo_id
            self._finish(s, entry_id, "done")
            result.resolved += conflicts.resolve(s, room=room.mailbox, booking_key=a.booking_key, now=self.clock())
        result.writes["ultimo_created"] += 1
        log.info("ultimo.created", room=room.mailbox, ultimo_id=ultimo_id, booking=a.booking_key)

    def _rejected(self, room: Room, a: CreateReservation | MoveReservation, e: UltimoRejected,
                  result: ApplyResult) -> None:
        """Record Ultimo's refusal as a conflict; decline the meeting when so configured."""
        kind = (ROOM_UNAVAILABLE if isinstance(e, RoomUnavailable)
                else RESERVATION_IN_PAST if isinstance(e, ReservationInPast) else REJECTED_BY_ULTIMO)
        if isinstance(a, CreateReservation):
            ev = a.event
            info = ConflictInfo(kind=kind, message=e.ultimo_message, booking_key=a.booking_key, code=e.code,
                                subject=self._subject(ev.subject, ev.private), organizer=ev.organizer,
                                start=ev.start, end=ev.end)
            link_id = None
        else:
            info = ConflictInfo(kind=kind, message=e.ultimo_message, booking_key=a.booking_key, code=e.code,
                                subject=a.subject, start=a.start, end=a.end, ultimo_id=a.ultimo_id)
            link_id = a.link_id
        self._conflict(room, info, link_id, result)
        log.warning("ultimo.rejected", room=room.mailbox, booking=a.booking_key, kind=kind, code=e.code)
        if kind == ROOM_UNAVAILABLE and self.on_room_unavailable == "decline" and isinstance(a, CreateReservation):
            reason = f"{room.mailbox} is not available at this time in Ultimo: {e.ultimo_message.splitlines()[-1]}"
            self._decline_event(room, DeclineEvent(booking_key=a.booking_key, link_id=None, item_id=a.event.item_id,
                                                   change_key=a.event.change_key, reason=reason,
                                                   start=a.event.start, end=a.event.end,
                                                   subject=a.event.subject), result)

    def _move_reservation(self, room: Room, a: MoveReservation, result: ApplyResult) -> None:
        with self.sessions.begin() as s:
            link = s.get(Link, a.link_id)
            entry = self._begin(s, room, link, "ultimo", "move", {
                "ultimo_id": a.ultimo_id, "start": a.start.isoformat(), "end": a.end.isoformat()})
            entry_id = entry.id
        try:
            self.ultimo.update_reservation(a.ultimo_id, a.start, a.end)
        except UltimoRejected as e:
            self._failed(entry_id, e)
            self._rejected(room, a, e, result)
            return
        except UltimoError as e:
            self._give_up(entry_id, e, f"move Ultimo reservation {a.ultimo_id}", "ultimo", result)
            return
        with self.sessions.begin() as s:
            link = s.get(Link, a.link_id)
            if link is not None:
                _advance(link, a.start, a.end)
            self._finish(s, entry_id, "done")
            result.resolved += conflicts.resolve(s, room=room.mailbox, booking_key=a.booking_key, now=self.clock())
        result.writes["ultimo_moved"] += 1

    def _cancel_reservation(self, room: Room, a: CancelReservation, result: ApplyResult) -> None:
        with self.sessions.begin() as s:
            link = s.get(Link, a.link_id)
            entry_id = self._begin(s, room, link, "ultimo", "cancel", {"ultimo_id": a.ultimo_id}).id
        try:
            self.ultimo.cancel_reservation(a.ultimo_id)
        except ReservationInPast as e:
            self._failed(entry_id, e)
            self._conflict(room, ConflictInfo(kind=RESERVATION_IN_PAST, message=e.ultimo_message,
                                              booking_key=a.booking_key, code=e.code, subject=a.subject,
                                              start=a.start, end=a.end, ultimo_id=a.ultimo_id), a.link_id, result)
            return
        except UltimoRejected as e:
            # Ultimo documents nothing for an unknown or already cancelled reservation; a
            # refusal here means there is nothing left to cancel.
            log.warning("ultimo.cancel_refused", room=room.mailbox, ultimo_id=a.ultimo_id, code=e.code)
        except UltimoError as e:
            self._give_up(entry_id, e, f"cancel Ultimo reservation {a.ultimo_id}", "ultimo", result)
            return
        self._tombstoned(room, a.link_id, a.booking_key, entry_id, result)
        result.writes["ultimo_cancelled"] += 1

    # --- Ultimo -> Exchange -----------------------------------------------------------

    def _create_event(self, room: Room, a: CreateEvent, result: ApplyResult) -> None:
        r = a.reservation
        with self.sessions.begin() as s:
            link = s.get(Link, a.link_id) if a.link_id is not None else None
            if link is None:
                link = Link(room=room.mailbox, space_id=room.space_id, origin=ORIGIN_ULTIMO, state=LINK_ACTIVE,
                            ultimo_id=r.ultimo_id, stamp=a.new.stamp, start=r.start, end=r.end,
                            synced_hash=synced_hash(r.start, r.end), subject=a.new.subject,
                            organizer=r.applicant_name or r.applicant_id)
                s.add(link)
                s.flush()
            entry = self._begin(s, room, link, "exchange", "create", {
                "stamp": a.new.stamp, "start": a.new.start.isoformat(), "end": a.new.end.isoformat(),
                "subject": a.new.subject})
            entry_id, link_id = entry.id, link.id
        try:
            ref = self.calendar.create_event(room.mailbox, a.new)
        except CalendarAuthError as e:
            self._failed(entry_id, e, drop_link=True)
            raise SideDown(f"exchange: {e}") from e
        except CalendarError as e:
            # The event may have been created before the connection failed: settle later.
            result.errors.append(f"create Exchange event for {a.booking_key}: {e} (will be settled)")
            self._system_check(e, "exchange")
            return
        with self.sessions.begin() as s:
            link = s.get(Link, link_id)
            assert link is not None
            link.exchange_item_id, link.exchange_change_key = ref.item_id, ref.change_key
            link.exchange_key = ref.key or link.exchange_key
            self._finish(s, entry_id, "done")
            result.resolved += conflicts.resolve(s, room=room.mailbox, booking_key=a.booking_key, now=self.clock())
        result.writes["exchange_created"] += 1
        log.info("exchange.created", room=room.mailbox, ultimo_id=r.ultimo_id, booking=a.booking_key)

    def _move_event(self, room: Room, a: MoveEvent, result: ApplyResult) -> None:
        with self.sessions.begin() as s:
            link = s.get(Link, a.link_id)
            entry_id = self._begin(s, room, link, "exchange", "move", {
                "item_id": a.item_id, "start": a.start.isoformat(), "end": a.end.isoformat()}).id
        try:
            ref = self._with_fresh_key(room, a.link_id, a.item_id, a.change_key,
                                       lambda ck: self.calendar.move_event(room.mailbox, a.item_id, ck,
                                                                           a.start, a.end))
        except (StaleChangeKey, EventGone) as e:
            # Someone edited or removed it since we read it: never overwrite blindly; the
            # next read sees the newer state and plans again.
            self._failed(entry_id, e)
            log.info("exchange.move_skipped", room=room.mailbox, booking=a.booking_key, reason=type(e).__name__)
            return
        except CalendarError as e:
            self._give_up(entry_id, e, f"move Exchange event {a.booking_key}", "exchange", result)
            return
        with self.sessions.begin() as s:
            link = s.get(Link, a.link_id)
            if link is not None:
                _advance(link, a.start, a.end)
                link.exchange_item_id, link.exchange_change_key = ref.item_id, ref.change_key
            link.exchange_key = ref.key or link.exchange_key
            self._finish(s, entry_id, "done")
            result.resolved += conflicts.resolve(s, room=room.mailbox, booking_key=a.booking_key, now=self.clock())
        result.writes["exchange_moved"] += 1

    def _remove_event(self, room: Room, a: RemoveEvent, result: ApplyResult) -> None:
        with self.sessions.begin() as s:
            link = s.get(Link, a.link_id) if a.link_id is not None else None
            entry_id = self._begin(s, room, link, "exchange", "remove", {"item_id": a.item_id}).id
        try:
            self.calendar.remove_event(room.mailbox, a.item_id, a.change_key)
        except EventGone:
            pass  # already gone: the outcome we wanted
        except CalendarError as e:
            self._give_up(entry_id, e, f"remove Exchange event {a.booking_key}", "exchange", result)
            return
        self._tombstoned(room, a.link_id, a.booking_key, entry_id, result)
        result.writes["exchange_removed"] += 1

    def _decline_event(self, room: Room, a: DeclineEvent, result: ApplyResult) -> None:
        with self.sessions.begin() as s:
            link = s.get(Link, a.link_id) if a.link_id is not None else None
            entry_id = self._begin(s, room, link, "exchange", "decline",
                                   {"item_id": a.item_id, "reason": a.reason}).id
        try:
            self._with_fresh_key(room, a.link_id, a.item_id, a.change_key,
                                 lambda ck: self.calendar.decline(room.mailbox, a.item_id, ck, a.reason))
        except EventGone:
            pass
        except StaleChangeKey as e:
            self._failed(entry_id, e)
            log.info("exchange.decline_skipped", room=room.mailbox, booking=a.booking_key, reason="changed")
            return
        except CalendarError as e:
            self._give_up(entry_id, e, f"decline Exchange meeting {a.booking_key}", "exchange", result)
            return
        self._tombstoned(room, a.link_id, a.booking_key, entry_id, result)
        result.writes["exchange_declined"] += 1

    def _with_fresh_key(self, room: Room, link_id: int | None, item_id: str, change_key: str,
                        write: Callable[[str], Any]) -> Any:
        """Run `write(change_key)`; on a stale change key, retry once with the current key
        if the item's times are still those syncd last synced (the key churned: a sibling
        occurrence was written, the booking assistant touched it). A real edit is never
        overwritten: then StaleChangeKey propagates and the next read plans again."""
        try:
            return write(change_key)
        except StaleChangeKey:
            fresh = self.calendar.get_event(room.mailbox, item_id)
            with self.sessions() as s:
                link = s.get(Link, link_id) if link_id is not None else None
                synced = (link.start, link.end) if link is not None else None
            if fresh is None:
                raise EventGone(f"{room.mailbox}: item vanished while syncd wrote it") from None
            if synced is None or (fresh.start, fresh.end) != synced:
                raise
            return write(fresh.change_key)

    def _tombstoned(self, room: Room, link_id: int | None, key: str, entry_id: int, result: ApplyResult) -> None:
        with self.sessions.begin() as s:
            link = s.get(Link, link_id) if link_id is not None else None
            if link is not None:
                link.state = LINK_CANCELLED
                link.cancelled_at = self.clock()
            self._finish(s, entry_id, "done")
            result.resolved += conflicts.resolve(s, room=room.mailbox, booking_key=key, now=self.clock())

    # --- bookkeeping only -------------------------------------------------------------

    def _link_pair(self, room: Room, a: LinkPair, result: ApplyResult) -> None:
        ev, r = a.event, a.reservation
        with self.sessions.begin() as s:
            link = s.get(Link, a.link_id) if a.link_id is not None else None
            if link is None:
                link = Link(room=room.mailbox, space_id=room.space_id, origin=a.origin or ORIGIN_BOTH,
                            state=LINK_ACTIVE)
                s.add(link)
            link.exchange_key, link.exchange_item_id, link.exchange_change_key = ev.key, ev.item_id, ev.change_key
            link.stamp = link.stamp or ev.stamp
            link.ultimo_id = r.ultimo_id
            link.subject = link.subject or self._subject(ev.subject, ev.private)
            link.organizer = link.organizer or ev.organizer
            _advance(link, ev.start, ev.end)
        result.writes["linked"] += 1

    def _refresh_link(self, room: Room, a: RefreshLink, result: ApplyResult) -> None:
        with self.sessions.begin() as s:
            link = s.get(Link, a.link_id)
            if link is None:
                return
            if a.exchange_key is not None:
                link.exchange_key = a.exchange_key
            if a.item_id is not None:
                link.exchange_item_id = a.item_id
            if a.change_key is not None:
                link.exchange_change_key = a.change_key
            _advance(link, a.start, a.end)

    def _tombstone(self, room: Room, a: Tombstone, result: ApplyResult) -> None:
        with self.sessions.begin() as s:
            link = s.get(Link, a.link_id)
            if link is not None:
                link.state = LINK_CANCELLED
                link.cancelled_at = self.clock()
            conflicts.resolve(s, room=room.mailbox, booking_key=a.booking_key, now=self.clock())

    def _subject(self, subject: str | None, private: bool) -> str | None:
        return self.private_subject if (private and self.mask_private) else subject

def _advance(link: Link, start: datetime, end: datetime) -> None:
    link.start, link.end, link.synced_hash = start, end, synced_hash(start, end)


def _open_count(s: Session, room: str, key: str, kind: str) -> int:
    return sum(1 for c in conflicts.open_for_room(s, room) if c.booking_key == key and c.kind == kind)
