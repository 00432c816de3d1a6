"""`syncd run` against both sandboxes on loopback.

In-process (the service on a thread, tiny intervals and back-offs): bookings cross both
ways, a failing room or system backs off without stopping the rest, a stop finishes the
write in flight. Out of process (`python -m syncd run`, marked slow): the real command
with sd_notify and the health endpoint, stopped by SIGTERM with exit status 0.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import select
from syncharness import ROOMS, World, at

from syncd import logs
from syncd.calendars.ews.backend import EwsCalendar
from syncd.commands.cli import main
from syncd.config.schema import Config
from syncd.engine.cycle import SyncEngine, start_run
from syncd.service import lock
from syncd.service.bucket import PacerSnapshot
from syncd.service.daemon import Service, ServiceOptions
from syncd.service.pacer import Pacer, save_snapshot
from syncd.service.rates import DayProfile
from syncd.store.db import session_factory
from syncd.store.schema import Run
from syncd.ultimo.budget import DailyBudget, RateLimiter
from syncd.ultimo.client import UltimoClient

C25, D12 = ROOMS[0][0], ROOMS[1][0]
FAST = ServiceOptions(backoff_base=0.05, backoff_cap=0.2, heartbeat_seconds=0.05, snapshot_seconds=0.1, hold_off=0)


def eventually(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll `check` until it gives something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def quick(cfg: Config, interval: float = 0.2) -> Config:
    """The configuration with an interval below the validated minimum (tests only)."""
    return cfg.model_copy(update={"sync": cfg.sync.model_copy(update={"interval_seconds": interval})})


def build_fast(cfg: Config, engine, pacer: Pacer, stop: threading.Event, run_id: int) -> SyncEngine:
    calendar = EwsCalendar(cfg.calendar.ews, retry_sleep=lambda _s: None, retry_wait=0.001)
    ultimo = UltimoClient(cfg.ultimo, budget=pacer, limiter=RateLimiter(10**6, 10.0), sleep=lambda _s: None,
                          backoff_base=0.001)
    return SyncEngine(cfg, engine, calendar=calendar, ultimo=ultimo, stop=stop, run_id=run_id)


class Running:
    """A Service on a background thread."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.status: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.status = self.service.run()
        except BaseException as e:  # noqa: BLE001 - reported by stop()
            self.error = e

    def stop(self, timeout: float = 15.0) -> int:
        self.service.request_stop("test")
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the service did not stop"
        if self.error is not None:
            raise self.error
        assert self.status is not None
        return self.status


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with World(tmp_path) as w:
        yield w


def start(cfg: Config, options: ServiceOptions = FAST) -> Running:
    running = Running(Service(cfg, options=options, build=build_fast))
    eventually(lambda: running.service.state.ready or running.error, what="the service to be ready")
    if running.error:
        raise running.error
    return running


def test_service_syncs_each_way_while_running_and_stops_with_0(world: World) -> None:
    world.ews.book(C25, subject="Before start", start=at(1, 9), end=at(1, 10), organizer="alice@example.com")
    running = start(quick(world.cfg))
    try:
        eventually(lambda: world.ultimo.reservations("C-25"), what="the Exchange booking in Ultimo")
        # Made while the service runs: each crosses within a few intervals.
        world.ews.book(D12, subject="During", start=at(2, 9), end=at(2, 10))
        uid = world.ultimo.reserve("C-25", at(3, 14), at(3, 15), description="Inspection")
        eventually(lambda: world.ultimo.reservations("D-12"), what="the new Exchange booking in Ultimo")
        eventually(lambda: world.events_for_reservation(C25, uid), what="the Ultimo reservation in Exchange")
        # The service counts a write once the room's pass is over, a moment after the write
        # is visible in the sandbox: wait for the counters, not for time.
        snap = eventually(lambda: (s := running.service.snapshot()).syncs >= 3
                          and s.writes.get("ultimo_created") == 2 and s.writes.get("exchange_created") == 1
                          and all(r.exchange_at is not None and r.ultimo_at is not None for r in s.rooms) and s,
                          what="the writes to be counted")
        assert snap.ready and snap.healthy, snap.reasons()
    finally:
        status = running.stop()
    assert status == 0
    # Stopped, nothing is in flight: the service's own count of Ultimo calls is Ultimo's.
    assert running.service.snapshot().ultimo_calls_today == world.ultimo.calls()
    with session_factory(world.db)() as s:
        [run] = s.scalars(select(Run).where(Run.kind == "service")).all()
        summary = json.loads(run.summary)
    assert run.status == "ok" and run.finished_at is not None
    assert summary["pacer"]["ledger_calls"] == world.ultimo.calls()
    assert summary["writes"]["ultimo_created"] == 2


