"""One pass for one room: gather, plan, apply, record. `syncd reconcile` and `syncd run`
both call this; the scheduler only decides when, and which sides to read.

    gather   settle interrupted writes; read Exchange (the window, then by id the linked
             events missing from it) and/or Ultimo; load links and open conflicts
    plan     syncd.core.planner.plan_room: pure
    apply    syncd.engine.executor.Executor: journalled writes
    record   per-room state (read times, counts, errors); the service logs the summary line

A failed read makes that side "not read" for this pass: nothing is concluded from it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Engine, or_, select
from sqlalchemy.orm import Session

from syncd.calendars.base import RoomCalendar
from syncd.config.schema import Config
from syncd.core.model import MASS_CANCELLATION, ConflictInfo, Event, Reservation, Room, TimeWindow
from syncd.core.plan import LinkView, OpenConflict, Plan, Policy, RoomSnapshot
from syncd.core.planner import plan_room
from syncd.engine import conflicts
from syncd.engine.executor import SYSTEM_FAILURES, WRITE_KEYS, Executor
from syncd.engine.reidentify import needs_reidentify, reidentify
from syncd.errors import CalendarError, CredentialsError, SyncdError, UltimoError, UnreachableError
from syncd.store.db import session_factory
from syncd.store.schema import LINK_ACTIVE, LINK_CANCELLED, Link, RoomState, Run

log = structlog.get_logger("syncd.cycle")

# How far past the window a missing linked reservation is looked for (see _read_ultimo).
HORIZON_BEYOND = timedelta(days=366)
HALTED_KEY = "room:halted"


@dataclass
class RoomResult:
    """What one pass did for one room."""

    room: Room
    exchange_read: bool = False
    ultimo_read: bool = False
    writes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(WRITE_KEYS, 0))
    conflicts_new: int = 0
    new_conflicts: list[ConflictInfo] = field(default_factory=list)   # what they are, for the summary
    conflicts_open: int = 0
    resolved: int = 0
    errors: list[str] = field(default_factory=list)
    halted: str | None = None
    ultimo_calls: int = 0
    calendar_calls: int = 0
    failed_system: str | None = None      # "ultimo" | "exchange" when a whole system failed
    unreachable: bool = False             # the failure was "cannot reach / credentials refused"
    plan_lines: list[str] = field(default_factory=list)
    deferred_cancellations: int = 0
    seconds: float = 0.0
    exchange_count: int | None = None     # bookings seen by this pass's reads
    ultimo_count: int | None = None
    ultimo_whole: bool = False            # Ultimo was read over the whole sync window

    @property
    def ok(self) -> bool:
        return not self.errors and self.halted is None

    def as_dict(self) -> dict[str, Any]:
        return {"room": self.room.mailbox, "space_id": self.room.space_id, "exchange_read": self.exchange_read,
                "ultimo_read": self.ultimo_read, "writes": self.writes, "conflicts_new": self.conflicts_new,
                "conflicts_open": self.conflicts_open, "resolved": self.resolved, "errors": self.errors,
                "halted": self.halted, "ultimo_calls": self.ultimo_calls, "calendar_calls": self.calendar_calls}


class CountingCalendar:
    """Wraps a RoomCalendar and counts the requests made through it (one per method call):
    `calls` in all, `calls_here()` in the calling thread (a room's sync counts its own
    while other rooms' run beside it)."""

    def __init__(self, inner: RoomCalendar) -> None:
        self.inner = inner
        self.calls = 0
        self._lock = threading.Lock()
        self._here = threading.local()

    def calls_here(self) -> int:
        return int(getattr(self._here, "calls", 0))

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr) or name == "close":
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls += 1
            self._here.calls = self.calls_here() + 1
            return attr(*args, **kwargs)

        return counted


