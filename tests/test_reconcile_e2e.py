"""End to end: `syncd reconcile` and `syncd conflicts` through `syncd.commands.cli.main`, with a
configuration file pointing at both sandboxes (started here, on loopback) and a real
SQLite file. What a person does in Outlook or Ultimo is done through the sandboxes'
person helpers; what syncd did is read back from the sandboxes and the database.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from syncharness import ROOMS, Killed, World, at

from syncd.commands import reconcile as reconcile_cmd
from syncd.commands.cli import main
from syncd.core.model import external_id_for, stamp_for_reservation
from syncd.sandbox.ews.server import Recurrence
from syncd.store.schema import Conflict

C25, D12 = ROOMS[0][0], ROOMS[1][0]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with World(tmp_path) as w:
        yield w


def syncd(world: World, capsys: pytest.CaptureFixture[str], *args: str, **changes: Any) -> tuple[int, str, str]:
    """Run `syncd --config <file> ARGS` with the world's configuration (updated with
    `changes`, section -> keys); gives (exit status, stdout, stderr)."""
    raw = json.loads(json.dumps(world.raw))
    raw["ultimo"]["max_retries"] = 0          # a failed call fails now, without back-off sleeps
    for section, keys in changes.items():
        target = raw
        for part in section.split("."):
            target = target[part]
        target.update(keys)
    path = world.folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    capsys.readouterr()
    status = main(["--config", str(path), *args])
    out, err = capsys.readouterr()
    return status, out, err


def line_for(out: str, mailbox: str) -> str:
    lines = [line for line in out.splitlines() if line.startswith(mailbox)]
    assert len(lines) == 1, out
    return lines[0]


def stamped(world: World, mailbox: str) -> list:
    return [b for b in world.exchange_view(mailbox) if b.stamp]


# --- both ways -----------------------------------------------------------------------------


def test_reconcile_creates_each_way_and_prints_a_summary_per_room(world: World, capsys) -> None:
    world.ews.book(C25, subject="Team sync", start=at(1, 9), end=at(1, 10), organizer="alice@example.com")
    uid = world.ultimo.reserve("D-12", at(2, 14), at(2, 15), description="Facility inspection")

    status, out, _ = syncd(world, capsys, "reconcile")

    assert status == 0, out
    assert "Ultimo 1 created" in line_for(out, C25)
    assert "Exchange 1 created" in line_for(out, D12)
    [res] = world.ultimo.reservations("C-25")
    assert (res["start"], res["end"], res["applicant_id"]) == (at(1, 9), at(1, 10), "00042")
    assert res["description"] == "Team sync (alice@example.com)"
    [ev] = stamped(world, D12)
    assert (ev.stamp, ev.subject, ev.start, ev.end) == (stamp_for_reservation(uid), "Facility inspection",
                                                        at(2, 14), at(2, 15))
    # Once more: nothing left to do, nothing written.
    calls = world.write_calls()
    status, out, _ = syncd(world, capsys, "reconcile")
    assert status == 0 and world.write_calls() == calls
    assert "Ultimo 0 created, 0 moved, 0 cancelled" in line_for(out, C25)


def test_each_rooms_call_counts_are_its_own_while_another_room_syncs_beside_it(world: World) -> None:
    """The service syncs several rooms at once over one Ultimo client and one calendar: the
    calls a room's cycle reports (its log line, the reconcile summary) are the ones it made,
    so the rooms' counts add up to the calls made."""
    world.ews.book(C25, subject="Team sync", start=at(1, 9), end=at(1, 10))
    world.ultimo.reserve("D-12", at(2, 14), at(2, 15), description="Facility inspection")
    sync = world.engine()
    first, beside = sync.rooms
    results = {}
    real = sync.ultimo.get_reservations

    def get_reservations(*args: Any, **kw: Any) -> Any:
        # The first room's first read: the other room syncs, start to end, in another thread.
        if not results:
            results[beside.mailbox] = None
            other = threading.Thread(target=lambda: results.update({beside.mailbox: sync.sync_room(beside)}))
            other.start()
            other.join(60)
            assert not other.is_alive()
        return real(*args, **kw)

    sync.ultimo.get_reservations = get_reservations     # on the wrapper: the client is shared
    ultimo0, calendar0 = sync.ultimo._inner.calls, sync.calendar.calls
    results[first.mailbox] = sync.sync_room(first)
    mine, theirs = results[first.mailbox], results[beside.mailbox]
    assert not mine.errors and not theirs.errors
    assert mine.ultimo_calls >= 2 and theirs.ultimo_calls >= 1         # a read and a create; a read
    assert mine.ultimo_calls + theirs.ultimo_calls == sync.ultimo._inner.calls - ultimo0
    assert mine.calendar_calls >= 1 and theirs.calendar_calls >= 2     # a read; a read and a create
    assert mine.calendar_calls + theirs.calendar_calls == sync.calendar.calls - calendar0


