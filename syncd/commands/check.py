"""`syncd check`: the configuration is valid (it loaded), then read, never write, the
sync window (now - sync.past_days .. now + sync.future_days) of every room from Ultimo
and from its calendar, and say per room what works and what the reads cost.

    room.c25@example.com (C-25): ultimo ok (3 reservations in window, 1 call),
        calendar ok (5 events in window; calendar 'Calendar' readable as ...)

Exit status: 0 everything works; 3 a system could not be reached or refused the
credentials (so it failed for every room); 1 some rooms failed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from syncd import logs
from syncd.config.schema import Config
from syncd.core.model import Reservation, Room, TimeWindow
from syncd.errors import SyncdError
from syncd.store import db


class ReservationReader(Protocol):
    def get_reservations(self, space_id: str, window: TimeWindow) -> list[Reservation]: ...


class CalendarProber(Protocol):
    def probe(self, mailbox: str) -> str: ...

    def list_events(self, mailbox: str, window: TimeWindow) -> list[Any]: ...


@dataclass(frozen=True)
class SideResult:
    ok: bool
    detail: str = ""                    # "3 reservations in window" / the reason it failed
    error: BaseException | None = None

    @property
    def system_wide(self) -> bool:
        """A failure of the whole system (unreachable, credentials, wrong endpoint)."""
        return self.error is not None and getattr(self.error, "exit_status", 1) == 3


@dataclass(frozen=True)
class RoomResult:
    room: Room
    ultimo: SideResult
    calendar: SideResult

    @property
    def ok(self) -> bool:
        return self.ultimo.ok and self.calendar.ok

    def line(self) -> str:
        return f"{self.room.mailbox} ({self.room.space_id}): {_side('ultimo', self.ultimo)}, {_side('calendar', self.calendar)}"


def _side(name: str, r: SideResult) -> str:
    if r.ok:
        return f"{name} ok" + (f" ({r.detail})" if r.detail else "")
    return f"{name} FAILED: {r.detail}"


def check_window(now: datetime, past_days: int, future_days: int) -> TimeWindow:
    """The window a sync reads: `past_days` before `now` to `future_days` after it."""
    return TimeWindow(now - timedelta(days=past_days), now + timedelta(days=future_days))


def _reason(exc: BaseException) -> str:
    return logs.scrub_text(" ".join(str(exc).split()) or type(exc).__name__)


def check_rooms(
    rooms: Iterable[Room], ultimo: ReservationReader, calendar: CalendarProber, window: TimeWindow
) -> list[RoomResult]:
    """Read each room on both sides; gives one result per room.

    Once a side fails system-wide (unreachable, credentials), the other rooms are not
    tried on that side again: they get the same failure, without the wait."""
    results = []
    ultimo_down: SideResult | None = None
    calendar_down: SideResult | None = None
    for room in rooms:
        u = ultimo_down or _read_ultimo(ultimo, room, window)
        c = calendar_down or _probe_calendar(calendar, room, window)
        if u.system_wide and ultimo_down is None:
            ultimo_down = _not_tried(u, room)
        if c.system_wide and calendar_down is None:
            calendar_down = _not_tried(c, room)
        results.append(RoomResult(room, u, c))
    return results


def _not_tried(failed: SideResult, room: Room) -> SideResult:
    return SideResult(False, f"not tried (failed for {room.mailbox}, see above)", failed.error)


def _read_ultimo(ultimo: ReservationReader, room: Room, window: TimeWindow) -> SideResult:
    before = getattr(ultimo, "calls", None)
    try:
        found = ultimo.get_reservations(room.space_id, window)
    except SyncdError as e:
        return SideResult(False, _reason(e), e)
    except Exception as e:  # a client bug must not hide the other rooms' results
        return SideResult(False, f"unexpected {type(e).__name__}: {_reason(e)}", e)
    n = len(found)
    detail = f"{n} reservation{'' if n == 1 else 's'} in window"
    after = getattr(ultimo, "calls", None)
    if isinstance(before, int) and isinstance(after, int):
        # A full page makes the client split the window: the budget an operator plans with.
        detail += f", {after - before} call{'' if after - before == 1 else 's'}"
    return SideResult(True, detail)


def _probe_calendar(calendar: CalendarProber, room: Room, window: TimeWindow) -> SideResult:
    """The calendar folder is readable, and its events (occurrences expanded; only calendar
    items, not the folder's other contents) in the window."""
    try:
        description = calendar.probe(room.mailbox)
        n = len(calendar.list_events(room.mailbox, window))
    except SyncdError as e:
        return SideResult(False, _reason(e), e)
    except Exception as e:  # a client bug must not hide the other rooms' results
        return SideResult(False, f"unexpected {type(e).__name__}: {_reason(e)}", e)
    events = f"{n} event{'' if n == 1 else 's'} in window"
    return SideResult(True, logs.scrub_text(f"{events}; {description}" if description else events))


def exit_status(results: list[RoomResult]) -> int:
    """0 all ok; 3 when one system failed system-wide for every room; 1 otherwise."""
    if all(r.ok for r in results):
        return 0
    for side in ("ultimo", "calendar"):
        if results and all(getattr(r, side).system_wide for r in results):
            return 3
    return 1


def database_line(url: str) -> tuple[str, bool]:
    """One line about the database, read-only (a missing SQLite file is not created)."""
    file = db.sqlite_file(url)
    where = db.describe(url)
    if file is not None and not file.exists():
        return f"database: {where} not created yet (`syncd db upgrade` or the first reconcile creates it)", True
    engine = db.make_engine(url)
    try:
        current = db.current_revision(engine)
        head = db.head_revision()
    except SyncdError as e:
        return f"database: FAILED: {_reason(e)}", False
    finally:
        engine.dispose()
    if current == head:
        return f"database: {where} ok (schema at {head})", True
    return f"database: {where} schema at {current or 'no revision'}, newest is {head} (run `syncd db upgrade`)", True


def cmd_check(
    cfg: Config,
    args: argparse.Namespace,
    *,
    ultimo: ReservationReader | None = None,
    calendar: CalendarProber | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    """`syncd check`. The clients are built from `cfg` unless given (tests)."""
    print(f"configuration: {getattr(args, 'config_path', '') or 'ok'} is valid, {len(cfg.rooms)} room(s)")
    db_text, db_ok = database_line(cfg.database.url)
    print(db_text)
    owned: list[Any] = []
    try:
        if ultimo is None:
            from syncd.ultimo.client import UltimoClient

            ultimo = UltimoClient.from_config(cfg.ultimo, engine=None)
            owned.append(ultimo)
        if calendar is None:
            from syncd.calendars.factory import open_calendar

            calendar = open_calendar(cfg)
            owned.append(calendar)
        rooms = [Room(r.mailbox, r.space_id) for r in cfg.rooms]
        window = check_window(now(), cfg.sync.past_days, cfg.sync.future_days)
        print(f"window: {window.start:%Y-%m-%d %H:%M} to {window.end:%Y-%m-%d %H:%M} UTC "
              f"(sync.past_days {cfg.sync.past_days}, sync.future_days {cfg.sync.future_days})")
        calls_before = getattr(ultimo, "calls", None)
        results = check_rooms(rooms, ultimo, calendar, window)
        calls_after = getattr(ultimo, "calls", None)
    finally:
        for client in owned:
            close = getattr(client, "close", None)
            if close is not None:
                close()
    graph = cfg.calendar.graph if cfg.calendar.backend == "graph" else None
    for r in results:
        print(r.line())
        if graph is not None:
            # What the app may reach is set in Exchange Online (RBAC for Applications), not here.
            print(f"  scope of the app, as an Exchange administrator sees it: "
                  f"Test-ServicePrincipalAuthorization -Identity {graph.client_id} -Resource {r.room.mailbox}")
    if isinstance(calls_before, int) and isinstance(calls_after, int):
        spent = calls_after - calls_before
        print(f"Ultimo calls made by this check: {spent} (of ultimo.daily_call_budget {cfg.ultimo.daily_call_budget})")
    status = exit_status(results)
    if status == 0 and not db_ok:
        status = 1
    return status
