"""The planner's decision table, one test per row (named after the row), plus the cases
users care about most: no echo, no resurrection, no blind copies, no mass cancellation."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from syncd.config.schema import Config
from syncd.core.model import (
    CHANGED_ON_BOTH_SIDES,
    REJECTED_BY_ULTIMO,
    RESERVATION_IN_PAST,
    ROOM_UNAVAILABLE,
    Event,
    Reservation,
    Room,
    TimeWindow,
    external_id_for,
    stamp_for_reservation,
    synced_hash,
)
from syncd.core.plan import (
    CancelReservation,
    CreateEvent,
    CreateReservation,
    DeclineEvent,
    LinkPair,
    LinkView,
    MoveEvent,
    MoveReservation,
    OpenConflict,
    Plan,
    Policy,
    RefreshLink,
    RemoveEvent,
    RoomSnapshot,
    Tombstone,
)
from syncd.core.planner import plan_room

T0 = datetime(2026, 11, 23, tzinfo=UTC)
ROOM = Room("room.c25@example.com", "C-25")
NOW = T0 + timedelta(hours=8)
WINDOW = TimeWindow(T0 - timedelta(days=1), T0 + timedelta(days=30))
POLICY = Policy(applicant_default="ULTIMO", applicants_by_email={"alice@example.com": "00042"})
_ALL = object()


def t(h: float) -> datetime:
    return T0 + timedelta(hours=h)


def ev(key: str, h0: float, h1: float, **kw) -> Event:
    kw.setdefault("item_id", f"item-{key}")
    kw.setdefault("change_key", "ck1")
    kw.setdefault("subject", "Team sync")
    kw.setdefault("organizer", "alice@example.com")
    return Event(key=key, start=t(h0), end=t(h1), **kw)


def res(uid: str, h0: float, h1: float, **kw) -> Reservation:
    kw.setdefault("description", "Workshop")
    return Reservation(ultimo_id=uid, space_id="C-25", start=t(h0), end=t(h1), **kw)


def link(lid: int, h0: float, h1: float, *, origin: str = "exchange", key: str | None = "K",
         ultimo_id: str | None = "U1", **kw) -> LinkView:
    stamp = stamp_for_reservation(ultimo_id) if origin == "ultimo" and ultimo_id else None
    fields = dict(id=lid, origin=origin, state="active", exchange_key=key,
                  exchange_item_id=f"item-{key}" if key else None, exchange_change_key="ck1" if key else None,
                  stamp=stamp, external_id=None, ultimo_id=ultimo_id, start=t(h0), end=t(h1),
                  synced_hash=synced_hash(t(h0), t(h1)), subject="Team sync", organizer="alice@example.com")
    fields.update(kw)
    return LinkView(**fields)


def snap(links=(), exchange=(), ultimo=(), **kw) -> RoomSnapshot:
    kw.setdefault("exchange_window", WINDOW if exchange is not None else None)
    kw.setdefault("ultimo_window", WINDOW if ultimo is not None else None)
    kw.setdefault("now", NOW)
    return RoomSnapshot(room=ROOM, links=tuple(links), exchange=None if exchange is None else tuple(exchange),
                        ultimo=None if ultimo is None else tuple(ultimo), **kw)


def plan(s: RoomSnapshot, policy: Policy = POLICY) -> Plan:
    return plan_room(s, policy)


def of(p: Plan, key: str) -> list:
    return [a for a in p.actions if a.booking_key == key]


def only(p: Plan, kind: type):
    assert len(p.actions) == 1, p.describe()
    (a,) = p.actions
    assert isinstance(a, kind), p.describe()
    return a


# --- the decision table ------------------------------------------------------------------


def test_exchange_new_creates_the_reservation_with_description_and_applicant():
    p = plan(snap(exchange=[ev("K", 9, 10, organizer="Alice@Example.com")], ultimo=[]))
    a = only(p, CreateReservation)
    assert a.booking_key == "K" and a.link_id is None
    assert a.new.description == "Team sync (Alice@Example.com)"
    assert a.new.applicant_id == "00042"          # case-insensitive mapping
    assert a.new.external_id == external_id_for(ROOM.mailbox, "K")
    assert (a.new.space_id, a.new.start, a.new.end) == ("C-25", t(9), t(10))
    assert a.describe() == "create Ultimo reservation for 'Team sync (Alice@Example.com)' 2026-11-23 09:00–10:00 UTC"


def test_unknown_organizer_gets_the_default_applicant():
    p = plan(snap(exchange=[ev("K", 9, 10, organizer="bob@example.com")], ultimo=[]))
    assert only(p, CreateReservation).new.applicant_id == "ULTIMO"


def test_private_meeting_is_masked_everywhere():
    e = ev("K", 9, 10, subject="Layoffs", private=True)
    p = plan(snap(exchange=[e], ultimo=[]))
    a = only(p, CreateReservation)
    assert "Layoffs" not in a.new.description and a.new.description.startswith("Private meeting")
    assert "Layoffs" not in a.describe()
    shown = plan(snap(exchange=[e], ultimo=[]), replace(POLICY, mask_private=False))
    assert only(shown, CreateReservation).new.description.startswith("Layoffs")


def test_exchange_new_past_is_read_only():
    assert plan(snap(exchange=[ev("K", 5, 7)], ultimo=[])).is_empty


def test_ongoing_booking_is_not_past():
    only(plan(snap(exchange=[ev("K", 7, 9)], ultimo=[])), CreateReservation)


def test_first_run_pair_links_equal_bookings_and_creates_nothing():
    events = [ev("A", 9, 10), ev("B", 11, 12)]
    resv = [res("U2", 11, 12), res("U1", 9, 10)]
    p = plan(snap(exchange=events, ultimo=resv))
    assert not p.writes
    pairs = {(a.event.key, a.reservation.ultimo_id, a.origin) for a in p.actions}
    assert pairs == {("A", "U1", "both"), ("B", "U2", "both")}


def test_first_run_pair_is_one_to_one():
    p = plan(snap(exchange=[ev("A", 9, 10), ev("B", 9, 10)], ultimo=[res("U1", 9, 10)]))
    kinds = sorted(type(a).__name__ for a in p.actions)
    assert kinds == ["CreateReservation", "LinkPair"]
    assert [a.event.key for a in p.actions if isinstance(a, LinkPair)] == ["A"]


def test_first_run_with_ultimo_never_read_copies_nothing():
    p = plan(snap(exchange=[ev("A", 9, 10)], ultimo=None, previous_ultimo_count=None))
    assert p.is_empty
    # Ultimo was read fully before, just not this pass: the create goes ahead (Ultimo refuses doubles).
    only(plan(snap(exchange=[ev("A", 9, 10)], ultimo=None, previous_ultimo_count=3)), CreateReservation)


def test_create_gated_room_unavailable_waits_for_a_free_room_or_new_times():
    oc = OpenConflict(1, "K", ROOM_UNAVAILABLE, t(9), t(10))
    busy = [res("U9", 10, 11, start_with_preparation=t(9.5))]   # its preparation overlaps
    assert of(plan(snap(exchange=[ev("K", 9, 10)], ultimo=busy, open_conflicts=(oc,))), "K") == []
    assert plan(snap(exchange=[ev("K", 9, 10)], ultimo=None, open_conflicts=(oc,),
                     previous_ultimo_count=1)).is_empty
    free = [res("U9", 10, 11)]                                   # touches, doesn't overlap
    for p in (plan(snap(exchange=[ev("K", 9, 10)], ultimo=free, open_conflicts=(oc,))),
              plan(snap(exchange=[ev("K", 12, 13)], ultimo=busy, open_conflicts=(oc,)))):
        assert [type(a) for a in of(p, "K")] == [CreateReservation]


def test_create_gated_rejected_and_in_past():
    rej = OpenConflict(1, "K", REJECTED_BY_ULTIMO, t(9), t(10))
    assert plan(snap(exchange=[ev("K", 9, 10)], ultimo=[], open_conflicts=(rej,))).is_empty
    only(plan(snap(exchange=[ev("K", 9, 11)], ultimo=[], open_conflicts=(rej,))), CreateReservation)
    past = OpenConflict(1, "K", RESERVATION_IN_PAST, t(9), t(10))
    assert plan(snap(exchange=[ev("K", 9, 11)], ultimo=[], open_conflicts=(past,))).is_empty


def test_ultimo_new_creates_a_stamped_event():
    p = plan(snap(exchange=[], ultimo=[res("U7", 9, 10, applicant_name="Bob")]),
             replace(POLICY, event_subject_template="{description} – {applicant} #{ultimo_id}"))
    a = only(p, CreateEvent)
    assert a.booking_key == "ultimo:U7"
    assert a.new.stamp == stamp_for_reservation("U7")
    assert a.new.subject == "Workshop – Bob #U7"
    assert (a.new.start, a.new.end) == (t(9), t(10))


def test_ultimo_new_needs_an_exchange_read_that_covers_it():
    assert plan(snap(exchange=None, ultimo=[res("U7", 9, 10)])).is_empty
    narrow = TimeWindow(t(0), t(9))
    assert plan(snap(exchange=[], ultimo=[res("U7", 9, 10)], exchange_window=narrow)).is_empty


def test_stamped_unlinked_event_is_never_copied_to_ultimo():
    e = ev("S", 9, 10, stamp=stamp_for_reservation("U404"))
    assert plan(snap(exchange=[e], ultimo=[])).is_empty


def test_stamped_adopt_links_an_interrupted_create_instead_of_copying_again():
    e = ev("S", 9, 10, stamp=stamp_for_reservation("U7"))
    a = only(plan(snap(exchange=[e], ultimo=[res("U7", 9, 10)])), LinkPair)
    assert (a.booking_key, a.origin, a.reservation.ultimo_id) == ("ultimo:U7", "ultimo", "U7")


def test_stamped_orphan_moved_is_replaced_not_duplicated():
    e = ev("S", 11, 12, stamp=stamp_for_reservation("U7"))
    p = plan(snap(exchange=[e], ultimo=[res("U7", 9, 10)]))
    assert [type(a) for a in p.actions] == [RemoveEvent, CreateEvent]
    capped = plan(snap(exchange=[e], ultimo=[res("U7", 9, 10)]), replace(POLICY, max_cancellations=0))
    assert capped.actions == () and capped.deferred_cancellations == 1


def test_stamp_learned_refreshes_the_link():
    lk = link(1, 9, 10, origin="ultimo", key=None, ultimo_id="U7")
    e = ev("S", 9, 10, stamp=stamp_for_reservation("U7"))
    a = only(plan(snap([lk], exchange=[e], ultimo=[res("U7", 9, 10)])), RefreshLink)
    assert (a.link_id, a.exchange_key, a.item_id, a.change_key) == (1, "S", "item-S", "ck1")


def test_stamped_duplicate_is_removed():
    lk = link(1, 9, 10, origin="ultimo", key="S1", ultimo_id="U7")
    dup = ev("S2", 9, 10, stamp=stamp_for_reservation("U7"))
    p = plan(snap([lk], exchange=[ev("S1", 9, 10, stamp=lk.stamp), dup], ultimo=[res("U7", 9, 10)]))
    a = only(p, RemoveEvent)
    assert (a.item_id, a.link_id, a.booking_key) == ("item-S2", None, "S2")


def test_pending_create_retries_a_missing_side_on_the_same_link():
    lk = link(1, 9, 10, ultimo_id=None)
    a = only(plan(snap([lk], exchange=[ev("K", 9, 10)], ultimo=[])), CreateReservation)
    assert a.link_id == 1
    lk2 = link(2, 9, 10, origin="ultimo", key=None, ultimo_id="U7")
    b = only(plan(snap([lk2], exchange=[], ultimo=[res("U7", 9, 10)])), CreateEvent)
    assert b.link_id == 2


def test_pending_pair_fills_the_link_from_an_equal_reservation():
    lk = link(1, 9, 10, ultimo_id=None)
    a = only(plan(snap([lk], exchange=[ev("K", 9, 10)], ultimo=[res("U3", 9, 10)])), LinkPair)
    assert (a.link_id, a.reservation.ultimo_id) == (1, "U3")


def test_pending_gone_tombstones():
    lk = link(1, 9, 10, ultimo_id=None)
    assert only(plan(snap([lk], exchange=[], ultimo=[])), Tombstone).link_id == 1


def test_unchanged_plans_nothing():
    lk = link(1, 9, 10)
    assert plan(snap([lk], exchange=[ev("K", 9, 10)], ultimo=[res("U1", 9, 10)])).is_empty


def test_subject_only_change_writes_nothing():
    lk = link(1, 9, 10)
    p = plan(snap([lk], exchange=[ev("K", 9, 10, subject="Renamed", change_key="ck2")],
                  ultimo=[res("U1", 9, 10, description="Also renamed")]))
    assert not p.writes
    assert [type(a) for a in p.actions] == [RefreshLink]


def test_id_churn_is_not_a_change():
    lk = link(1, 9, 10)
    p = plan(snap([lk], exchange=[ev("K", 9, 10, item_id="new-id", change_key="ck9")], ultimo=[res("U1", 9, 10)]))
    a = only(p, RefreshLink)
    assert (a.item_id, a.change_key, a.start, a.end) == ("new-id", "ck9", t(9), t(10))


def test_exchange_changed_moves_the_reservation_in_place():
    lk = link(1, 9, 10)
    for ultimo in ([res("U1", 9, 10)], None):
        a = only(plan(snap([lk], exchange=[ev("K", 11, 12)], ultimo=ultimo)), MoveReservation)
        assert (a.ultimo_id, a.start, a.end, a.link_id) == ("U1", t(11), t(12), 1)


def test_ultimo_changed_moves_the_event_with_the_freshest_change_key():
    lk = link(1, 9, 10)
    p = plan(snap([lk], exchange=[ev("K", 9, 10, change_key="ck5")], ultimo=[res("U1", 11, 12)]))
    (a,) = p.writes
    assert isinstance(a, MoveEvent)
    assert (a.item_id, a.change_key, a.start, a.end) == ("item-K", "ck5", t(11), t(12))
    b = only(plan(snap([lk], exchange=None, ultimo=[res("U1", 11, 12)])), MoveEvent)
    assert b.change_key == "ck1"


def test_both_changed_same_only_refreshes():
    lk = link(1, 9, 10)
    oc = OpenConflict(4, "K", CHANGED_ON_BOTH_SIDES, t(11), t(12), link_id=1)
    p = plan(snap([lk], exchange=[ev("K", 11, 12)], ultimo=[res("U1", 11, 12)], open_conflicts=(oc,)))
    a = only(p, RefreshLink)
    assert (a.start, a.end) == (t(11), t(12))
    assert p.resolved == ("K",)


@pytest.mark.parametrize("mode, expected", [("record_only", None), ("exchange_wins", MoveReservation),
                                            ("ultimo_wins", MoveEvent)])
def test_both_changed(mode, expected):
    lk = link(1, 9, 10)
    p = plan(snap([lk], exchange=[ev("K", 11, 12)], ultimo=[res("U1", 13, 14)]),
             replace(POLICY, on_changed_on_both_sides=mode))
    if expected is None:
        assert not p.actions
        (c,) = p.conflicts
        assert c.kind == CHANGED_ON_BOTH_SIDES and c.booking_key == "K" and c.ultimo_id == "U1"
        assert "11:00–12:00" in c.message and "13:00–14:00" in c.message
    else:
        a = only(p, expected)
        assert (a.start, a.end) == ((t(11), t(12)) if expected is MoveReservation else (t(13), t(14)))


def test_move_into_past_is_a_conflict_not_a_write():
    lk = link(1, 9, 10)
    p = plan(snap([lk], exchange=[ev("K", 6, 7)], ultimo=[res("U1", 9, 10)]))
    assert not p.writes
    assert [c.kind for c in p.conflicts] == [RESERVATION_IN_PAST]
    q = plan(snap([lk], exchange=[ev("K", 9, 10)], ultimo=[res("U1", 5, 6)]))
    assert not q.writes and [c.kind for c in q.conflicts] == [RESERVATION_IN_PAST]


def test_exchange_gone_cancels_the_reservation():
    lk = link(1, 9, 10)
    for ultimo in ([res("U1", 9, 10)], None):
        a = only(plan(snap([lk], exchange=[], ultimo=ultimo)), CancelReservation)
        assert (a.ultimo_id, a.link_id) == ("U1", 1)
    cancelled = ev("K", 9, 10, cancelled=True)
    only(plan(snap([lk], exchange=[cancelled], ultimo=[res("U1", 9, 10)])), CancelReservation)


def test_ultimo_gone_ours_removes_our_event():
    lk = link(1, 9, 10, origin="ultimo", key="S", ultimo_id="U7")
    a = only(plan(snap([lk], exchange=[ev("S", 9, 10, stamp=lk.stamp, change_key="ck3")], ultimo=[])), RemoveEvent)
    assert (a.item_id, a.change_key, a.link_id) == ("item-S", "ck3", 1)


def test_ultimo_gone_theirs_declines_the_meeting():
    for origin in ("exchange", "both"):
        lk = link(1, 9, 10, origin=origin)
        for exchange in ([ev("K", 9, 10)], None):
            a = only(plan(snap([lk], exchange=exchange, ultimo=[])), DeclineEvent)
            assert a.reason == "reservation cancelled in Ultimo" and a.item_id == "item-K"


def test_gone_on_both_tombstones():
    lk = link(1, 9, 10)
    assert only(plan(snap([lk], exchange=[], ultimo=[])), Tombstone).link_id == 1


def test_tombstone_stale_copy_is_never_resurrected():
    tomb = link(1, 9, 10, state="cancelled")
    # A stale copy on either side of a person's booking: left alone, nothing recreated.
    assert plan(snap([tomb], exchange=[ev("K", 9, 10)], ultimo=[res("U1", 9, 10)])).is_empty
    ours = link(2, 11, 12, origin="ultimo", key="S", ultimo_id="U7", state="cancelled")
    a = only(plan(snap([ours], exchange=[ev("S", 11, 12, stamp=ours.stamp)], ultimo=[res("U7", 11, 12)])),
             RemoveEvent)
    assert a.link_id == 2


def test_side_unread_concludes_nothing_about_it():
    lk = link(1, 9, 10)
    # Ultimo not read: no decline, no tombstone; Exchange not read: no cancel.
    assert plan(snap([lk], exchange=[ev("K", 9, 10)], ultimo=None)).is_empty
    assert plan(snap([lk], exchange=None, ultimo=[res("U1", 9, 10)])).is_empty
    assert plan(snap([lk], exchange=None, ultimo=None)).is_empty


def test_outside_window_is_not_a_cancellation():
    lk = link(1, 9, 10)
    before = TimeWindow(t(10), t(100))           # ends where the booking... starts after it ended
    assert plan(snap([lk], exchange=[], ultimo=[res("U1", 9, 10)], exchange_window=before)).is_empty
    partial = TimeWindow(t(9.5), t(100))         # Ultimo must contain the booking to call it gone
    assert plan(snap([lk], exchange=[ev("K", 9, 10)], ultimo=[], ultimo_window=partial)).is_empty


def test_window_edges():
    lk = link(1, 9, 10)
    # Exchange: a window ending exactly at the booking's start does not cover it; one minute more does.
    assert plan(snap([lk], exchange=[], ultimo=[res("U1", 9, 10)], exchange_window=TimeWindow(t(0), t(9)))).is_empty
    only(plan(snap([lk], exchange=[], ultimo=[res("U1", 9, 10)], exchange_window=TimeWindow(t(0), t(9.02)))),
         CancelReservation)
    # Ultimo: a window ending exactly at the booking's end contains it.
    only(plan(snap([lk], exchange=[ev("K", 9, 10)], ultimo=[], ultimo_window=TimeWindow(t(0), t(10)))),
         DeclineEvent)


def test_booking_leaving_the_window_is_a_move_not_a_cancellation():
    lk = link(1, 9, 10)
    window = TimeWindow(t(0), t(48))
    moved = ev("K", 24 * 40, 24 * 40 + 1)        # found by item id, outside the window read
    a = only(plan(snap([lk], exchange=[moved], ultimo=[res("U1", 9, 10)], exchange_window=window)), MoveReservation)
    assert a.start == moved.start


def test_past_read_only():
    lk = link(1, 5, 6)
    assert plan(snap([lk], exchange=[], ultimo=[res("U1", 5, 6)])).is_empty
    assert plan(snap([lk], exchange=[ev("K", 5, 6)], ultimo=[])).is_empty
    assert not plan(snap([lk], exchange=[ev("K", 11, 12)], ultimo=[res("U1", 5, 6)])).writes
    assert only(plan(snap([lk], exchange=[], ultimo=[])), Tombstone)   # bookkeeping is fine
    # Linked booking still future, but the reservation itself was moved into the past: not cancelled.
    assert not plan(snap([link(2, 9, 10)], exchange=[], ultimo=[res("U1", 5, 6)])).writes


def test_mass_cancellation_guard_halts_the_room():
    links = [link(1, 9, 10), link(2, 11, 12, key="K2", ultimo_id="U2")]
    resv = [res("U1", 9, 10), res("U2", 11, 12)]
    p = plan(snap(links, exchange=[], ultimo=resv, previous_exchange_count=2))
    assert p.halted and "Exchange returned no bookings" in p.halted
    assert p.actions == () and p.conflicts == ()
    q = plan(snap(links, exchange=[ev("K", 9, 10), ev("K2", 11, 12)], ultimo=[], previous_ultimo_count=5))
    assert q.halted and "Ultimo" in q.halted
    # First read ever, or nothing linked in the window: no halt.
    assert not plan(snap(links, exchange=[], ultimo=resv, previous_exchange_count=None)).halted
    assert not plan(snap([], exchange=[], ultimo=[], previous_exchange_count=9)).halted


def test_cancellation_cap_keeps_the_earliest():
    links = [link(i, 9 + i, 9.5 + i, key=f"K{i}", ultimo_id=f"U{i}") for i in range(1, 6)]
    resv = [res(f"U{i}", 9 + i, 9.5 + i) for i in range(1, 6)]
    p = plan(snap(links, exchange=[], ultimo=resv), replace(POLICY, max_cancellations=2))
    assert [a.ultimo_id for a in p.actions] == ["U1", "U2"]
    assert p.deferred_cancellations == 3


def test_conflict_resolved_when_booking_gone_from_exchange():
    oc = OpenConflict(1, "K", ROOM_UNAVAILABLE, t(9), t(10))
    p = plan(snap(exchange=[], ultimo=[], open_conflicts=(oc,)))
    assert p.resolved == ("K",) and not p.actions
    paired = plan(snap(exchange=[ev("K", 9, 10)], ultimo=[res("U9", 9, 10)], open_conflicts=(oc,)))
    assert paired.resolved == ("K",) and [type(a) for a in paired.actions] == [LinkPair]
    busy = [res("U9", 9.5, 11)]
    links = [link(1, 9.5, 11, origin="ultimo", key="S", ultimo_id="U9")]
    still = plan(snap(links, exchange=[ev("K", 9, 10), ev("S", 9.5, 11, stamp=links[0].stamp)], ultimo=busy,
                      open_conflicts=(oc,)))
    assert still.is_empty
    assert plan(snap(exchange=None, ultimo=[], open_conflicts=(oc,))).resolved == ()


def test_conflict_resolved_when_sides_agree_again():
    lk = link(1, 9, 10)
    oc = OpenConflict(4, "K", CHANGED_ON_BOTH_SIDES, t(11), t(12), link_id=1)
    p = plan(snap([lk], exchange=[ev("K", 9, 10)], ultimo=[res("U1", 9, 10)], open_conflicts=(oc,)))
    assert p.resolved == ("K",) and not p.actions
    q = plan(snap([lk], exchange=[ev("K", 11, 12)], ultimo=[res("U1", 13, 14)], open_conflicts=(oc,)))
    assert q.resolved == () and [c.kind for c in q.conflicts] == [CHANGED_ON_BOTH_SIDES]


# --- whole-plan properties by example -----------------------------------------------------


def test_actions_are_ordered_db_cancellations_moves_creates():
    links = [link(1, 9, 10), link(2, 11, 12, key="K2", ultimo_id="U2"), link(3, 13, 14, key="K3", ultimo_id="U3")]
    exchange = [ev("K", 9, 10, change_key="ck2"), ev("K3", 15, 16), ev("N", 20, 21)]
    ultimo = [res("U1", 9, 10), res("U2", 11, 12), res("U3", 13, 14), res("U8", 18, 19)]
    p = plan(snap(links, exchange=exchange, ultimo=ultimo))
    assert [type(a) for a in p.actions] == [RefreshLink, CancelReservation, MoveReservation,
                                            CreateEvent, CreateReservation]


def test_determinism_input_order_does_not_matter():
    links = [link(i, 9 + i, 10 + i, key=f"K{i}", ultimo_id=f"U{i}") for i in range(6)]
    exchange = [ev(f"K{i}", 9 + i + (i % 2), 10 + i) for i in range(0, 6, 2)] + [ev("N", 30, 31)]
    ultimo = [res(f"U{i}", 9 + i, 10 + i + (i % 3 == 0)) for i in range(1, 6)] + [res("X", 40, 41)]
    base = plan(snap(links, exchange=exchange, ultimo=ultimo), replace(POLICY, max_cancellations=2))
    rng = random.Random(7)
    for _ in range(10):
        rng.shuffle(links)
        rng.shuffle(exchange)
        rng.shuffle(ultimo)
        assert plan(snap(links, exchange=exchange, ultimo=ultimo), replace(POLICY, max_cancellations=2)) == base


def test_describe_is_human_readable():
    lk = link(1, 9, 10)
    p = plan(snap([lk], exchange=[ev("K", 23, 25)], ultimo=[res("U1", 9, 10)]))
    assert p.describe() == ["move Ultimo reservation U1 'Team sync' from 2026-11-23 09:00–10:00 UTC "
                            "to 2026-11-23 23:00 – 2026-11-24 01:00 UTC"]


def test_policy_from_config():
    from syncd.engine.cycle import policy_for

    cfg = Config.model_validate({
        "ultimo": {"base_url": "http://127.0.0.1:1/api/V1", "api_key": "k"},
        "calendar": {"ews": {"endpoint": "http://127.0.0.1:1/EWS/Exchange.asmx", "username": "u", "password": "p"}},
        "rooms": [{"mailbox": "room.c25@example.com", "space_id": "C-25"}],
        "applicants": {"default": "ULTIMO", "by_email": {"Alice@Example.com": "00042"}},
        "sync": {"max_cancellations_per_cycle": 3, "on_changed_on_both_sides": "ultimo_wins",
                 "private_subject": "Busy", "event_subject_template": "[{ultimo_id}] {description}"},
    })
    policy = policy_for(cfg)
    assert policy.applicant_for("ALICE@example.COM") == "00042"
    assert (policy.max_cancellations, policy.on_changed_on_both_sides) == (3, "ultimo_wins")
    assert policy.shown_subject(ev("K", 9, 10, subject="Secret", private=True)) == "Busy"
    assert policy.new_event(res("U5", 9, 10)).subject == "[U5] Workshop"


# --- what a create or move would clash with (named in the conflict should Ultimo refuse) -----


def buffered(uid: str, h0: float, h1: float, minutes: int = 10, **kw) -> Reservation:
    pad = timedelta(minutes=minutes)
    return res(uid, h0, h1, start_with_preparation=t(h0) - pad, end_with_cleanup=t(h1) + pad, **kw)


def test_a_create_carries_the_reservations_within_reach_overlap_and_buffer_only():
    p = plan(snap(exchange=[ev("K", 10, 11)],
                  ultimo=[buffered("U1", 9.5, 10.5, description="Board"), buffered("U2", 11, 12),
                          buffered("U3", 13, 14)]), replace(POLICY, on_room_unavailable="record_only"))
    [a] = [x for x in p.actions if isinstance(x, CreateReservation)]
    assert [(c.ultimo_id, c.description, c.buffer_only, c.preparation_minutes, c.cleanup_minutes)
            for c in a.clashes] == [("U1", "Board", False, 10, 10), ("U2", "Workshop", True, 10, 10)]


def test_a_move_carries_its_clashes_but_not_its_own_reservation():
    lk = link(1, 9, 10, ultimo_id="U1")
    p = plan(snap([lk], exchange=[ev("K", 14, 15)],
                  ultimo=[buffered("U1", 9, 10), buffered("U9", 15, 16, description="Cleaning")]))
    [a] = [x for x in p.actions if isinstance(x, MoveReservation)]
    assert [(c.ultimo_id, c.buffer_only) for c in a.clashes] == [("U9", True)]


def test_a_create_after_another_create_in_the_same_pass_names_it():
    p = plan(snap(exchange=[ev("A", 14, 15, subject="Design review"), ev("B", 15, 16)],
                  ultimo=[buffered("U1", 8, 9)]))
    first, second = [x for x in p.actions if isinstance(x, CreateReservation)]
    assert first.clashes == ()
    [pending] = second.clashes
    assert (pending.pending_key, pending.buffer_only, pending.origin) == ("A", True, "exchange")
    assert pending.description == first.new.description


@pytest.mark.parametrize(("rule", "links", "previous", "declines"), [
    ("decline_new", (), None, False),          # the first pass over a room: only reported
    ("decline_new", (), 0, True),              # the room was read before: syncd manages it
    ("decline_new", "linked", None, True),     # something is linked: not the first pass
    ("decline", (), None, True),
    ("record_only", (), 3, False),
])
def test_whether_the_room_declines_a_refused_create(rule, links, previous, declines):
    linked = [link(1, 20, 21, key="L", ultimo_id="U7")] if links == "linked" else []
    ultimo = [res("U7", 20, 21)] if linked else []
    exchange = [ev("K", 9, 10)] + ([ev("L", 20, 21)] if linked else [])
    p = plan(snap(linked, exchange=exchange, ultimo=ultimo, previous_exchange_count=previous),
             replace(POLICY, on_room_unavailable=rule))
    [a] = [x for x in p.actions if isinstance(x, CreateReservation)]
    assert a.decline is declines
