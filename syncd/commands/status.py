"""`syncd status`: what the database says about each room and the Ultimo budget.

Reads only (the schema is not upgraded; a database behind the code says so). Per room:
when each side was last read and how stale that is now, open conflicts, and the last
error or halt. Then the Ultimo calls used today against `ultimo.daily_call_budget`,
what that budget allows per room, and whether a service holds the instance lock.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from syncd.config.schema import Config
from syncd.errors import AnotherInstanceRunning, SyncdError
from syncd.service import lock
from syncd.service.readplan import ReadPlanner, ReadPolicy, TokenBucket, human
from syncd.store import db
from syncd.store.schema import Conflict, RoomState, Run, UltimoBudget


def _when(t: datetime | None, now: datetime) -> str:
    if t is None:
        return "never"
    return f"{t:%Y-%m-%d %H:%M} UTC ({human(max(0.0, (now - t).total_seconds()))} ago)"


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip(), file=out)


def _read(engine: Engine, today: str) -> tuple[dict[str, RoomState], dict[str, int], int, Any]:
    with db.session_factory(engine)() as s:
        states = {r.room: r for r in s.scalars(select(RoomState))}
        open_counts = dict(s.execute(
            select(Conflict.room, func.count()).where(Conflict.status == "open").group_by(Conflict.room)
        ).tuples().all())
        spent = s.scalar(select(UltimoBudget.calls).where(UltimoBudget.day == today)) or 0
        last_run = s.scalars(select(Run).where(Run.kind == "service").order_by(Run.id.desc()).limit(1)).first()
        s.expunge_all()
    return states, {k: int(v) for k, v in open_counts.items()}, int(spent), last_run


def _service_line(cfg: Config, last_run: Any, now: datetime) -> str:
    try:
        held = lock.acquire(cfg.database.url)
    except AnotherInstanceRunning:
        if last_run is not None and last_run.finished_at is None:
            return f"Service: running, started {_when(last_run.started_at, now)}"
        return "Service: not running; another syncd process (a reconcile?) holds the instance lock"
    except SyncdError:
        return "Service: unknown (the instance lock cannot be checked)"
    held.release()
    if last_run is None:
        return "Service: not running (never ran against this database)"
    if last_run.finished_at is None:
        return f"Service: not running (the last run, started {_when(last_run.started_at, now)}, did not stop cleanly)"
    return f"Service: not running (last run ended {_when(last_run.finished_at, now)}, {last_run.status})"


def cmd_status(cfg: Config, args: Any, *, out: TextIO | None = None, now: datetime | None = None) -> int:
    """Print the status; gives 0 when every room is fine, 1 when a room's last sync
    failed or it is halted. Raises DatabaseError when the database cannot be read."""
    out = out or sys.stdout
    now = now or datetime.now(UTC)
    engine = db.open_database(cfg, upgrade_if_behind=False)
    try:
        states, open_counts, spent, last_run = _read(engine, now.date().isoformat())
        service = _service_line(cfg, last_run, now)
    except SQLAlchemyError as e:
        raise db.database_error(e, cfg.database.url, "read") from None
    finally:
        engine.dispose()

    rows = [["ROOM", "SPACE", "EXCHANGE READ", "ULTIMO READ", "CONFLICTS", "STATE"]]
    troubled = 0
    for room in cfg.rooms:
        st = states.get(room.mailbox)
        state = "ok"
        if st is None:
            state = "not synced yet"
        elif st.halted:
            state, troubled = f"halted: {st.halted}", troubled + 1
        elif st.last_error:
            state, troubled = f"error: {st.last_error}", troubled + 1
        rows.append([room.mailbox, room.space_id, _when(st.exchange_read_at if st else None, now),
                     _when(st.ultimo_read_at if st else None, now), str(open_counts.get(room.mailbox, 0)),
                     state[:120]])
    _table(rows, out)

    budget = cfg.ultimo.daily_call_budget
    print(file=out)
    print(f"Ultimo calls today ({now:%Y-%m-%d} UTC): {spent} of {budget} used ({100 * spent / budget:.0f} %), "
          f"{max(0, budget - spent)} left", file=out)
    policy = ReadPolicy.from_config(cfg)
    planner = ReadPlanner(policy, [r.mailbox for r in cfg.rooms], TokenBucket(policy.capacity, policy.rate, 0, now))
    for r in cfg.rooms:
        st = states.get(r.mailbox)
        planner.load(r.mailbox, ultimo_read_at=None, changed_at=None, rows=st.ultimo_seen if st else None)
    print(f"Budget plan: {planner.estimate(now).message()}", file=out)
    print(service, file=out)
    total_open = sum(open_counts.values())
    if total_open:
        print(f"Open conflicts: {total_open} (syncd conflicts list)", file=out)
    return 1 if troubled else 0

