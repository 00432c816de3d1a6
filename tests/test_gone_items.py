"""Regressions (issue 9, defect 1): an Exchange item or occurrence that no longer exists is
gone, whatever EWS answer says so, and one item that cannot be looked up never stops the
rest of its room's pass. `syncd reconcile` runs through the CLI against both sandboxes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update
from syncharness import World, at
from test_reconcile_e2e import C25, line_for, syncd

from syncd.sandbox.ews.server import Recurrence
from syncd.store.db import session_factory
from syncd.store.schema import Link


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with World(tmp_path) as w:
        yield w


def test_an_occurrence_deleted_by_its_organizer_cancels_its_reservation_only(world: World, capsys) -> None:
    master = world.ews.book(C25, subject="Weekly review", start=at(1, 10), end=at(1, 11),
                            recurrence=Recurrence(kind="weekly", count=2))
    status, out, _ = syncd(world, capsys, "reconcile")
    assert status == 0 and "Ultimo 2 created" in line_for(out, C25)
    first = next(r for r in world.ultimo.reservations("C-25") if r["start"] == at(1, 10))

    # Exchange answers the lookup of the deleted occurrence's id with
    # ErrorCalendarOccurrenceIsDeletedFromRecurrence; that is a cancellation.
    world.ews.cancel_occurrence(C25, master, at(8, 10))
    world.ews.book(C25, subject="Budget", start=at(2, 9), end=at(2, 10))
    status, out, _ = syncd(world, capsys, "reconcile")

    assert status == 0, out
    assert "Ultimo 1 created, 0 moved, 1 cancelled" in line_for(out, C25)
    live = sorted((r["start"], r["ultimo_id"]) for r in world.ultimo.reservations("C-25"))
    assert [start for start, _ in live] == [at(1, 10), at(2, 9)]
    assert live[0][1] == first["ultimo_id"]
    # The room is not stuck: the next pass is clean and writes nothing.
    calls = world.write_calls()
    status, out, _ = syncd(world, capsys, "reconcile")
    assert status == 0, out
    assert world.write_calls() == calls


def test_one_event_that_cannot_be_looked_up_leaves_the_rest_of_the_room_synced(world: World, capsys) -> None:
    moved = world.ews.book(C25, subject="Moved away", start=at(1, 9), end=at(1, 10))
    cancelled = world.ews.book(C25, subject="Cancelled", start=at(2, 9), end=at(2, 10))
    syncd(world, capsys, "reconcile")
    kept = next(r for r in world.ultimo.reservations("C-25") if r["start"] == at(1, 9))
    # The first booking moves out of the sync window, so syncd looks it up by its item id;
    # the stored id is one Exchange no longer accepts (ErrorInvalidIdMalformed).
    with session_factory(world.db).begin() as s:
        s.execute(update(Link).where(Link.ultimo_id == kept["ultimo_id"]).values(exchange_item_id="not-an-item-id"))
    world.ews.move(C25, moved, at(30, 9), at(30, 10))
    world.ews.cancel(C25, cancelled)
    world.ews.book(C25, subject="New", start=at(3, 9), end=at(3, 10))

    status, out, err = syncd(world, capsys, "reconcile")

    assert status == 1, out                      # the failed lookup is reported ...
    assert "looking up the event of booking" in out + err, out + err
    # ... its reservation is left as it was; the cancellation and the new booking are synced.
    assert sorted(r["start"] for r in world.ultimo.reservations("C-25")) == [at(1, 9), at(3, 9)]
    assert world.ultimo.reservation(kept["ultimo_id"])["status"] != "Cancelled"
