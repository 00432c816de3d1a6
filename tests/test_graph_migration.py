"""Moving a site from EWS to Microsoft Graph: bookings synced through the EWS sandbox, then
`calendar.backend: graph` on the same database and the same calendars (the Graph sandbox
serves the EWS sandbox's store). The first Graph pass re-identifies every link before it
plans; nothing is written to either side that was not due; afterwards changes cross as before.
The way back (Graph to EWS, events syncd wrote through Graph) is held to the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from syncharness import ROOMS, World, at

from syncd.calendars.graph.convert import GRAPH_STAMP_ID
from syncd.core.model import stamp_for_reservation
from syncd.sandbox.ews.server import Recurrence
from syncd.store.db import session_factory
from syncd.store.schema import RoomState

C25, D12 = ROOMS[0][0], ROOMS[1][0]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with World(tmp_path, graph=True) as w:
        yield w


def graph_view(world: World, mailbox: str) -> list[dict[str, Any]]:
    """The room's calendar in the sync window as Graph shows it (Graph ids, iCalUIds)."""
    assert world.graph is not None
    now = datetime.now(UTC)
    return world.graph.occurrences(mailbox, now - timedelta(days=2), now + timedelta(days=20))


def graph_key(view: dict[str, Any]) -> str:
    original = view["original_start"]
    return view["ical_uid"] if original is None else f"{view['ical_uid']}|{original.astimezone(UTC).isoformat()}"


def all_ok(results: list) -> bool:
    return all(r.ok for r in results)


def synced_site(world: World, *, private_meeting: bool, occurrences: int) -> tuple[str, dict[int, Any]]:
    """People book C-25 (a meeting, maybe a private one, a daily stand-up with one occurrence
    moved), Ultimo reserves both rooms; two passes sync it all. Returns the D-12 reservation's
    id and the active links by id."""
    world.ews.book(C25, subject="Team sync", start=at(1, 9), end=at(1, 10), organizer="alice@example.com")
    if private_meeting:
        world.ews.book(C25, subject="Salary talk", start=at(1, 11), end=at(1, 12), organizer="bob@example.com",
                       private=True)
    master = world.ews.book(C25, subject="Stand-up", start=at(2, 8), end=at(2, 8, 15),
                            recurrence=Recurrence(kind="daily", count=occurrences))
    world.ews.move_occurrence(C25, master, at(3, 8), at(3, 16), at(3, 16, 15))
    inspection = world.ultimo.reserve("D-12", at(2, 14), at(2, 15), description="Inspection")
    world.ultimo.reserve("C-25", at(4, 14), at(4, 15), description="Cleaning")
    assert all_ok(world.reconcile()) and all_ok(world.reconcile())
    return inspection, {lk.id: lk for lk in world.links(active_only=True)}


def switch_writes_nothing(world: World, backend: str, relinked: int) -> dict[int, Any]:
    """Restart on `backend`: two passes write nothing to either side and re-identify
    `relinked` links of C-25; returns the active links by id."""
    world.use_backend(backend)
    writes = world.write_calls()
    first, second = world.reconcile(), world.reconcile()
    assert all_ok(first) and all_ok(second), [r.errors for r in first + second]
    assert world.write_calls() == writes, f"the move to {backend} wrote to Exchange or Ultimo"
    assert all(sum(r.writes.values()) == 0 for r in first + second)
    assert any(f"re-identified {relinked} link(s)" in line for line in first[0].plan_lines), first[0].plan_lines
    assert world.open_conflicts() == []
    with session_factory(world.db)() as s:
        assert {r.room: r.calendar_backend for r in s.query(RoomState)} == {C25: backend, D12: backend}
    return {lk.id: lk for lk in world.links(active_only=True)}


def moves_cross(world: World, inspection: str) -> None:
    """After the switch, a person moves the meeting and Ultimo the inspection: one pass
    writes each to the other side (Ultimo's side checked here, the calendar by the caller),
    the next writes nothing."""
    [team] = [b for b in world.exchange_view(C25) if b.subject == "Team sync"]
    world.ews.move(C25, team.item_id, at(1, 13), at(1, 14))
    world.ultimo.move(inspection, at(2, 16), at(2, 17))
    calls = world.write_calls()
    assert all_ok(world.reconcile())
    assert world.write_calls() == (calls[0] + 1, calls[1] + 1)
    moved = next(r for r in world.ultimo.reservations("C-25") if r["description"].startswith("Team sync"))
    assert (moved["start"], moved["end"]) == (at(1, 13), at(1, 14))
    assert all_ok(world.reconcile()) and world.write_calls() == (calls[0] + 1, calls[1] + 1)


