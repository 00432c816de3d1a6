"""Regressions (issue 9, defects 2 and 3): what Ultimo's answers may not make syncd do.
`syncd reconcile` runs through the CLI against both sandboxes.

- A Create answered 503 by a gateway after Ultimo performed it is never sent again: it is
  settled by reading the room, so there is one reservation and no false conflict.
- A Get answer without the documented collection is a malformed answer: the room fails,
  nothing is concluded from it (no cancellation, no removal), unlike a real empty list."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from syncharness import World, at
from test_reconcile_e2e import C25, line_for, stamped, syncd


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with World(tmp_path) as w:
        yield w


def test_a_create_answered_503_after_ultimo_made_it_is_settled_not_sent_again(world: World, capsys) -> None:
    world.ews.book(C25, subject="Budget", start=at(1, 9), end=at(1, 10))
    world.ultimo.inject("http503_after", workflow="create")

    # Retries allowed: a 503 elsewhere would be retried, a create's is not.
    status, out, _ = syncd(world, capsys, "reconcile", ultimo={"max_retries": 2})

    assert status == 1, out
    assert "may have been created" in out
    assert world.ultimo.calls("create") == 1, "the create was sent again after its 503"
    assert world.open_conflicts(C25) == []

    status, out, _ = syncd(world, capsys, "reconcile", ultimo={"max_retries": 2})

    assert status == 0, out
    assert world.ultimo.calls("create") == 1
    [reservation] = world.ultimo.reservations("C-25")
    assert (reservation["start"], reservation["end"]) == (at(1, 9), at(1, 10))
    assert world.open_conflicts(C25) == [], "a false conflict against syncd's own reservation"
    [link] = world.links(C25, active_only=True)
    assert link.ultimo_id == reservation["ultimo_id"]
    assert stamped(world, C25) == []       # nor is the reservation copied back to Exchange


@pytest.mark.parametrize("payload", [
    {"properties": None},
    {"properties": {}},
    {"properties": {"Output": None}},
])
@pytest.mark.parametrize("linked", [1, 2])
def test_a_get_answer_without_its_collection_fails_the_room_and_removes_nothing(
        world: World, capsys, payload: dict, linked: int) -> None:
    """With one linked booking no emptiness guard stands in the way: the answer itself must
    be refused (before issue 9 syncd removed the event); with two the room was halted."""
    uid = world.ultimo.reserve("C-25", at(2, 14), at(2, 15), description="Inspection")
    if linked == 2:
        world.ews.book(C25, subject="Team sync", start=at(1, 9), end=at(1, 10))
    status, out, _ = syncd(world, capsys, "reconcile")
    assert status == 0, out
    before = world.exchange_view(C25)
    assert len(before) == linked and len(world.ultimo.reservations("C-25")) == linked

    world.ultimo.inject("answer", workflow="get", payload=payload)
    status, out, _ = syncd(world, capsys, "reconcile", "--room", "C-25")

    assert status == 1, out
    assert "Ultimo not read" in line_for(out, C25)
    assert "Ultimo's answer to REST_GetReservationsForSpace has" in out, out
    assert "HALTED" not in out
    assert world.exchange_view(C25) == before, "an event was removed on a malformed answer"
    assert world.ews.declines(C25) == []
    assert world.ultimo.reservation(uid)["status"] != "Cancelled"
    # The next, well-formed answer syncs as before: nothing to do.
    status, out, _ = syncd(world, capsys, "reconcile", "--room", "C-25")
    assert status == 0, out
    assert world.exchange_view(C25) == before


def test_a_real_empty_answer_still_reads_as_an_empty_room(world: World, capsys) -> None:
    for style in ("list", "missing", "null"):
        world.ultimo.empty_style = style
        status, out, _ = syncd(world, capsys, "reconcile", "--room", "C-25")
        assert status == 0, (style, out)
        assert "Ultimo 0 created" in line_for(out, C25)