class SyncEngine:
    """The sync of every configured room against one calendar backend and one Ultimo."""

    def __init__(self, cfg: Config, engine: Engine, *, calendar: RoomCalendar, ultimo: Any,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 stop: threading.Event | None = None, run_id: int | None = None) -> None:
        self.cfg = cfg
        self.engine = engine
        self.sessions = session_factory(engine)
        self.calendar = CountingCalendar(calendar)
        self.ultimo = ultimo
        self.clock = clock
        self.stop = stop or threading.Event()
        self.policy = policy_for(cfg)
        self.rooms = [Room(r.mailbox, r.space_id) for r in cfg.rooms]
        self.executor = Executor(self.sessions, self.calendar, ultimo,
                                 display_zone=cfg.display_zone,
                                 private_subject=cfg.sync.private_subject, mask_private=cfg.sync.mask_private,
                                 clock=clock, run_id=run_id, stop=self.stop)
        self._room_locks = {r.mailbox: threading.Lock() for r in self.rooms}

    @classmethod
    def from_config(cls, cfg: Config, engine: Engine, *, stop: threading.Event | None = None) -> SyncEngine:
        """An engine with the configured calendar backend and an Ultimo client whose budget is kept in `engine`."""
        from syncd.calendars.factory import open_calendar
        from syncd.ultimo.client import UltimoClient

        return cls(cfg, engine, calendar=open_calendar(cfg),
                   ultimo=UltimoClient.from_config(cfg.ultimo, engine), stop=stop)

    def close(self) -> None:
        for closing in (self.calendar.inner.close, self.ultimo.close):
            try:
                closing()
            except Exception:  # noqa: BLE001 - closing must not mask the real outcome
                log.debug("close.failed", exc_info=True)

    def room(self, name: str) -> Room:
        """The configured room named by mailbox (any case) or space id; KeyError if none."""
        for r in self.rooms:
            if name.lower() == r.mailbox.lower() or name == r.space_id:
                return r
        raise KeyError(name)

    def window(self, now: datetime) -> TimeWindow:
        return TimeWindow(now - timedelta(days=self.cfg.sync.past_days),
                          now + timedelta(days=self.cfg.sync.future_days))

    # --- journal ----------------------------------------------------------------------

    def settle_journal(self) -> int:
        """Settle the interrupted writes of every room; gives how many. Raises when a
        system needed to decide cannot be read."""
        return sum(self.executor.settle_room(r) for r in self.rooms)

    # --- change check -----------------------------------------------------------------

    def exchange_changed(self, room: Room) -> bool:
        """One cheap call: did the room's calendar change since the stored sync state?
        Stores the new state. Raises CalendarError."""
        with self.sessions() as s:
            state = s.get(RoomState, room.mailbox)
            token = state.exchange_sync_state if state is not None else None
        check = self.calendar.check_changes(room.mailbox, token)
        with self.sessions.begin() as s:
            row = self._state(s, room)
            row.exchange_sync_state = check.state
        return check.changed

    # --- one pass ---------------------------------------------------------------------

    def sync_room(self, room: Room, *, read_exchange: bool = True, read_ultimo: bool = True,
                  dry_run: bool = False, accept_empty: bool = False,
                  ultimo_window: TimeWindow | None = None) -> RoomResult:
        """Gather, plan, apply and record for `room`. Never raises for a per-room failure:
        failures are in RoomResult.errors (and `failed_system`).

        `ultimo_window`: read Ultimo only there (the service's near-term reads); by default
        the whole sync window. Nothing is concluded about reservations outside it."""
        with self._room_locks[room.mailbox]:
            started = time.monotonic()
            # This thread's calls only: the service syncs other rooms beside this one.
            cal0, ult0 = self.calendar.calls_here(), self.ultimo.calls_here()
            result = RoomResult(room)
            try:
                self._sync(room, result, read_exchange=read_exchange, read_ultimo=read_ultimo, dry_run=dry_run,
                           accept_empty=accept_empty, ultimo_window=ultimo_window)
            except SyncdError as e:
                result.errors.append(str(e))
                self._note_failure(result, e)
            result.calendar_calls = self.calendar.calls_here() - cal0
            result.ultimo_calls = self.ultimo.calls_here() - ult0
            result.seconds = time.monotonic() - started
            if not dry_run:
                self._record(room, result)
            log.debug("room.synced", room=room.mailbox, space_id=room.space_id, dry_run=dry_run,
                     exchange_read=result.exchange_read, ultimo_read=result.ultimo_read,
                     ultimo_calls=result.ultimo_calls, calendar_calls=result.calendar_calls,
                     writes=sum(result.writes.values()), conflicts_new=result.conflicts_new,
                     conflicts_open=result.conflicts_open, errors=len(result.errors), halted=result.halted,
                     seconds=round(result.seconds, 3))
            return result

    def _sync(self, room: Room, result: RoomResult, *, read_exchange: bool, read_ultimo: bool,
              dry_run: bool, accept_empty: bool, ultimo_window: TimeWindow | None) -> None:
        if self.executor.pending(room):
            if dry_run:
                result.plan_lines.append("(interrupted writes are pending; a real run settles them first)")
            else:
                self.executor.settle_room(room)
        now = self.clock()
        window = self.window(now)
        if read_exchange and self._backend_changed(room):
            if dry_run:
                result.plan_lines.append(f"(calendar.backend is now {self.cfg.calendar.backend}: a real run first "
                                         "re-identifies the links through it; the calendar is not read here)")
                read_exchange = False
            elif not self._reidentify(room, window, now, result):
                return
        links = self._links(room, window)
        unknown: set[int] = set()
        exchange = self._read_exchange(room, window, links, now, result, unknown) if read_exchange else None
        u_window = ultimo_window or window
        ultimo = self._read_ultimo(room, u_window, links, now, result) if read_ultimo else None
        result.ultimo_whole = ultimo is not None and ultimo_window is None
        with self.sessions() as s:
            state = s.get(RoomState, room.mailbox)
            # --accept-empty: the operator confirmed that an emptied room is real.
            prev_ex = state.exchange_seen if state is not None and not accept_empty else None
            prev_ul = state.ultimo_seen if state is not None and not accept_empty else None
            open_conflicts = tuple(OpenConflict(id=c.id, booking_key=c.booking_key, kind=c.kind, start=c.start,
                                                end=c.end, link_id=c.link_id)
                                   for c in conflicts.open_for_room(s, room.mailbox))
        snapshot = RoomSnapshot(room=room, now=now, links=links,
                                exchange=tuple(exchange) if exchange is not None else None,
                                exchange_window=window if exchange is not None else None,
                                ultimo=tuple(ultimo) if ultimo is not None else None,
                                ultimo_window=u_window if ultimo is not None else None,
                                open_conflicts=open_conflicts, previous_exchange_count=prev_ex,
                                previous_ultimo_count=prev_ul, exchange_unknown=frozenset(unknown))
        plan = plan_room(snapshot, self.policy)
        result.halted = plan.halted
        result.deferred_cancellations = plan.deferred_cancellations
        result.exchange_count = len(exchange) if exchange is not None else None
        result.ultimo_count = len(ultimo) if ultimo is not None else None
        if plan.halted:
            log.error("room.halted", room=room.mailbox, reason=plan.halted)
        if dry_run:
            result.plan_lines.extend(plan.describe(self.cfg.display_zone))
            result.conflicts_new = len(plan.conflicts)
            return
        self._record_halt(room, plan, now)
        applied = self.executor.apply(room, plan)
        for k, v in applied.writes.items():
            result.writes[k] = result.writes.get(k, 0) + v
        result.conflicts_new += applied.conflicts_new
        result.new_conflicts.extend(applied.recorded)
        result.resolved += applied.resolved
        result.errors.extend(applied.errors)
        result.failed_system = result.failed_system or applied.failed_system

    def _read_exchange(self, room: Room, window: TimeWindow, links: tuple[LinkView, ...], now: datetime,
                       result: RoomResult, unknown: set[int]) -> list[Event] | None:
        """The room's events in `window`, plus linked events found by id outside it; None
        when the read failed. A linked event whose lookup alone failed (an answer about that
        one item) goes into `unknown`: nothing is concluded about it, the rest of the room
        is synced, and the failure is reported."""
        try:
            events = self.calendar.list_events(room.mailbox, window)
            keys = {e.key for e in events}
            stamps = {e.stamp for e in events if e.stamp}
            # A linked event missing from the window may have moved out of it, or be gone:
            # ask for it by id, so a move is never taken for a cancellation.
            for link in links:
                if (link.state != LINK_ACTIVE or not link.exchange_item_id or link.end <= now
                        or link.exchange_key in keys or (link.stamp and link.stamp in stamps)):
                    continue
                try:
                    found = self.calendar.get_event(room.mailbox, link.exchange_item_id)
                except CalendarError as e:
                    if isinstance(e, SYSTEM_FAILURES):
                        raise       # Exchange itself failed, not this one item
                    log.warning("exchange.lookup_failed", room=room.mailbox, link=link.id, error=str(e))
                    result.errors.append(f"looking up the event of booking {link.id} in {room.mailbox} "
                                         f"(left as it is this pass): {e}")
                    unknown.add(link.id)
                    continue
                if found is not None and found.key not in keys:
                    events.append(found)
                    keys.add(found.key)
        except CalendarError as e:
            result.errors.append(f"reading the calendar of {room.mailbox}: {e}")
            self._note_failure(result, e, "exchange")
            return None
        result.exchange_read = True
        return events

    def _read_ultimo(self, room: Room, window: TimeWindow, links: tuple[LinkView, ...], now: datetime,
                     result: RoomResult) -> list[Reservation] | None:
        try:
            found = self.ultimo.get_reservations(room.space_id, window)
            # Ultimo cannot be asked for one reservation by id. When linked reservations
            # are missing from the window, read the horizon beyond it once: a reservation
            # moved past `future_days` is a move, not a cancellation.
            ids = {r.ultimo_id for r in found}
            missing = [lk for lk in links if lk.state == LINK_ACTIVE and lk.ultimo_id and lk.end > now
                       and window.contains(lk.start, lk.end) and lk.ultimo_id not in ids]
            if missing:
                beyond = TimeWindow(window.end, window.end + HORIZON_BEYOND)
                wanted = {lk.ultimo_id for lk in missing}
                found.extend(r for r in self.ultimo.get_reservations(room.space_id, beyond)
                             if r.ultimo_id in wanted and r.ultimo_id not in ids)
        except UltimoError as e:
            result.errors.append(f"reading Ultimo space {room.space_id}: {e}")
            self._note_failure(result, e, "ultimo")
            return None
        result.ultimo_read = True
        return found

    @staticmethod
    def _note_failure(result: RoomResult, e: Exception, side: str | None = None) -> None:
        if side is None:
            side = "ultimo" if isinstance(e, UltimoError) else "exchange" if isinstance(e, CalendarError) else None
        if isinstance(e, SYSTEM_FAILURES) and side:
            result.failed_system = result.failed_system or side
        if isinstance(e, CredentialsError | UnreachableError):
            result.unreachable = True

    def _links(self, room: Room, window: TimeWindow) -> tuple[LinkView, ...]:
        """Active links of the room, and tombstones that could still be resurrected (not past)."""
        with self.sessions() as s:
            rows = s.scalars(select(Link).where(
                Link.room == room.mailbox, Link.intent.is_(None),
                or_(Link.state == LINK_ACTIVE, (Link.state == LINK_CANCELLED) & (Link.end > window.start)),
            ).order_by(Link.id)).all()
            return tuple(LinkView(id=r.id, origin=r.origin, state=r.state, exchange_key=r.exchange_key,
                                  exchange_item_id=r.exchange_item_id, exchange_change_key=r.exchange_change_key,
                                  stamp=r.stamp, external_id=r.external_id, ultimo_id=r.ultimo_id, start=r.start,
                                  end=r.end, synced_hash=r.synced_hash, subject=r.subject, organizer=r.organizer)
                         for r in rows)

    # --- record -----------------------------------------------------------------------

    def _record_halt(self, room: Room, plan: Plan, now: datetime) -> None:
        """A halted room is a conflict in the report until a pass plans it again."""
        with self.sessions.begin() as s:
            if plan.halted:
                conflicts.record(s, room=room.mailbox, space_id=room.space_id, link_id=None, now=now,
                                 info=ConflictInfo(kind=MASS_CANCELLATION, message=plan.halted,
                                                   booking_key=HALTED_KEY))
            else:
                conflicts.resolve(s, room=room.mailbox, booking_key=HALTED_KEY, now=now)

    def _state(self, s: Session, room: Room) -> RoomState:
        row = s.get(RoomState, room.mailbox)
        if row is None:
            row = RoomState(room=room.mailbox, space_id=room.space_id, calendar_backend=self.cfg.calendar.backend)
            s.add(row)
        return row

    # --- a changed calendar backend -----------------------------------------------------

    def _backend_changed(self, room: Room) -> bool:
        with self.sessions() as s:
            return needs_reidentify(s, room, self.cfg.calendar.backend)

    def _reidentify(self, room: Room, window: TimeWindow, now: datetime, result: RoomResult) -> bool:
        """Find the room's links again through the configured backend (syncd.engine.reidentify)
        before anything is planned; False when the calendar could not be read (nothing changed)."""
        try:
            with self.sessions.begin() as s:
                done = reidentify(s, self.calendar, room, window, self.cfg.calendar.backend, now)
        except CalendarError as e:
            result.errors.append(f"re-identifying the links of {room.mailbox} through "
                                 f"{self.cfg.calendar.backend}: {e}")
            self._note_failure(result, e, "exchange")
            return False
        result.plan_lines.append(f"re-identified {done.total} link(s) through {self.cfg.calendar.backend}"
                                 + (f"; {len(done.not_found)} not found" if done.not_found else ""))
        return True

    def _record(self, room: Room, result: RoomResult) -> None:
        now = self.clock()
        ex_count, ul_count = result.exchange_count, result.ultimo_count
        with self.sessions.begin() as s:
            row = self._state(s, room)
            if result.exchange_read:
                row.exchange_read_at = now
                if ex_count is not None and not result.halted:
                    row.exchange_seen = ex_count
            if result.ultimo_read:
                row.ultimo_read_at = now
                if ul_count is not None and not result.halted and result.ultimo_whole:
                    row.ultimo_seen = ul_count
            if any(result.writes.values()):
                row.last_change_at = now
            row.halted = result.halted
            if result.errors:
                row.last_error, row.last_error_at = "; ".join(result.errors)[:2000], now
            else:
                row.last_error = None
            result.conflicts_open = sum(1 for _ in conflicts.open_for_room(s, room.mailbox))