def test_dry_run_prints_the_plan_and_writes_nothing(world: World, capsys) -> None:
    world.ews.book(C25, subject="Team sync", start=at(1, 9), end=at(1, 10))
    world.ultimo.reserve("D-12", at(2, 14), at(2, 15), description="Facility inspection")

    status, out, _ = syncd(world, capsys, "reconcile", "--dry-run")

    assert status == 0, out
    assert world.write_calls() == (0, 0)
    assert world.links() == [] and world.open_conflicts() == []
    assert "create Ultimo reservation for 'Team sync (alice@example.com)'" in out
    assert "create Exchange event for Ultimo reservation" in out and "'Facility inspection'" in out
    assert "dry run: nothing was written" in out
    # The real run does what the plan said, and nothing more.
    status, out, _ = syncd(world, capsys, "reconcile")
    assert status == 0 and world.write_calls() == (1, 1)


def test_room_is_chosen_by_mailbox_or_space_id(world: World, capsys) -> None:
    world.ews.book(C25, subject="Team sync", start=at(1, 9), end=at(1, 10))
    world.ews.book(D12, subject="Retro", start=at(1, 11), end=at(1, 12))

    status, out, _ = syncd(world, capsys, "reconcile", "--room", C25.upper())
    assert status == 0 and C25 in out and D12 not in out
    assert len(world.ultimo.reservations("C-25")) == 1 and world.ultimo.reservations("D-12") == []

    status, out, _ = syncd(world, capsys, "reconcile", "--room", "D-12")
    assert status == 0 and D12 in out and C25 not in out
    assert len(world.ultimo.reservations("D-12")) == 1


def test_an_unknown_room_exits_2_and_touches_nothing(world: World, capsys) -> None:
    world.ews.book(C25, subject="Team sync", start=at(1, 9), end=at(1, 10))
    status, out, err = syncd(world, capsys, "reconcile", "--room", "Z-99")
    assert status == 2
    assert "Z-99" in err and "not a configured room" in err
    assert world.write_calls() == (0, 0) and world.ultimo.calls() == 0


# --- systems that fail ---------------------------------------------------------------------


def synced_pair(world: World, capsys) -> tuple[str, str]:
    """One meeting made in Outlook and one reservation made in Ultimo, both synced."""
    world.ews.book(C25, subject="Team sync", start=at(1, 9), end=at(1, 10))
    uid = world.ultimo.reserve("C-25", at(2, 14), at(2, 15), description="Inspection")
    status, out, _ = syncd(world, capsys, "reconcile")
    assert status == 0, out
    return world.ultimo.reservations("C-25")[0]["ultimo_id"], uid


def test_ultimo_unreachable_exits_3_and_cancels_nothing(world: World, capsys) -> None:
    synced_pair(world, capsys)
    events = world.exchange_view(C25)
    world.ultimo.stop()

    status, out, err = syncd(world, capsys, "reconcile")

    assert status == 3, out + err
    error_lines = [line for line in out.splitlines() if "error:" in line]
    assert error_lines and all("Ultimo" in line for line in error_lines), out
    assert world.exchange_view(C25) == events


def test_wrong_ultimo_api_key_exits_3(world: World, capsys) -> None:
    synced_pair(world, capsys)
    events = world.exchange_view(C25)
    status, out, err = syncd(world, capsys, "reconcile", ultimo={"api_key": "wrong-key"})
    assert status == 3, out + err
    assert "wrong-key" not in out + err
    assert world.exchange_view(C25) == events


def test_wrong_ews_password_exits_3(world: World, capsys) -> None:
    _, uid = synced_pair(world, capsys)
    status, out, err = syncd(world, capsys, "reconcile", **{"calendar.ews": {"password": "not-the-password"}})
    assert status == 3, out + err
    assert "not-the-password" not in out + err
    assert "refused the credentials" in out
    assert world.ultimo.reservation(uid)["status"] != "Cancelled"
    assert len(world.ultimo.reservations("C-25")) == 2


