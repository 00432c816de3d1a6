"""The two-way reconciler's properties (reference/sync-lessons.md), as a hypothesis state
machine over both sandboxes, the real clients and a real SQLite file.

People book, move, cancel and rename in Exchange (singles, private meetings, daily series
with moved and cancelled occurrences) and reserve, move and cancel in Ultimo; the Resource
Booking Assistant touches items (new change keys); faults are injected on either side for
the next reconcile; reconciles read both sides or one (as the service does); and the process
is killed between a remote write and its commit, then started again on the same database.

After every step that ends with clean reconciles (no faults), the machine checks:

- fixpoint: the second clean pass sends no write request to either sandbox (unless the
  first freed a room by cancelling or moving, so that a refused booking may now be made)
  and the third at the latest leaves links and conflicts unchanged (change keys of series
  occurrences aside: writing one occurrence renews its siblings'); the first pass after
  nothing but change-key churn and renames writes nothing at all (no echo);
- convergence: every active link's two sides agree on times with its stored times, except
  bookings with an open conflict;
- one link per booking: every future Exchange booking and every active reservation is in
  exactly one active link (or, for an Exchange booking Ultimo refused, has an open
  conflict); no two active links share a key, an UltimoId or a stamp;
- no duplicates (after crashes too): never two live reservations for one Exchange booking
  (by the ExternalId the sandbox keeps) nor two stamped events for one reservation;
- no resurrection: what a person cancelled stays cancelled on both sides;
- no stale conflicts: an open 1015 conflict means the room really is taken then;
- first run links: equal bookings present before the first run are linked, not copied;
- privacy: a private meeting's subject never reaches Ultimo.

And for every reconcile, whatever its faults: items syncd neither created nor linked are
never changed, but for one thing: the room declines a new meeting Ultimo refuses (1015),
giving Ultimo's reason, and the meeting's conflict records the decline; a side that was not read (fault, or a one-sided pass) causes no
cancellation on the other side. A dry run writes nothing (sandboxes, links, conflicts,
journal) and plans exactly as many writes as the real run that follows makes.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from syncharness import ROOMS, Killed, World, at

from syncd.core.model import ROOM_UNAVAILABLE
from syncd.core.planner import booking_key
from syncd.logs import configure
from syncd.sandbox.ews.server import Recurrence
from syncd.sandbox.ultimo.server import SandboxRejected

configure("error", "console")

SPACE = dict(ROOMS)
ROOM = st.sampled_from([m for m, _ in ROOMS])
# Whole quarter hours in Europe/Amsterdam, from tomorrow: (day, hour, minute, minutes long).
SLOT = st.tuples(st.integers(1, 4), st.integers(8, 17), st.sampled_from([0, 15, 30, 45]),
                 st.sampled_from([15, 30, 45, 60, 90]))
SEED_DAY = 8                      # equal bookings on both sides before the first run live here
ANCHOR_DAY, ANCHOR = 9, "Anchor"  # one such pair per room that no rule touches
WRITE_LINE = re.compile(r"^(create|move|cancel|remove|decline) ")


def times(slot: tuple[int, int, int, int]) -> tuple[datetime, datetime]:
    day, hour, minute, length = slot
    start = at(day, hour, minute)
    return start, start + timedelta(minutes=length)


LINK_FIELDS = ("id", "state", "key", "item_id", "change_key", "stamp", "ultimo_id", "start", "end", "intent")


def _link_changes(before: tuple, after: tuple) -> set[str]:
    """Which link fields differ between two `_db_state`s ("new"/"gone" for whole links,
    "conflicts" or "journal" when those differ)."""
    changed: set[str] = set()
    old = {x[0]: x for x in before[0]}
    new = {x[0]: x for x in after[0]}
    changed |= {"new"} if new.keys() - old.keys() else set()
    changed |= {"gone"} if old.keys() - new.keys() else set()
    for lid in old.keys() & new.keys():
        for name, a, b in zip(LINK_FIELDS, old[lid], new[lid], strict=True):
            if a != b:
                changed.add(name)
    if before[1] != after[1]:
        changed.add("conflicts")
    if before[2] != after[2]:
        changed.add("journal")
    return changed


# Link changes a quiet pass may still make: a write to one occurrence of a series renews
# its siblings' change keys, which only the next read shows.
QUIET_CHANGES = {"change_key"}


class Reconciler(RuleBasedStateMachine):
    backend = "ews"       # the calendar backend syncd uses (tests/test_sync_properties_graph.py: graph)

    def __init__(self) -> None:
        super().__init__()
        self.world = World(backend=self.backend)
        self.faults = False                   # faults injected for the next reconcile
        self.last_refused: set[tuple[str, str, str]] = set()   # declines after a refusal, last pass
        self.churn_only = True                # since the last quiet state: only touches and renames
        self.cancelled_keys: dict[str, set[str]] = {m: set() for m, _ in ROOMS}
        self.cancelled_ids: dict[str, str | None] = {}   # UltimoId -> Exchange key it was linked to
        self.seeded: list[tuple[str, str, str, str]] = []   # (mailbox, Exchange key, item id, UltimoId)
        self.touched: set[str] = set()        # item ids / UltimoIds a person acted on
        self.secrets = 0
        self.subjects = 0

    def teardown(self) -> None:
        self.world.close()

    # --- helpers --------------------------------------------------------------------------

    def _person_items(self, *, series: bool | None = None) -> list[tuple[str, dict]]:
        out = []
        for mailbox, _ in ROOMS:
            for item in self.world.ews.items(mailbox):
                if item["source"] != "book" or item["subject"] == ANCHOR:
                    continue
                if series is None or (item["recurrence"] is not None) == series:
                    out.append((mailbox, item))
        return out

    def _occurrences(self) -> list[tuple[str, object]]:
        out = []
        for mailbox, _ in ROOMS:
            out += [(mailbox, b) for b in self.world.exchange_view(mailbox)
                    if b.master_id is not None and b.stamp is None]
        return out

    def _reservations(self) -> list[dict]:
        return [r for r in self.world.ultimo.reservations() if r["description"] != ANCHOR]

    def _changed(self, kind: str = "change") -> None:
        if kind != "churn":
            self.churn_only = False

    def _subject(self) -> str:
        self.subjects += 1
        return f"Meeting {self.subjects}"

    # --- before the first run -------------------------------------------------------------

    @initialize(pairs=st.integers(0, 2), room=ROOM)
    def seed_equal_bookings(self, pairs: int, room: str) -> None:
        """Equal bookings on both sides before syncd ever ran (a first run must link them).

        Every room gets an anchor pair nobody touches, so that no room's calendar or space
        ever becomes empty: an empty side stops a room (the mass cancellation guard), which
        test_reconcile_e2e covers on its own."""
        wanted = [(m, ANCHOR, at(ANCHOR_DAY, 12), at(ANCHOR_DAY, 13)) for m, _ in ROOMS]
        wanted += [(room, f"Seeded {i}", at(SEED_DAY, 9 + 2 * i), at(SEED_DAY, 10 + 2 * i)) for i in range(pairs)]
        for mailbox, subject, start, end in wanted:
            item = self.world.ews.book(mailbox, subject=subject, start=start, end=end)
            uid = self.world.ultimo.reserve(SPACE[mailbox], start, end, description=subject)
            key = next(b.key for b in self.world.exchange_view(mailbox) if b.item_id == item)
            self.seeded.append((mailbox, key, item, uid))

    # --- people in Exchange ---------------------------------------------------------------

    @rule(room=ROOM, slot=SLOT, private=st.booleans(), organizer=st.sampled_from(["alice@example.com",
                                                                                 "bob@example.com"]))
    def book_in_exchange(self, room: str, slot: tuple, private: bool, organizer: str) -> None:
        start, end = times(slot)
        if private:
            self.secrets += 1
            subject = f"Secret {self.secrets}"
        else:
            subject = self._subject()
        self.world.ews.book(room, subject=subject, start=start, end=end, organizer=organizer, private=private)
        self._changed()

    @rule(room=ROOM, slot=SLOT, count=st.integers(2, 3))
    def book_series_in_exchange(self, room: str, slot: tuple, count: int) -> None:
        start, end = times(slot)
        self.world.ews.book(room, subject=self._subject(), start=start, end=end,
                            recurrence=Recurrence(kind="daily", count=count))
        self._changed()

    @precondition(lambda self: self._person_items(series=False))
    @rule(data=st.data(), slot=SLOT)
    def move_in_exchange(self, data: st.DataObject, slot: tuple) -> None:
        mailbox, item = data.draw(st.sampled_from(self._person_items(series=False)), label="item")
        start, end = times(slot)
        self.world.ews.move(mailbox, item["id"], start, end)
        self.touched.add(item["id"])
        self._changed()

    @precondition(lambda self: self._person_items())
    @rule(data=st.data())
    def cancel_in_exchange(self, data: st.DataObject) -> None:
        """The organizer cancels a meeting, or a whole series."""
        mailbox, item = data.draw(st.sampled_from(self._person_items()), label="item")
        keys = {b.key for b in self.world.exchange_view(mailbox) if item["id"] in (b.item_id, b.master_id)}
        self.world.ews.cancel(mailbox, item["id"])
        self.cancelled_keys[mailbox] |= keys
        self.touched.add(item["id"])
        self._changed()

    @precondition(lambda self: self._occurrences())
    @rule(data=st.data(), slot=SLOT)
    def move_occurrence_in_exchange(self, data: st.DataObject, slot: tuple) -> None:
        mailbox, occ = data.draw(st.sampled_from(self._occurrences()), label="occurrence")
        original = datetime.fromisoformat(occ.key.rsplit("|", 1)[1])
        start, end = times(slot)
        self.world.ews.move_occurrence(mailbox, occ.master_id, original, start, end)
        self._changed()

    @precondition(lambda self: self._occurrences())
    @rule(data=st.data())
    def cancel_occurrence_in_exchange(self, data: st.DataObject) -> None:
        mailbox, occ = data.draw(st.sampled_from(self._occurrences()), label="occurrence")
        original = datetime.fromisoformat(occ.key.rsplit("|", 1)[1])
        self.world.ews.cancel_occurrence(mailbox, occ.master_id, original)
        self.cancelled_keys[mailbox].add(occ.key)
        self._changed()

    @precondition(lambda self: self._person_items())
    @rule(data=st.data())
    def rename_in_exchange(self, data: st.DataObject) -> None:
        """A subject-only edit: nothing syncs."""
        mailbox, item = data.draw(st.sampled_from(self._person_items()), label="item")
        self.world.ews.rename(mailbox, item["id"], self._subject())
        self._changed("churn")

    @rule(data=st.data(), room=ROOM)
    def assistant_touches(self, data: st.DataObject, room: str) -> None:
        """The Resource Booking Assistant re-saves an item (syncd's own included): a new change key."""
        view = self.world.exchange_view(room)
        if view:
            booking = data.draw(st.sampled_from(view), label="booking")
            self.world.ews.touch(room, booking.item_id)
        self._changed("churn")

    # --- people in Ultimo -----------------------------------------------------------------

    @rule(room=ROOM, slot=SLOT)
    def reserve_in_ultimo(self, room: str, slot: tuple) -> None:
        start, end = times(slot)
        try:
            self.world.ultimo.reserve(SPACE[room], start, end, description=self._subject())
        except SandboxRejected:
            return   # the room is taken: Ultimo refuses the person, nothing happens
        self._changed()

    @precondition(lambda self: self._reservations())
    @rule(data=st.data(), slot=SLOT)
    def move_in_ultimo(self, data: st.DataObject, slot: tuple) -> None:
        res = data.draw(st.sampled_from(self._reservations()), label="reservation")
        start, end = times(slot)
        try:
            self.world.ultimo.move(res["ultimo_id"], start, end)
        except SandboxRejected:
            return
        self.touched.add(res["ultimo_id"])
        self._changed()

    @precondition(lambda self: self._reservations())
    @rule(data=st.data())
    def cancel_in_ultimo(self, data: st.DataObject) -> None:
        res = data.draw(st.sampled_from(self._reservations()), label="reservation")
        linked = [lk for lk in self.world.links(active_only=True) if lk.ultimo_id == res["ultimo_id"]]
        self.world.ultimo.cancel(res["ultimo_id"])
        self.cancelled_ids[res["ultimo_id"]] = (
            linked[0].exchange_key if linked and linked[0].origin != "ultimo" else None)
        self.touched.add(res["ultimo_id"])
        self._changed()

    # --- faults ---------------------------------------------------------------------------

    @rule(kind=st.sampled_from(["http500", "drop", "drop_after", "garbage"]),
          workflow=st.sampled_from([None, "get", "create", "update", "cancel"]), count=st.integers(1, 3))
    def ultimo_fails(self, kind: str, workflow: str | None, count: int) -> None:
        self.world.ultimo.inject(kind, count=count, workflow=workflow)
        self.faults = True

    @rule(kind=st.sampled_from(["server_busy", "drop"]),
          op=st.sampled_from([None, "FindItem", "GetItem", "CreateItem", "UpdateItem", "DeleteItem"]),
          count=st.integers(1, 5))
    def exchange_fails(self, kind: str, op: str | None, count: int) -> None:
        self.world.ews.inject(kind, count=count, op=op)
        self.faults = True

    # --- syncd ----------------------------------------------------------------------------

    @rule(sides=st.sampled_from(["both", "exchange", "ultimo"]))
    def reconcile(self, sides: str) -> None:
        """One pass as the service or `syncd reconcile` runs it, faults included; then the
        faults are cleared and clean passes bring both sides to a fixpoint."""
        self._guarded_pass(read_exchange=sides != "ultimo", read_ultimo=sides != "exchange")
        self._clear_faults()
        self._settle()

    @rule(sides=st.sampled_from(["both", "exchange", "ultimo"]))
    def reconcile_without_settling(self, sides: str) -> None:
        """One pass, faults and all, leaving whatever it leaves for the next steps."""
        self._guarded_pass(read_exchange=sides != "ultimo", read_ultimo=sides != "exchange")
        self._clear_faults()

    @rule(n=st.integers(1, 4), when=st.sampled_from(["after", "after", "before"]),
          sides=st.sampled_from(["both", "both", "exchange", "ultimo"]))
    def crash(self, n: int, when: str, sides: str) -> None:
        """The process is killed at its n-th remote write (after the write took effect, or
        just before), before recording the outcome; the next pass is a new process."""
        self.world.switch.arm(n, when)
        try:
            self._guarded_pass(read_exchange=sides != "ultimo", read_ultimo=sides != "exchange")
        except Killed:
            event(f"killed {self.world.switch.fired}")
        finally:
            self.world.switch.disarm()
        self._clear_faults()

    @precondition(lambda self: not self.faults)
    @rule()
    def dry_run_then_reconcile(self) -> None:
        """A dry run writes nothing anywhere and plans as many writes as the real run makes."""
        w = self.world
        calls, db = w.write_calls(), self._db_state()
        results = w.reconcile(dry_run=True)
        assert w.write_calls() == calls, "a dry run sent a write to Exchange or Ultimo"
        assert self._db_state() == db, "a dry run changed syncd's database"
        lines = [line for r in results for line in r.plan_lines]
        planned = sum(1 for line in lines if WRITE_LINE.match(line))
        linked = sum(1 for line in lines if line.startswith("link "))
        pending = any(line.startswith("(interrupted") for line in lines)
        before = w.write_calls()
        real = self._guarded_pass()
        made = sum(w.write_calls()) - sum(before)
        # A decline after Ultimo refused a create depends on Ultimo's answer, which a dry run
        # cannot know (it says "the room would then decline"): the one write it may not count.
        unplanned = len(self.last_refused)
        if not pending:
            assert made - unplanned == planned, (
                f"dry run planned {planned} writes, the real run made {made} ({unplanned} declines "
                f"after a refusal): {lines}")
            assert sum(r.writes["linked"] for r in real) == linked, lines
        self._settle()

    # --- checks around every pass ---------------------------------------------------------

    def _guarded_pass(self, *, read_exchange: bool = True, read_ultimo: bool = True) -> list:
        """One real pass; checks that unmanaged items were left alone and that an unread
        side caused no cancellation on the other."""
        w = self.world
        linked_keys = {lk.exchange_key for lk in w.links() if lk.exchange_key}
        exchange = {m: {b.key: b for b in w.exchange_view(m)} for m, _ in ROOMS}
        active = {r["ultimo_id"]: r for r in w.ultimo.reservations()}
        declined_before = {m: len(w.ews.declines(m)) for m, _ in ROOMS}
        results: list = []
        try:
            results = w.reconcile(read_exchange=read_exchange, read_ultimo=read_ultimo)
        finally:
            after = {m: {b.key: b for b in w.exchange_view(m)} for m, _ in ROOMS}
            still = {r["ultimo_id"] for r in w.ultimo.reservations()}
            refused = self._declined_on_refusal(declined_before)
            self.last_refused = refused
            for mailbox, before in exchange.items():
                for key, b in before.items():
                    now = after[mailbox].get(key)
                    if now is None and (mailbox, b.item_id, key) in refused:
                        continue      # the room declined a meeting Ultimo refused (1015), and said why
                    if b.stamp is None and key not in linked_keys:
                        assert now is not None and (now.start, now.end, now.subject) == (b.start, b.end, b.subject), (
                            f"syncd changed or removed {b.subject!r} in {mailbox}, a meeting it never linked")
            halted = [f"{r.room.mailbox}: {r.halted}" for r in results if r.halted]
            assert not halted, f"a room was halted though neither side is empty: {halted}"
            # A killed pass gives no results: which sides it read is unknown.
            for r in results:
                mailbox, space = r.room.mailbox, r.room.space_id
                if not r.exchange_read:
                    gone = [uid for uid, res in active.items() if res["space_id"] == space and uid not in still]
                    assert not gone, f"{mailbox}: Exchange not read, yet reservations {gone} were cancelled"
                if not r.ultimo_read:
                    for key, b in exchange[mailbox].items():
                        if key in after[mailbox] or (mailbox, b.item_id, key) in refused:
                            continue
                        assert b.stamp is not None, (
                            f"{mailbox}: Ultimo not read, yet the meeting {b.subject!r} was declined or removed")
                        uid = b.stamp.removeprefix("syncd:u:")
                        twin = any(x.stamp == b.stamp for x in after[mailbox].values())
                        assert uid not in active or twin, (
                            f"{mailbox}: Ultimo not read, yet the event of live reservation {uid} was removed")
        return results

    def _declined_on_refusal(self, declined_before: dict[str, int]) -> set[tuple[str, str, str]]:
        """(room, item id, booking key) of each meeting the room declined in the last pass
        because Ultimo refused it (1015): the one way syncd may remove a meeting it never
        linked. Each such decline gives Ultimo's reason and its conflict records the decline."""
        w = self.world
        recorded = {(c.room, c.booking_key): c for c in w.all_conflicts() if c.kind == ROOM_UNAVAILABLE}
        found = set()
        for mailbox, space in ROOMS:
            for d in w.ews.declines(mailbox)[declined_before[mailbox]:]:
                if not d["reason"].startswith(f"Room {space} "):
                    continue          # a decline for another cause (reservation cancelled in Ultimo)
                assert "not available" in d["reason"], f"a decline without Ultimo's reason: {d['reason']!r}"
                keys = [k for (room, k), c in recorded.items() if room == mailbox and c.outcome
                        and c.outcome.startswith("declined in the room's calendar")]
                assert keys, f"{mailbox}: declined {d['subject']!r}, but no conflict says so"
                # the item as the EWS view shows it (a decline through Graph records both ids)
                found.update((mailbox, d.get("ews_id") or d["item_id"], k) for k in keys)
        return found

    def _clear_faults(self) -> None:
        self.world.ultimo.faults.clear()
        self.world.ews.faults.clear()
        if self.world.graph is not None:
            self.world.graph.faults.clear()
        self.faults = False

    def _db_state(self, *, seen: bool = True) -> tuple:
        """Links, open conflicts (with when they were last seen, if `seen`) and pending journal rows."""
        w = self.world
        links = tuple((lk.id, lk.state, lk.exchange_key, lk.exchange_item_id, lk.exchange_change_key, lk.stamp,
                       lk.ultimo_id, lk.start, lk.end, lk.intent) for lk in w.links())
        conflicts = tuple((c.id, c.kind, c.booking_key, c.start, c.end, c.last_seen_at if seen else None)
                          for c in w.open_conflicts())
        journal = tuple((e.id, e.status) for e in w.pending_journal())
        return links, conflicts, journal

    def _settle(self) -> None:
        """Clean passes until one is quiet (the second, unless the first freed a room it then
        books, or a known bug), then every property of a settled world."""
        w = self.world
        churn_only = self.churn_only
        passes = 3
        freed = False
        for attempt in range(1, passes + 1):
            calls, db = w.write_calls(), self._db_state(seen=False)
            results = self._guarded_pass()
            errors = [e for r in results for e in r.errors]
            assert not errors, f"a clean pass failed: {errors}"
            wrote = [x - y for x, y in zip(w.write_calls(), calls, strict=True)]
            done = {k for r in results for k, v in r.writes.items() if v}
            if attempt == 1 and churn_only:
                assert wrote == [0, 0], f"change-key churn and renames alone caused writes {wrote} (echo)"
            if attempt == 2:
                # Fixpoint: what the first clean pass left is what it could not know yet:
                # a room it freed itself by cancelling or moving a reservation (a 1015 is retried
                # once a read shows the room free).
                assert wrote[0] == 0 and (wrote[1] == 0 or freed), (
                    f"the second clean pass still sent {wrote} writes (Exchange, Ultimo): {sorted(done)}")
            freed = bool(done & {"ultimo_cancelled", "ultimo_moved"})
            changes = _link_changes(db, self._db_state(seen=False))
            if wrote == [0, 0] and not changes - QUIET_CHANGES:
                event(f"quiet at clean pass {attempt}")
                break
        else:
            raise AssertionError(f"no fixpoint after {passes} clean passes: the last one wrote {wrote} "
                                 f"(Exchange, Ultimo) and changed {sorted(changes)}")
        self.churn_only = True
        self._check_settled()
        for c in w.open_conflicts():
            event(f"open conflict {c.kind}")

    # --- the properties of a settled world ------------------------------------------------

    def _check_settled(self) -> None:
        w = self.world
        now = datetime.now(UTC)
        links = w.links(active_only=True)
        reservations = {r["ultimo_id"]: r for r in w.ultimo.reservations()}
        # one link per booking
        for attr in ("ultimo_id", "stamp", "external_id"):
            values = [getattr(lk, attr) for lk in links if getattr(lk, attr)]
            assert len(values) == len(set(values)), f"two active links share an {attr}"
        for mailbox, space in ROOMS:
            view = w.exchange_view(mailbox)
            room_links = [lk for lk in links if lk.room == mailbox]
            conflicts = w.open_conflicts(mailbox)
            flagged = {c.booking_key for c in conflicts} | {f"link:{c.link_id}" for c in conflicts if c.link_id}
            keys = [lk.exchange_key for lk in room_links if lk.exchange_key]
            assert len(keys) == len(set(keys)), f"{mailbox}: two active links share an Exchange key"
            by_key = {b.key: b for b in view}
            by_stamp: dict[str, list] = {}
            for b in view:
                if b.stamp:
                    by_stamp.setdefault(b.stamp, []).append(b)
            # no duplicates
            for stamp, events in by_stamp.items():
                assert len(events) == 1, f"{mailbox}: {len(events)} events for reservation {stamp}"
            for b in view:
                if b.stamp is None:
                    twins = w.reservations_for_booking(mailbox, b.key)
                    assert len(twins) <= 1, f"{mailbox}: {len(twins)} reservations for {b.subject!r}"
            # convergence: every active link's sides agree with each other and with the link
            for lk in room_links:
                if lk.end <= now:
                    continue
                key = booking_key(lk)
                if key in flagged or f"link:{lk.id}" in flagged:
                    continue
                ev = by_key.get(lk.exchange_key) if lk.exchange_key else None
                ev = ev or (by_stamp.get(lk.stamp, [None])[0] if lk.stamp else None)
                res = reservations.get(lk.ultimo_id) if lk.ultimo_id else None
                assert ev is not None, f"{mailbox}: link {lk.id} ({key}) has no event in Exchange"
                assert res is not None, f"{mailbox}: link {lk.id} ({key}) has no live reservation"
                assert (ev.start, ev.end) == (res["start"], res["end"]) == (lk.start, lk.end), (
                    f"{mailbox}: link {lk.id} disagrees: Exchange {ev.start}-{ev.end}, "
                    f"Ultimo {res['start']}-{res['end']}, link {lk.start}-{lk.end}")
            # every booking is linked once (or refused by Ultimo and recorded)
            for b in view:
                if b.end <= now:
                    continue
                if b.stamp:
                    owners = [lk for lk in room_links if lk.stamp == b.stamp or lk.exchange_key == b.key]
                    assert len(owners) == 1, f"{mailbox}: syncd's event {b.stamp} is in {len(owners)} active links"
                    continue
                owners = [lk for lk in room_links if lk.exchange_key == b.key]
                assert len(owners) == 1 or (not owners and b.key in flagged), (
                    f"{mailbox}: the meeting {b.subject!r} {b.start:%d %H:%M} is in {len(owners)} active links "
                    f"and has no open conflict")
            for uid, res in reservations.items():
                if res["space_id"] != space or res["end"] <= now:
                    continue
                owners = [lk for lk in room_links if lk.ultimo_id == uid]
                assert len(owners) == 1, f"{space}: reservation {uid} ({res['description']}) is in {len(owners)} links"
            # no stale conflicts: an open 1015 means the room is taken at those times
            for c in conflicts:
                if c.kind != ROOM_UNAVAILABLE or c.start is None or c.end is None:
                    continue
                b = by_key.get(c.booking_key)
                start, end = (b.start, b.end) if b is not None else (c.start, c.end)
                own = next((lk.ultimo_id for lk in room_links if booking_key(lk) == c.booking_key), None)
                pad = timedelta(minutes=10)
                taken = [r for r in reservations.values() if r["space_id"] == space and r["ultimo_id"] != own
                         and r["start"] - pad < end + pad and start - pad < r["end"] + pad]
                assert taken, f"{mailbox}: conflict {c.id} says the room is taken at {start}, but Ultimo is free"
            # no resurrection
            for key in self.cancelled_keys[mailbox]:
                assert key not in by_key, f"{mailbox}: a cancelled meeting ({key}) is back"
                assert not any(lk.exchange_key == key for lk in room_links), f"{mailbox}: cancelled {key} linked"
                assert not w.reservations_for_booking(mailbox, key), (
                    f"{mailbox}: the reservation of cancelled meeting {key} is live")
        for uid, key in self.cancelled_ids.items():
            assert uid not in reservations
            assert not any(lk.ultimo_id == uid for lk in links), f"cancelled reservation {uid} is still linked"
            for mailbox, _ in ROOMS:
                assert not w.events_for_reservation(mailbox, uid), f"cancelled reservation {uid} has an event"
                if key is not None:
                    assert key not in {b.key for b in w.exchange_view(mailbox)}, (
                        f"reservation {uid} was cancelled in Ultimo but its meeting was not declined")
                    assert not w.reservations_for_booking(mailbox, key), f"{key} was booked again in Ultimo"
        # first run links, it does not copy
        for mailbox, key, item, uid in self.seeded:
            if uid in self.touched or item in self.touched:
                continue
            pair = [lk for lk in links if lk.exchange_key == key]
            assert pair and pair[0].ultimo_id == uid, f"{mailbox}: seeded booking {key} is not linked to {uid}"
            assert not w.events_for_reservation(mailbox, uid), f"seeded reservation {uid} was copied to Exchange"
            assert not w.reservations_for_booking(mailbox, key), f"seeded meeting {key} was copied to Ultimo"
        # privacy
        for res in w.ultimo.reservations():
            assert "Secret" not in res["description"], f"a private subject reached Ultimo: {res['description']!r}"

    @invariant()
    def no_duplicate_reservations(self) -> None:
        """Whatever happened (crashes included): one live reservation per Exchange booking at most."""
        seen: dict[str, str] = {}
        for res in self.world.ultimo.reservations():
            ext = res["external_id"]
            if ext is None:
                continue
            assert ext not in seen, f"two live reservations ({seen[ext]}, {res['ultimo_id']}) for one booking"
            seen[ext] = res["ultimo_id"]


Reconciler.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
TestReconciler = Reconciler.TestCase
