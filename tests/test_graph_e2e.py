"""End to end on Microsoft Graph: `syncd check`, `syncd reconcile` and `syncd run` with
`calendar.backend: graph` against the Graph sandbox (TLS, its own CA) and the Ultimo sandbox,
with the documented exit statuses; and convergence through 429 storms, lost delta rounds and
expired tokens (no duplicate, no lost booking). People act on the rooms through the EWS
sandbox, which serves the same calendars."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from syncharness import GRAPH_CLIENT_ID, GRAPH_SECRET, ROOMS, World, at

from syncd.commands.cli import main
from syncd.core.model import stamp_for_reservation

C25, D12 = ROOMS[0][0], ROOMS[1][0]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with World(tmp_path, backend="graph") as w:
        yield w


def write_config(world: World, **changes: Any) -> Path:
    raw = json.loads(json.dumps(world.raw))
    raw["ultimo"]["max_retries"] = 0
    for section, keys in changes.items():
        target = raw
        for part in section.split("."):
            target = target[part]
        target.update(keys)
    path = world.folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def syncd(world: World, capsys: pytest.CaptureFixture[str], *args: str, **changes: Any) -> tuple[int, str, str]:
    path = write_config(world, **changes)
    capsys.readouterr()
    status = main(["--config", str(path), *args])
    out, err = capsys.readouterr()
    return status, out, err


def line_for(out: str, mailbox: str) -> str:
    lines = [line for line in out.splitlines() if line.startswith(mailbox)]
    assert len(lines) == 1, out
    return lines[0]


def seed(world: World) -> str:
    world.ews.book(C25, subject="Team sync", start=at(1, 9), end=at(1, 10), organizer="alice@example.com")
    return world.ultimo.reserve("D-12", at(2, 14), at(2, 15), description="Inspection")


def assert_converged(world: World, meetings: dict[str, int], reservations: list[str]) -> None:
    """Each person's meeting has exactly one reservation; each reservation exactly one event."""
    for mailbox, count in meetings.items():
        people = [b for b in world.exchange_view(mailbox) if not b.stamp]
        assert len(people) == count
        for booking in people:
            assert len(world.reservations_for_booking(mailbox, booking.key)) == 1, booking
    for uid in reservations:
        owner = next(m for m, s in ROOMS if s == world.ultimo.reservation(uid)["space_id"])
        assert len(world.events_for_reservation(owner, uid)) == 1, uid


def test_check_names_token_scope_and_calendar_then_reconcile_syncs_each_way(world: World, capsys) -> None:
    uid = seed(world)

    status, out, _ = syncd(world, capsys, "check")
    assert status == 0, out
    for mailbox in (C25, D12):
        assert "token obtained, mailbox in the app's scope, calendar" in line_for(out, mailbox)
        assert f"Test-ServicePrincipalAuthorization -Identity {GRAPH_CLIENT_ID} -Resource {mailbox}" in out

    status, out, _ = syncd(world, capsys, "reconcile")
    assert status == 0, out
    assert "Ultimo 1 created" in line_for(out, C25)
    assert "Exchange 1 created" in line_for(out, D12)
    assert_converged(world, {C25: 1, D12: 0}, [uid])
    assert world.graph is not None and world.graph.calls(op="events.create") == 1
    status, out, _ = syncd(world, capsys, "reconcile")
    assert status == 0, out
    assert all("Ultimo 0 created" in line_for(out, m) and "Exchange 0 created" in line_for(out, m) for m in (C25, D12))


def test_a_wrong_client_secret_exits_3_with_one_line_and_cancels_nothing(world: World, capsys) -> None:
    uid = seed(world)
    assert syncd(world, capsys, "reconcile")[0] == 0

    status, out, err = syncd(world, capsys, "reconcile", **{"calendar.graph": {"client_secret": "Not-the-secret-42"}})
    assert status == 3, out + err
    assert "Not-the-secret-42" not in out + err and GRAPH_SECRET not in out + err
    assert "refused" in out and "invalid_client" in out
    assert world.ultimo.reservation(uid)["status"] != "Cancelled"
    assert len(world.ultimo.reservations("C-25")) == 1

    status, out, err = syncd(world, capsys, "check", **{"calendar.graph": {"client_secret": "Not-the-secret-42"}})
    assert status == 3, out + err
    assert "Traceback" not in out + err and "Not-the-secret-42" not in out + err