def test_a_failed_read_of_one_room_fails_that_room_only(world: World, capsys) -> None:
    world.ews.book(C25, subject="Team sync", start=at(1, 9), end=at(1, 10))
    world.ews.book(D12, subject="Retro", start=at(1, 11), end=at(1, 12))
    world.ultimo.inject("http500", workflow="get", count=1)     # the first room's read

    status, out, _ = syncd(world, capsys, "reconcile")

    assert status == 1, out
    assert "HTTP 500" in out and "C-25" in out
    assert "Ultimo 1 created" in line_for(out, D12)
    assert len(world.ultimo.reservations("D-12")) == 1
    # C-25 was read from Exchange but Ultimo was never seen: nothing is copied blind.
    assert world.ultimo.reservations("C-25") == []
    status, out, _ = syncd(world, capsys, "reconcile")
    assert status == 0 and len(world.ultimo.reservations("C-25")) == 1


# --- conflicts -----------------------------------------------------------------------------


def test_a_clash_is_reported_in_every_format_and_resolves_when_the_room_frees(world: World, capsys) -> None:
    clash = world.ultimo.reserve("C-25", at(1, 9), at(1, 10), description="Cleaning")
    subject = "<b>Budget & plans</b>"
    world.ews.book(C25, subject=subject, start=at(1, 9, 30), end=at(1, 10, 30), organizer="bob@example.com")

    status, out, _ = syncd(world, capsys, "reconcile")
    assert status == 0, out                                  # a conflict is reported, not a failure
    assert "conflicts 1 new, 1 open" in line_for(out, C25)

    status, listed, _ = syncd(world, capsys, "conflicts", "list")
    assert status == 0 and "room_unavailable" in listed and "1015" in listed and subject in listed

    status, text, _ = syncd(world, capsys, "conflicts", "export", "--format", "csv")
    [row] = list(csv.DictReader(io.StringIO(text)))
    assert (row["kind"], row["code"], row["subject"], row["room"], row["status"]) == (
        "room_unavailable", "1015", subject, C25, "open")
    assert row["organizer"] == "bob@example.com" and row["start"].startswith(at(1, 9, 30).date().isoformat())

    status, text, _ = syncd(world, capsys, "conflicts", "export", "--format", "json")
    [item] = json.loads(text)
    assert (item["kind"], item["code"], item["subject"], item["space_id"]) == (
        "room_unavailable", "1015", subject, "C-25")

    status, page, _ = syncd(world, capsys, "conflicts", "export", "--format", "html")
    assert status == 0
    assert "&lt;b&gt;Budget &amp; plans&lt;/b&gt;" in page and subject not in page

    # The clashing reservation goes: the next pass books the room and resolves the conflict.
    world.ultimo.cancel(clash)
    status, out, _ = syncd(world, capsys, "reconcile")
    assert status == 0 and "1 resolved" in line_for(out, C25)
    [res] = world.ultimo.reservations("C-25")
    assert (res["start"], res["end"]) == (at(1, 9, 30), at(1, 10, 30))
    assert stamped(world, C25) == []
    status, listed, _ = syncd(world, capsys, "conflicts", "list")
    assert "No open conflicts" in listed
    with world.db.connect() as conn:
        [(state, resolved_at)] = conn.execute(Conflict.__table__.select().with_only_columns(
            Conflict.status, Conflict.resolved_at)).all()
    assert state == "resolved" and resolved_at is not None


# --- crashes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["after", "before"])
def test_killed_around_an_ultimo_create_then_restarted_books_once(world: World, capsys, when: str) -> None:
    world.ews.book(C25, subject="Team sync", start=at(1, 9), end=at(1, 10))
    key = world.exchange_view(C25)[0].key
    world.switch.arm(1, when)
    with pytest.raises(Killed):
        world.reconcile()
    assert len(world.pending_journal()) == 1

    status, out, _ = syncd(world, capsys, "reconcile")      # the restarted process

    assert status == 0, out
    [res] = world.ultimo.reservations("C-25")
    assert res["external_id"] == external_id_for(C25, key)
    [link] = world.links(C25)
    assert (link.ultimo_id, link.exchange_key, link.state) == (res["ultimo_id"], key, "active")
    assert world.pending_journal() == []
    assert stamped(world, C25) == []


