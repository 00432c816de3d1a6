"""Shared helpers for the end-to-end and property tests of the two-way reconciler.

Both sandboxes run on loopback; syncd talks to them through the real clients (exchangelib
for EWS, httpx for Ultimo) and keeps its links in a real SQLite file. What this adds:

- `World`: both sandboxes with the rooms set up, a configuration pointing at them, a
  fresh migrated SQLite database, and `engine()` building a `SyncEngine` on it as a
  (re)started process would;
- `Killed` and `CrashSwitch`: the process "dies" at the n-th remote write, just before or
  just after the write reaches the other system, before syncd can record the outcome;
- readers of the sandboxes' state (`exchange_view`, `write_calls`) and of the database
  (`links`, `open_conflicts`) for assertions;
- `at(day, hour, minute)`: whole quarter hours in Europe/Amsterdam, `day` days from today.

No sleeps: the clients are given no-op sleeps and tiny back-offs.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import exchangelib.protocol
from sqlalchemy import Engine, select

from syncd.calendars.ews.backend import EwsCalendar
from syncd.calendars.factory import open_calendar
from syncd.calendars.graph.auth import forget_apps
from syncd.config.schema import Config
from syncd.core.model import external_id_for, stamp_for_reservation
from syncd.engine.cycle import RoomResult, SyncEngine
from syncd.sandbox.ews.server import EwsSandbox
from syncd.sandbox.graph.server import GraphSandbox
from syncd.sandbox.ultimo.server import UltimoSandbox
from syncd.store.db import make_engine, session_factory, upgrade
from syncd.store.schema import Conflict, JournalEntry, Link
from syncd.ultimo.budget import DailyBudget, RateLimiter
from syncd.ultimo.client import UltimoClient

ZONE = ZoneInfo("Europe/Amsterdam")
USER, PASSWORD, API_KEY = "svc-syncd@example.com", "sandbox-password", "sandbox-key"
ROOMS = (("room.c25@example.com", "C-25"), ("room.d12@example.com", "D-12"))
STAMP_PROPERTY = "SyncdBookingId"

EXCHANGE_WRITES = ("CreateItem", "UpdateItem", "DeleteItem")
GRAPH_WRITES = ("events.create", "event.update", "event.delete", "event.decline")
GRAPH_CLIENT_ID, GRAPH_SECRET = "5f0c7a1e-3b2d-4c8e-9a6f-0e1d2c3b4a59", "graph-sandbox-Secret~1"
ULTIMO_WRITES = ("REST_CreateReservation", "REST_UpdateReservation", "REST_CancelReservation")


def at(day: int, hour: int, minute: int = 0) -> datetime:
    """`hour:minute` in Europe/Amsterdam, `day` days from today (aware)."""
    local = datetime.now(ZONE).date() + timedelta(days=day)
    return datetime.combine(local, time(hour, minute), tzinfo=ZONE)


def config_dict(ultimo_url: str, ews_url: str, db_path: Path, *, rooms: tuple[tuple[str, str], ...] = ROOMS,
                api_key: str = API_KEY, password: str = PASSWORD, **sync: Any) -> dict[str, Any]:
    """A complete configuration (as loaded from YAML) pointing at the sandboxes."""
    return {
        "database": {"url": f"sqlite:///{db_path}"},
        "ultimo": {"base_url": ultimo_url, "api_key": api_key, "timezone": "Europe/Amsterdam",
                   "daily_call_budget": 10000, "calls_per_10s": 100, "max_retries": 1, "timeout_seconds": 5},
        "calendar": {"backend": "ews", "ews": {
            "endpoint": ews_url, "auth": "basic", "username": USER, "password": password,
            "access": "impersonation", "server_version": "15.1.2507.6", "timeout_seconds": 5,
            # Two ErrorServerBusy back-offs of 0.1 s fit, a third does not: a busy server fails the read.
            "throttle_max_wait_seconds": 0.25}},
        "rooms": [{"mailbox": m, "space_id": s} for m, s in rooms],
        "applicants": {"default": "ULTIMO", "by_email": {"alice@example.com": "00042", "bob@example.com": "00043"}},
        "sync": {"interval_seconds": 60, "past_days": 1, "future_days": 14, **sync},
        "service": {"health_listen": "127.0.0.1:0"},     # on by default; a free port in tests
        "logging": {"level": "error"},
    }


def graph_section(graph: GraphSandbox, secret: str = GRAPH_SECRET) -> dict[str, Any]:
    """The `calendar.graph` section pointing at the Graph sandbox."""
    return {"tenant_id": graph.tenant_id, "client_id": GRAPH_CLIENT_ID, "client_secret": secret,
            "authority": graph.url, "graph_url": f"{graph.graph_url}/v1.0", "ca_file": graph.ca_file,
            "timeout_seconds": 5,
            # Retry-After is whole seconds: one back-off of 1 s fits, a second does not.
            "throttle_max_wait_seconds": 1.5}


_TEMPLATE: dict[str, Path] = {}


def fresh_database(path: Path) -> None:
    """A migrated, empty SQLite database at `path` (copied from one migrated per process)."""
    if "db" not in _TEMPLATE:
        folder = Path(tempfile.mkdtemp(prefix="syncd-template-"))
        engine = make_engine(f"sqlite:///{folder / 'template.db'}")
        upgrade(engine)
        engine.dispose()
        _TEMPLATE["db"] = folder / "template.db"
    shutil.copyfile(_TEMPLATE["db"], path)


# --- crashes --------------------------------------------------------------------------


class Killed(BaseException):
    """The process was killed: nothing after this point runs, nothing more is committed."""


class CrashSwitch:
    """Kills the process at the `n`-th remote write from now (1 = the next one), either
    `before` the write leaves or `after` it took effect on the other system."""

    def __init__(self) -> None:
        self.countdown: int | None = None
        self.when = "after"
        self.fired: str | None = None

    def arm(self, n: int, when: str = "after") -> None:
        if when not in ("before", "after"):
            raise ValueError(when)
        self.countdown, self.when, self.fired = n, when, None

    def disarm(self) -> None:
        self.countdown = None

    def write(self, name: str, call: Callable[[], Any]) -> Any:
        if self.countdown is None:
            return call()
        self.countdown -= 1
        if self.countdown > 0:
            return call()
        self.countdown = None
        if self.when == "before":
            self.fired = f"before {name}"
            raise Killed(self.fired)
        call()
        self.fired = f"after {name}"
        raise Killed(self.fired)


class _Crashing:
    """Wraps a client; its write methods go through the switch, the rest pass through."""

    WRITES: tuple[str, ...] = ()

    def __init__(self, inner: Any, switch: CrashSwitch) -> None:
        self._inner = inner
        self._switch = switch

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in self.WRITES:
            return attr

        def write(*args: Any, **kwargs: Any) -> Any:
            return self._switch.write(name, lambda: attr(*args, **kwargs))

        return write


class CrashingCalendar(_Crashing):
    WRITES = ("create_event", "move_event", "remove_event", "decline")


class CrashingUltimo(_Crashing):
    WRITES = ("create_reservation", "update_reservation", "cancel_reservation")


# --- the world ------------------------------------------------------------------------


class World:
    """Both sandboxes, the rooms, a configuration and a database. Close it when done."""

    def __init__(self, folder: Path | None = None, *, rooms: tuple[tuple[str, str], ...] = ROOMS,
                 backend: str = "ews", graph: bool = False, **sync: Any) -> None:
        """`backend`: the calendar backend syncd uses (ews | graph). With graph (or `graph=True`)
        the Graph sandbox serves the EWS sandbox's calendars too (one store, two protocols):
        people still act through `ews`, syncd reads and writes through whichever is configured."""
        self._own_folder = folder is None
        self.folder = Path(tempfile.mkdtemp(prefix="syncd-world-")) if folder is None else folder
        self.rooms = rooms
        self.ultimo = UltimoSandbox(api_keys=(API_KEY,), rate_limit=10**9, daily_limit=10**9).start()
        self.graph: GraphSandbox | None = None
        if backend == "graph" or graph:
            self.graph = GraphSandbox(timezone="Europe/Amsterdam").start()
            self.graph.register_app(GRAPH_CLIENT_ID, secret=GRAPH_SECRET)
        self.ews = EwsSandbox(users={USER: PASSWORD}, auth="basic",
                              store=self.graph.store if self.graph is not None else None).start()
        for mailbox, space in rooms:
            self.ultimo.add_space(space, preparation_minutes=10, cleanup_minutes=10)
            self.ews.add_mailbox(mailbox)
        self.db_path = self.folder / "syncd.db"
        fresh_database(self.db_path)
        self.raw = config_dict(self.ultimo.url, self.ews.url, self.db_path, rooms=rooms, **sync)
        if self.graph is not None:
            self.raw["calendar"]["graph"] = graph_section(self.graph)
        self.raw["calendar"]["backend"] = backend
        self.cfg = Config.model_validate(self.raw)
        self.db: Engine = make_engine(self.cfg.database.url)
        self.switch = CrashSwitch()
        self._sync: SyncEngine | None = None

    # --- syncd as a process -------------------------------------------------------------

    def engine(self) -> SyncEngine:
        """The running process's SyncEngine, started when there is none."""
        if self._sync is None:
            if self.cfg.calendar.backend == "graph":
                calendar: Any = open_calendar(self.cfg, retry_sleep=lambda _s: None, backoff_first=0.001)
            else:
                calendar = EwsCalendar(self.cfg.calendar.ews, retry_sleep=lambda _s: None, retry_wait=0.001)
            ultimo = UltimoClient(self.cfg.ultimo, budget=DailyBudget(self.db, 10**6),
                                  limiter=RateLimiter(10**6, 10.0), sleep=lambda _s: None, backoff_base=0.001)
            self._sync = SyncEngine(self.cfg, self.db, calendar=CrashingCalendar(calendar, self.switch),
                                    ultimo=CrashingUltimo(ultimo, self.switch))
        return self._sync

    def use_backend(self, backend: str) -> None:
        """Restart syncd with `calendar.backend` changed (the same database, the same calendars)."""
        self.kill()
        self.raw["calendar"]["backend"] = backend
        self.cfg = Config.model_validate(self.raw)

    def kill(self) -> None:
        """The process is gone: its connections close; the next `engine()` is a new process."""
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    def reconcile(self, *, read_exchange: bool = True, read_ultimo: bool = True,
                  dry_run: bool = False) -> list[RoomResult]:
        """One pass over every room, as `syncd reconcile` or one service cycle does.
        Raises Killed when the crash switch fires (the process is then gone)."""
        sync = self.engine()
        try:
            return [sync.sync_room(room, read_exchange=read_exchange, read_ultimo=read_ultimo, dry_run=dry_run)
                    for room in sync.rooms]
        except Killed:
            self.kill()
            raise

    def close(self) -> None:
        self.kill()
        self.db.dispose()
        self.ultimo.stop()
        self.ews.stop()
        if self.graph is not None:
            self.graph.stop()
            forget_apps()
        exchangelib.protocol.close_connections()
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> World:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- looking at the two systems -----------------------------------------------------

    def window(self) -> tuple[datetime, datetime]:
        now = datetime.now(UTC)
        return now - timedelta(days=self.cfg.sync.past_days), now + timedelta(days=self.cfg.sync.future_days)

    def exchange_view(self, mailbox: str) -> list[ExchangeBooking]:
        """What the room's calendar shows in the sync window, occurrences expanded."""
        start, end = self.window()
        return [ExchangeBooking.of(v) for v in self.ews.occurrences(mailbox, start, end)]

    def write_calls(self) -> tuple[int, int]:
        """(Exchange, Ultimo) write requests served so far (faulted ones included)."""
        ex = sum(self.ews.calls(op=op) for op in EXCHANGE_WRITES)
        if self.graph is not None:
            ex += sum(self.graph.calls(op=op) for op in GRAPH_WRITES)
        ul = sum(self.ultimo.calls(w) for w in ULTIMO_WRITES)
        return ex, ul

    def reservations_for_booking(self, mailbox: str, key: str) -> list[dict[str, Any]]:
        """Active reservations syncd made for the Exchange booking `key` (by their ExternalId)."""
        ext = external_id_for(mailbox, key)
        return [r for r in self.ultimo.reservations() if r["external_id"] == ext]

    def events_for_reservation(self, mailbox: str, ultimo_id: str) -> list[ExchangeBooking]:
        stamp = stamp_for_reservation(ultimo_id)
        return [e for e in self.exchange_view(mailbox) if e.stamp == stamp]

    # --- looking at syncd's database --------------------------------------------------

    def links(self, room: str | None = None, *, active_only: bool = False) -> list[Link]:
        with session_factory(self.db)() as s:
            q = select(Link).order_by(Link.id)
            if room is not None:
                q = q.where(Link.room == room)
            rows = [r for r in s.scalars(q) if not active_only or r.state == "active"]
            s.expunge_all()
            return rows

    def open_conflicts(self, room: str | None = None) -> list[Conflict]:
        with session_factory(self.db)() as s:
            q = select(Conflict).where(Conflict.status == "open").order_by(Conflict.id)
            if room is not None:
                q = q.where(Conflict.room == room)
            rows = list(s.scalars(q))
            s.expunge_all()
            return rows

    def all_conflicts(self) -> list[Conflict]:
        with session_factory(self.db)() as s:
            rows = list(s.scalars(select(Conflict).order_by(Conflict.id)))
            s.expunge_all()
            return rows

    def pending_journal(self) -> list[JournalEntry]:
        with session_factory(self.db)() as s:
            rows = list(s.scalars(select(JournalEntry).where(JournalEntry.status == "pending")))
            s.expunge_all()
            return rows


@dataclass(frozen=True)
class ExchangeBooking:
    """One event or occurrence as the room's calendar shows it, with syncd's identity for it."""

    key: str
    item_id: str
    master_id: str | None
    subject: str
    start: datetime
    end: datetime
    organizer: str | None
    stamp: str | None

    @classmethod
    def of(cls, view: dict[str, Any]) -> ExchangeBooking:
        original = view["original_start"]
        key = view["uid"] if original is None else f"{view['uid']}|{original.astimezone(UTC).isoformat()}"
        stamp = view["extended_properties"].get(STAMP_PROPERTY)
        return cls(key=key, item_id=view["id"], master_id=view["master_id"], subject=view["subject"],
                   start=view["start"].astimezone(UTC), end=view["end"].astimezone(UTC),
                   organizer=view["organizer"], stamp=stamp)
