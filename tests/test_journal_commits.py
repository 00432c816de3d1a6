"""One database commit per remote write, and a crash at any instant of such a pass still
never duplicates a booking, loses a link or cancels wrongly.

The executor commits a write's outcome together with the next write's intent (see
syncd/engine/journal.py). The pass here carries eight writes of every kind in one room:
Ultimo move, cancel and two creates (people's Outlook edits), Exchange move, removal and two
creates (people's Ultimo edits), against both sandboxes through the real clients and a real
SQLite file. The process is killed at every instant of that pass:

- just before the n-th write leaves (its intent, with the previous write's outcome, is
  committed; the write is never sent);
- just after the n-th write took effect (its outcome is lost with the process: its journal
  row is still pending, and the outcome of the write before it is committed);
- inside the k-th commit of the pass (every statement sent, the COMMIT not made: the
  previous write's outcome and the next write's intent are lost together), and right after
  it;

then a new process reconciles, and both systems and the links must be exactly as if
nothing had happened.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, SessionTransaction
from syncharness import ROOMS, Killed, World, at

from syncd.core.model import Room, external_id_for, stamp_for_reservation
from syncd.core.plan import Plan
from syncd.engine.cycle import SyncEngine
from syncd.engine.journal import ApplyResult
from syncd.store.db import session_factory
from syncd.store.schema import JournalEntry

C25 = ROOMS[0][0]
WRITES = 8


@dataclass
class Scene:
    """The room before the pass: what people booked, and which of it they changed."""

    keys: dict[str, str]          # Exchange bookings -> their key
    ultimo_ids: dict[str, str]    # Ultimo bookings -> their UltimoId
    live_times: set[tuple[Any, Any]]   # (start, end) of every booking that must be live after the pass


def _scene(world: World) -> Scene:
    """Six bookings synced, then people's edits that make one pass of eight writes."""
    items = {name: world.ews.book(C25, subject=name, start=at(1, h), end=at(1, h + 1))
             for name, h in (("e_move", 9), ("e_cancel", 11), ("e_keep", 13))}
    ids = {name: world.ultimo.reserve("C-25", at(2, h), at(2, h + 1), description=name)
           for name, h in (("u_move", 9), ("u_cancel", 11), ("u_keep", 13))}
    assert all(r.ok for r in world.reconcile())
    world.kill()
    keys = {b.subject: b.key for b in world.exchange_view(C25) if not b.stamp}
    world.ews.move(C25, items["e_move"], at(3, 9), at(3, 10))
    world.ews.cancel(C25, items["e_cancel"])
    for name, h in (("e_new1", 13), ("e_new2", 15)):
        world.ews.book(C25, subject=name, start=at(3, h), end=at(3, h + 1))
    world.ultimo.move(ids["u_move"], at(4, 9), at(4, 10))
    world.ultimo.cancel(ids["u_cancel"])
    for name, h in (("u_new1", 13), ("u_new2", 15)):
        ids[name] = world.ultimo.reserve("C-25", at(4, h), at(4, h + 1), description=name)
    keys |= {b.subject: b.key for b in world.exchange_view(C25) if b.subject in ("e_new1", "e_new2")}
    live = {(at(1, 13), at(1, 14)), (at(3, 9), at(3, 10)), (at(3, 13), at(3, 14)), (at(3, 15), at(3, 16)),
            (at(2, 13), at(2, 14)), (at(4, 9), at(4, 10)), (at(4, 13), at(4, 14)), (at(4, 15), at(4, 16))}
    return Scene(keys=keys, ultimo_ids=ids, live_times=live)


def _times(rows: Any) -> set[tuple[Any, Any]]:
    return {(r["start"], r["end"]) if isinstance(r, dict) else (r.start, r.end) for r in rows}


def _assert_as_if_nothing_happened(world: World, scene: Scene) -> None:
    """Both systems hold exactly the live bookings, each made once, each linked to its twin."""
    reservations = world.ultimo.reservations("C-25")
    events = world.exchange_view(C25)
    assert _times(reservations) == scene.live_times
    assert _times(events) == scene.live_times
    assert len(reservations) == len(events) == len(scene.live_times)
    # Never a duplicate, not even one cancelled later: one reservation ever made per Outlook
    # booking, one event ever made per Ultimo reservation.
    history = world.ultimo.history()
    for name, key in scene.keys.items():
        made = [r for r in history if r["external_id"] == external_id_for(C25, key)]
        assert len(made) == 1, f"{name}: {len(made)} reservations made"
    made_events = [h for h in world.ews.history(C25) if h["extended_properties"].get("SyncdBookingId")]
    for name, uid in scene.ultimo_ids.items():
        made = [h for h in made_events if h["extended_properties"]["SyncdBookingId"] == stamp_for_reservation(uid)]
        assert len(made) == 1, f"{name}: {len(made)} events made"
    # Nothing cancelled wrongly: only what people cancelled, and its twin.
    cancelled = {r["description"].split(" (")[0] for r in history if r["status"] == "Cancelled"}
    assert cancelled == {"u_cancel", "e_cancel"}
    removed = {h["subject"] for h in world.ews.history(C25) if h["removed"]}
    assert removed <= {"e_cancel", "u_cancel"}
    # Every link present, each pairing a live reservation with its event at the same times.
    # (Events by stamp or key: the item ids are the configured backend's, the view is EWS's.)
    by_id = {r["ultimo_id"]: (r["start"], r["end"]) for r in reservations}
    by_event = {e.stamp or e.key: (e.start, e.end) for e in events}
    active = world.links(C25, active_only=True)
    assert len(active) == len(scene.live_times)
    for link in active:
        event = link.stamp or link.exchange_key
        assert link.ultimo_id in by_id and event in by_event and link.exchange_item_id, vars(link)
        assert by_id[link.ultimo_id] == by_event[event]
        assert link.intent is None
    assert world.pending_journal() == []
    assert world.open_conflicts() == []