@pytest.mark.parametrize("when", ["after", "before"])
def test_killed_around_an_exchange_create_then_restarted_blocks_once(world: World, capsys, when: str) -> None:
    uid = world.ultimo.reserve("C-25", at(2, 14), at(2, 15), description="Inspection")
    world.switch.arm(1, when)
    with pytest.raises(Killed):
        world.reconcile()

    status, out, _ = syncd(world, capsys, "reconcile")

    assert status == 0, out
    [ev] = stamped(world, C25)
    assert ev.stamp == stamp_for_reservation(uid)
    [link] = world.links(C25)
    assert (link.ultimo_id, link.stamp, link.exchange_item_id) == (uid, ev.stamp, ev.item_id)
    assert len(world.ultimo.reservations("C-25")) == 1


# --- what people do --------------------------------------------------------------------------


def test_an_outlook_move_moves_the_reservation_in_place(world: World, capsys) -> None:
    item = world.ews.book(C25, subject="Team sync", start=at(1, 9), end=at(1, 10))
    syncd(world, capsys, "reconcile")
    [before] = world.ultimo.reservations("C-25")

    world.ews.move(C25, item, at(3, 15), at(3, 16, 30))
    status, out, _ = syncd(world, capsys, "reconcile")

    assert status == 0 and "1 moved" in line_for(out, C25)
    [after] = world.ultimo.reservations("C-25")
    assert after["ultimo_id"] == before["ultimo_id"]
    assert (after["start"], after["end"]) == (at(3, 15), at(3, 16, 30))


def test_an_outlook_cancellation_cancels_the_reservation(world: World, capsys) -> None:
    item = world.ews.book(C25, subject="Team sync", start=at(1, 9), end=at(1, 10))
    world.ews.book(C25, subject="Stays", start=at(1, 13), end=at(1, 14))
    syncd(world, capsys, "reconcile")
    gone = next(r for r in world.ultimo.reservations("C-25") if r["start"] == at(1, 9))

    world.ews.cancel(C25, item)
    status, out, _ = syncd(world, capsys, "reconcile")

    assert status == 0 and "1 cancelled" in line_for(out, C25)
    assert world.ultimo.reservation(gone["ultimo_id"])["status"] == "Cancelled"
    assert [r["start"] for r in world.ultimo.reservations("C-25")] == [at(1, 13)]
    # And it stays cancelled.
    syncd(world, capsys, "reconcile")
    assert [r["start"] for r in world.ultimo.reservations("C-25")] == [at(1, 13)]


def test_an_ultimo_move_moves_the_event_in_place(world: World, capsys) -> None:
    uid = world.ultimo.reserve("C-25", at(2, 14), at(2, 15), description="Inspection")
    syncd(world, capsys, "reconcile")
    [before] = stamped(world, C25)

    world.ultimo.move(uid, at(2, 16), at(2, 17, 30))
    status, out, _ = syncd(world, capsys, "reconcile")

    assert status == 0 and "1 moved" in line_for(out, C25)
    [after] = stamped(world, C25)
    assert (after.item_id, after.key, after.stamp) == (before.item_id, before.key, before.stamp)
    assert (after.start, after.end) == (at(2, 16), at(2, 17, 30))


def test_a_subject_change_writes_nothing(world: World, capsys) -> None:
    item = world.ews.book(C25, subject="Team sync", start=at(1, 9), end=at(1, 10))
    syncd(world, capsys, "reconcile")
    calls = world.write_calls()

    world.ews.rename(C25, item, "Team sync (moved to Teams)")
    world.ews.touch(C25, stamped(world, C25)[0].item_id) if stamped(world, C25) else None
    status, out, _ = syncd(world, capsys, "reconcile")

    assert status == 0, out
    assert world.write_calls() == calls