def test_a_room_outside_the_apps_scope_fails_alone_with_exit_1(world: World, capsys) -> None:
    uid = seed(world)
    assert world.graph is not None
    world.graph.set_scope(GRAPH_CLIENT_ID, {C25})

    status, out, _ = syncd(world, capsys, "reconcile")
    assert status == 1, out
    assert "Ultimo 1 created" in line_for(out, C25)
    assert "outside the app's scope" in out and D12 in out
    assert world.events_for_reservation(D12, uid) == []

    status, out, _ = syncd(world, capsys, "check")
    assert status == 1, out
    assert "outside the app's scope" in line_for(out, D12)
    assert "calendar ok" in line_for(out, C25)

    world.graph.set_scope(GRAPH_CLIENT_ID, None)       # the administrator adds it to the scope
    assert syncd(world, capsys, "reconcile")[0] == 0
    assert len(world.events_for_reservation(D12, uid)) == 1


def test_throttling_storms_lost_rounds_and_expired_tokens_converge(world: World) -> None:
    graph = world.graph
    assert graph is not None
    uids = [world.ultimo.reserve("C-25", at(2, 8 + 2 * i), at(2, 8 + 2 * i, 30), description=f"Block {i}") for i in range(3)]
    uids.append(world.ultimo.reserve("D-12", at(3, 9), at(3, 10), description="Inspection"))
    for i in range(3):
        world.ews.book(D12, subject=f"Meeting {i}", start=at(1, 8 + 2 * i), end=at(1, 8 + 2 * i, 45))
    sync = world.engine()

    # A storm: every request of either room answered 429 (Retry-After 1 s) 40 times over; the
    # budget (1.5 s) lets one wait through, so some operations succeed and others fail.
    graph.inject("http429", count=40, retry_after=1)
    stormy = []
    for _ in range(4):
        stormy += world.reconcile()
        for room in sync.rooms:
            try:
                sync.exchange_changed(room)
            except Exception:  # noqa: BLE001 - throttled checks fail; the rooms back off
                pass
    assert any(not r.ok for r in stormy) and any(c.status == 429 for c in graph.requests())
    graph.faults.clear()
    # Then the rounds are lost and the tokens expire.
    graph.forget_sync_states()
    graph.expire_tokens()
    for mailbox in (C25, D12):      # the stored round is gone, and the new round is lost once too
        graph.inject("sync_state_not_found", count=2, op="delta", mailbox=mailbox)
    assert all(sync.exchange_changed(room) for room in sync.rooms)   # a new round: changed
    graph.faults.clear()
    for _ in range(3):
        results = world.reconcile()
    assert all(r.ok for r in results), [r.errors for r in results]
    assert all(sum(r.writes.values()) == 0 for r in results)
    for room in sync.rooms:           # syncd's own writes since the last check show once ...
        sync.exchange_changed(room)
    assert not any(sync.exchange_changed(room) for room in sync.rooms)   # ... then quiet
    assert_converged(world, {C25: 0, D12: 3}, uids)
    assert len(world.ultimo.reservations("D-12")) == 4


def test_syncd_run_on_graph_at_debug_syncs_and_stops_with_0_printing_no_secret(world: World,
                                                                               tmp_path: Path) -> None:
    uid = seed(world)
    path = write_config(world, sync={"interval_seconds": 5}, logging={"level": "debug", "format": "json"})
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("NOTIFY_SOCKET", None)
    proc = subprocess.Popen([sys.executable, "-m", "syncd", "--config", str(path), "run"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (world.ultimo.reservations("C-25") and world.events_for_reservation(D12, uid)):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the service did not sync both ways"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    [event] = world.events_for_reservation(D12, uid)
    assert event.stamp == stamp_for_reservation(uid)
    text = out + err
    assert "graph_request" in text                    # it did log at debug, requests included
    assert GRAPH_SECRET not in text and "eyJ" not in text and "sandbox-key" not in text
