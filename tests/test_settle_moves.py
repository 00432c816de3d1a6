"""An interrupted move that took effect is settled as done before the room is planned
again (found by benchmarks/chaos.py): otherwise a person's next edit of the other side
looks like a change on both sides, a false conflict, and the booking stays out of sync.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from syncharness import ROOMS, Killed, World, at

from syncd.sandbox.httpbase import Response

C25, D12 = ROOMS[0][0], ROOMS[1][0]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with World(tmp_path) as w:
        yield w


def _converged(world: World) -> None:
    world.reconcile()
    world.kill()   # a fresh process: nothing kept in memory helps
    again = world.reconcile()
    assert all(r.ok for r in again)
    assert world.open_conflicts() == []
    assert world.pending_journal() == []


def _the_event_follows(world: World, uid: str, start: datetime, end: datetime) -> None:
    """The reservation is moved in Ultimo once more: its event follows, with no conflict."""
    world.ultimo.move(uid, start, end)
    _converged(world)
    [event] = world.events_for_reservation(D12, uid)
    assert (event.start, event.end) == (start, end)


def test_a_killed_ultimo_move_that_took_effect_follows_the_next_edit(world: World) -> None:
    item = world.ews.book(C25, subject="Planning", start=at(1, 9), end=at(1, 10))
    world.reconcile()
    world.ews.move(C25, item, at(2, 9), at(2, 10))
    world.switch.arm(1, "after")
    with pytest.raises(Killed):
        world.reconcile()
    [res] = world.ultimo.reservations("C-25")
    assert res["start"] == at(2, 9)            # Ultimo moved it; syncd never heard
    world.ews.move(C25, item, at(3, 14), at(3, 15))   # the organizer moves it again
    _converged(world)
    [res] = world.ultimo.reservations("C-25")
    assert (res["start"], res["end"]) == (at(3, 14), at(3, 15))


def test_a_killed_exchange_move_that_took_effect_follows_the_next_edit(world: World) -> None:
    uid = world.ultimo.reserve("D-12", at(1, 11), at(1, 12), description="Inspection")
    world.reconcile()
    world.ultimo.move(uid, at(2, 11), at(2, 12))
    world.switch.arm(1, "after")
    with pytest.raises(Killed):
        world.reconcile()
    [event] = world.events_for_reservation(D12, uid)
    assert event.start == at(2, 11)
    _the_event_follows(world, uid, at(4, 8), at(4, 9))


@pytest.mark.parametrize("kind", ["drop_after", "slow", "http500_after", "truncated"])
def test_an_ultimo_move_whose_answer_was_lost_follows_the_next_edit(world: World, kind: str) -> None:
    item = world.ews.book(C25, subject="Review", start=at(1, 13), end=at(1, 14))
    world.reconcile()
    world.ews.move(C25, item, at(2, 13), at(2, 14))
    if kind == "truncated":   # Ultimo moved it, then answered something unreadable
        world.ultimo.inject("answer_after", count=5, workflow="update",
                            answer=Response(200, b'{"properti', "application/json"))
    else:
        world.ultimo.inject(kind, count=5, workflow="update", delay=6.0)   # past the client's 5 s timeout
    results = world.reconcile()
    assert not all(r.ok for r in results)
    world.ultimo.faults.clear()
    world.ews.move(C25, item, at(5, 16), at(5, 17))
    _converged(world)
    [res] = world.ultimo.reservations("C-25")
    assert (res["start"], res["end"]) == (at(5, 16), at(5, 17))


@pytest.mark.parametrize("faults", [("http503_after",), ("http500_after",), ("drop_after",),
                                    ("http503_after", "server_busy"), ("drop_after", "server_busy")],
                         ids=lambda f: "+".join(f))
def test_an_exchange_move_answered_with_an_error_after_it_took_effect_follows_the_next_edit(
        world: World, faults: tuple[str, ...]) -> None:
    """The move is made and its answer lost or spoilt; with server_busy, the resend is then
    refused as throttled, so the last word syncd hears is "throttling" although the move was
    made (found by benchmarks/chaos.py: it was journalled as failed, and the next edit became
    a false "changed on both sides")."""
    uid = world.ultimo.reserve("D-12", at(1, 15), at(1, 16), description="Audit")
    world.reconcile()
    world.ultimo.move(uid, at(2, 15), at(2, 16))
    world.ews.inject(faults[0], op="UpdateItem")
    for kind in faults[1:]:
        world.ews.inject(kind, count=5, op="UpdateItem", back_off_ms=5000)   # past the 0.25 s allowed
    world.reconcile()
    world.ews.faults.clear()
    [event] = world.events_for_reservation(D12, uid)
    assert event.start == at(2, 15)            # Exchange moved it; syncd heard an error
    _the_event_follows(world, uid, at(4, 10), at(4, 11))


def test_a_graph_move_made_then_refused_as_throttled_follows_the_next_edit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same on Microsoft Graph: the PATCH is made and its answer lost, its resend meets
    429 with a Retry-After past the allowed wait."""
    with World(tmp_path, backend="graph") as world:
        graph = world.graph
        assert graph is not None
        uid = world.ultimo.reserve("D-12", at(1, 15), at(1, 16), description="Audit")
        world.reconcile()
        world.ultimo.move(uid, at(2, 15), at(2, 16))
        serve, patches = graph._serve, []

        def first_lost_then_throttled(request: Any, op: str, *rest: Any) -> Any:
            if op == "event.update" and not patches:
                patches.append(request)
                graph.inject("lost_answer", op=op)               # made, unanswered
                answer = serve(request, op, *rest)
                graph.inject("http429", count=5, op=op, retry_after=30)   # the resends: refused
                return answer
            return serve(request, op, *rest)

        monkeypatch.setattr(graph, "_serve", first_lost_then_throttled)
        world.reconcile()
        monkeypatch.setattr(graph, "_serve", serve)
        graph.faults.clear()
        [event] = world.events_for_reservation(D12, uid)
        assert event.start == at(2, 15)
        _the_event_follows(world, uid, at(4, 10), at(4, 11))
