"""Conflicts name what they clash with, and the room declines what Ultimo refuses.

End to end against both sandboxes and a real SQLite file (syncharness.World), through
`syncd reconcile` and `syncd conflicts export` where a person would look.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from syncharness import ROOMS, World, at

from syncd.commands.cli import main
from syncd.engine import conflicts as store
from syncd.store.db import session_factory
from syncd.store.schema import Conflict

C25, D12 = ROOMS[0][0], ROOMS[1][0]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with World(tmp_path) as w:
        yield w


def syncd(world: World, capsys: pytest.CaptureFixture[str], *args: str, **sync: Any) -> tuple[int, str]:
    raw = json.loads(json.dumps(world.raw))
    raw["sync"].update(sync)
    path = world.folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    capsys.readouterr()
    status = main(["--config", str(path), *args])
    return status, capsys.readouterr().out


def all_conflicts(world: World) -> list[Conflict]:
    with session_factory(world.db)() as s:
        rows = list(s.scalars(Conflict.__table__.select().with_only_columns(Conflict.id)))
        found = [s.get(Conflict, r) for r in rows]
        s.expunge_all()
        return [c for c in found if c is not None]


def exported(world: World, capsys: pytest.CaptureFixture[str], fmt: str) -> str:
    status, text = syncd(world, capsys, "conflicts", "export", "--all", "--format", fmt)
    assert status == 0
    return text


def test_an_overlap_names_the_reservation_in_every_export(world: World, capsys) -> None:
    blocker = world.ultimo.reserve("C-25", at(1, 9), at(1, 10), description="Cleaning crew")
    world.ews.book(C25, subject="Budget", start=at(1, 9, 30), end=at(1, 10, 30), organizer="bob@example.com")

    status, out = syncd(world, capsys, "reconcile")
    assert status == 0, out

    [conflict] = world.open_conflicts(C25)
    [clash] = store.clashes_of(conflict)
    assert (clash.kind, clash.ultimo_id, clash.description, clash.origin) == (
        "reservation", blocker, "Cleaning crew", "ultimo")
    assert (clash.start, clash.end) == (at(1, 9).astimezone(UTC), at(1, 10).astimezone(UTC))
    assert not clash.buffer_only and (clash.preparation_minutes, clash.cleanup_minutes) == (10, 10)

    [item] = json.loads(exported(world, capsys, "json"))
    assert item["clashes_with"] == [{
        "kind": "reservation", "ultimo_id": blocker, "description": "Cleaning crew", "origin": "ultimo",
        "start": at(1, 9).astimezone(UTC).isoformat(), "end": at(1, 10).astimezone(UTC).isoformat(),
        "buffer_only": False, "preparation_minutes": 10, "cleanup_minutes": 10}]
    [row] = list(csv.DictReader(io.StringIO(exported(world, capsys, "csv"))))
    assert f"Ultimo reservation {blocker} 'Cleaning crew'" in row["clashes_with"]
    assert at(1, 9).astimezone(UTC).isoformat() in row["clashes_with"]
    page = exported(world, capsys, "html")
    assert blocker in page and "Cleaning crew" in page and "<svg" in page
    # The terminal names it too.
    assert f"{blocker} 'Cleaning crew'" in out


def test_a_clash_only_through_the_buffers_says_so(world: World, capsys) -> None:
    blocker = world.ultimo.reserve("C-25", at(1, 10, 5), at(1, 11), description="Cleaning crew")
    world.ews.book(C25, subject="Budget", start=at(1, 9), end=at(1, 10))

    syncd(world, capsys, "reconcile")

    [conflict] = world.open_conflicts(C25)
    [clash] = store.clashes_of(conflict)
    assert clash.ultimo_id == blocker and clash.buffer_only
    [item] = json.loads(exported(world, capsys, "json"))
    assert item["clashes_with"][0]["buffer_only"] is True
    [row] = list(csv.DictReader(io.StringIO(exported(world, capsys, "csv"))))
    assert "clashes only through these buffers" in row["clashes_with"]
    assert "clashes only through the buffers" in exported(world, capsys, "html")


def test_a_clash_with_a_meeting_booked_in_the_same_pass_names_its_new_reservation(world: World, capsys) -> None:
    """The demo's retrospective: two Outlook meetings that touch; the first gets its
    reservation, the second is refused through the buffers, and names the first's."""
    world.ultimo.reserve("D-12", at(1, 8), at(1, 9), description="Breakfast")   # shows the room's buffers
    world.ews.book(D12, subject="Design review", start=at(1, 14), end=at(1, 15), organizer="alice@example.com")
    world.ews.book(D12, subject="Retrospective", start=at(1, 15), end=at(1, 16), organizer="bob@example.com")

    syncd(world, capsys, "reconcile")

    [conflict] = world.open_conflicts(D12)
    assert conflict.subject == "Retrospective"
    [first] = [r for r in world.ultimo.reservations("D-12") if r["start"] == at(1, 14)]
    [clash] = store.clashes_of(conflict)
    assert (clash.ultimo_id, clash.origin, clash.buffer_only) == (first["ultimo_id"], "exchange", True)
    assert clash.description == "Design review (alice@example.com)"