def test_a_quiet_room_costs_one_calendar_check_per_interval_and_no_ultimo_call(world: World) -> None:
    # A small budget: after the first reads the pacer has nothing to spare for a while.
    cfg = quick(world.cfg, 0.1)
    cfg = cfg.model_copy(update={"ultimo": cfg.ultimo.model_copy(update={"daily_call_budget": 200})})
    running = start(cfg)
    try:
        pacer = running.service.state.pacer
        eventually(lambda: running.service.state.syncs >= 2 and pacer.planner.spare(datetime.now(UTC)) < 1,
                   what="the first reads to use what the pacer spares")
        eventually(lambda: not running.service.state.running_rooms(), what="jobs in flight to end")
        checks, others = world.ews.calls(op="SyncFolderItems"), world.ews.calls() - world.ews.calls(op="SyncFolderItems")
        ultimo = world.ultimo.calls()
        eventually(lambda: world.ews.calls(op="SyncFolderItems") >= checks + 10, what="ten more change checks")
        assert world.ews.calls() - world.ews.calls(op="SyncFolderItems") == others   # nothing but checks
        assert world.ultimo.calls() == ultimo
    finally:
        assert running.stop() == 0


def test_a_failing_room_backs_off_and_the_others_go_on(world: World) -> None:
    broken = "room.ghost@example.com"
    cfg = world.cfg.model_copy(update={"rooms": [*world.cfg.rooms, type(world.cfg.rooms[0])(
        mailbox=broken, space_id="G-1")]})
    world.ultimo.add_space("G-1")       # Ultimo knows it; Exchange has no such mailbox
    running = start(quick(cfg))
    try:
        eventually(lambda: running.service.state.errors["room"] >= 2, what="the ghost room to fail twice")
        world.ews.book(C25, subject="Still synced", start=at(1, 9), end=at(1, 10))
        eventually(lambda: world.ultimo.reservations("C-25"), what="the other room to sync")
        snap = running.service.snapshot()
        ghost = next(r for r in snap.rooms if r.mailbox == broken)
        assert ghost.failing
        assert snap.healthy               # one room failing is not an outage
    finally:
        assert running.stop() == 0


def test_a_failing_system_backs_off_reports_unhealthy_then_recovers(world: World) -> None:
    running = start(quick(world.cfg, 0.1))
    try:
        eventually(lambda: running.service.state.syncs >= 2, what="the first syncs")
        world.ultimo.inject("http503", count=10**6)
        world.ultimo.reserve("D-12", at(2, 14), at(2, 15), description="Inspection")
        eventually(lambda: not running.service.snapshot().healthy, what="ultimo to be reported failing")
        snap = running.service.snapshot()
        assert any("ultimo failing" in r for r in snap.reasons())
        [ultimo] = [s for s in snap.systems if s.name == "ultimo"]
        assert ultimo.backoff_until is not None and ultimo.consecutive_failures >= 3
        assert running.service.state.errors["ultimo"] >= 3 and running.service.state.errors["room"] == 0
        # A change in Exchange during the outage: checked (and the sync state moved on) but
        # not lost; it crosses once Ultimo answers again.
        checks = world.ews.calls(op="SyncFolderItems")
        world.ews.book(C25, subject="During the outage", start=at(1, 9), end=at(1, 10))
        eventually(lambda: world.ews.calls(op="SyncFolderItems") >= checks + 4, what="change checks")
        world.ultimo.faults.clear()
        eventually(lambda: running.service.snapshot().healthy, what="recovery")
        eventually(lambda: [e for e in world.exchange_view(D12) if e.stamp], what="the reservation in Exchange")
        eventually(lambda: world.ultimo.reservations("C-25"), what="the outage's Exchange booking in Ultimo")
    finally:
        assert running.stop() == 0


