"""Scale run: a full reconcile against both sandboxes for growing numbers of rooms and
bookings per room, through the real exchangelib and httpx clients over loopback.

For each size it prints: wall time of the first reconcile (which copies every booking
to the other side) and of a second one (nothing changed: the steady state), calls per
side, Ultimo Gets per room against the provable minimum (every page under the page
limit: ceil(rows / 99) per room), syncd's CPU per booking (the reconciling thread's own
time: the sandboxes run in threads of their own), database commits per write and the
time spent in them (each is written through to disk, so this follows how busy the disk
is), time spent in the pure planner, and the peak memory of the process that ran the size
(each size runs in a process of its own). Figures, not assertions. The sandbox's daily
limit is raised out of the way (the benchmark measures syncd, not the quota), and the
Ultimo sandbox indexes reservations by space, so its own cost grows linearly.

    python benchmarks/scale.py                       # default sizes
    python benchmarks/scale.py --sizes 100x300 1000x30   # about 8 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import io
import math
import multiprocessing
import random
import resource
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml
from sqlalchemy import event

import syncd.engine.cycle as cycle
from syncd.calendars.ews.backend import EwsCalendar
from syncd.commands.reconcile import reconcile
from syncd.config.load import load_config
from syncd.engine.cycle import SyncEngine
from syncd.logs import configure
from syncd.sandbox.ews.server import EwsSandbox
from syncd.sandbox.ultimo.server import UltimoSandbox
from syncd.store.db import open_database
from syncd.ultimo.budget import DailyBudget, RateLimiter
from syncd.ultimo.client import UltimoClient

ZONE = ZoneInfo("Europe/Amsterdam")
PLANNER_SECONDS = [0.0]
PAGE = 100


def _timed_planner():  # noqa: ANN202
    inner = cycle.plan_room

    def timed(snapshot, policy):  # noqa: ANN001, ANN202
        t = time.perf_counter()
        try:
            return inner(snapshot, policy)
        finally:
            PLANNER_SECONDS[0] += time.perf_counter() - t

    cycle.plan_room = timed


def seed(ultimo: UltimoSandbox, ews: EwsSandbox, rooms: int, per_room: int, rng: random.Random) -> list[dict]:
    """`per_room` bookings per room over the next 30 days, two thirds made in Outlook, one
    third in Ultimo, never overlapping (so every one can be copied)."""
    base = datetime.now(ZONE).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    out = []
    for i in range(rooms):
        mailbox, space = f"room{i:04d}@example.com", f"S-{i:04d}"
        ultimo.add_space(space, preparation_minutes=0, cleanup_minutes=0)
        ews.add_mailbox(mailbox)
        out.append({"mailbox": mailbox, "space_id": space})
        slots = rng.sample(range(30 * 20), per_room)  # 20 half-hour-apart slots a day, 07:00-17:00
        for n, slot in enumerate(slots):
            start = base + timedelta(days=slot // 20, hours=7, minutes=30 * (slot % 20))
            end = start + timedelta(minutes=25)
            if n % 3 == 2:
                ultimo.reserve(space, start, end, description=f"Ultimo booking {n}", force=True)
            else:
                ews.book(mailbox, subject=f"Meeting {n}", start=start, end=end,
                         organizer=f"user{n % 50}@example.com")
    return out


def run_size(rooms: int, per_room: int) -> dict:
    rng = random.Random(rooms * 1000 + per_room)
    with tempfile.TemporaryDirectory() as tmp, \
            UltimoSandbox(rate_limit=10**9, daily_limit=10**9) as ultimo, EwsSandbox(users={"svc@example.com": "pw"}, auth="basic") as ews:
        t0 = time.perf_counter()
        room_cfg = seed(ultimo, ews, rooms, per_room, rng)
        seeding = time.perf_counter() - t0
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump({
            "database": {"url": "sqlite:///bench.db"},
            "ultimo": {"base_url": ultimo.url, "api_key": "sandbox-key", "daily_call_budget": 10000,
                       "calls_per_10s": 100},
            "calendar": {"ews": {"endpoint": ews.url, "auth": "basic", "username": "svc@example.com",
                                 "password": "pw", "server_version": "15.1.2507.6"}},
            "rooms": room_cfg, "applicants": {"default": "ULTIMO"},
            "sync": {"past_days": 1, "future_days": 31, "max_cancellations_per_cycle": 1000},
            "logging": {"level": "error"},
        }))
        cfg, _ = load_config(str(path))
        engine = open_database(cfg)
        # The benchmark measures syncd, not the quota: no rate limit, a budget it cannot spend.
        client = UltimoClient(cfg.ultimo, budget=DailyBudget(None, 10**9), limiter=RateLimiter(10**9, 10.0))
        sync = SyncEngine(cfg, engine, calendar=EwsCalendar(cfg.calendar.ews), ultimo=client)
        figures = {"rooms": rooms, "per_room": per_room, "seed_s": seeding}
        commits, commit_seconds = [0], [0.0]
        event.listen(engine, "commit", lambda conn: commits.__setitem__(0, commits[0] + 1))
        engine.dialect.do_commit = _timed_commit(engine.dialect.do_commit, commit_seconds)
        for label in ("first", "steady"):
            PLANNER_SECONDS[0] = 0.0
            ews.clear_journal()
            ultimo.clear_journal()
            commits[0], commit_seconds[0] = 0, 0.0
            t, cpu = time.perf_counter(), time.thread_time()
            status, results = reconcile(cfg, out=io.StringIO(), sync=sync)
            figures[f"{label}_s"] = time.perf_counter() - t
            figures[f"{label}_cpu_ms_per_booking"] = (time.thread_time() - cpu) * 1000 / (rooms * per_room)
            figures[f"{label}_gets"] = ultimo.calls("get")
            figures[f"{label}_commits"] = commits[0]
            figures[f"{label}_commit_s"] = commit_seconds[0]
            figures["least_gets"] = sum(max(1, math.ceil(len(ultimo.reservations(r["space_id"])) / (PAGE - 1)))
                                        for r in room_cfg)
            figures[f"{label}_planner_s"] = PLANNER_SECONDS[0]
            figures[f"{label}_ultimo_calls"] = ultimo.calls()
            figures[f"{label}_ews_calls"] = ews.calls()
            figures[f"{label}_writes"] = sum(sum(r.writes.values()) for r in results)
            figures[f"{label}_status"] = status
        sync.close()
        engine.dispose()
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return figures


def _timed_commit(commit, total: list[float]):  # noqa: ANN001, ANN202
    def timed(dbapi_connection):  # noqa: ANN001, ANN202
        t = time.perf_counter()
        try:
            return commit(dbapi_connection)
        finally:
            total[0] += time.perf_counter() - t

    return timed


def _run_in_child(rooms: int, per_room: int, out) -> None:  # noqa: ANN001
    out.send(run_size(rooms, per_room))
    out.close()


def run_size_alone(rooms: int, per_room: int) -> dict:
    """run_size in a process of its own, so that its peak memory is its own."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_run_in_child, args=(rooms, per_room, send))
    child.start()
    send.close()
    try:
        figures = receive.recv()
    except EOFError:
        child.join()
        raise SystemExit(f"scale: the run of {rooms}x{per_room} died (exit status {child.exitcode})") from None
    child.join()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["10x30", "10x300", "50x300"],
                        help="ROOMSxBOOKINGS_PER_ROOM, e.g. 100x300")
    args = parser.parse_args(argv)
    configure("error", "console")
    _timed_planner()
    print("Scale run: full reconcile against both sandboxes (real exchangelib + httpx over loopback)")
    head = (f"{'rooms':>6} {'bookings':>9} | {'first s':>8} {'writes':>7} {'ultimo':>7} {'ews':>7} {'planner s':>9} "
            f"{'cpu ms/b':>8} {'commit/w':>8} {'commits s':>9} | {'steady s':>8} {'ultimo':>6} {'ews':>6} {'planner s':>9} "
            f"{'cpu ms/b':>8} | {'gets/room 1st':>13} {'steady':>6} {'least':>6} | {'peak MB':>7}")
    print(head)
    print("-" * len(head))
    for size in args.sizes:
        rooms, per_room = (int(x) for x in size.lower().split("x"))
        f = run_size_alone(rooms, per_room)
        print(f"{rooms:>6} {rooms * per_room:>9} | {f['first_s']:>8.1f} {f['first_writes']:>7} "
              f"{f['first_ultimo_calls']:>7} {f['first_ews_calls']:>7} {f['first_planner_s']:>9.3f} "
              f"{f['first_cpu_ms_per_booking']:>8.2f} {f['first_commits'] / max(1, f['first_writes']):>8.2f} "
              f"{f['first_commit_s']:>9.1f} | "
              f"{f['steady_s']:>8.1f} {f['steady_ultimo_calls']:>6} {f['steady_ews_calls']:>6} "
              f"{f['steady_planner_s']:>9.3f} {f['steady_cpu_ms_per_booking']:>8.2f} | "
              f"{f['first_gets'] / rooms:>13.2f} {f['steady_gets'] / rooms:>6.2f} {f['least_gets'] / rooms:>6.2f} | "
              f"{f['peak_rss_mb']:>7.0f}", flush=True)
    print("first: copies every booking to the other side; steady: a second reconcile with nothing changed.")
    print("ews counts HTTP requests the sandbox served (including the GetFolder calls of each room's first use).")
    print("gets/room: Ultimo Gets per room (1st: halving, nothing known yet; steady: cut by the first read's rows);"
          " least: the provable minimum, every page under 100 rows.")
    print("cpu ms/b: CPU of the reconciling thread per booking; commit/w: database commits per write;"
          " commits s: wall time spent committing (written through to disk).")
    print("peak MB: the peak memory of the process that ran the size.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
