"""What `syncd status` shows, as data and as text.

    collect_status(cfg, engine)  -> dict     per room: when each side was last read, open
                                             conflicts, the last error or halt; the Ultimo
                                             calls used today against the budget, what that
                                             budget allows per room, whether a service runs
    render_status(data, out)     -> int      the text `syncd status` prints; gives its exit
                                             status (1 when a room failed or is halted)

The dict is JSON-ready (times as ISO 8601 strings): the service's health endpoint serves
it as /status, and `syncd status` renders the same dict whether it read the database itself
or asked the service.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from syncd.config.schema import Config
from syncd.errors import AnotherInstanceRunning, SyncdError
from syncd.service import lock
from syncd.service.pacer import last_snapshot
from syncd.service.readplan import PacerSnapshot, ReadPlanner, ReadPolicy, TokenBucket, human
from syncd.store import db
from syncd.store.schema import Conflict, RoomState, Run, UltimoBudget


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).isoformat()


def _when(text: str | None, now: datetime, tz: tzinfo = UTC) -> str:
    if text is None:
        return "never"
    t = datetime.fromisoformat(text).astimezone(tz)
    return f"{t:%Y-%m-%d %H:%M %Z} ({human(max(0.0, (now - t).total_seconds()))} ago)"


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


def _service_line(cfg: Config, last_run: Any, now: datetime, in_service: bool) -> str:
    def since(t: datetime | None) -> str:
        return _when(_iso(t), now, cfg.display_zone)

    if in_service:
        held = None
    else:
        try:
            held = lock.acquire(cfg.database.url)
        except AnotherInstanceRunning:
            held = None
            if last_run is None or last_run.finished_at is not None:
                return "Service: not running; another syncd process (a reconcile?) holds the instance lock"
        except SyncdError:
            return "Service: unknown (the instance lock cannot be checked)"
    if held is None:
        return f"Service: running, started {since(last_run.started_at if last_run else None)}"
    held.release()
    if last_run is None:
        return "Service: not running (never ran against this database)"
    if last_run.finished_at is None:
        return f"Service: not running (the last run, started {since(last_run.started_at)}, did not stop cleanly)"
    return f"Service: not running (last run ended {since(last_run.finished_at)}, {last_run.status})"


def collect_status(cfg: Config, engine: Engine, *, now: datetime | None = None,
                   in_service: bool = False) -> dict[str, Any]:
    """The status as JSON-ready data. `in_service`: asked inside the running service (which
    holds the instance lock itself). Raises DatabaseError when the database cannot be read."""
    now = now or datetime.now(UTC)
    try:
        states, open_counts, spent, last_run = _read(engine, now.date().isoformat())
        service = _service_line(cfg, last_run, now, in_service)
    except SQLAlchemyError as e:
        raise db.database_error(e, cfg.database.url, "read") from None
    rooms = []
    for room in cfg.rooms:
        st = states.get(room.mailbox)
        state, troubled = "ok", False
        if st is None:
            state = "not synced yet"
        elif st.halted:
            state, troubled = f"halted: {st.halted}", True
        elif st.last_error:
            state, troubled = f"error: {st.last_error}", True
        rooms.append({"mailbox": room.mailbox, "space_id": room.space_id,
                      "exchange_read_at": _iso(st.exchange_read_at if st else None),
                      "ultimo_read_at": _iso(st.ultimo_read_at if st else None),
                      "open_conflicts": open_counts.get(room.mailbox, 0), "state": state[:120], "troubled": troubled})
    policy = ReadPolicy.from_config(cfg)
    planner = ReadPlanner(policy, [r.mailbox for r in cfg.rooms], TokenBucket(policy.capacity, policy.rate, 0, now))
    for r in cfg.rooms:
        st = states.get(r.mailbox)
        planner.load(r.mailbox, ultimo_read_at=None, changed_at=None, rows=st.ultimo_seen if st else None)
    kept = _last_snapshot(engine)
    if kept is not None and kept.profile is not None:
        planner.load_profile(kept.profile, now)
    return {
        "now": now.isoformat(),
        "rooms": rooms,
        "ultimo": {"day": now.date().isoformat(), "calls_today": spent, "daily_budget": cfg.ultimo.daily_call_budget},
        "budget_plan": planner.estimate(now).message(),
        "day_profile": planner.day_message(cfg.display_zone, now),
        "service": service,
        "open_conflicts": sum(open_counts.values()),
        "timezone": cfg.display_zone.key,     # the zone people read times in (display.timezone)
    }


def _last_snapshot(engine: Engine) -> PacerSnapshot | None:
    try:
        return last_snapshot(engine)
    except SyncdError:
        return None        # the status shows what it can


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip(), file=out)


def render_status(data: dict[str, Any], out: TextIO) -> int:
    """Print `data` (from `collect_status`) as `syncd status` does; gives 0, or 1 when a
    room's last sync failed or it is halted."""
    now = datetime.fromisoformat(data["now"])
    zone = data.get("timezone") or "UTC"
    tz = ZoneInfo(zone)
    rows = [["ROOM", "SPACE", "EXCHANGE READ", "ULTIMO READ", "CONFLICTS", "STATE"]]
    for r in data["rooms"]:
        rows.append([r["mailbox"], r["space_id"], _when(r["exchange_read_at"], now, tz),
                     _when(r["ultimo_read_at"], now, tz), str(r["open_conflicts"]), r["state"]])
    _table(rows, out)
    u = data["ultimo"]
    spent, budget = u["calls_today"], u["daily_budget"]
    print(file=out)
    print(f"Ultimo calls today ({u['day']} UTC): {spent} of {budget} used ({100 * spent / budget:.0f} %), "
          f"{max(0, budget - spent)} left", file=out)
    print(f"Budget plan: {data['budget_plan']}", file=out)
    if data.get("day_profile"):
        print(f"Over the day: {data['day_profile']}", file=out)
    print(data["service"], file=out)
    if data["open_conflicts"]:
        print(f"Open conflicts: {data['open_conflicts']} (syncd conflicts list)", file=out)
    print(f"Times in {zone}; the Ultimo budget's day runs in UTC.", file=out)
    return 1 if any(r["troubled"] for r in data["rooms"]) else 0