def test_a_series_is_one_reservation_per_occurrence_and_exceptions_follow(world: World, capsys) -> None:
    master = world.ews.book(C25, subject="Stand-up", start=at(1, 8), end=at(1, 8, 15),
                            recurrence=Recurrence(kind="daily", count=4))
    status, out, _ = syncd(world, capsys, "reconcile")
    assert status == 0 and "Ultimo 4 created" in line_for(out, C25)
    assert [r["start"] for r in world.ultimo.reservations("C-25")] == [at(d, 8) for d in (1, 2, 3, 4)]
    ids = {r["start"]: r["ultimo_id"] for r in world.ultimo.reservations("C-25")}

    world.ews.move_occurrence(C25, master, at(2, 8), at(2, 16, 30), at(2, 16, 45))
    world.ews.cancel_occurrence(C25, master, at(3, 8))
    status, out, _ = syncd(world, capsys, "reconcile")

    assert status == 0 and "1 moved, 1 cancelled" in line_for(out, C25)
    now = {r["ultimo_id"]: (r["start"], r["end"]) for r in world.ultimo.reservations("C-25")}
    assert now == {ids[at(1, 8)]: (at(1, 8), at(1, 8, 15)), ids[at(2, 8)]: (at(2, 16, 30), at(2, 16, 45)),
                   ids[at(4, 8)]: (at(4, 8), at(4, 8, 15))}


def test_a_room_emptied_at_once_is_halted_and_nothing_is_cancelled(world: World, capsys) -> None:
    items = [world.ews.book(C25, subject=f"Meeting {i}", start=at(1, 9 + 2 * i), end=at(1, 10 + 2 * i))
             for i in range(3)]
    world.ews.book(D12, subject="Retro", start=at(1, 11), end=at(1, 12))
    syncd(world, capsys, "reconcile")
    assert len(world.ultimo.reservations("C-25")) == 3

    for item in items:
        world.ews.cancel(C25, item)
    world.ews.book(D12, subject="Planning", start=at(2, 11), end=at(2, 12))
    status, out, err = syncd(world, capsys, "reconcile")

    assert status == 1, out
    assert "HALTED" in out and C25 in out.split("HALTED", 1)[1].splitlines()[0]
    assert len(world.ultimo.reservations("C-25")) == 3
    assert world.ultimo.calls("cancel") == 0
    assert len(world.ultimo.reservations("D-12")) == 2        # the other room goes on


# --- regressions: bugs test_sync_properties found (each failed before its fix) ---------------


def test_room_unavailable_is_not_retried_on_every_pass(world: World, capsys) -> None:
    """A meeting that clashes only through Ultimo's buffers (10 min preparation and cleanup)
    gets 1015 once; the planner must not think the room free and ask again every pass."""
    world.ultimo.reserve("C-25", at(1, 10, 15), at(1, 11), description="Cleaning")
    world.ews.book(C25, subject="Budget", start=at(1, 9), end=at(1, 10))

    for _ in range(3):
        status, out, _ = syncd(world, capsys, "reconcile")
        assert status == 0, out

    assert world.ultimo.calls("create") == 1, "the refused create was sent again on every pass"
    [conflict] = world.open_conflicts(C25)
    assert conflict.kind == "room_unavailable"


def test_declining_every_occurrence_of_a_series_takes_one_pass(world: World, capsys) -> None:
    """Each decline of an occurrence renews its siblings' change keys; the others must still
    be declined in the same pass, without errors."""
    world.ews.book(C25, subject="Stand-up", start=at(1, 8), end=at(1, 8, 15), recurrence=Recurrence(kind="daily", count=3))
    syncd(world, capsys, "reconcile")
    for res in world.ultimo.reservations("C-25"):
        world.ultimo.cancel(res["ultimo_id"])

    status, out, _ = syncd(world, capsys, "reconcile")

    assert status == 0, out
    assert "3 declined" in line_for(out, C25)
    assert world.exchange_view(C25) == []


def test_moving_every_occurrence_of_a_series_in_ultimo_takes_one_pass(world: World, capsys) -> None:
    world.ews.book(C25, subject="Stand-up", start=at(1, 8), end=at(1, 8, 15), recurrence=Recurrence(kind="daily", count=3))
    syncd(world, capsys, "reconcile")
    for res in world.ultimo.reservations("C-25"):
        world.ultimo.move(res["ultimo_id"], res["start"] + (at(1, 11) - at(1, 8)), res["end"] + (at(1, 11) - at(1, 8)))

    status, out, _ = syncd(world, capsys, "reconcile")

    assert status == 0, out
    assert "3 moved" in line_for(out, C25)
    assert [b.start for b in world.exchange_view(C25)] == [at(d, 11) for d in (1, 2, 3)]


