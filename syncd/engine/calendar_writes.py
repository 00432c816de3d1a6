"""The executor's writes to the room calendar (Ultimo -> Exchange) and its bookkeeping-only
actions (linking a pair, refreshing or tombstoning a link), each through the journal. The
bookkeeping-only actions are due like an outcome (syncd/engine/journal.py): committed with
the pass's next write's intent, or at its end; a crash before that loses only what the next
pass plans again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import structlog
from sqlalchemy.orm import Session

from syncd.core.model import (
    Room,
    short_hash,
    synced_hash,
)
from syncd.core.plan import (
    CreateEvent,
    DeclineEvent,
    LinkPair,
    MoveEvent,
    RefreshLink,
    RemoveEvent,
    Tombstone,
)
from syncd.engine import conflicts
from syncd.engine.journal import (
    ApplyResult,
    Journal,
    SideDown,
    advance,
)
from syncd.errors import (
    CalendarAuthError,
    CalendarError,
    CalendarProtocolError,
    CalendarThrottled,
    CalendarUnreachable,
    EventGone,
    StaleChangeKey,
)
from syncd.store.schema import (
    LINK_ACTIVE,
    LINK_CANCELLED,
    ORIGIN_BOTH,
    ORIGIN_ULTIMO,
    Link,
)

log = structlog.get_logger("syncd.executor")


class CalendarWrites(Journal):
    """Creating, moving, removing and declining room-calendar events; link bookkeeping."""


    def _create_event(self, room: Room, a: CreateEvent, result: ApplyResult) -> None:
        r = a.reservation
        with self._tx(result) as s:
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
            # Graph's transactionId: fixed by this intent (a retry of it never duplicates the
            # event), new for a later intent (a re-create after a deletion does not collide).
            new = replace(a.new, transaction_id="syncd-" + short_hash(a.new.stamp, str(entry_id),
                                                                      entry.created_at.isoformat(), length=32))
        try:
            ref = self.calendar.create_event(room.mailbox, new)
        except CalendarAuthError as e:
            self._failed(entry_id, e, result, drop_link=True)
            raise SideDown(f"exchange: {e}") from e
        except CalendarError as e:
            # The event may have been created before the connection failed: settle later.
            result.errors.append(f"create Exchange event for {a.booking_key}: {e} (will be settled)")
            self._system_check(e, "exchange")
            return
        def outcome(s: Session) -> None:
            link = s.get(Link, link_id)
            assert link is not None
            link.exchange_item_id, link.exchange_change_key = ref.item_id, ref.change_key
            link.exchange_key = ref.key or link.exchange_key
            self._finish(s, entry_id, "done")
            result.resolved += conflicts.resolve(s, room=room.mailbox, booking_key=a.booking_key, now=self.clock())

        self._settled(result, outcome)
        result.writes["exchange_created"] += 1
        log.info("exchange.created", room=room.mailbox, ultimo_id=r.ultimo_id, booking=a.booking_key)

    def _move_event(self, room: Room, a: MoveEvent, result: ApplyResult) -> None:
        with self._tx(result) as s:
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
            self._failed(entry_id, e, result)
            log.info("exchange.move_skipped", room=room.mailbox, booking=a.booking_key, reason=type(e).__name__)
            return
        except (CalendarUnreachable, CalendarProtocolError, CalendarThrottled) as e:
            # No answer, one syncd cannot read, or a refusal of a resend whose first attempt
            # may have been made (throttled): settled from the calendar before the next plan.
            self._outcome_unknown(e, f"move Exchange event {a.booking_key}", "exchange", result)
            return
        except CalendarError as e:
            self._give_up(entry_id, e, f"move Exchange event {a.booking_key}", "exchange", result)
            return
        def outcome(s: Session) -> None:
            link = s.get(Link, a.link_id)
            if link is not None:
                advance(link, a.start, a.end)
                link.exchange_item_id, link.exchange_change_key = ref.item_id, ref.change_key
                link.exchange_key = ref.key or link.exchange_key
            self._finish(s, entry_id, "done")
            result.resolved += conflicts.resolve(s, room=room.mailbox, booking_key=a.booking_key, now=self.clock())

        self._settled(result, outcome)
        result.writes["exchange_moved"] += 1

    def _remove_event(self, room: Room, a: RemoveEvent, result: ApplyResult) -> None:
        with self._tx(result) as s:
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

    def _decline_event(self, room: Room, a: DeclineEvent, result: ApplyResult,
                       before: Callable[[Session], None] | None = None) -> bool | None:
        """Decline a person's meeting in the room; gives True when the room declined it (or it
        was gone), False when it certainly did not (the meeting changed meanwhile), None when
        the answer was lost or refused (it may have). `before` runs in the intent's
        transaction: what must be on record before the request, even if syncd dies then."""
        with self._tx(result) as s:
            link = s.get(Link, a.link_id) if a.link_id is not None else None
            entry_id = self._begin(s, room, link, "exchange", "decline",
                                   {"item_id": a.item_id, "reason": a.reason}).id
            if before is not None:
                before(s)
        try:
            self._with_fresh_key(room, a.link_id, a.item_id, a.change_key,
                                 lambda ck: self.calendar.decline(room.mailbox, a.item_id, ck, a.reason))
        except EventGone:
            pass
        except StaleChangeKey as e:
            self._failed(entry_id, e, result)
            log.info("exchange.decline_skipped", room=room.mailbox, booking=a.booking_key, reason="changed")
            return False
        except CalendarError as e:
            self._give_up(entry_id, e, f"decline Exchange meeting {a.booking_key}", "exchange", result)
            return None
        self._tombstoned(room, a.link_id, a.booking_key, entry_id, result)
        result.writes["exchange_declined"] += 1
        return True

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
        def outcome(s: Session) -> None:
            link = s.get(Link, link_id) if link_id is not None else None
            if link is not None:
                link.state = LINK_CANCELLED
                link.cancelled_at = self.clock()
            self._finish(s, entry_id, "done")
            result.resolved += conflicts.resolve(s, room=room.mailbox, booking_key=key, now=self.clock())

        self._settled(result, outcome)


    def _link_pair(self, room: Room, a: LinkPair, result: ApplyResult) -> None:
        ev, r = a.event, a.reservation

        def link_pair(s: Session) -> None:
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
            advance(link, ev.start, ev.end)

        result.due.append(link_pair)
        result.writes["linked"] += 1

    def _refresh_link(self, room: Room, a: RefreshLink, result: ApplyResult) -> None:
        def refresh(s: Session) -> None:
            link = s.get(Link, a.link_id)
            if link is None:
                return
            if a.exchange_key is not None:
                link.exchange_key = a.exchange_key
            if a.item_id is not None:
                link.exchange_item_id = a.item_id
            if a.change_key is not None:
                link.exchange_change_key = a.change_key
            advance(link, a.start, a.end)

        result.due.append(refresh)

    def _tombstone(self, room: Room, a: Tombstone, result: ApplyResult) -> None:
        def tombstone(s: Session) -> None:
            link = s.get(Link, a.link_id)
            if link is not None:
                link.state = LINK_CANCELLED
                link.cancelled_at = self.clock()
            conflicts.resolve(s, room=room.mailbox, booking_key=a.booking_key, now=self.clock())

        result.due.append(tombstone)