def test_a_move_refused_with_1015_names_the_reservation_in_the_way(world: World, capsys) -> None:
    item = world.ews.book(C25, subject="Budget", start=at(1, 9), end=at(1, 10))
    blocker = world.ultimo.reserve("C-25", at(1, 13), at(1, 14), description="Board")
    syncd(world, capsys, "reconcile")
    world.ews.move(C25, item, at(1, 13, 30), at(1, 14, 30))

    syncd(world, capsys, "reconcile")

    [conflict] = world.open_conflicts(C25)
    assert conflict.kind == "room_unavailable" and conflict.ultimo_id is not None
    assert [(c.ultimo_id, c.description) for c in store.clashes_of(conflict)] == [(blocker, "Board")]
    assert world.ews.declines(C25) == []            # a move is never declined: the meeting keeps its room


def test_both_versions_are_recorded_for_a_booking_changed_on_both_sides(world: World, capsys) -> None:
    item = world.ews.book(C25, subject="Budget", start=at(1, 9), end=at(1, 10))
    syncd(world, capsys, "reconcile")
    [res] = world.ultimo.reservations("C-25")
    world.ews.move(C25, item, at(1, 11), at(1, 12))
    world.ultimo.move(res["ultimo_id"], at(1, 15), at(1, 16))

    syncd(world, capsys, "reconcile")

    [conflict] = world.open_conflicts(C25)
    assert conflict.kind == "changed_on_both_sides"
    versions = {c.kind: (c.start, c.end) for c in store.clashes_of(conflict)}
    assert versions == {"exchange_version": (at(1, 11).astimezone(UTC), at(1, 12).astimezone(UTC)),
                        "ultimo_version": (at(1, 15).astimezone(UTC), at(1, 16).astimezone(UTC))}


# --- the room declines what Ultimo refuses ---------------------------------------------------


def test_a_new_meeting_clashing_after_the_first_pass_is_declined_with_the_reason(world: World, capsys) -> None:
    world.ultimo.reserve("C-25", at(1, 14), at(1, 14, 50), description="Inspection")
    status, _ = syncd(world, capsys, "reconcile")                 # the first pass: syncd manages the room now
    assert status == 0
    meeting = world.ews.book(C25, subject="Planning", start=at(1, 15), end=at(1, 16), organizer="bob@example.com")

    status, out = syncd(world, capsys, "reconcile")

    assert status == 0, out
    [decline] = world.ews.declines(C25)
    assert decline["item_id"] == meeting
    zone = at(1, 14).tzname()
    assert decline["reason"].startswith(f"Room C-25 is reserved in Ultimo 14:00–15:00 {zone} (incl. 10 min cleanup).")
    assert "meeting room is not available" in decline["reason"]
    assert [b.subject for b in world.exchange_view(C25) if not b.stamp] == []   # not in the room any more
    assert len(world.ultimo.reservations("C-25")) == 1                           # and nothing booked for it
    assert "1 declined" in out
    [conflict] = [c for c in all_conflicts(world) if c.subject == "Planning"]
    assert conflict.status == "resolved" and conflict.outcome is not None
    assert conflict.outcome.startswith("declined in the room's calendar: Room C-25 is reserved in Ultimo 14:00")
    [item] = json.loads(exported(world, capsys, "json"))
    assert item["outcome"] == conflict.outcome and item["clashes_with"][0]["description"] == "Inspection"
    assert "declined" in exported(world, capsys, "html")


def test_on_the_first_pass_existing_clashes_are_only_reported(world: World, capsys) -> None:
    world.ultimo.reserve("C-25", at(1, 9), at(1, 10), description="Cleaning")
    world.ews.book(C25, subject="Budget", start=at(1, 9, 30), end=at(1, 10, 30))

    for _ in range(2):
        status, out = syncd(world, capsys, "reconcile")
        assert status == 0, out

    assert world.ews.declines(C25) == []
    assert [c.kind for c in world.open_conflicts(C25)] == ["room_unavailable"]
    assert [b.subject for b in world.exchange_view(C25) if not b.stamp] == ["Budget"]


def test_the_operator_can_decline_on_the_first_pass_too(world: World, capsys) -> None:
    world.ultimo.reserve("C-25", at(1, 9), at(1, 10), description="Cleaning")
    meeting = world.ews.book(C25, subject="Budget", start=at(1, 9, 30), end=at(1, 10, 30))

    syncd(world, capsys, "reconcile", on_room_unavailable="decline")

    assert [d["item_id"] for d in world.ews.declines(C25)] == [meeting]


@pytest.mark.parametrize("rule", ["record_only", "record"])
def test_record_only_never_declines(world: World, capsys, rule: str) -> None:
    world.ultimo.reserve("C-25", at(1, 9), at(1, 10), description="Cleaning")
    syncd(world, capsys, "reconcile", on_room_unavailable=rule)
    world.ews.book(C25, subject="Budget", start=at(1, 9, 30), end=at(1, 10, 30))

    syncd(world, capsys, "reconcile", on_room_unavailable=rule)

    assert world.ews.declines(C25) == []
    [conflict] = world.open_conflicts(C25)
    assert conflict.outcome is None and store.clashes_of(conflict)[0].description == "Cleaning"