def test_killed_after_an_ultimo_create_then_moved_by_a_person_books_once(world: World, capsys) -> None:
    """The reservation syncd created just before it died is moved in Ultimo before syncd
    starts again: settling must still find it, not book the meeting a second time."""
    world.ews.book(C25, subject="Budget", start=at(1, 9), end=at(1, 10))
    key = world.exchange_view(C25)[0].key
    world.switch.arm(1, "after")
    with pytest.raises(Killed):
        world.reconcile()
    [made] = world.ultimo.reservations("C-25")
    world.ultimo.move(made["ultimo_id"], at(1, 14), at(1, 15))

    status, out, _ = syncd(world, capsys, "reconcile")

    assert status == 0, out
    assert len(world.reservations_for_booking(C25, key)) == 1, "two live reservations for one Outlook meeting"
    assert stamped(world, C25) == [], "syncd's own reservation was copied back to Exchange"


def test_cancelling_the_only_reservation_of_a_room_does_not_stop_the_room(world: World, capsys) -> None:
    """The clash of the interface's example: the room's only Ultimo reservation clashes with
    an Outlook meeting; once it is cancelled the meeting gets the room. One cancellation is
    not a mass cancellation, and must not halt the room."""
    clash = world.ultimo.reserve("C-25", at(1, 9), at(1, 10), description="Cleaning")
    world.ews.book(C25, subject="Budget", start=at(1, 9, 30), end=at(1, 10, 30))
    syncd(world, capsys, "reconcile")
    assert [c.kind for c in world.open_conflicts(C25)] == ["room_unavailable"]

    world.ultimo.cancel(clash)
    status, out, _ = syncd(world, capsys, "reconcile")

    assert status == 0, out
    assert "HALTED" not in out
    assert [(r["start"], r["end"]) for r in world.ultimo.reservations("C-25")] == [(at(1, 9, 30), at(1, 10, 30))]
    assert world.open_conflicts(C25) == []
    assert stamped(world, C25) == []


def test_ultimo_unreachable_is_reported_once(world: World, capsys) -> None:
    """One clear line for one cause, not one per room (and no attempt per room)."""
    world.ultimo.stop()
    status, out, err = syncd(world, capsys, "reconcile")
    assert status == 3
    assert len([line for line in (out + err).splitlines() if "cannot reach Ultimo" in line]) == 1, out + err


def test_a_link_is_complete_after_the_pass_that_created_its_event(world: World, capsys) -> None:
    """Fixpoint: the pass after the one that created an event changes no link."""
    world.ultimo.reserve("C-25", at(2, 14), at(2, 15), description="Inspection")
    syncd(world, capsys, "reconcile")
    [link] = world.links(C25)
    [ev] = stamped(world, C25)
    assert link.exchange_key == ev.key


def test_a_1015_conflict_resolves_when_the_booking_is_changed_on_both_sides(world: World, capsys) -> None:
    """A room_unavailable conflict whose cause is gone must not stay open beside the
    booking's newer changed_on_both_sides conflict."""
    item = world.ews.book(C25, subject="Budget", start=at(1, 9), end=at(1, 10))
    blocker = world.ultimo.reserve("C-25", at(1, 13), at(1, 14), description="Cleaning")
    syncd(world, capsys, "reconcile")
    [res] = world.reservations_for_booking(C25, world.exchange_view(C25)[0].key)
    world.ews.move(C25, item, at(1, 13), at(1, 14))            # onto the blocker: 1015
    syncd(world, capsys, "reconcile")
    assert [c.kind for c in world.open_conflicts(C25)] == ["room_unavailable"]

    world.ultimo.cancel(blocker)                                # the room is free again,
    world.ultimo.move(res["ultimo_id"], at(1, 16), at(1, 17))   # and Ultimo moved it elsewhere
    syncd(world, capsys, "reconcile")

    assert [c.kind for c in world.open_conflicts(C25)] == ["changed_on_both_sides"]


def test_reconcile_output_goes_to_the_current_stdout(world: World) -> None:
    """reconcile() must print to sys.stdout as it is when called, not when imported."""
    world.ews.book(C25, subject="Budget", start=at(1, 9), end=at(1, 10))
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        status, _ = reconcile_cmd.reconcile(world.cfg)
    assert status == 0
    assert C25 in buffer.getvalue()
