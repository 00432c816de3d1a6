"""The pure planner: one room's snapshot and the policy in, a `Plan` out. No I/O.

Each booking is put in one row of this table (the row names are the tests' names).
"Seen" states per side of a link: present, gone (absent from a read that covers the
link, or cancelled), unknown (side not read, outside the read's window, or its lookup by
id failed), missing (the link never got that side). Exchange "covers" = its window overlaps the link's synced
times (linked events outside the window are fetched by id, so absence means gone);
Ultimo "covers" = its window contains them. "Past" = end <= now; past means read-only.

| row                        | situation                                                  | plan                         |
|----------------------------|------------------------------------------------------------|------------------------------|
| mass_cancellation_guard    | a read returned 0 bookings, the last had some, 2 or more   | nothing; `halted` = reason   |
|                            | active links lie in that window                            |                              |
| first_run_pair             | unlinked event and unlinked reservation, same start & end  | LinkPair (one-to-one)        |
| pending_pair               | link without Ultimo side; equal unlinked reservation       | LinkPair(link_id)            |
| exchange_new               | unlinked, unstamped, live, future event                    | CreateReservation            |
| create_gated               | ...with open room_unavailable (times same, room not free), | nothing (conflict stays)     |
|                            | rejected_by_ultimo (times same) or reservation_in_past     |                              |
| exchange_new_past          | unlinked event, end <= now                                 | nothing                      |
| ultimo_new                 | unlinked future reservation, Exchange read covers it       | CreateEvent                  |
| stamped_adopt              | unlinked stamped event of an unlinked reservation, equal   | LinkPair(origin=ultimo)      |
| stamped_orphan_moved       | ...same, times differ                                      | RemoveEvent + CreateEvent    |
| stamped_unlinked           | stamped event, no link, no reservation                     | nothing (no echo)            |
| stamp_learned              | link found its event by stamp or item id; key/ids differ   | RefreshLink                  |
| stamped_duplicate          | second stamped event of a linked booking                   | RemoveEvent                  |
| pending_create             | link missing one side, other side present                  | CreateReservation / Event    |
| pending_gone               | link missing one side, other side gone                     | Tombstone                    |
| unchanged                  | both present, times == synced                              | nothing                      |
| id_churn                   | ...but item id / change key differ                         | RefreshLink                  |
| exchange_changed           | Exchange times != synced; Ultimo unchanged or unknown      | MoveReservation              |
| ultimo_changed             | Ultimo times != synced; Exchange unchanged or unknown      | MoveEvent                    |
| both_changed_same          | both changed, to equal times                               | RefreshLink                  |
| both_changed               | both changed, differently: record_only / exchange_wins /   | conflict / MoveReservation / |
|                            | ultimo_wins                                                | MoveEvent                    |
| move_into_past             | a move's target ends <= now (booking not past)             | conflict reservation_in_past |
| exchange_gone              | Exchange gone; Ultimo present or unknown                   | CancelReservation            |
| ultimo_gone_ours           | Ultimo gone; Exchange present/unknown; syncd's event       | RemoveEvent                  |
| ultimo_gone_theirs         | ...a person's meeting                                      | DeclineEvent                 |
| gone_on_both               | gone on both sides                                         | Tombstone                    |
| tombstone_stale_copy       | tombstoned booking reappears: syncd's event / anything else| RemoveEvent / nothing        |
| side_unread                | a side not read (None) or link outside its window          | nothing concluded about it   |
| past_read_only             | link or the written item ends <= now                       | no writes (db only)          |
| cancellation_cap           | more than max_cancellations cancellations                  | earliest kept, rest deferred |
| conflict_resolved          | booking gone, or both sides agree, or now linked           | key in `resolved`            |

Ultimo writes (creates and moves) respect open conflicts: room_unavailable is retried when
the times changed or this pass's Ultimo read shows the room free (preparation and cleanup
included); rejected_by_ultimo when the times changed; reservation_in_past never for a
create, for a move when the target changed. A create in Ultimo needs Ultimo read this pass
or once before (a first run never copies blind); a create in Exchange needs an Exchange read
covering the reservation (Exchange does not refuse double bookings, Ultimo does).
Actions come out ordered: db, cancellations, moves, creates; each by start, then key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from syncd.core.conflict_rules import ConflictRules, booking_key
from syncd.core.guards import mass_cancellation_reason
from syncd.core.model import (
    CHANGED_ON_BOTH_SIDES,
    Clash,
    ConflictInfo,
    Event,
    Reservation,
    stamp_for_reservation,
    synced_hash,
)
from syncd.core.plan import (
    CANCELLATIONS,
    Action,
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

PRESENT, GONE, UNKNOWN, MISSING = "present", "gone", "unknown", "missing"
DECLINE_REASON = "reservation cancelled in Ultimo"
_RANK = {LinkPair: 0, RefreshLink: 0, Tombstone: 0, CancelReservation: 1, RemoveEvent: 1, DeclineEvent: 1,
         MoveReservation: 2, MoveEvent: 2, CreateReservation: 3, CreateEvent: 3}


def plan_room(snapshot: RoomSnapshot, policy: Policy) -> Plan:
    """The plan for one room: what to write on each side, what to record. Never raises on
    any well-typed snapshot; writes nothing anywhere."""
    halted = mass_cancellation_reason(snapshot)
    if halted is not None:
        return Plan(room=snapshot.room, halted=halted)
    return _Planner(snapshot, policy).run()


def _stamp_of(lk: LinkView) -> str | None:
    """The stamp the link's event carries: recorded, or the one syncd will write for it."""
    if lk.stamp:
        return lk.stamp
    if lk.ultimo_id and not (lk.exchange_key or lk.exchange_item_id):
        return stamp_for_reservation(lk.ultimo_id)
    return None