def test_a_site_moves_from_ews_to_graph_without_writing_anything(world: World) -> None:
    inspection, before = synced_site(world, private_meeting=True, occurrences=4)
    assert len(before) == 8          # 2 meetings + 4 occurrences + 2 reservations

    after = switch_writes_nothing(world, "graph", relinked=7)

    assert after.keys() == before.keys()
    for mailbox, _ in ROOMS:
        view = {v["id"]: v for v in graph_view(world, mailbox)}
        for link in (lk for lk in after.values() if lk.room == mailbox):
            old = before[link.id]
            assert link.ultimo_id == old.ultimo_id
            assert link.exchange_item_id in view, "a link still holds an EWS item id"
            assert link.exchange_item_id != old.exchange_item_id
            shown = view[link.exchange_item_id]
            assert link.exchange_key == graph_key(shown)
            assert link.exchange_change_key == shown["change_key"]
            if link.stamp:          # syncd's own event: found by its stamp, its key now Graph's
                assert shown["extended_properties"].get(GRAPH_STAMP_ID) == link.stamp
            else:                   # a person's meeting: the same key (UID = iCalUId)
                assert link.exchange_key == old.exchange_key

    # Afterwards a move on each side crosses, through Graph.
    moves_cross(world, inspection)
    [event] = [v for v in graph_view(world, D12) if v["extended_properties"].get(GRAPH_STAMP_ID)
               == stamp_for_reservation(inspection)]
    assert (event["start"], event["end"]) == (at(2, 16).astimezone(UTC), at(2, 17).astimezone(UTC))


def test_a_dry_run_after_the_switch_writes_nothing_and_says_why(world: World) -> None:
    world.ews.book(C25, subject="Team sync", start=at(1, 9), end=at(1, 10))
    assert all_ok(world.reconcile())
    before = [(lk.exchange_key, lk.exchange_item_id) for lk in world.links()]
    world.use_backend("graph")
    writes = world.write_calls()

    results = world.reconcile(dry_run=True)

    assert world.write_calls() == writes
    assert [(lk.exchange_key, lk.exchange_item_id) for lk in world.links()] == before
    assert any("re-identifies the links" in line for line in results[0].plan_lines)


def test_a_failed_read_on_the_switch_changes_nothing_until_it_succeeds(world: World) -> None:
    world.ews.book(C25, subject="Team sync", start=at(1, 9), end=at(1, 10))
    world.ultimo.reserve("C-25", at(2, 14), at(2, 15), description="Inspection")
    assert all_ok(world.reconcile())
    before = [(lk.exchange_key, lk.exchange_item_id) for lk in world.links()]
    world.use_backend("graph")
    assert world.graph is not None
    world.graph.inject("http503", count=20, mailbox=C25, retry_after=5)
    writes = world.write_calls()

    failed = world.reconcile()

    assert not failed[0].ok and "re-identifying" in failed[0].errors[0]
    assert [(lk.exchange_key, lk.exchange_item_id) for lk in world.links(C25)] == before[:2]
    world.graph.faults.clear()
    assert all_ok(world.reconcile())
    assert world.write_calls() == writes


def test_a_site_moves_back_from_graph_to_ews_without_writing_anything(tmp_path: Path) -> None:
    """The way back (README: "Switching back to `ews` works the same way"): a site that ran on
    Graph, its own events written through Graph, returns to EWS on the same database."""
    with World(tmp_path, backend="graph") as world:
        inspection, before = synced_site(world, private_meeting=False, occurrences=3)
        assert len(before) == 6          # 1 meeting + 3 occurrences + 2 reservations

        after = switch_writes_nothing(world, "ews", relinked=5)

        assert after.keys() == before.keys()
        for mailbox, _ in ROOMS:
            view = {b.item_id: b for b in world.exchange_view(mailbox)}
            for link in (lk for lk in after.values() if lk.room == mailbox):
                old = before[link.id]
                assert link.ultimo_id == old.ultimo_id
                assert link.exchange_item_id in view, "a link still holds a Graph item id"
                assert link.exchange_item_id != old.exchange_item_id
                assert link.exchange_key == view[link.exchange_item_id].key
                if link.stamp:
                    assert view[link.exchange_item_id].stamp == link.stamp

        # Afterwards a move on each side crosses, through EWS.
        moves_cross(world, inspection)
        [event] = world.events_for_reservation(D12, inspection)
        assert (event.start, event.end) == (at(2, 16).astimezone(UTC), at(2, 17).astimezone(UTC))