def test_stop_finishes_the_write_in_flight_and_commits_it(world: World) -> None:
    # Every create is answered 3 s late (within the client's 5 s timeout), so the stop lands
    # while the first is in flight even when this thread is slow to see it sent.
    world.ultimo.inject("slow", workflow="REST_CreateReservation", count=3, delay=3.0)
    for hour in (8, 10, 12):
        world.ews.book(C25, subject=f"At {hour}", start=at(1, hour), end=at(1, hour + 1))
    running = start(quick(world.cfg))
    eventually(lambda: world.ultimo.calls("REST_CreateReservation") >= 1, what="the first create to be sent")
    status = running.stop()
    assert status == 0
    # The create in flight completed and is linked; no other write started after the stop.
    assert len(world.ultimo.reservations("C-25")) == 1
    assert len([lk for lk in world.links(C25) if lk.ultimo_id]) == 1
    assert world.pending_journal() == []


def test_a_second_instance_on_the_same_database_refuses_to_start(db_urls: str, tmp_path: Path, capfd) -> None:
    (tmp_path / "w").mkdir()
    with World(tmp_path / "w") as w:
        raw = json.loads(json.dumps(w.raw))
        raw["database"]["url"] = db_urls
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(raw))
        with lock.acquire(db_urls):                 # the first instance
            status = main(["--config", str(path), "run"])
        _, err = capfd.readouterr()
    assert status == 1
    assert "another syncd service is already running against this database" in err


# --- the real command -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_syncd_run_command_notifies_reports_healthy_and_exits_0_on_sigterm(world: World, tmp_path: Path) -> None:
    port = free_port()
    raw = json.loads(json.dumps(world.raw))
    raw["sync"]["interval_seconds"] = 5
    raw["service"] = {"health_listen": f"127.0.0.1:{port}", "shutdown_grace_seconds": 10}
    raw["logging"] = {"level": "info", "format": "json"}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    world.ews.book(C25, subject="Team sync", start=at(1, 9), end=at(1, 10), organizer="alice@example.com")
    uid = world.ultimo.reserve("D-12", at(2, 14), at(2, 15), description="Inspection")

    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(30)
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "syncd", "--config", str(config), "run"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # A STATUS= line may come before READY=1 (the heartbeat starts first): wait for READY=1.
        messages: list[str] = []
        while not any("READY=1" in m for m in messages):
            messages.append(notify.recv(4096).decode())    # the socket's 30 s timeout bounds the wait
        health = f"http://127.0.0.1:{port}/healthz"
        eventually(lambda: world.ultimo.reservations("C-25"), 30, "the Exchange booking in Ultimo")
        eventually(lambda: world.events_for_reservation(D12, uid), 30, "the Ultimo reservation in Exchange")
        body = eventually(lambda: (r := httpx.get(health)).status_code == 200 and r.json(), 30, "healthy")
        assert body["ready"] is True and body["systems"]["ultimo"]["last_success"] is not None
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert f'syncd_room_staleness_seconds{{room="{C25}",side="exchange"}}' in metrics

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err[-3000:]
        assert time.monotonic() - started < 12
        while True:
            try:
                messages.append(notify.recv(4096).decode())
            except (TimeoutError, BlockingIOError):
                break
            notify.settimeout(0.5)
        assert any("STOPPING=1" in m for m in messages), messages
        events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        names = [e.get("event") for e in events]
        assert "service.ready" in names and "service.stopped" in names
        cycles = [e for e in events if e.get("event") == "room.cycle"]
        assert cycles and {"ultimo_calls", "writes", "conflicts_new", "exchange_lag_s"} <= set(cycles[0])
        assert "sandbox-password" not in err and "sandbox-key" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        notify.close()


# --- syncd status ---------------------------------------------------------------------------------


def write_config(world: World, path: Path) -> Path:
    path.write_text(yaml.safe_dump(world.raw))
    return path


def test_status_shows_rooms_budget_and_whether_the_service_runs(world: World, tmp_path: Path, capfd) -> None:
    config = write_config(world, tmp_path / "config.yaml")
    capfd.readouterr()
    assert main(["--config", str(config), "status"]) == 0
    out = capfd.readouterr().out
    assert "not synced yet" in out and "Service: not running (never ran against this database)" in out

    world.ews.book(C25, subject="Team sync", start=at(1, 9), end=at(1, 10))
    world.ultimo.reserve("C-25", at(1, 9, 30), at(1, 10, 30), description="Clash")   # a conflict to come
    running = start(quick(world.cfg))
    try:
        eventually(lambda: world.open_conflicts(C25), what="the clash to be recorded")
        eventually(lambda: running.service.state.syncs >= 4, what="a few syncs")
        capfd.readouterr()
        main(["--config", str(config), "status"])
        out = capfd.readouterr().out
        assert "Service: running, started" in out
    finally:
        assert running.stop() == 0
    capfd.readouterr()
    main(["--config", str(config), "status"])
    out = capfd.readouterr().out
    [c25] = [line for line in out.splitlines() if line.startswith(C25)]
    zone = at(0, 12).tzname()                                 # display.timezone: by default Ultimo's
    assert c25.count(f"{zone} (") == 2 and " ago)" in c25     # both sides read, with their staleness
    assert "  1  " in c25                                     # one open conflict
    assert f"Ultimo calls today ({datetime.now(UTC):%Y-%m-%d} UTC): {world.ultimo.calls()} of 10000 used" in out
    assert "Budget plan: Ultimo budget" in out
    assert "Service: not running (last run ended" in out and ", ok)" in out
    assert "Open conflicts: 1" in out
    assert "Times in Europe/Amsterdam" in out


