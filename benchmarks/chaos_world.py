"""The crash-and-fault campaign's world: both sandboxes, the rooms, the people who keep
editing, the real `syncd` process, and the checks that read both sandboxes' journals.

With backend "graph", syncd talks Microsoft Graph to the Graph sandbox, whose store the EWS
sandbox serves as well: people still act through EWS, the journals are the same store's.

Used by benchmarks/chaos.py; see there for what the campaign does and prints.

People book, move and cancel only what they made themselves (meetings in Exchange,
reservations in Ultimo), each booking in a slot of its own, and no slot is used twice in
a run: whatever syncd does, it never meets a real clash, so every booking must end with
exactly one counterpart at its times, and nothing a person did not cancel may be gone.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from sqlalchemy import Connection, create_engine, make_url

from syncd.core.model import external_id_for, stamp_for_reservation
from syncd.sandbox.ews.server import EwsSandbox, Recurrence
from syncd.sandbox.graph.server import GraphSandbox
from syncd.sandbox.ultimo.server import UltimoSandbox
from syncd.store.db import make_engine, upgrade

ZONE = ZoneInfo("Europe/Amsterdam")
USER, PASSWORD, API_KEY = "svc-syncd@example.com", "sandbox-password", "sandbox-key"
ROOMS = (("room.c25@example.com", "C-25"), ("room.d12@example.com", "D-12"), ("room.e07@example.com", "E-07"))
STAMP = "SyncdBookingId"
ULTIMO_WRITES = ("REST_CreateReservation", "REST_UpdateReservation", "REST_CancelReservation")
EWS_WRITES = ("CreateItem", "UpdateItem", "DeleteItem")
# The Graph request for each EWS write (what syncd sends when it talks Graph).
GRAPH_WRITE = {"CreateItem": "events.create", "UpdateItem": "event.update", "DeleteItem": "event.delete"}
GRAPH_WRITES = (*GRAPH_WRITE.values(), "event.decline")
GRAPH_APP, GRAPH_SECRET = "0c1f5a7e-6d2b-4f3a-8e9c-7b6a5d4c3b2a", "chaos-Graph~secret"
SLOT_HOURS = (8, 10, 12, 14, 16, 18)   # one hour each, two apart: buffers never touch
SYNCD = Path(sys.executable).with_name("syncd")


@dataclass
class Booking:
    """A person's booking: a meeting in a room calendar or a reservation in Ultimo."""

    side: str            # "exchange" or "ultimo"
    mailbox: str
    space: str
    ident: str           # item id or UltimoId
    uid: str             # the meeting's UID (exchange) or the UltimoId
    start: datetime
    end: datetime
    live: bool = True
    anchor: bool = False     # never edited
    master: str | None = None          # an occurrence: its series' master item id
    original: datetime | None = None   # and its original start


@dataclass
class Check:
    """What the journals and the end state say about one world."""

    duplicates: int = 0
    lost: int = 0
    wrong_cancellations: int = 0
    unsettled: int = 0          # counterparts at the wrong times, or left behind for a cancelled booking
    notes: list[str] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        return self.lost == 0 and self.unsettled == 0


@dataclass
class Pass:
    status: int | None           # None: killed
    stdout: str
    stderr: str
    seconds: float
    writes: int                  # write requests the sandboxes received during the pass

    @property
    def tracebacks(self) -> int:
        return self.stderr.count("Traceback (most recent call last)") + \
            self.stdout.count("Traceback (most recent call last)")


