"""What the running service knows about itself: per-room and per-system back-off, when
each side was last read, running jobs, counters; and the `HealthSnapshot` built from it.

Thread-safe (one lock); the room jobs write it, the health endpoint and the watchdog read it.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from syncd.core.model import Room
from syncd.service.health import HealthSnapshot, RoomHealth, SystemHealth
from syncd.service.readplan import ReadGrant
from syncd.store.schema import Conflict, RoomState

if TYPE_CHECKING:
    from syncd.engine.cycle import RoomResult
    from syncd.service.pacer import Pacer

log = structlog.get_logger("syncd.daemon")

SYSTEMS = ("exchange", "ultimo")


@dataclass
class Backoff:
    """Exponential back-off: `base`, 2 x base, ... up to `cap` seconds after each failure
    in a row; a success resets it."""

    base: float
    cap: float
    failures: int = 0
    until: datetime | None = None
    last_error: str | None = None
    last_failure: datetime | None = None
    last_success: datetime | None = None

    def failed(self, now: datetime, error: str) -> float:
        """Count a failure at `now`; gives the seconds until the next attempt."""
        self.failures += 1
        delay = min(self.cap, self.base * 2 ** (self.failures - 1))
        self.until = now + timedelta(seconds=delay)
        self.last_error, self.last_failure = error[:500], now
        return delay

    def succeeded(self, now: datetime) -> None:
        self.failures, self.until, self.last_success = 0, None, now

    def blocked(self, now: datetime) -> bool:
        return self.until is not None and now < self.until


@dataclass
class _RoomView:
    room: Room
    backoff: Backoff
    exchange_at: datetime | None = None
    exchange_dirty: bool = True          # a change seen by a check (or start) not yet read
    open_conflicts: int = 0
    halted: str | None = None
    started: datetime | None = None      # the running job's start


@dataclass
class ServiceState:
    rooms: Sequence[Room]
    now: Callable[[], datetime]
    base: float
    cap: float
    stuck_seconds: float
    pacer: Pacer | None = None
    ready: bool = False
    stopping: bool = False
    standby: bool = False                    # waiting for the instance lock (syncd run --standby)
    errors: Counter[str] = field(default_factory=Counter)
    writes: Counter[str] = field(default_factory=Counter)
    syncs: int = 0
    throttling: Any = None                   # the calendar backend's ThrottleStats, when it has one

    def __post_init__(self) -> None:
        self._lock = threading.Condition()
        self._rooms = {r.mailbox: _RoomView(r, Backoff(self.base, self.cap)) for r in self.rooms}
        self._systems = {s: Backoff(self.base, self.cap) for s in SYSTEMS}
        self._beat: datetime | None = None
        self._checks: dict[str, datetime] = {}

    # --- start ---------------------------------------------------------------------------

    def load(self, engine: Engine, pacer: Pacer) -> None:
        """Read times, counts and open conflicts as the database has them."""
        try:
            with engine.connect() as conn:
                states = {r.room: r for r in conn.execute(select(RoomState)).all()}
                open_counts: dict[str, int] = {room: count for room, count in conn.execute(
                    select(Conflict.room, func.count()).where(Conflict.status == "open").group_by(Conflict.room)
                ).all()}
        except SQLAlchemyError as e:
            log.warning("service.state_unreadable", error=type(e).__name__)
            return
        with self._lock:
            for name, view in self._rooms.items():
                row = states.get(name)
                view.open_conflicts = int(open_counts.get(name, 0))
                if row is None:
                    continue
                view.exchange_at, view.halted = row.exchange_read_at, row.halted
                pacer.planner.load(name, ultimo_read_at=row.ultimo_read_at, changed_at=row.last_change_at,
                                   rows=row.ultimo_seen,
                                   rate=(row.ultimo_changes, row.ultimo_exposure_s, row.rates_at))

    # --- decisions ----------------------------------------------------------------------

    def may_run(self, room: str, systems: Sequence[str]) -> bool:
        """Neither the room nor any of `systems` is backing off."""
        now = self.now()
        with self._lock:
            if self._rooms[room].backoff.blocked(now):
                return False
            return not any(self._systems[s].blocked(now) for s in systems)

    def lags(self, room: str) -> dict[str, float | None]:
        """How old each side's information is (seconds; None: never read)."""
        now = self.now()
        with self._lock:
            ex = self._rooms[room].exchange_at
        ul = self.pacer.planner.last_read(room)[0] if self.pacer is not None else None
        return {"exchange": None if ex is None else (now - ex).total_seconds(),
                "ultimo": None if ul is None else (now - ul).total_seconds()}

    # --- outcomes -----------------------------------------------------------------------

    def exchange_checked(self, room: str, changed: bool) -> bool:
        """A change check succeeded; gives whether the calendar must be read (a change
        seen now or before and not read yet)."""
        now = self.now()
        with self._lock:
            self._systems["exchange"].succeeded(now)
            view = self._rooms[room]
            view.exchange_dirty = view.exchange_dirty or changed
            if not view.exchange_dirty:
                view.exchange_at = now     # nothing new: the calendar is as we have it
                self._checks[room] = now
            return view.exchange_dirty

    def take_checks(self) -> dict[str, datetime]:
        """Change checks that found nothing new since the last call (room -> when), for the
        database: a confirmed calendar is as fresh as a read one."""
        with self._lock:
            out, self._checks = self._checks, {}
        return out

    def synced(self, room: str, result: RoomResult, grant: ReadGrant | None) -> None:
        now = self.now()
        with self._lock:
            view = self._rooms[room]
            self.syncs += 1
            self.writes.update({k: v for k, v in result.writes.items() if v})
            view.open_conflicts, view.halted = result.conflicts_open, result.halted
            if result.exchange_read:
                view.exchange_at, view.exchange_dirty = now, False
                self._systems["exchange"].succeeded(now)
            ultimo_writes = sum(v for k, v in result.writes.items() if k.startswith("ultimo_"))
            if result.ultimo_read or (ultimo_writes and result.failed_system != "ultimo"):
                self._systems["ultimo"].succeeded(now)

    def failed(self, room: str, system: str | None, error: str) -> None:
        """A failure of `system` (every room waits) or, with None, of the room alone."""
        now = self.now()
        with self._lock:
            if system is not None:
                delay = self._systems[system].failed(now, error)
                self.errors[system] += 1
                log.warning("service.system_backoff", system=system, seconds=delay, error=error[:300],
                            failures=self._systems[system].failures)
                return
            backoff = self._rooms[room].backoff
            delay = backoff.failed(now, error)
            self.errors["room"] += 1
        if self.pacer is not None and backoff.until is not None:
            self.pacer.pause(room, backoff.until)
        log.warning("room.backoff", room=room, seconds=delay, failures=backoff.failures, error=error[:300])

    def succeeded(self, room: str) -> None:
        with self._lock:
            self._rooms[room].backoff.succeeded(self.now())

    def count_error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] += 1

    # --- jobs, heartbeat ----------------------------------------------------------------

    @contextmanager
    def running(self, room: str) -> Iterator[None]:
        with self._lock:
            self._rooms[room].started = self.now()
        try:
            yield
        finally:
            with self._lock:
                self._rooms[room].started = None
                self._lock.notify_all()

    def running_rooms(self) -> list[str]:
        with self._lock:
            return [n for n, v in self._rooms.items() if v.started is not None]

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no room job runs; gives False when `timeout` seconds passed first."""
        with self._lock:
            return self._lock.wait_for(lambda: all(v.started is None for v in self._rooms.values()), timeout)

    def stuck(self) -> list[str]:
        now = self.now()
        with self._lock:
            return [n for n, v in self._rooms.items()
                    if v.started is not None and (now - v.started).total_seconds() > self.stuck_seconds]

    def beat(self) -> None:
        with self._lock:
            self._beat = self.now()

    def alive(self, max_age: float) -> bool:
        """The scheduler ran the heartbeat within `max_age` seconds and no job is stuck."""
        with self._lock:
            beat = self._beat
        return beat is not None and (self.now() - beat).total_seconds() <= max_age and not self.stuck()

    # --- reporting ------------------------------------------------------------------------

    def status_line(self) -> str:
        with self._lock:
            failing = sum(1 for v in self._rooms.values() if v.backoff.failures or v.halted)
            down = [s for s, b in self._systems.items() if b.failures]
        spent = _spent(self.pacer)
        budget = f"Ultimo {spent}/{self.pacer.limit} calls today" if self.pacer is not None and spent is not None else ""
        parts = [f"{len(self._rooms)} rooms", budget, f"{failing} failing" if failing else "",
                 f"backing off: {', '.join(down)}" if down else ""]
        return "; ".join(p for p in parts if p)

    def totals(self) -> dict[str, object]:
        with self._lock:
            return {"syncs": self.syncs, "writes": dict(self.writes), "errors": dict(self.errors)}

    def snapshot(self, daily_budget: int) -> HealthSnapshot:
        now = self.now()
        stuck = tuple(self.stuck())
        with self._lock:
            systems = tuple(SystemHealth(s, b.last_success, b.last_failure, b.failures, b.until, b.last_error)
                            for s, b in self._systems.items())
            views = list(self._rooms.values())
            rooms = []
            for v in views:
                near, full = self.pacer.planner.last_read(v.room.mailbox) if self.pacer else (None, None)
                rooms.append(RoomHealth(v.room.mailbox, v.room.space_id, v.exchange_at, near, full, v.open_conflicts,
                                        bool(v.backoff.failures), v.halted))
            errors, writes, syncs = dict(self.errors), dict(self.writes), self.syncs
        waits, waited = self.throttling.read() if self.throttling is not None else (0, 0.0)
        return HealthSnapshot(now=now, ready=self.ready, stopping=self.stopping, standby=self.standby,
                              systems=systems, rooms=tuple(rooms),
                              ultimo_calls_today=_spent(self.pacer), ultimo_daily_budget=daily_budget,
                              ultimo_tokens=self.pacer.level() if self.pacer is not None else None,
                              errors=errors, syncs=syncs, writes=writes, stuck=stuck,
                              calendar_throttle_waits=waits, calendar_throttle_seconds=waited)


def _spent(pacer: Pacer | None) -> int | None:
    if pacer is None:
        return None
    try:
        return pacer.spent_today()
    except Exception:  # noqa: BLE001 - a health answer must not fail on a busy database
        return None