def test_the_demo_shows_a_clash_through_a_buffer_and_names_the_reservation_in_the_way(
        tmp_path: Path, capsys) -> None:
    status = main(["demo", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0, out
    # The terminal summary of the reconcile names the reservation in the way of the retrospective.
    [line] = [ln for ln in out.splitlines() if ln.strip().startswith("conflict: 'Retrospective'")]
    assert "in the way: Ultimo reservation" in line and "'Design review (alice@example.com)'" in line
    assert "clashes only through the buffers" in line
    # The room declines a clash booked once syncd manages it, saying why.
    assert "the organizer reads: Room C-25 is reserved in Ultimo 14:00–15:10" in out
    page = (tmp_path / "conflicts.html").read_text(encoding="utf-8")
    assert "Retrospective" in page and "Design review (alice@example.com)" in page
    assert "clashes only through the buffers" in page and '<svg class="timeline"' in page
    assert "declined" in page


def test_a_pass_that_did_not_read_ultimo_looks_up_what_is_in_the_way_before_declining(world: World) -> None:
    """The service's Exchange-only passes: the refusal is looked up with one read of that day."""
    blocker = world.ultimo.reserve("C-25", at(1, 9), at(1, 10), description="Cleaning")
    world.reconcile()                                               # the first pass: syncd manages the rooms
    meeting = world.ews.book(C25, subject="Budget", start=at(1, 9, 30), end=at(1, 10, 30))
    reads = world.ultimo.calls("REST_GetReservationsForSpace")

    world.reconcile(read_ultimo=False)

    assert world.ultimo.calls("REST_GetReservationsForSpace") == reads + 1
    [decline] = world.ews.declines(C25)
    assert decline["item_id"] == meeting and decline["reason"].startswith("Room C-25 is reserved in Ultimo 09:00")
    [conflict] = [c for c in world.all_conflicts() if c.subject == "Budget"]
    assert [c.ultimo_id for c in store.clashes_of(conflict)] == [blocker]


def test_a_meeting_refused_because_of_its_own_twin_is_not_declined(world: World) -> None:
    """Equal bookings on both sides, never read together: the create is refused by the twin
    reservation, which the next full pass links. Declining the meeting would lose it."""
    uid = world.ultimo.reserve("C-25", at(1, 9), at(1, 10), description="Budget (alice@example.com)")
    world.ews.book(C25, subject="Budget", start=at(1, 9), end=at(1, 10), organizer="alice@example.com")
    world.reconcile(read_ultimo=False)                              # never read Ultimo: nothing copied
    world.reconcile(read_exchange=False)
    world.reconcile(read_ultimo=False)                              # refused: the twin is in the way

    assert world.ultimo.calls("create") == 1 and [c.kind for c in world.open_conflicts(C25)] == ["room_unavailable"]
    assert world.ews.declines(C25) == []
    world.reconcile()
    [link] = world.links(C25)
    assert link.ultimo_id == uid and world.open_conflicts(C25) == []


def test_a_refusal_for_the_past_records_what_syncd_tried_and_ultimos_message(world: World, capsys) -> None:
    """A meeting already running (it started before now) is refused with 1166."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    world.ews.book(C25, subject="Running late", start=now - timedelta(minutes=30), end=now + timedelta(minutes=30))

    syncd(world, capsys, "reconcile")

    [conflict] = world.open_conflicts(C25)
    assert (conflict.kind, conflict.code) == ("reservation_in_past", "1166")
    [item] = json.loads(exported(world, capsys, "json"))
    [tried] = item["clashes_with"]
    assert tried["kind"] == "attempt" and tried["action"] == "create Ultimo reservation"
    assert "Room reservation is in the past" in tried["message"]
    [row] = list(csv.DictReader(io.StringIO(exported(world, capsys, "csv"))))
    assert row["clashes_with"].startswith("create Ultimo reservation") and "in the past" in row["clashes_with"]
    assert "syncd tried to create Ultimo reservation" in exported(world, capsys, "html")


def test_the_dry_run_plan_says_what_is_in_the_way_in_the_display_zone(world: World, capsys) -> None:
    blocker = world.ultimo.reserve("C-25", at(1, 9), at(1, 10), description="Cleaning")
    world.ews.book(C25, subject="Budget", start=at(1, 9, 30), end=at(1, 10, 30), organizer="alice@example.com")

    status, out = syncd(world, capsys, "reconcile", "--dry-run")

    assert status == 0, out
    zone = at(1, 9).tzname()
    day = f"{at(1, 9):%Y-%m-%d}"
    assert f"create Ultimo reservation for 'Budget (alice@example.com)' {day} 09:30–10:30 {zone}" in out
    assert f"(Ultimo will likely refuse it: the room is occupied by Ultimo reservation {blocker} 'Cleaning'" in out
    assert out.rstrip().endswith("(times in Europe/Amsterdam)")