def _same_times(a: Event | Reservation, b: Event | Reservation) -> bool:
    return a.start == b.start and a.end == b.end


@dataclass
class _Planner(ConflictRules):
    s: RoomSnapshot
    policy: Policy
    actions: list[Action] = field(default_factory=list)
    conflicts: list[ConflictInfo] = field(default_factory=list)
    resolved: set[str] = field(default_factory=set)
    # a create that must not run without the removal of the orphan it replaces
    needs_removal: dict[int, RemoveEvent] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s = self.s
        self.now: datetime = s.now
        # Sorted inputs: the plan must not depend on the order the adapters returned things in.
        self.events = sorted(s.exchange or (), key=lambda e: (e.key, e.cancelled, e.item_id, e.change_key,
                                                               e.start, e.end))
        self.reservations: dict[str, Reservation] = {}
        for r in sorted(s.ultimo or (), key=lambda r: (r.ultimo_id, r.start, r.end)):
            self.reservations.setdefault(r.ultimo_id, r)
        links = sorted(s.links, key=lambda lk: lk.id)
        self.active = [lk for lk in links if lk.state == "active"]
        self.tombs = [lk for lk in links if lk.state != "active"]
        self.claimed: dict[int, Event] = {}           # link id -> its event
        self._claim(self.active, ("exchange_key", "stamp", "exchange_item_id"))
        self._claim(self.tombs, ("exchange_key", "stamp"))
        taken = {id(e) for e in self.claimed.values()}
        self.free_events = [e for e in self.events if id(e) not in taken]
        linked_ids = {lk.ultimo_id for lk in links if lk.ultimo_id}
        self.tomb_ultimo = {lk.ultimo_id for lk in self.tombs if lk.ultimo_id}
        self.free_res = [r for uid, r in self.reservations.items() if uid not in linked_ids]
        self.stamp_owner = {st: lk for lk in links if (st := _stamp_of(lk))}
        self.conflicts_by_key: dict[str, list[OpenConflict]] = {}
        self.conflicts_by_link: dict[int | None, list[OpenConflict]] = {}
        for c in sorted(s.open_conflicts, key=lambda c: c.id):
            self.conflicts_by_key.setdefault(c.booking_key, []).append(c)
            if c.link_id is not None:
                self.conflicts_by_link.setdefault(c.link_id, []).append(c)

    def _claim(self, links: list[LinkView], attrs: tuple[str, ...]) -> None:
        """Give each link its event: by key first, then by stamp, then by item id."""
        taken = {id(e) for e in self.claimed.values()}
        for attr in attrs:
            event_attr = {"exchange_key": "key", "stamp": "stamp", "exchange_item_id": "item_id"}[attr]
            index: dict[str, list[Event]] = {}
            for e in self.events:
                value = getattr(e, event_attr)
                if value:
                    index.setdefault(value, []).append(e)
            for lk in links:
                want = _stamp_of(lk) if attr == "stamp" else getattr(lk, attr)
                if lk.id in self.claimed or not want:
                    continue
                found = [e for e in index.get(want, ()) if id(e) not in taken]
                if found:
                    best = min(found, key=lambda e: e.cancelled)   # a live copy beats a cancelled one
                    self.claimed[lk.id] = best
                    taken.add(id(best))

    # --- the walk -----------------------------------------------------------------------

    def run(self) -> Plan:
        self._adopt_and_pair()
        for lk in self.active:
            self._link(lk)
        for lk in self.tombs:
            self._tombstone(lk)
        self._free_events()
        self._free_reservations()
        self._resolve_vanished()
        return self._finish()

    def _adopt_and_pair(self) -> None:
        """stamped_adopt / stamped_orphan_moved / first_run_pair / pending_pair."""
        self.paired_links: set[int] = set()
        self.orphan_removal: dict[str, RemoveEvent] = {}
        used_res: set[str] = set()
        used_ev: set[int] = set()
        by_stamp = {stamp_for_reservation(r.ultimo_id): r for r in self.free_res}
        for e in self.free_events:
            r = by_stamp.get(e.stamp or "")
            if r is None or e.cancelled or r.ultimo_id in self.tomb_ultimo or r.end <= self.now:
                continue
            key = f"ultimo:{r.ultimo_id}"
            if _same_times(e, r):
                # A create of ours interrupted before its link was stored: adopt, don't copy again.
                used_res.add(r.ultimo_id)
                used_ev.add(id(e))
                self._add(LinkPair(key, e, r, origin="ultimo"))
                self._resolve(key)
            elif e.end > self.now:
                # Our orphan, since moved: replace it rather than keep two events for one booking.
                used_ev.add(id(e))
                rm = RemoveEvent(key, None, e.item_id, e.change_key, e.start, e.end, e.subject)
                self._add(rm)
                self.orphan_removal[r.ultimo_id] = rm
        if self.s.ultimo is not None:
            wanting: list[tuple[Event, LinkView | None]] = [
                (e, None) for e in self.free_events if id(e) not in used_ev and self._wants_reservation(e)]
            for lk in self.active:
                claimed = self.claimed.get(lk.id)
                if lk.ultimo_id is None and claimed is not None and not claimed.cancelled and claimed.end > self.now:
                    wanting.append((claimed, lk))
            wanting.sort(key=lambda p: (p[0].start, p[0].end, p[0].key))
            twins: dict[tuple[datetime, datetime], list[Reservation]] = {}
            for r in sorted(self.free_res, key=lambda r: r.ultimo_id, reverse=True):
                if r.ultimo_id not in used_res and r.ultimo_id not in self.tomb_ultimo and r.end > self.now:
                    twins.setdefault((r.start, r.end), []).append(r)
            for e, owner in wanting:
                same = twins.get((e.start, e.end))
                if not same:
                    continue
                match = same.pop()                         # lowest UltimoId first: deterministic
                used_res.add(match.ultimo_id)
                used_ev.add(id(e))
                key = booking_key(owner) if owner else e.key
                self._add(LinkPair(key, e, match, origin=owner.origin if owner else "both",
                                   link_id=owner.id if owner else None))
                self._resolve(key, owner.id if owner else None)
                if owner:
                    self.paired_links.add(owner.id)
        self.free_events = [e for e in self.free_events if id(e) not in used_ev]
        self.free_res = [r for r in self.free_res if r.ultimo_id not in used_res]

    def _wants_reservation(self, e: Event) -> bool:
        return not e.cancelled and e.stamp is None and e.end > self.now

    # --- one link ------------------------------------------------------------------------

    def _exchange_state(self, lk: LinkView, ev: Event | None) -> str:
        if self.s.exchange is None:
            return UNKNOWN
        if ev is not None:
            return GONE if ev.cancelled else PRESENT
        if not (lk.exchange_key or lk.exchange_item_id):
            return MISSING
        if lk.id in self.s.exchange_unknown:
            return UNKNOWN
        w = self.s.exchange_window
        return GONE if w is not None and w.overlaps(lk.start, lk.end) else UNKNOWN

    def _ultimo_state(self, lk: LinkView, res: Reservation | None) -> str:
        if lk.ultimo_id is None:
            return MISSING
        if self.s.ultimo is None:
            return UNKNOWN
        if res is not None:
            return PRESENT
        w = self.s.ultimo_window
        return GONE if w is not None and w.contains(lk.start, lk.end) else UNKNOWN

    def _link(self, lk: LinkView) -> None:
        key = booking_key(lk)
        ev = self.claimed.get(lk.id)
        res = self.reservations.get(lk.ultimo_id) if lk.ultimo_id else None
        ex, ul = self._exchange_state(lk, ev), self._ultimo_state(lk, res)
        live = lk.end > self.now                       # past_read_only otherwise
        if lk.id in self.paired_links:                 # pending_pair: the LinkPair fills it in
            return
        if GONE in (ex, ul) and ex in (GONE, MISSING) and ul in (GONE, MISSING):
            self._resolve(key, lk.id)                  # gone_on_both / pending_gone
            self._add(Tombstone(key, lk.id, lk.start, lk.end))
            return
        if ul == MISSING:                              # pending_create (Ultimo side)
            if ex == PRESENT and ev is not None:
                self._refresh(lk, key, ev)
                if live and ev.end > self.now:
                    self._create_reservation(ev, key, lk.id)
            return
        if ex == MISSING:                              # pending_create (Exchange side)
            if ul == PRESENT and res is not None and live and res.end > self.now:
                self._create_event(res, key, lk.id)
            return
        if ex == GONE:                                 # exchange_gone
            self._resolve(key, lk.id)
            if live and lk.ultimo_id and not (res is not None and res.end <= self.now):
                at = res or lk
                self._add(CancelReservation(key, lk.id, lk.ultimo_id, at.start, at.end, self._label(lk, ev)))
            return
        if ul == GONE:                                 # ultimo_gone_ours / ultimo_gone_theirs
            self._resolve(key, lk.id)
            self._drop_exchange_side(lk, key, ev, live)
            return
        self._compare(lk, key, ev if ex == PRESENT else None, res if ul == PRESENT else None, live)

    def _drop_exchange_side(self, lk: LinkView, key: str, ev: Event | None, live: bool) -> None:
        item_id = ev.item_id if ev else lk.exchange_item_id
        change_key = ev.change_key if ev else lk.exchange_change_key
        if not live or (ev is not None and ev.end <= self.now) or not item_id or change_key is None:
            return
        at = ev or lk
        label = self._label(lk, ev)
        if lk.origin == "ultimo" or lk.stamp or (ev is not None and ev.stamp):
            self._add(RemoveEvent(key, lk.id, item_id, change_key, at.start, at.end, label))
        else:
            self._add(DeclineEvent(key, lk.id, item_id, change_key, DECLINE_REASON, at.start, at.end, label))

    def _compare(self, lk: LinkView, key: str, ev: Event | None, res: Reservation | None, live: bool) -> None:
        """Both sides present or unknown: unchanged / id_churn / *_changed / both_changed*."""
        ex_changed = ev is not None and synced_hash(ev.start, ev.end) != lk.synced_hash
        ul_changed = res is not None and synced_hash(res.start, res.end) != lk.synced_hash
        if ev is not None and res is not None and _same_times(ev, res):
            self._resolve(key, lk.id)
        times = None
        if ex_changed and ul_changed and ev is not None and res is not None:
            if _same_times(ev, res):
                times = (ev.start, ev.end)             # both_changed_same
            elif self.policy.on_changed_on_both_sides == "exchange_wins":
                self._move_reservation(lk, key, ev, res, live)
            elif self.policy.on_changed_on_both_sides == "ultimo_wins":
                self._move_event(lk, key, ev, res, live)
            elif live:
                self._conflict(CHANGED_ON_BOTH_SIDES, lk, key, ev, ev.start, ev.end,
                               f"changed on both sides since {self._span(lk.start, lk.end)}: Exchange now "
                               f"{self._span(ev.start, ev.end)}, Ultimo now {self._span(res.start, res.end)}",
                               (Clash(kind="exchange_version", start=ev.start, end=ev.end),
                                Clash(kind="ultimo_version", start=res.start, end=res.end, ultimo_id=res.ultimo_id,
                                      description=res.description or None)))
        elif ex_changed and ev is not None:
            self._move_reservation(lk, key, ev, res, live)
        elif ul_changed and res is not None:
            self._move_event(lk, key, ev, res, live)
        if ev is not None:
            self._refresh(lk, key, ev, times)

    def _move_reservation(self, lk: LinkView, key: str, ev: Event, res: Reservation | None, live: bool) -> None:
        if not live or lk.ultimo_id is None or (res is not None and res.end <= self.now):
            return
        if ev.end <= self.now:                         # move_into_past
            self._into_past(lk, key, ev, ev.start, ev.end, moved_in="Exchange")
            return
        if not self._ultimo_allowed(key, lk.id, ev.start, ev.end, create=False, own=lk.ultimo_id):
            return
        at = res or lk
        self._add(MoveReservation(key, lk.id, lk.ultimo_id, ev.start, ev.end, self._label(lk, ev),
                                  at.start, at.end))

    def _move_event(self, lk: LinkView, key: str, ev: Event | None, res: Reservation, live: bool) -> None:
        item_id = ev.item_id if ev else lk.exchange_item_id
        change_key = ev.change_key if ev else lk.exchange_change_key
        if not live or (ev is not None and ev.end <= self.now) or not item_id or change_key is None:
            return
        if res.end <= self.now:                        # move_into_past
            self._into_past(lk, key, ev, res.start, res.end, moved_in="Ultimo")
            return
        at = ev or lk
        self._add(MoveEvent(key, lk.id, item_id, change_key, res.start, res.end, self._label(lk, ev),
                            at.start, at.end))

    def _refresh(self, lk: LinkView, key: str, ev: Event,
                 times: tuple[datetime, datetime] | None = None) -> None:
        """stamp_learned / id_churn / both_changed_same: bookkeeping only."""
        start, end = times or (lk.start, lk.end)
        if ((ev.key, ev.item_id, ev.change_key) != (lk.exchange_key, lk.exchange_item_id, lk.exchange_change_key)
                or (start, end) != (lk.start, lk.end)):
            self._add(RefreshLink(key, lk.id, ev.key, ev.item_id, ev.change_key, start, end))

    def _tombstone(self, lk: LinkView) -> None:
        """tombstone_stale_copy: never resurrect; remove a stale copy of our own event."""
        key = booking_key(lk)
        self._resolve(key, lk.id)
        ev = self.claimed.get(lk.id)
        if ev is not None and ev.stamp and not ev.cancelled and min(ev.end, lk.end) > self.now:
            self._add(RemoveEvent(key, lk.id, ev.item_id, ev.change_key, ev.start, ev.end, ev.subject))

    # --- unlinked bookings ----------------------------------------------------------------

    def _free_events(self) -> None:
        """exchange_new / exchange_new_past / stamped_unlinked / stamped_duplicate."""
        for e in self.free_events:
            if e.cancelled or e.end <= self.now:
                continue
            if e.stamp:
                owner = self.stamp_owner.get(e.stamp)
                if owner is not None and owner.end > self.now:
                    # Keyed by the stray event itself: removing it must not settle the owner's conflicts.
                    self._add(RemoveEvent(e.key, None, e.item_id, e.change_key, e.start, e.end, e.subject))
                continue
            self._create_reservation(e, e.key, None)

    def _free_reservations(self) -> None:
        """ultimo_new (skipping tombstoned and past reservations)."""
        for r in sorted(self.free_res, key=lambda r: (r.start, r.end, r.ultimo_id)):
            if r.ultimo_id in self.tomb_ultimo or r.end <= self.now:
                continue
            self._create_event(r, f"ultimo:{r.ultimo_id}", None)

    def _create_reservation(self, e: Event, key: str, link_id: int | None) -> None:
        if self.s.ultimo is None and self.s.previous_ultimo_count is None:
            return                                     # never read Ultimo: a first run links, never copies blind
        if self._ultimo_allowed(key, link_id, e.start, e.end, create=True, own=None):
            self._add(CreateReservation(key, e, self.policy.new_reservation(self.s.room, e), link_id,
                                        decline=self._declines()))

    def _create_event(self, r: Reservation, key: str, link_id: int | None) -> None:
        w = self.s.exchange_window
        if self.s.exchange is None or w is None or not w.overlaps(r.start, r.end):
            return                                     # can't tell whether the room already shows it
        create = CreateEvent(key, r, self.policy.new_event(r), link_id)
        self._add(create)
        if r.ultimo_id in self.orphan_removal:
            self.needs_removal[id(create)] = self.orphan_removal[r.ultimo_id]

    # --- output ----------------------------------------------------------------------------

    def _add(self, action: Action) -> None:
        self.actions.append(action)

    def _finish(self) -> Plan:
        cancels = sorted((a for a in self.actions if isinstance(a, CANCELLATIONS)), key=_order)
        limit = max(0, self.policy.max_cancellations)
        dropped = {id(a) for a in cancels[limit:]}
        kept = [a for a in self.actions if id(a) not in dropped
                and id(self.needs_removal.get(id(a))) not in dropped]
        conflicts = sorted({(c.booking_key, c.kind): c for c in self.conflicts}.values(),
                           key=lambda c: (c.booking_key, c.kind))
        flagged = {c.booking_key for c in conflicts}
        return Plan(
            room=self.s.room,
            actions=self._with_clashes(sorted(kept, key=_order)),
            conflicts=tuple(conflicts),
            resolved=tuple(sorted(self.resolved - flagged)),
            deferred_cancellations=len(dropped),
        )


def _order(a: Action) -> tuple[object, ...]:
    start = _start_of(a)
    return (_RANK[type(a)], start is None, start or 0, a.booking_key, type(a).__name__, a.describe())


def _start_of(a: Action) -> datetime | None:
    if isinstance(a, CreateReservation | CreateEvent):
        return a.new.start
    if isinstance(a, LinkPair):
        return a.event.start
    return a.start

