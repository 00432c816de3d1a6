"""Properties of the planner on random rooms (hypothesis).

A random "world" (both sides' bookings and the stored links, on a coarse half-hour grid so
that equal times and overlaps are common) is read the way the gatherer reads it: what
overlaps each side's window, plus linked events fetched by item id. Then:
the planner never raises; never writes on a past booking; never exceeds the cancellation
cap; concludes nothing about a side it did not read; does not depend on input order; and,
after applying its plan to the world, planning again writes nothing (fixpoint).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from syncd.core.model import Event, Reservation, Room, TimeWindow, stamp_for_reservation, synced_hash
from syncd.core.plan import (
    CANCELLATIONS,
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

T0 = datetime(2026, 3, 28, tzinfo=UTC)   # the weekend Europe moves its clocks: UTC doesn't care
ROOM = Room("room.c25@example.com", "C-25")
KEYS = [f"K{i}" for i in range(5)]
UIDS = [f"U{i}" for i in range(5)]
KINDS = ["room_unavailable", "rejected_by_ultimo", "reservation_in_past", "changed_on_both_sides"]
# SYNCD_PLANNER_EXAMPLES=5000 for a long hunt; the default keeps the suite quick.
PROPS = settings(max_examples=int(os.environ.get("SYNCD_PLANNER_EXAMPLES", "200")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def t(half_hours: int) -> datetime:
    return T0 + timedelta(minutes=30 * half_hours)


@dataclass
class World:
    """Both systems and the link table, as plain mutable state."""

    now: datetime
    events: dict[str, Event]
    reservations: dict[str, Reservation]
    links: dict[int, LinkView]
    exchange_window: TimeWindow | None
    ultimo_window: TimeWindow | None
    policy: Policy
    open_conflicts: tuple[OpenConflict, ...] = ()
    previous: tuple[int | None, int | None] = (None, None)
    failed: list[str] = field(default_factory=list)
    counter: int = 0

    def snapshot(self, *, exact: bool = True) -> RoomSnapshot:
        """Read both sides as the gatherer does; `exact=False` hands over every event instead."""
        ew, uw = self.exchange_window, self.ultimo_window
        exchange = None
        if ew is not None:
            by_id = {lk.exchange_item_id for lk in self.links.values() if lk.state == "active"}
            exchange = tuple(e for e in self.events.values()
                             if not exact or ew.overlaps(e.start, e.end) or e.item_id in by_id)
        ultimo = None if uw is None else tuple(r for r in self.reservations.values() if uw.overlaps(r.start, r.end))
        return RoomSnapshot(room=ROOM, now=self.now, links=tuple(self.links.values()), exchange=exchange,
                            exchange_window=ew, ultimo=ultimo, ultimo_window=uw, open_conflicts=self.open_conflicts,
                            previous_exchange_count=self.previous[0], previous_ultimo_count=self.previous[1])

    def _new_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def _event_by_item(self, item_id: str, change_key: str) -> Event | None:
        found = next((e for e in self.events.values() if e.item_id == item_id), None)
        if found is None or found.change_key != change_key:
            self.failed.append(f"exchange write on {item_id}/{change_key}: gone or stale")
            return None
        return found

    def _set_link(self, link_id: int, **changes) -> None:
        lk = replace(self.links[link_id], **changes)
        self.links[link_id] = replace(lk, synced_hash=synced_hash(lk.start, lk.end))

    def _new_link(self, **fields) -> None:
        lid = max(self.links, default=0) + 1
        base = dict(id=lid, state="active", exchange_key=None, exchange_item_id=None, exchange_change_key=None,
                    stamp=None, external_id=None, ultimo_id=None, subject=None, organizer=None)
        base.update(fields)
        self.links[lid] = LinkView(synced_hash=synced_hash(base["start"], base["end"]), **base)

    def apply(self, plan: Plan) -> None:
        """What a faultless executor does with each action, on both sides and the links."""
        for a in plan.actions:
            if isinstance(a, LinkPair):
                e, r = a.event, a.reservation
                ids = dict(exchange_key=e.key, exchange_item_id=e.item_id, exchange_change_key=e.change_key,
                           ultimo_id=r.ultimo_id, start=e.start, end=e.end)
                if a.link_id is not None:
                    self._set_link(a.link_id, **ids)
                else:
                    self._new_link(origin=a.origin, stamp=e.stamp if a.origin == "ultimo" else None, **ids)
            elif isinstance(a, CreateReservation):
                uid = self._new_id("N")
                n = a.new
                self.reservations[uid] = Reservation(uid, n.space_id, n.start, n.end, n.description, n.applicant_id)
                e = a.event
                ids = dict(ultimo_id=uid, external_id=n.external_id, start=n.start, end=n.end)
                if a.link_id is not None:
                    self._set_link(a.link_id, **ids)
                else:
                    self._new_link(origin="exchange", exchange_key=e.key, exchange_item_id=e.item_id,
                                   exchange_change_key=e.change_key, **ids)
            elif isinstance(a, CreateEvent):
                key = self._new_id("E")
                n = a.new
                self.events[key] = Event(key, f"item-{key}", "ck1", n.start, n.end, n.subject, stamp=n.stamp)
                ids = dict(exchange_key=key, exchange_item_id=f"item-{key}", exchange_change_key="ck1",
                           stamp=n.stamp, start=n.start, end=n.end)
                if a.link_id is not None:
                    self._set_link(a.link_id, **ids)
                else:
                    self._new_link(origin="ultimo", ultimo_id=a.reservation.ultimo_id, **ids)
            elif isinstance(a, MoveReservation):
                r = self.reservations.get(a.ultimo_id)
                if r is None:
                    self.failed.append(f"move of missing reservation {a.ultimo_id}")
                    continue
                self.reservations[a.ultimo_id] = replace(r, start=a.start, end=a.end)
                self._set_link(a.link_id, start=a.start, end=a.end)
            elif isinstance(a, MoveEvent):
                e = self._event_by_item(a.item_id, a.change_key)
                if e is None:
                    continue
                moved = replace(e, start=a.start, end=a.end, change_key=self._new_id("ck"))
                self.events[e.key] = moved
                self._set_link(a.link_id, start=a.start, end=a.end, exchange_item_id=moved.item_id,
                               exchange_change_key=moved.change_key)
            elif isinstance(a, CancelReservation):
                self.reservations.pop(a.ultimo_id, None)
                self._set_link(a.link_id, state="cancelled")
            elif isinstance(a, RemoveEvent | DeclineEvent):
                e = self._event_by_item(a.item_id, a.change_key)
                if e is not None:
                    del self.events[e.key]
                if a.link_id is not None:
                    self._set_link(a.link_id, state="cancelled")
            elif isinstance(a, RefreshLink):
                self._set_link(a.link_id, exchange_key=a.exchange_key, exchange_item_id=a.item_id,
                               exchange_change_key=a.change_key, start=a.start, end=a.end)
            elif isinstance(a, Tombstone):
                self._set_link(a.link_id, state="cancelled")
            else:  # pragma: no cover
                raise AssertionError(f"unknown action {a!r}")


@st.composite
def span_(draw, lo: int = 0, hi: int = 44) -> tuple[datetime, datetime]:
    s = draw(st.integers(lo, hi))
    return t(s), t(s + draw(st.integers(1, 4)))


@st.composite
def windows(draw) -> TimeWindow | None:
    if draw(st.integers(0, 4)) == 0:
        return None
    a = draw(st.integers(0, 30))
    return TimeWindow(t(a), t(draw(st.integers(a + 1, 60))))


@st.composite
def worlds(draw, conflicts: bool = True) -> World:
    links: dict[int, LinkView] = {}
    used_keys: set[str] = set()
    used_uids: set[str] = set()
    for i in range(draw(st.integers(0, 5))):
        origin = draw(st.sampled_from(["exchange", "ultimo", "both"]))
        key = draw(st.none() | st.sampled_from(KEYS))
        uid = draw(st.none() | st.sampled_from(UIDS))
        if (key is None and uid is None) or key in used_keys or uid in used_uids:
            continue
        used_keys.add(key or "")
        used_uids.add(uid or "")
        start, end = draw(span_())
        links[i + 1] = LinkView(
            id=i + 1, origin=origin, state=draw(st.sampled_from(["active", "active", "active", "cancelled"])),
            exchange_key=key, exchange_item_id=draw(st.sampled_from([f"item-{key}", f"old-{key}"])) if key else None,
            exchange_change_key=draw(st.sampled_from(["ck1", "ck0"])) if key else None,
            stamp=stamp_for_reservation(uid) if origin == "ultimo" and uid else None, external_id=None,
            ultimo_id=uid, start=start, end=end, synced_hash=synced_hash(start, end), subject="Synced",
            organizer=None)
    by_key = {lk.exchange_key: lk for lk in links.values() if lk.exchange_key}
    by_uid = {lk.ultimo_id: lk for lk in links.values() if lk.ultimo_id}

    def times_for(lk: LinkView | None, other: list[tuple[datetime, datetime]]) -> tuple[datetime, datetime]:
        choice = draw(st.integers(0, 4))
        if choice <= 1 and lk is not None:
            return lk.start, lk.end
        if choice == 2 and lk is not None:                       # moved a little
            shift = timedelta(minutes=30 * draw(st.sampled_from([-2, -1, 1, 2])))
            return lk.start + shift, lk.end + shift
        if choice == 3 and other:
            return draw(st.sampled_from(other))
        return draw(span_())

    events: dict[str, Event] = {}
    for key in KEYS:
        if draw(st.integers(0, 3)) == 0:
            continue
        lk = by_key.get(key)
        start, end = times_for(lk, [])
        stamp = lk.stamp if lk else draw(st.none() | st.none() | st.sampled_from([stamp_for_reservation(u)
                                                                                  for u in UIDS]))
        events[key] = Event(key, draw(st.sampled_from([f"item-{key}", f"new-{key}"])),
                            draw(st.sampled_from(["ck1", "ck2"])), start, end,
                            subject=draw(st.sampled_from(["Team sync", "Board"])),
                            organizer=draw(st.sampled_from(["alice@example.com", "Alice@EXAMPLE.com", None])),
                            private=draw(st.booleans()), cancelled=draw(st.integers(0, 7)) == 0, stamp=stamp)
    event_times = [(e.start, e.end) for e in events.values()]
    reservations: dict[str, Reservation] = {}
    for uid in UIDS:
        if draw(st.integers(0, 3)) == 0:
            continue
        start, end = times_for(by_uid.get(uid), event_times)
        reservations[uid] = Reservation(uid, "C-25", start, end, description=f"Reservation {uid}",
                                        start_with_preparation=start - timedelta(minutes=15)
                                        if draw(st.booleans()) else None)
    for j in range(draw(st.integers(0, 2))):                     # syncd's own events without a link
        uid = draw(st.sampled_from(UIDS))
        r = reservations.get(uid)
        start, end = (r.start, r.end) if r is not None and draw(st.booleans()) else draw(span_())
        events[f"S{j}"] = Event(f"S{j}", f"item-S{j}", "ck1", start, end, "Blocked", stamp=stamp_for_reservation(uid))
    open_conflicts: tuple[OpenConflict, ...] = ()
    if conflicts:
        open_conflicts = tuple(
            OpenConflict(i, draw(st.sampled_from(KEYS + [f"ultimo:{u}" for u in UIDS])), draw(st.sampled_from(KINDS)),
                         *(draw(span_()) if draw(st.booleans()) else (None, None)),
                         link_id=draw(st.none() | st.sampled_from(sorted(links) or [99])))
            for i in range(draw(st.integers(0, 3))))
    policy = Policy(applicant_default="ULTIMO", applicants_by_email={"alice@example.com": "00042"},
                    on_changed_on_both_sides=draw(st.sampled_from(["record_only", "exchange_wins", "ultimo_wins"])),
                    max_cancellations=draw(st.integers(0, 4)))
    return World(now=t(draw(st.integers(0, 24))), events=events, reservations=reservations, links=links,
                 exchange_window=draw(windows()), ultimo_window=draw(windows()), policy=policy,
                 open_conflicts=open_conflicts,
                 previous=(draw(st.none() | st.integers(0, 3)), draw(st.none() | st.integers(0, 3))))


def _link_end(snapshot: RoomSnapshot, link_id: int | None) -> datetime | None:
    return next((lk.end for lk in snapshot.links if lk.id == link_id), None)


@PROPS
@given(worlds(), st.booleans())
def test_never_raises_and_never_writes_on_a_past_booking(world, exact):
    s = world.snapshot(exact=exact)
    plan = plan_room(s, world.policy)
    for a in plan.writes:
        link_end = _link_end(s, getattr(a, "link_id", None))
        assert link_end is None or link_end > s.now, a.describe()
        if isinstance(a, CreateReservation | CreateEvent):
            assert a.new.end > s.now, a.describe()
        else:
            assert a.end is not None and a.end > s.now, a.describe()
        if isinstance(a, MoveReservation | MoveEvent):
            assert a.old_end is not None and a.old_end > s.now, a.describe()
    for c in plan.conflicts:
        assert c.booking_key and c.kind


@PROPS
@given(worlds(), st.booleans())
def test_never_more_cancellations_than_the_cap(world, exact):
    plan = plan_room(world.snapshot(exact=exact), world.policy)
    assert sum(isinstance(a, CANCELLATIONS) for a in plan.actions) <= world.policy.max_cancellations
    if plan.deferred_cancellations:
        assert sum(isinstance(a, CANCELLATIONS) for a in plan.actions) == world.policy.max_cancellations


@PROPS
@given(worlds(), st.sampled_from(["exchange", "ultimo", "both"]))
def test_an_unread_side_is_not_concluded_about(world, unread):
    if unread in ("exchange", "both"):
        world.exchange_window = None
    if unread in ("ultimo", "both"):
        world.ultimo_window = None
    s = world.snapshot()
    plan = plan_room(s, world.policy)
    links = {lk.id: lk for lk in s.links}
    if unread == "both":
        assert plan.actions == ()
    if s.exchange is None:      # Exchange unread: no conclusion that it is gone, moved, or lacks an event
        forbidden = (CancelReservation, Tombstone, LinkPair, CreateEvent, MoveReservation, RefreshLink)
        assert not any(isinstance(a, forbidden) for a in plan.actions), plan.describe()
        for a in plan.actions:  # what it removes or declines is because Ultimo is gone
            if isinstance(a, RemoveEvent | DeclineEvent):
                assert links[a.link_id].ultimo_id not in {r.ultimo_id for r in s.ultimo or ()}
    if s.ultimo is None:        # Ultimo unread: no conclusion that it is gone, moved, or holds a twin
        forbidden = (DeclineEvent, LinkPair, MoveEvent)
        assert not any(isinstance(a, forbidden) for a in plan.actions), plan.describe()
        for a in plan.actions:
            if isinstance(a, Tombstone):
                assert links[a.link_id].ultimo_id is None       # it never had an Ultimo side
            if isinstance(a, RemoveEvent) and a.link_id is not None:
                assert links[a.link_id].state != "active"        # a stale copy of a tombstone


@PROPS
@given(worlds(), st.randoms(use_true_random=False))
def test_input_order_does_not_matter(world, rng: random.Random):
    s = world.snapshot()
    shuffled = replace(s, links=tuple(rng.sample(s.links, len(s.links))),
                       exchange=None if s.exchange is None else tuple(rng.sample(s.exchange, len(s.exchange))),
                       ultimo=None if s.ultimo is None else tuple(rng.sample(s.ultimo, len(s.ultimo))),
                       open_conflicts=tuple(rng.sample(s.open_conflicts, len(s.open_conflicts))))
    assert plan_room(shuffled, world.policy) == plan_room(s, world.policy)


@PROPS
@given(worlds(conflicts=False))
def test_fixpoint_planning_again_after_applying_the_plan_writes_nothing(world):
    world.policy = replace(world.policy, max_cancellations=100)
    first = plan_room(world.snapshot(), world.policy)
    assume(not first.conflicts and not first.halted)
    world.apply(first)
    assume(not world.failed)          # a failed write is retried next time: not a fixpoint case
    world.previous = (None, None)
    second = plan_room(world.snapshot(), world.policy)
    assert second.actions == (), "\n".join(["first:", *first.describe(), "second:", *second.describe()])
    assert not second.conflicts
