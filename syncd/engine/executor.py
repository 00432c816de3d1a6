"""The executor: carries out one room's plan, journalling every remote write.

For every write to Ultimo or Exchange, three steps:

    1. intent   a `journal` row (status `pending`) and the link's `intent` are committed
    2. write    the call to Ultimo or Exchange
    3. outcome  the link advances, the journal row is settled (`done` / `failed`) and the
                intent cleared, together

Step 3 of one write and step 1 of the next are one transaction (syncd/engine/journal.py:
the outcome is due until the pass's next commit; the last write's outcome is committed
alone when the pass ends), so a pass commits once per write. Whatever the pass recorded is
committed before its next write is sent.

A crash between 1 and 3 leaves a pending journal row and a link with an intent.
`settle_room` (syncd/engine/settle.py) runs before anything else touches that room again and decides from the
remote side whether the write happened: an Ultimo create is recognised by an unlinked
reservation with the intended times (Ultimo does not return ExternalIds), an Exchange
create by syncd's stamp. So a crash at any instant never duplicates a booking.

One failing action does not stop the others; a link advances only when its write
succeeded. A failure of a whole system (unreachable, credentials, quota) stops the
remaining writes to that system for this room: they would fail the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import structlog
from sqlalchemy.orm import Session, sessionmaker

from syncd.calendars.base import RoomCalendar
from syncd.core.clashes import decline_reason, occupying
from syncd.core.model import (
    REJECTED_BY_ULTIMO,
    RESERVATION_IN_PAST,
    ROOM_UNAVAILABLE,
    Clash,
    ConflictInfo,
    Room,
    TimeWindow,
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
from syncd.engine.calendar_writes import CalendarWrites
from syncd.engine.journal import (
    CONFLICT_KINDS,
    SYSTEM_FAILURES,
    WRITE_KEYS,
    ApplyResult,
    SideDown,
    advance,
    open_count,
)
from syncd.engine.settle import Settling
from syncd.errors import (
    ReservationInPast,
    RoomUnavailable,
    UltimoError,
    UltimoProtocolError,
    UltimoRejected,
    UltimoTransient,
)
from syncd.store.schema import (
    LINK_ACTIVE,
    ORIGIN_EXCHANGE,
    Link,
)
from syncd.ultimo.client import UltimoOutcomeUnknown

log = structlog.get_logger("syncd.executor")


_DAY = timedelta(days=1)

__all__ = ["SYSTEM_FAILURES", "WRITE_KEYS", "ApplyResult", "Executor"]


class Executor(CalendarWrites, Settling):
    """Applies plans for one configuration; one instance serves every room."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        calendar: RoomCalendar,
        ultimo: Any,
        *,
        display_zone: tzinfo = UTC,
        private_subject: str = "Private meeting",
        mask_private: bool = True,
        clock: Callable[[], datetime],
        run_id: int | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.sessions = sessions
        self.calendar = calendar
        self.ultimo = ultimo
        self.display_zone = display_zone
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

        def plan_conflicts(s: Session) -> None:
            for key in plan.resolved:
                result.resolved += conflicts.resolve(s, room=room.mailbox, booking_key=key, now=now)
            for info in plan.conflicts:
                before = open_count(s, room.mailbox, info.booking_key, info.kind)
                conflicts.record(s, room=room.mailbox, space_id=room.space_id, info=info, link_id=None, now=now)
                result.conflicts_new += 0 if before else 1
                if not before:
                    result.recorded.append(info)
                # The booking's newest problem replaces the older ones (whose cause is gone).
                result.resolved += conflicts.resolve(s, room=room.mailbox, booking_key=info.booking_key, now=now,
                                                     kinds=[k for k in CONFLICT_KINDS if k != info.kind])

        # Committed with the first write's intent (or at the end): a crash before that
        # loses nothing the next pass does not plan again.
        result.due.append(plan_conflicts)
        down: set[str] = set()
        try:
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
        except Exception:
            # A fault of syncd's own: still record the outcomes already answered, if the
            # database lets us (else their journal rows are settled on the next pass).
            try:
                self._commit_due(result)
            except Exception:  # noqa: BLE001 - the first failure is the one to report
                log.warning("executor.outcomes_not_recorded", room=room.mailbox, exc_info=True)
            raise
        # The last write's outcome, alone. (Not on a BaseException: like a killed process,
        # that leaves its journal row pending for settling.)
        self._commit_due(result)
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

    # --- Exchange -> Ultimo -----------------------------------------------------------

    def _create_reservation(self, room: Room, a: CreateReservation, result: ApplyResult) -> None:
        ev = a.event
        with self._tx(result) as s:
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
            self._failed(entry_id, e, result, drop_link=True)
            self._rejected(room, a, e, result)
            return
        except UltimoError as e:
            self._give_up(entry_id, e, f"create Ultimo reservation for {a.booking_key}", "ultimo", result, drop_link=True)
            return
        result.created[a.booking_key] = ultimo_id

        def outcome(s: Session) -> None:
            link = s.get(Link, link_id)
            assert link is not None
            link.ultimo_id = ultimo_id
            self._finish(s, entry_id, "done")
            result.resolved += conflicts.resolve(s, room=room.mailbox, booking_key=a.booking_key, now=self.clock())

        self._settled(result, outcome)
        result.writes["ultimo_created"] += 1
        log.info("ultimo.created", room=room.mailbox, ultimo_id=ultimo_id, booking=a.booking_key)

    def _rejected(self, room: Room, a: CreateReservation | MoveReservation, e: UltimoRejected,
                  result: ApplyResult) -> None:
        """Record Ultimo's refusal as a conflict naming what is in the way (1015) or what syncd
        tried; the room declines a new meeting refused with 1015 when the plan says so."""
        kind = (ROOM_UNAVAILABLE if isinstance(e, RoomUnavailable)
                else RESERVATION_IN_PAST if isinstance(e, ReservationInPast) else REJECTED_BY_ULTIMO)
        own = None if isinstance(a, CreateReservation) else a.ultimo_id
        start, end = (a.event.start, a.event.end) if isinstance(a, CreateReservation) else (a.start, a.end)
        if kind == ROOM_UNAVAILABLE:
            clashes = _known(a.clashes, result.created)
        else:
            tried = f"move Ultimo reservation {own}" if own else "create Ultimo reservation"
            clashes = (Clash(kind="attempt", action=tried, start=start, end=end, message=e.ultimo_message,
                             ultimo_id=own),)
        declining = kind == ROOM_UNAVAILABLE and isinstance(a, CreateReservation) and a.decline
        if declining and not clashes:
            clashes = self._look_for_clashes(room, start, end)
        # Declined only when what is in the way is known, and is not a reservation at the very
        # same times: that one is the meeting's twin, linked once both sides are read.
        declining = declining and bool(clashes) and not any(
            (c.start, c.end) == (start, end) for c in clashes if c.kind == "reservation")
        if isinstance(a, CreateReservation):
            ev = a.event
            info = ConflictInfo(kind=kind, message=e.ultimo_message, booking_key=a.booking_key, code=e.code,
                                subject=self._subject(ev.subject, ev.private), organizer=ev.organizer,
                                start=ev.start, end=ev.end, clashes_with=clashes)
            link_id = None
        else:
            info = ConflictInfo(kind=kind, message=e.ultimo_message, booking_key=a.booking_key, code=e.code,
                                subject=a.subject, start=a.start, end=a.end, ultimo_id=a.ultimo_id,
                                clashes_with=clashes)
            link_id = a.link_id
        self._conflict(room, info, link_id, result)
        log.warning("ultimo.rejected", room=room.mailbox, booking=a.booking_key, kind=kind, code=e.code,
                    clashes=[c.ultimo_id or "pending" for c in clashes if c.kind == "reservation"])
        if declining and isinstance(a, CreateReservation):
            reason = decline_reason(room.space_id, clashes, start, e.ultimo_message, self.display_zone)
            outcome = f"declined in the room's calendar: {reason}"

            def note(text: str | None) -> Callable[[Session], None]:
                return lambda s: conflicts.note_outcome(s, room=room.mailbox, booking_key=a.booking_key, kind=kind,
                                                        outcome=text)

            # On record before the request (in the decline's intent, with the refusal and the
            # conflict): a decline whose answer is lost, or that syncd dies right after, has
            # still told the organizer; the conflict must say so. Taken back only when the
            # room certainly did not decline (the meeting changed meanwhile).
            declined = self._decline_event(room, DeclineEvent(
                booking_key=a.booking_key, link_id=None, item_id=a.event.item_id,
                change_key=a.event.change_key, reason=reason, start=a.event.start, end=a.event.end,
                subject=a.event.subject), result, before=note(outcome))
            if declined is False:
                result.due.append(note(None))
            else:
                # The decline's intent has run the conflict's record: `info` is in `recorded`.
                result.recorded = [replace(c, outcome=outcome) if c is info else c for c in result.recorded]

    def _look_for_clashes(self, room: Room, start: datetime, end: datetime) -> tuple[Clash, ...]:
        """What occupies the room around [start, end) by one Ultimo read of that day: only for
        a refused meeting the room is to decline when this pass did not read Ultimo (so that
        the decline can say what is in the way). () when the read fails."""
        try:
            found = self.ultimo.get_reservations(room.space_id, TimeWindow(start - _DAY, end + _DAY))
        except UltimoError as e:
            log.info("ultimo.clash_lookup_failed", room=room.mailbox, error=str(e))
            return ()
        return occupying(start, end, found)

    def _move_reservation(self, room: Room, a: MoveReservation, result: ApplyResult) -> None:
        with self._tx(result) as s:
            link = s.get(Link, a.link_id)
            entry = self._begin(s, room, link, "ultimo", "move", {
                "ultimo_id": a.ultimo_id, "start": a.start.isoformat(), "end": a.end.isoformat()})
            entry_id = entry.id
        try:
            self.ultimo.update_reservation(a.ultimo_id, a.start, a.end)
        except UltimoRejected as e:
            self._failed(entry_id, e, result)
            self._rejected(room, a, e, result)
            return
        except (UltimoTransient, UltimoProtocolError) as e:
            # No answer, or one syncd cannot read: the move may have taken effect.
            self._outcome_unknown(e, f"move Ultimo reservation {a.ultimo_id}", "ultimo", result)
            return
        except UltimoError as e:
            self._give_up(entry_id, e, f"move Ultimo reservation {a.ultimo_id}", "ultimo", result)
            return
        def outcome(s: Session) -> None:
            link = s.get(Link, a.link_id)
            if link is not None:
                advance(link, a.start, a.end)
            self._finish(s, entry_id, "done")
            result.resolved += conflicts.resolve(s, room=room.mailbox, booking_key=a.booking_key, now=self.clock())

        self._settled(result, outcome)
        result.writes["ultimo_moved"] += 1

    def _cancel_reservation(self, room: Room, a: CancelReservation, result: ApplyResult) -> None:
        with self._tx(result) as s:
            link = s.get(Link, a.link_id)
            entry_id = self._begin(s, room, link, "ultimo", "cancel", {"ultimo_id": a.ultimo_id}).id
        try:
            self.ultimo.cancel_reservation(a.ultimo_id)
        except ReservationInPast as e:
            self._failed(entry_id, e, result)
            tried = Clash(kind="attempt", action=f"cancel Ultimo reservation {a.ultimo_id}", start=a.start,
                          end=a.end, ultimo_id=a.ultimo_id, message=e.ultimo_message)
            self._conflict(room, ConflictInfo(kind=RESERVATION_IN_PAST, message=e.ultimo_message,
                                              booking_key=a.booking_key, code=e.code, subject=a.subject,
                                              start=a.start, end=a.end, ultimo_id=a.ultimo_id,
                                              clashes_with=(tried,)), a.link_id, result)
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


def _known(clashes: tuple[Clash, ...], created: dict[str, str]) -> tuple[Clash, ...]:
    """The planned clashes that are real: a reservation syncd meant to create earlier in
    this pass counts only when that create succeeded, and then carries its UltimoId."""
    out = []
    for c in clashes:
        if c.pending_key is None:
            out.append(c)
        elif c.pending_key in created:
            out.append(replace(c, ultimo_id=created[c.pending_key], pending_key=None))
    return tuple(out)