class World:
    """Both sandboxes with the rooms, a configuration file and a migrated database (SQLite in
    the run's folder, or with `database` a PostgreSQL schema of its own)."""

    def __init__(self, rng: random.Random, *, series: bool = False, backend: str = "ews",
                 database: str | None = None) -> None:
        self.rng = rng
        self.series = series
        self.folder = Path(tempfile.mkdtemp(prefix="syncd-chaos-"))
        self.ultimo = UltimoSandbox(api_keys=(API_KEY,), rate_limit=10**9, daily_limit=10**9).start()
        self.graph: GraphSandbox | None = None
        if backend == "graph":
            self.graph = GraphSandbox(timezone=str(ZONE)).start()
            self.graph.register_app(GRAPH_APP, secret=GRAPH_SECRET)
        self.ews = EwsSandbox(users={USER: PASSWORD}, auth="basic",
                              store=self.graph.store if self.graph is not None else None).start()
        for mailbox, space in ROOMS:
            self.ultimo.add_space(space, preparation_minutes=10, cleanup_minutes=10)
            self.ews.add_mailbox(mailbox)
        # SQLite in the run's folder, or a PostgreSQL schema of the run's own on `database`.
        self._server, self.schema = database, None
        url = f"sqlite:///{self.folder / 'syncd.db'}"
        if database is not None:
            self.schema = f"chaos_{self.folder.name.rsplit('-', 1)[-1].lower()}"
            with _admin(database) as conn:
                conn.exec_driver_sql(f'CREATE SCHEMA "{self.schema}"')
            url = make_url(database).update_query_dict({"options": f"-csearch_path={self.schema}"}) \
                .render_as_string(hide_password=False)
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        self.config = self.folder / "config.yaml"
        self.config.write_text(yaml.safe_dump(self._config(url), sort_keys=False))
        self.bookings: list[Booking] = []
        self.cancelled_by_people: set[str] = set()
        self._lock = threading.Lock()
        self._free = {space: self._slots() for _, space in ROOMS}
        # One booking per room and side nobody touches: a room never really empties, so the
        # emptiness guard (which rightly stops for an operator) never halts the campaign.
        for mailbox, space in ROOMS:
            for side in ("exchange", "ultimo"):
                self._book(mailbox, space, side, anchor=True)

    def _config(self, url: str) -> dict[str, Any]:
        calendar: dict[str, Any] = {"backend": "ews", "ews": {
            "endpoint": self.ews.url, "auth": "basic", "username": USER, "password": PASSWORD,
            "access": "impersonation", "server_version": "15.1.2507.6", "timeout_seconds": 2,
            "throttle_max_wait_seconds": 0.5}}
        if self.graph is not None:
            calendar = {"backend": "graph", "graph": {
                "tenant_id": self.graph.tenant_id, "client_id": GRAPH_APP, "client_secret": GRAPH_SECRET,
                "authority": self.graph.url, "graph_url": f"{self.graph.graph_url}/v1.0",
                "ca_file": self.graph.ca_file, "timeout_seconds": 2,
                # Retry-After comes in whole seconds: one back-off of a second fits, not two.
                "throttle_max_wait_seconds": 1.5}}
        return {
            "database": {"url": url},
            "ultimo": {"base_url": self.ultimo.url, "api_key": API_KEY, "timezone": "Europe/Amsterdam",
                       "daily_call_budget": 10000, "calls_per_10s": 100, "max_retries": 1, "timeout_seconds": 2},
            "calendar": calendar,
            "rooms": [{"mailbox": m, "space_id": s} for m, s in ROOMS],
            "applicants": {"default": "ULTIMO", "by_email": {"alice@example.com": "00042"}},
            # The interval matters only to `syncd run`: its rooms' first cycles 2 s apart.
            "sync": {"interval_seconds": 6, "past_days": 1, "future_days": 14},
            "logging": {"level": "warning"},
            # `syncd run`: no endpoint (each run would need a port of its own); a stop waits
            # at most this long for the write in flight.
            "service": {"health_listen": "off", "shutdown_grace_seconds": 5},
        }

    def close(self, *, keep: bool = False) -> None:
        """Stop the sandboxes; the run's folder is removed unless `keep`."""
        self.ultimo.stop()
        self.ews.stop()
        if self.graph is not None:
            self.graph.stop()
        if not keep:
            shutil.rmtree(self.folder, ignore_errors=True)
            if self._server is not None:
                with _admin(self._server) as conn:
                    conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    # --- people --------------------------------------------------------------------------

    def _slots(self) -> list[tuple[datetime, datetime]]:
        today = datetime.now(ZONE).date()
        slots = []
        for day in range(1, 13):
            for hour in SLOT_HOURS:
                start = datetime.combine(today + timedelta(days=day), clock(hour), tzinfo=ZONE)
                slots.append((start, start + timedelta(hours=1)))
        self.rng.shuffle(slots)
        return slots

    def _slot(self, space: str) -> tuple[datetime, datetime] | None:
        free = self._free[space]
        return free.pop() if free else None

    def book_series(self) -> str:
        """Someone books a daily series of three in Exchange (three free slots in a row)."""
        mailbox, space = self.rng.choice(ROOMS)
        free = self._free[space]
        for start, end in list(free):
            days = [(start + timedelta(days=n), end + timedelta(days=n)) for n in range(3)]
            if all(d in free for d in days):
                for d in days:
                    free.remove(d)
                break
        else:
            return ""
        master = self.ews.book(mailbox, subject=f"Series {len(self.bookings)}", start=start, end=end,
                               organizer="alice@example.com", recurrence=Recurrence(kind="daily", count=3))
        uid = next(i["uid"] for i in self.ews.items(mailbox) if i["id"] == master)
        for first, last in days:
            original = first.astimezone(UTC)
            self.bookings.append(Booking("exchange", mailbox, space, master, f"{uid}|{original.isoformat()}",
                                         first, last, master=master, original=original))
        return "REST_CreateReservation"

    def book(self) -> str:
        """Someone books in one of the systems; gives the write syncd will make for it."""
        mailbox, space = self.rng.choice(ROOMS)
        return self._book(mailbox, space, self.rng.choice(("exchange", "ultimo")))

    def _book(self, mailbox: str, space: str, side: str, anchor: bool = False) -> str:
        slot = self._slot(space)
        if slot is None:
            return ""
        start, end = slot
        if side == "exchange":
            item_id = self.ews.book(mailbox, subject=f"Meeting {len(self.bookings)}", start=start, end=end,
                                    organizer="alice@example.com")
            uid = next(i["uid"] for i in self.ews.items(mailbox) if i["id"] == item_id)
            self.bookings.append(Booking("exchange", mailbox, space, item_id, uid, start, end, anchor=anchor))
            return "REST_CreateReservation"
        ultimo_id = self.ultimo.reserve(space, start, end, description=f"Reservation {len(self.bookings)}")
        self.bookings.append(Booking("ultimo", mailbox, space, ultimo_id, ultimo_id, start, end, anchor=anchor))
        return "CreateItem"

    def edit(self) -> str:
        """One person's edit: book, move or cancel; gives the write it asks of syncd."""
        with self._lock:
            live = [b for b in self.bookings if b.live and not b.anchor]
            roll = self.rng.random()
            if self.series and roll < 0.1:
                return self.book_series()
            if not live or roll < 0.4:
                return self.book()
            b = self.rng.choice(live)
            if roll < 0.75:
                slot = self._slot(b.space)
                if slot is not None:
                    b.start, b.end = slot
                    if b.master is not None and b.original is not None:
                        self.ews.move_occurrence(b.mailbox, b.master, b.original, b.start, b.end)
                        return "REST_UpdateReservation"
                    if b.side == "exchange":
                        self.ews.move(b.mailbox, b.ident, b.start, b.end)
                        return "REST_UpdateReservation"
                    self.ultimo.move(b.ident, b.start, b.end)
                    return "UpdateItem"
            b.live = False
            if b.master is not None and b.original is not None:
                self.ews.cancel_occurrence(b.mailbox, b.master, b.original)   # one occurrence deleted
                return "REST_CancelReservation"
            self.cancelled_by_people.add(b.ident)
            if b.side == "exchange":
                self.ews.cancel(b.mailbox, b.ident)
                return "REST_CancelReservation"
            self.ultimo.cancel(b.ident)
            return "DeleteItem"

    # --- syncd ---------------------------------------------------------------------------

    def writes(self) -> int:
        ultimo = sum(self.ultimo.calls(w) for w in ULTIMO_WRITES)
        if self.graph is not None:
            return ultimo + sum(self.graph.calls(op=o) for o in GRAPH_WRITES)
        return ultimo + sum(self.ews.calls(op=o) for o in EWS_WRITES)

    def calendar_faults(self) -> Any:
        """The fault queue of the calendar server syncd talks to."""
        return self.graph.faults if self.graph is not None else self.ews.faults

    def hold_calendar_write(self, op: str, hold: Any) -> None:
        """Hold back the answer of syncd's next calendar write `op` (an EWS operation name)."""
        if self.graph is not None:
            self.graph.inject("hold", op=GRAPH_WRITE[op], hold=hold)
        else:
            self.ews.inject("hold", op=op, hold=hold)

    def start_syncd(self, command: str = "reconcile") -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        return subprocess.Popen([str(SYNCD), "--config", str(self.config), command], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, cwd=self.folder)

    def serve(self, *, hold: Any = None, after_first_write: float = 0.0, stop: bool = False,
              quiet: float = 30.0, timeout: float = 120) -> Pass:
        """One `syncd run` process (the service), ended by kill -9, or with `stop` by SIGTERM
        as systemd stops it (it must then finish the write in flight and exit 0 by itself).
        With `hold` (an httpbase.Hold already injected) it is killed once that write is done
        and its answer held, or stopped if the service has not made that write within
        `quiet` seconds (it paces its Ultimo calls); otherwise it is ended
        `after_first_write` seconds after its first write request arrived, or after `quiet`
        seconds without one."""
        before, started = self.writes(), time.monotonic()
        proc = self.start_syncd("run")
        if hold is not None:
            while proc.poll() is None and not hold.reached.wait(0.01) and time.monotonic() - started < quiet:
                pass
            stop = not hold.reached.is_set()
        else:
            while proc.poll() is None and self.writes() == before and time.monotonic() - started < quiet:
                time.sleep(0.005)
            try:
                proc.wait(after_first_write)
            except subprocess.TimeoutExpired:
                pass
        ended_itself = proc.poll() is not None
        if not ended_itself:
            proc.send_signal(signal.SIGTERM if stop else signal.SIGKILL)
        if hold is not None:
            hold.release()
        out, err = _output(proc, timeout)
        status = None if not ended_itself and not stop else proc.returncode
        return Pass(status, out, err, time.monotonic() - started, self.writes() - before)

    def reconcile(self, *, kill_in_writes: float | None = None, hold: Any = None, timeout: float = 240) -> Pass:
        """One `syncd reconcile` process. With `hold` (an httpbase.Hold already injected),
        kill -9 it once a write is done and its answer held; with `kill_in_writes`, kill -9
        it that many seconds after its first write request arrived, if it still runs."""
        before, started = self.writes(), time.monotonic()
        proc = self.start_syncd()
        killed = False
        if hold is not None:
            while proc.poll() is None and not hold.reached.wait(0.01):
                if time.monotonic() - started > timeout:
                    break
            if hold.reached.is_set() and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed = True
            hold.release()
        elif kill_in_writes is not None:
            while proc.poll() is None and self.writes() == before and time.monotonic() - started < timeout:
                time.sleep(0.005)
            try:
                proc.wait(kill_in_writes)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                killed = True
        out, err = _output(proc, timeout)
        return Pass(None if killed else proc.returncode, out, err, time.monotonic() - started, self.writes() - before)

    # --- checks --------------------------------------------------------------------------

    def check(self) -> Check:
        """Duplicates ever created, lost bookings, wrong cancellations, from the journals
        (Ultimo's reservations including cancelled ones, every item EWS ever stored)."""
        c = Check()
        history = self.ultimo.history()
        by_external: dict[str, list[dict[str, Any]]] = {}
        for r in history:
            if r["via"] == "api":
                by_external.setdefault(r["external_id"] or "?", []).append(r)
        stamped: dict[str, list[dict[str, Any]]] = {}
        items: dict[str, dict[str, Any]] = {}
        for mailbox, _ in ROOMS:
            for item in self.ews.history(mailbox):
                items[item["id"]] = item
                stamp = item["extended_properties"].get(STAMP)
                if stamp:
                    stamped.setdefault(stamp, []).append(item)
        for key, rows in [*by_external.items(), *stamped.items()]:
            if len(rows) > 1:
                c.duplicates += len(rows) - 1
                c.notes.append(f"duplicate: {len(rows)} made for {key}")
        statuses = {r["ultimo_id"]: r for r in history}
        for b in self.bookings:
            if b.side == "exchange":
                mine = items.get(b.ident)
                gone = mine is None or mine["removed"] or mine["declined_to"] or (
                    b.original is not None and (b.original in mine["deleted_occurrences"]
                                                or b.original in mine["declined_occurrences"]))
                twins = by_external.get(external_id_for(b.mailbox, b.uid), [])
                live = [(r["start"], r["end"]) for r in twins if r["status"] != "Cancelled"]
                wrongly_cancelled = b.live and any(r["status"] == "Cancelled" for r in twins)
            else:
                gone = statuses[b.ident]["status"] == "Cancelled"
                twins = stamped.get(stamp_for_reservation(b.ident), [])
                live = [(t["start"], t["end"]) for t in twins if not t["removed"]]
                wrongly_cancelled = b.live and any(t["removed"] for t in twins)
            if b.live and gone:
                c.wrong_cancellations += 1
                c.notes.append(f"wrong cancellation: {b.side} booking {b.ident} of a person was removed")
            if wrongly_cancelled:
                c.wrong_cancellations += 1
                c.notes.append(f"wrong cancellation: the counterpart of live {b.side} booking {b.ident}")
            if b.live and not live:
                c.lost += 1
                c.notes.append(f"lost: {b.side} booking {b.ident} has no counterpart")
            elif b.live and live != [(b.start.astimezone(UTC), b.end.astimezone(UTC))]:
                c.unsettled += 1
                c.notes.append(f"unsettled: {b.side} booking {b.ident} at {b.start}, counterparts at {live}")
            elif not b.live and live:
                c.unsettled += 1
                c.notes.append(f"unsettled: cancelled {b.side} booking {b.ident} still has a counterpart")
        return c


def _output(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """What the process printed, once it has exited (killed if it takes over `timeout` s)."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return out, err + "\nchaos: syncd did not finish within the time bound; killed\n"


@contextmanager
def _admin(server: str) -> Iterator[Connection]:
    """A connection to the PostgreSQL server the campaign was given, in a transaction."""
    engine = create_engine(server)
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()