def test_status_says_over_which_hours_reads_are_spread(world: World, tmp_path: Path, capfd) -> None:
    """Nothing learned: leaning to sync.busy_hours (evenly when they are the whole day).
    After a service kept a profile of office-hour changes: the hours, in display.timezone
    (Amsterdam: UTC 07-17 is 08:00-18:00 in winter)."""
    config = write_config(world, tmp_path / "config.yaml")
    capfd.readouterr()
    main(["--config", str(config), "status"])
    assert "Over the day: until syncd has read a whole day and learned when Ultimo bookings change, reads lean " \
        "to working hours (07:00-19:00" in capfd.readouterr().out
    world.raw.setdefault("sync", {})["busy_hours"] = "00:00-24:00"          # a site booking round the clock
    main(["--config", str(write_config(world, tmp_path / "always.yaml")), "status"])
    assert "reads are spread evenly over the day (sync.busy_hours: round the clock)" in capfd.readouterr().out
    profile = DayProfile()
    t0 = datetime(2026, 1, 5, tzinfo=UTC).timestamp()
    for hour in range(3 * 24):
        t = t0 + hour * 3600.0
        profile.observe(6 if hour % 24 in range(7, 17) else 0, [(t, t + 3600.0, 1.0)], t + 3600.0)
    now = datetime(2026, 1, 8, tzinfo=UTC)
    save_snapshot(world.db, start_run(world.db, "service", now), PacerSnapshot(0.0, now, "2026-01-08", 0,
                                                                             profile=profile.to_json()))
    main(["--config", str(config), "status"])
    out = capfd.readouterr().out
    assert "Over the day: Ultimo bookings change mostly 08:00-18:00: reads follow" in out, out


def test_status_exits_1_when_a_room_failed(world: World, tmp_path: Path, capfd) -> None:
    world.ultimo.inject("http503", count=10**6)
    world.reconcile()
    config = write_config(world, tmp_path / "config.yaml")
    capfd.readouterr()
    assert main(["--config", str(config), "status"]) == 1
    out = capfd.readouterr().out
    assert "error: reading Ultimo space C-25" in out


def _said_at_start(cfg: Config, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The service's log lines (JSON, at info) from a start and a stop."""
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    logs.configure("info", "json")
    try:
        start(cfg).stop()
    finally:
        logs.configure("error", "json")
    return [json.loads(line) for line in err.getvalue().splitlines() if line.startswith("{")]


def test_calls_made_before_the_start_are_named_when_they_leave_the_burst_short(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator who ran `syncd reconcile` first sees why the service's first reads are
    slow: the calls already made count against the day's budget."""
    small = quick(world.cfg)
    small = small.model_copy(update={"ultimo": small.ultimo.model_copy(update={"daily_call_budget": 100})})
    fresh = _said_at_start(small, monkeypatch)
    assert any(e["event"] == "service.ready" for e in fresh)
    assert not [e for e in fresh if e["event"] == "service.ultimo_calls_carried_over"]

    world.ews.book(C25, subject="Review", start=at(1, 9), end=at(1, 10))
    for _ in range(4):     # at least a Get per room each: more than the burst of 10, whatever the
        world.reconcile()  # first start left in its snapshot
    made = DailyBudget(world.db, 100).spent_today()
    [said] = [e for e in _said_at_start(small, monkeypatch) if e["event"] == "service.ultimo_calls_carried_over"]
    assert said["calls_last_24h"] == made and said["burst"] < said["burst_capacity"] / 2
    assert f"{made} Ultimo calls of the last 24 hours" in said["message"]
    assert "ultimo.daily_call_budget (100)" in said["message"]