def _apply_watched(sync: SyncEngine, on_apply: Any) -> None:
    """Calls `on_apply(True/False)` around the executor's pass over each room's plan."""
    inner = sync.executor.apply

    def apply(room: Room, plan: Plan) -> ApplyResult:
        on_apply(True)
        try:
            return inner(room, plan)
        finally:
            on_apply(False)

    sync.executor.apply = apply  # type: ignore[method-assign]


@pytest.fixture(params=["ews", "graph"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    with World(tmp_path, rooms=ROOMS[:1], backend=request.param) as w:
        yield w


# --- commits per write ---------------------------------------------------------------------


def test_a_pass_of_eight_writes_commits_nine_times(world: World) -> None:
    """One commit per write (its intent, with the previous write's outcome) and one for the
    last outcome: 9 for 8 writes, where committing intent and outcome apart made two a write."""
    scene = _scene(world)
    sync = world.engine()
    inside, commits = [False], [0]
    _apply_watched(sync, lambda on: inside.__setitem__(0, on))

    def committed(session: Session) -> None:
        commits[0] += inside[0]

    event.listen(sync.sessions, "after_commit", committed)
    [result] = world.reconcile()

    assert result.ok, result.errors
    assert sum(result.writes.values()) == WRITES, result.writes
    assert commits[0] == WRITES + 1
    _assert_as_if_nothing_happened(world, scene)
    calls = world.write_calls()
    world.reconcile()
    assert world.write_calls() == calls


# --- a crash at every instant of that pass -------------------------------------------------


def _recovered(world: World, scene: Scene) -> None:
    """A new process reconciles; then everything is as if nothing had happened, and the pass
    after that writes nothing."""
    assert all(r.ok for r in world.reconcile()), "the restarted pass failed"
    world.kill()
    calls = world.write_calls()
    assert all(r.ok for r in world.reconcile())
    assert world.write_calls() == calls, "the pass after recovery still wrote"
    _assert_as_if_nothing_happened(world, scene)


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("n", range(1, WRITES + 1))
def test_killed_around_any_write_of_the_pass(world: World, n: int, when: str) -> None:
    scene = _scene(world)
    world.switch.arm(n, when)
    calls = world.write_calls()
    with pytest.raises(Killed):
        world.reconcile()
    assert sum(world.write_calls()) - sum(calls) == (n if when == "after" else n - 1)
    # Just before write n: its intent is committed (with write n-1's outcome). Just after:
    # write n's outcome is lost, its journal row pending; write n-1's outcome is committed.
    pending = world.pending_journal()
    assert len(pending) == 1, [(e.side, e.action) for e in pending]
    assert sum(e.status == "done" for e in _journal(world)) == n - 1
    _recovered(world, scene)


class CommitKiller:
    """Kills the process at the k-th commit of the executor's pass over a room: `inside` it
    (every statement sent, COMMIT not yet made: nothing of it is durable) or right `after`."""

    def __init__(self, world: World, k: int, when: str) -> None:
        self.countdown, self.when, self.fired = k, when, False
        self.inside_apply = False
        self.orm: Connection | None = None   # the connection of the executor's open transaction
        sync = world.engine()
        _apply_watched(sync, self._apply)
        event.listen(sync.sessions, "after_begin", self._began)
        event.listen(sync.sessions, "after_commit", self._after)
        event.listen(sync.sessions, "after_rollback", self._ended)
        event.listen(world.db, "commit", self._inside)   # the Ultimo call ledger commits there too

    def _apply(self, on: bool) -> None:
        self.inside_apply = on

    def _began(self, session: Session, transaction: SessionTransaction, connection: Connection) -> None:
        self.orm = connection

    def _ended(self, session: Session) -> None:
        self.orm = None

    def _due(self, when: str) -> bool:
        return self.inside_apply and not self.fired and self.when == when

    def _inside(self, conn: Connection) -> None:
        if self._due("inside") and conn is self.orm:
            self._count()

    def _after(self, session: Session) -> None:
        self.orm = None
        if self._due("after"):
            self._count()

    def _count(self) -> None:
        self.countdown -= 1
        if self.countdown == 0:
            self.fired = True
            raise Killed(f"{self.when} commit")


@pytest.mark.parametrize("when", ["inside", "after"])
@pytest.mark.parametrize("k", range(1, WRITES + 2))
def test_killed_inside_or_after_any_commit_of_the_pass(world: World, k: int, when: str) -> None:
    scene = _scene(world)
    killer = CommitKiller(world, k, when)
    calls = world.write_calls()
    with pytest.raises(Killed):
        world.reconcile()
    assert killer.fired
    # Commit k carries write k's intent: inside it or right after, write k was not sent.
    assert sum(world.write_calls()) - sum(calls) == min(k - 1, WRITES)
    done = sum(e.status == "done" for e in _journal(world))
    pending = world.pending_journal()
    if when == "inside":
        # Commit k (write k-1's outcome with write k's intent) never happened: write k-1 is
        # pending, write k was never journalled, let alone sent.
        expected = (k - 2, 1) if k > 1 else (0, 0)
    else:
        expected = (k - 1, 1) if k <= WRITES else (WRITES, 0)
    assert (done, len(pending)) == expected, [(e.side, e.action, e.status) for e in _journal(world)]
    _recovered(world, scene)


def _journal(world: World) -> list[JournalEntry]:
    """This pass's journal rows (the scene's first sync journalled six creates before it)."""
    with session_factory(world.db)() as s:
        rows = list(s.scalars(select(JournalEntry).order_by(JournalEntry.id)))
        s.expunge_all()
    return rows[6:]
