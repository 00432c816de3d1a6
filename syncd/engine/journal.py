"""The journal every remote write goes through, shared by the executor's write handlers.

Step 1 (`_begin`: the intent, committed before the write) and step 3 (`_settled`, `_failed`:
the outcome) of the executor's three steps, the conflict bookkeeping, and what counts as a
whole system failing (`SYSTEM_FAILURES`: the remaining writes to that side stop for the room).

One commit per remote write. An outcome is not committed on its own: it is *due*
(`ApplyResult.due`) and goes into the pass's next transaction (`_tx`), which is the next
write's intent, or the pass's last commit (`_commit_due`) after its last write. So the
intent of write k+1 and everything the pass recorded since write k (its outcome, a refusal,
a conflict, a link) are one transaction, committed before write k+1 is sent. What a crash
can then lose is only what came after the last commit: write k's outcome (its journal row
stays `pending`, settled from the remote side before the room is planned again, exactly as
a crash between a write and its outcome always was) and bookkeeping the next pass plans
again. It never loses anything a later write was sent on.

Not combined: the Ultimo client's call ledger (its own transactions, each committed before
the call leaves: the quota must hold across a crash whatever the journal does) and settling
(one transaction per interrupted write, before the pass plans anything).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
from syncd.engine import conflicts
from syncd.engine.settle import detach_journal
from syncd.errors import (
    BudgetExhausted,
    CalendarAuthError,
    CalendarThrottled,
    CalendarUnreachable,
    UltimoAuthError,
    UltimoNotFound,
    UltimoTransient,
)
from syncd.store.schema import (
    JournalEntry,
    Link,
)

log = structlog.get_logger("syncd.executor")

# Errors that say a whole system is out of reach for now, not that one booking failed.
SYSTEM_FAILURES: tuple[type[Exception], ...] = (
    UltimoTransient, UltimoAuthError, UltimoNotFound, BudgetExhausted,
    CalendarUnreachable, CalendarAuthError, CalendarThrottled,
)

CONFLICT_KINDS = (ROOM_UNAVAILABLE, RESERVATION_IN_PAST, CHANGED_ON_BOTH_SIDES, REJECTED_BY_ULTIMO)

WRITE_KEYS = ("ultimo_created", "ultimo_moved", "ultimo_cancelled", "exchange_created", "exchange_moved",
              "exchange_removed", "exchange_declined", "linked")

# What a pass recorded but has not committed yet (an outcome, a conflict): run in its next transaction.
Due = Callable[[Session], None]


@dataclass
class ApplyResult:
    """What applying one plan did."""

    writes: Counter[str] = field(default_factory=Counter)
    conflicts_new: int = 0
    resolved: int = 0
    errors: list[str] = field(default_factory=list)
    failed_system: str | None = None
    created: dict[str, str] = field(default_factory=dict)   # booking key -> UltimoId created this pass
    recorded: list[ConflictInfo] = field(default_factory=list)   # the conflicts new this pass, for people
    due: list[Due] = field(default_factory=list, repr=False)     # not committed yet: see Journal._tx


class SideDown(Exception):
    """Raised inside the executor to skip the remaining writes to one system."""


class Journal:
    """The journal and result helpers the write handlers share (state set by Executor)."""

    sessions: sessionmaker[Session]
    calendar: RoomCalendar
    ultimo: Any
    clock: Callable[[], datetime]
    run_id: int | None
    private_subject: str
    mask_private: bool


    @contextmanager
    def _tx(self, result: ApplyResult) -> Iterator[Session]:
        """A transaction of the pass that first records what is due (the outcomes of writes
        already answered, their conflicts, links): committed together when the block ends.
        An exception rolls all of it back; the journal rows of those outcomes stay pending."""
        due, result.due = result.due, []
        counted = (result.conflicts_new, result.resolved, len(result.recorded))
        try:
            with self.sessions.begin() as s:
                for record in due:
                    record(s)
                    s.flush()   # in the order they happened (one flush would order them by table)
                yield s
        except BaseException:
            # Rolled back: the conflicts it recorded or resolved are not, whatever the records
            # counted (the next pass finds them again); the pass's summary must not say so.
            result.conflicts_new, result.resolved = counted[:2]
            del result.recorded[counted[2]:]
            raise

    def _commit_due(self, result: ApplyResult) -> None:
        """The pass's last commit: what is due after its last write (nothing when nothing is)."""
        if result.due:
            with self._tx(result):
                pass

    def _begin(self, s: Session, room: Room, link: Link | None, side: str, kind: str,
               payload: dict[str, Any]) -> JournalEntry:
        """Step 1: the intent, in the caller's transaction (`_tx`: committed before the write)."""
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

    def _settled(self, result: ApplyResult, outcome: Due) -> None:
        """Step 3 for a write that was answered: `outcome` (the link advances, the journal row
        is closed) is due, committed with the pass's next transaction. Until then a crash
        leaves the row pending, and settling finds the write's result on the remote side."""
        result.due.append(outcome)

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

    def _failed(self, entry_id: int, error: Exception, result: ApplyResult, *, drop_link: bool = False) -> None:
        """Step 3 for a write that did not happen (due, as `_settled`): settle the journal,
        keep the link as it was (or drop the link a create made)."""
        def outcome(s: Session) -> None:
            entry = s.get(JournalEntry, entry_id)
            link_id = entry.link_id if entry is not None else None
            self._finish(s, entry_id, "failed", str(error))
            if drop_link and link_id is not None:
                link = s.get(Link, link_id)
                if link is not None:
                    detach_journal(s, link_id)
                    s.delete(link)

        result.due.append(outcome)

    def _conflict(self, room: Room, info: ConflictInfo, link_id: int | None, result: ApplyResult) -> None:
        """Record `info` (due: committed with the pass's next transaction, before any later write)."""
        def record(s: Session) -> None:
            before = open_count(s, room.mailbox, info.booking_key, info.kind)
            conflicts.record(s, room=room.mailbox, space_id=room.space_id, info=info, link_id=link_id,
                             now=self.clock())
            result.conflicts_new += 0 if before else 1
            if not before:
                result.recorded.append(info)

        result.due.append(record)

    def _give_up(self, entry_id: int, e: Exception, what: str, side: str, result: ApplyResult, *,
                 drop_link: bool = False) -> None:
        """A write failed: settle its journal row, report it, and stop writing to `side`
        for this room when the whole system is failing."""
        self._failed(entry_id, e, result, drop_link=drop_link)
        result.errors.append(f"{what}: {e}")
        self._system_check(e, side)

    def _outcome_unknown(self, e: Exception, what: str, side: str, result: ApplyResult) -> None:
        """A write whose answer was lost (it may have taken effect): its journal row stays
        pending and is settled from the remote side before the room is planned again."""
        result.errors.append(f"{what}: {e} (will be settled before the next write)")
        self._system_check(e, side)

    def _system_check(self, error: Exception, side: str) -> None:
        if isinstance(error, SYSTEM_FAILURES):
            raise SideDown(f"{side}: {error}") from error

    def _subject(self, subject: str | None, private: bool) -> str | None:
        return self.private_subject if (private and self.mask_private) else subject


def advance(link: Link, start: datetime, end: datetime) -> None:
    link.start, link.end, link.synced_hash = start, end, synced_hash(start, end)


def open_count(s: Session, room: str, key: str, kind: str) -> int:
    return sum(1 for c in conflicts.open_for_room(s, room) if c.booking_key == key and c.kind == kind)