def start_run(engine: Engine, kind: str, now: datetime) -> int:
    """Record the start of a run; gives its id."""
    with session_factory(engine).begin() as s:
        run = Run(kind=kind, started_at=now, status="running")
        s.add(run)
        s.flush()
        return run.id


def finish_run(engine: Engine, run_id: int, results: list[RoomResult], now: datetime) -> None:
    """Record how a run ended, with its per-room summary."""
    failed = [r for r in results if not r.ok]
    status = "ok" if not failed else ("failed" if len(failed) == len(results) else "partial")
    with session_factory(engine).begin() as s:
        run = s.get(Run, run_id)
        if run is not None:
            run.finished_at, run.status = now, status
            run.summary = json.dumps([r.as_dict() for r in results])


def policy_for(cfg: Config) -> Policy:
    """The planner's policy a validated configuration asks for."""
    s = cfg.sync
    return Policy(
        applicant_default=cfg.applicants.default,
        applicants_by_email={k.lower(): v for k, v in cfg.applicants.by_email.items()},
        description_template=s.description_template,
        private_subject=s.private_subject,
        mask_private=s.mask_private,
        event_subject_template=s.event_subject_template,
        on_changed_on_both_sides=s.on_changed_on_both_sides,
        max_cancellations=s.max_cancellations_per_cycle,
        on_room_unavailable="record_only" if s.on_room_unavailable == "record" else s.on_room_unavailable,
        display_zone=cfg.display_zone,
    )
