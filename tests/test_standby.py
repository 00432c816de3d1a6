"""A standby that takes over (issue 9): `syncd run --standby` on PostgreSQL.

The end-to-end test runs two real `syncd run` processes against one PostgreSQL schema and
both sandboxes: the active one is SIGKILLed while its create is held in Ultimo (performed,
answer not yet sent); the standby takes the instance lock, settles the interrupted create
from the journal and converges with no duplicate on either side. On SQLite `--standby` is
refused with one line and exit 2."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import text
from syncharness import World, at
from test_daemon import eventually

from syncd.commands.cli import main
from syncd.service import lock

C25, D12 = "room.c25@example.com", "room.d12@example.com"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with World(tmp_path) as w:
        yield w


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """`python -m syncd --config CONFIG run [--standby]` with its own health port and log file."""

    def __init__(self, raw: dict[str, Any], folder: Path, name: str, *extra: str) -> None:
        self.port = free_port()
        cfg = json.loads(json.dumps(raw))
        cfg["service"] = {"health_listen": f"127.0.0.1:{self.port}", "shutdown_grace_seconds": 10}
        cfg["logging"] = {"level": "info", "format": "json"}
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        self.log = folder / f"{name}.log"
        self._log = self.log.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "syncd", "--config", str(path), "run", *extra],
                                     stdout=subprocess.DEVNULL, stderr=self._log,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def health(self) -> dict[str, Any] | None:
        try:
            answer = httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2)
        except httpx.HTTPError:
            return None
        return {"code": answer.status_code, **answer.json()}

    def events(self) -> list[dict[str, Any]]:
        lines = self.log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def test_the_standby_takes_over_from_a_killed_service_and_books_nothing_twice(
        world: World, tmp_path: Path, pg_schema_url: str) -> None:
    raw = json.loads(json.dumps(world.raw))
    raw["database"]["url"] = pg_schema_url
    raw["sync"]["interval_seconds"] = 5
    world.ews.book(C25, subject="Before", start=at(1, 9), end=at(1, 10), organizer="alice@example.com")
    uid = world.ultimo.reserve("D-12", at(2, 14), at(2, 15), description="Inspection")

    active = Process(raw, tmp_path, "active")
    standby: Process | None = None
    try:
        eventually(lambda: (h := active.health()) and h["ready"] and h["role"] == "active", 60, "the active service")
        standby = Process(raw, tmp_path, "standby", "--standby")
        waiting = eventually(lambda: (h := standby.health()) and h["role"] == "standby" and h, 60, "the standby")
        assert waiting["code"] == 200 and waiting["ready"] is False
        eventually(lambda: world.ultimo.reservations("C-25"), 60, "the Exchange booking in Ultimo")
        eventually(lambda: world.events_for_reservation(D12, uid), 60, "the Ultimo reservation in Exchange")
        eventually(lambda: any(e.get("event") == "service.standby_waiting" for e in standby.events()), 30,
                   "the standby to log what it waits for")

        # The next create is performed by Ultimo but its answer is held back 30 s: the active
        # service is killed while it waits for it.
        world.ultimo.inject("slow", workflow="create", delay=30)
        creates = world.ultimo.calls("create")
        world.ews.book(C25, subject="During", start=at(3, 9), end=at(3, 10))
        eventually(lambda: world.ultimo.calls("create") > creates, 60, "the held create to reach Ultimo")
        active.proc.send_signal(signal.SIGKILL)
        active.proc.wait(10)
        killed = time.monotonic()

        took = eventually(lambda: (h := standby.health()) and h["role"] == "active" and h["ready"] and h, 60,
                          "the standby to take over")
        assert took["code"] == 200
        over = next(e for e in standby.events() if e.get("event") == "service.took_over")
        assert over["lock"].startswith("PostgreSQL advisory lock")
        assert time.monotonic() - killed < 60

        # Made after the takeover: synced by the new active instance.
        world.ews.book(D12, subject="After", start=at(4, 9), end=at(4, 10))
        eventually(lambda: len(world.ultimo.reservations("C-25")) == 2 and world.ultimo.reservations("D-12")
                   and len(world.ultimo.reservations("D-12")) == 2, 90, "every Exchange booking in Ultimo")
    finally:
        killed_status = active.stop()
        status = standby.stop() if standby is not None else None
    assert killed_status == -signal.SIGKILL
    assert status == 0

    # No duplicate on either side, not even one cleaned up later: every create Ultimo
    # performed is a live reservation, one per Exchange booking; one event per reservation.
    live = world.ultimo.reservations()
    performed = [c for c in world.ultimo.journal if c.workflow == "REST_CreateReservation" and c.status == 200]
    assert len(performed) == 3 and len(live) == 4                   # 3 from Exchange, 1 made in Ultimo
    assert all(n == 1 for n in Counter(r["external_id"] for r in live if r["external_id"]).values())
    assert [e.stamp for e in world.events_for_reservation(D12, uid)] and len(world.events_for_reservation(D12, uid)) == 1
    assert world.ews.calls(op="CreateItem") == 1
    assert world.open_conflicts() == []


def test_a_standby_waiting_for_a_killed_holder_takes_the_lock_at_once(pg_schema_url: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; from syncd.service import lock; held = lock.acquire(sys.argv[1]); "
         "print('held', flush=True); sys.stdin.read()", pg_schema_url],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        stop = threading.Event()
        refusals: list[str] = []
        got: list[lock.InstanceLock] = []
        waiter = threading.Thread(target=lambda: got.append(lock.acquire(pg_schema_url, stop=stop,
                                                                         waiting=refusals.append, poll=0.2)))
        waiter.start()
        eventually(lambda: len(refusals) >= 2, 20, "the standby to be refused while the holder lives")
        assert "server process" in refusals[0]
        child.kill()
        child.wait(10)
        killed = time.monotonic()
        waiter.join(20)
        assert got, "the standby never took the lock"
        assert time.monotonic() - killed < lock.TAKEOVER_SECONDS
        held = got[0]
        try:
            assert held.held()
            # The session asks the server for keepalives: a vanished machine frees the lock.
            conn = held._conn   # noqa: SLF001 - the lock's own session
            assert conn.execute(text("SHOW tcp_keepalives_idle")).scalar() == "5"
            assert conn.execute(text("SHOW tcp_user_timeout")).scalar() in ("10s", "10000")
        finally:
            held.release()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_standby_asked_to_stop_while_waiting_ends_without_the_lock(pg_schema_url: str) -> None:
    with lock.acquire(pg_schema_url):
        stop = threading.Event()
        stop.set()
        with pytest.raises(lock.StandbyStopped):
            lock.acquire(pg_schema_url, stop=stop)


@pytest.mark.parametrize("how", ["flag", "config"])
def test_standby_on_sqlite_is_refused_with_one_line_and_exit_2(world: World, tmp_path: Path, capsys, how: str) -> None:
    raw = json.loads(json.dumps(world.raw))
    if how == "config":
        raw["service"] = {"standby": True}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    capsys.readouterr()
    status = main(["--config", str(path), "run", *(["--standby"] if how == "flag" else [])])
    out, err = capsys.readouterr()
    assert status == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "standby" in lines[0] and "PostgreSQL" in lines[0], err
    assert "Traceback" not in err
