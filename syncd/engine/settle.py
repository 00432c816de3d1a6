"""Settling interrupted writes: the second half of the executor's write-ahead journal.

A journal row still `pending` means syncd stopped between committing an intent and
recording its outcome. Before anything else touches that room again, the outcome is
decided from the remote side, so a crash at any instant never duplicates a booking:

- an Ultimo create is recognised by an unlinked reservation with the intended times and
  description (Ultimo's Get does not return the ExternalId); failing that, by the one
  unlinked reservation nearby with the intended description and applicant (a person may
  have moved it meanwhile);
- an Exchange create by syncd's stamp;
- a move by reading the moved reservation or event: at the intended times, the move took
  effect and the link advances to them, so a person's later edit of the other side is
  carried over rather than seen as a change on both sides (a false conflict);
- cancellations, removals and declines need no lookup: the next read shows whether they
  happened, and the planner treats "gone on both" as done.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from syncd.core.model import Room, TimeWindow, synced_hash
from syncd.store.schema import LINK_ACTIVE, JournalEntry, Link

log = structlog.get_logger("syncd.settle")

# How far from the intended times an interrupted create is looked for when a person may
# have moved the reservation before syncd started again.
SETTLE_REACH = timedelta(days=31)


class Settling:
    """Mixed into the Executor, whose sessions, clients and `_finish` it uses."""

    sessions: Any
    ultimo: Any
    calendar: Any

    def _finish(self, s: Session, entry_id: int, status: str, error: str | None = None) -> None:
        raise NotImplementedError

    def pending(self, room: Room) -> list[JournalEntry]:
        """The room's journal rows still pending (a write whose outcome was never recorded)."""
        with self.sessions() as s:
            rows = s.scalars(select(JournalEntry).where(JournalEntry.room == room.mailbox,
                                                        JournalEntry.status == "pending")
                             .order_by(JournalEntry.id)).all()
            s.expunge_all()
            return list(rows)

    def settle_room(self, room: Room) -> int:
        """Decide the outcome of every pending write of `room` from the remote side.

        Gives how many were settled. Raises the remote side's error when it cannot be read:
        the room must then not be planned (its links are not known to be right)."""
        settled = 0
        for entry in self.pending(room):
            payload = json.loads(entry.payload)
            if entry.action == "create" and entry.side == "ultimo":
                self._settle_ultimo_create(room, entry, payload)
            elif entry.action == "create" and entry.side == "exchange":
                self._settle_exchange_create(room, entry, payload)
            elif entry.action == "move":
                self._settle_move(room, entry, payload)
            else:
                # Cancels, removals and declines are safe to plan again: the next read
                # shows whether they happened, and the planner treats "gone on both
                # sides" as done.
                with self.sessions.begin() as s:
                    self._finish(s, entry.id, "unknown", "interrupted; re-planned from the next read")
            settled += 1
        return settled

    def _settle_ultimo_create(self, room: Room, entry: JournalEntry, p: dict[str, Any]) -> None:
        """Find the reservation an interrupted create may have made: an unlinked one with the
        intended times and description; failing that (a person moved it meanwhile), the one
        unlinked reservation with the intended description and applicant nearby."""
        start, end = datetime.fromisoformat(p["start"]), datetime.fromisoformat(p["end"])
        near = self.ultimo.get_reservations(p["space_id"], TimeWindow(start - timedelta(minutes=1),
                                                                      end + timedelta(minutes=1)))
        with self.sessions() as s:
            linked = set(s.scalars(select(Link.ultimo_id).where(Link.ultimo_id.is_not(None))))
        same = [r for r in near if r.ultimo_id not in linked and (r.description or "") == p.get("description", "")]
        match = next((r for r in same if r.start == start and r.end == end), None)
        if match is None:
            wide = self.ultimo.get_reservations(p["space_id"], TimeWindow(start - SETTLE_REACH, end + SETTLE_REACH))
            alike = [r for r in wide if r.ultimo_id not in linked
                     and (r.description or "") == p.get("description", "")
                     and (not p.get("applicant_id") or r.applicant_id == p["applicant_id"])]
            match = alike[0] if len(alike) == 1 else None
        with self.sessions.begin() as s:
            link = s.get(Link, entry.link_id) if entry.link_id is not None else None
            if match is not None and link is not None:
                link.ultimo_id = match.ultimo_id
                self._finish(s, entry.id, "done", "settled: the reservation was created")
                log.info("journal.settled", room=room.mailbox, action="ultimo create", outcome="created",
                         ultimo_id=match.ultimo_id)
            else:
                self._finish(s, entry.id, "failed", "settled: no reservation was created")
                if link is not None and link.ultimo_id is None:
                    detach_journal(s, link.id)
                    s.delete(link)
                log.info("journal.settled", room=room.mailbox, action="ultimo create", outcome="not created")

    def _settle_exchange_create(self, room: Room, entry: JournalEntry, p: dict[str, Any]) -> None:
        start, end = datetime.fromisoformat(p["start"]), datetime.fromisoformat(p["end"])
        window = TimeWindow(start - timedelta(days=1), end + timedelta(days=1))
        event = self.calendar.find_stamped(room.mailbox, p["stamp"], window)
        with self.sessions.begin() as s:
            link = s.get(Link, entry.link_id) if entry.link_id is not None else None
            if event is not None and link is not None:
                link.exchange_item_id, link.exchange_change_key = event.item_id, event.change_key
                link.exchange_key = event.key
                self._finish(s, entry.id, "done", "settled: the event was created")
                outcome = "created"
            else:
                self._finish(s, entry.id, "failed", "settled: no event was created")
                if link is not None and link.exchange_item_id is None:
                    detach_journal(s, link.id)
                    s.delete(link)
                outcome = "not created"
        log.info("journal.settled", room=room.mailbox, action="exchange create", outcome=outcome)



    def _settle_move(self, room: Room, entry: JournalEntry, p: dict[str, Any]) -> None:
        """A move found at its intended times took effect: the link advances to them."""
        start, end = datetime.fromisoformat(p["start"]), datetime.fromisoformat(p["end"])
        change_key = None
        if entry.side == "ultimo":
            near = self.ultimo.get_reservations(room.space_id, TimeWindow(start - timedelta(minutes=1),
                                                                          end + timedelta(minutes=1)))
            done = any(r.ultimo_id == p["ultimo_id"] and (r.start, r.end) == (start, end) for r in near)
        else:
            event = self.calendar.get_event(room.mailbox, p["item_id"])
            done = event is not None and (event.start, event.end) == (start, end)
            change_key = event.change_key if event is not None else None
        with self.sessions.begin() as s:
            link = s.get(Link, entry.link_id) if entry.link_id is not None else None
            if done and link is not None and link.state == LINK_ACTIVE:
                link.start, link.end, link.synced_hash = start, end, synced_hash(start, end)
                if change_key is not None and link.exchange_item_id == p.get("item_id"):
                    link.exchange_change_key = change_key
                self._finish(s, entry.id, "done", "settled: the move took effect")
            else:
                self._finish(s, entry.id, "unknown", "interrupted; re-planned from the next read")
        log.info("journal.settled", room=room.mailbox, action=f"{entry.side} move",
                 outcome="moved" if done else "re-planned")


def detach_journal(s: Session, link_id: int) -> None:
    """Keep the journal's history when a link row is deleted."""
    for e in s.scalars(select(JournalEntry).where(JournalEntry.link_id == link_id)):
        e.link_id = None
    s.flush()


