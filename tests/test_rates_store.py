"""Learned change rates kept in the database (Alembic 0003), on SQLite and PostgreSQL:
a restarted service starts from what it had learned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import Engine, insert, select

from syncd.core.model import Room
from syncd.service.daemon import record_rates, ultimo_side_changes
from syncd.service.pacer import Pacer
from syncd.service.readplan import FULL, ReadGrant, ReadPolicy
from syncd.service.state import ServiceState
from syncd.store import db
from syncd.store.schema import RoomState
from syncd.ultimo.budget import DailyBudget

T0 = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
ROOMS = [Room("hot@example.com", "S-1"), Room("cold@example.com", "S-2")]


@pytest.fixture
def engine(db_urls: str):
    e = db.make_engine(db_urls)
    yield e
    e.dispose()


def pacer(clock: list[datetime]) -> Pacer:
    policy = ReadPolicy.for_budget(2000, 50, interval_seconds=60.0)
    return Pacer(policy, [r.mailbox for r in ROOMS], DailyBudget(None, 2000), level=0.0, now=lambda: clock[0],
                 hold_off=0.0)


def service_state(engine: Engine, p: Pacer) -> ServiceState:
    state = ServiceState(ROOMS, now=lambda: T0, base=60.0, cap=600.0, stuck_seconds=900.0)
    state.load(engine, p)
    return state


def test_migration_0003_adds_the_rate_columns_and_keeps_the_rows(engine: Engine) -> None:
    cfg = db._alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
    with engine.begin() as conn:
        conn.execute(insert(RoomState.__table__).values(room="hot@example.com", space_id="S-1", ultimo_seen=40))
    assert db.upgrade(engine) == db.head_revision()
    with engine.connect() as conn:
        row = conn.execute(select(RoomState)).one()
    assert (row.room, row.ultimo_seen, row.ultimo_changes, row.ultimo_exposure_s, row.rates_at) == \
        ("hot@example.com", 40, None, None, None)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
    assert db.current_revision(engine) == "0002"


def test_a_restarted_service_starts_from_the_rates_it_learned(engine: Engine) -> None:
    db.upgrade(engine)
    with engine.begin() as conn:
        for r in ROOMS:
            conn.execute(insert(RoomState.__table__).values(room=r.mailbox, space_id=r.space_id, ultimo_seen=40,
                                                            ultimo_read_at=T0 - timedelta(days=1)))
    clock = [T0]
    first = pacer(clock)
    service_state(engine, first)
    planner = first.planner
    assert planner._rate("hot@example.com") == pytest.approx(planner._rate("cold@example.com"))
    t = T0
    for hour in range(1, 25):
        t = clock[0] = T0 + timedelta(hours=hour)
        _, full = planner.windows(t)
        for r in ROOMS:
            first.done(ReadGrant(r.mailbox, FULL, full, 1), ok=True, rows=40,
                       found=4 if r.mailbox.startswith("hot") else 0)
    learned = planner._rate("hot@example.com"), planner._rate("cold@example.com")
    assert learned[0] > 5 * learned[1]
    record_rates(engine, first.take_rates())
    assert first.take_rates() == {}               # nothing new to keep

    second = pacer([t])                            # the restart
    service_state(engine, second)
    again = second.planner._rate("hot@example.com"), second.planner._rate("cold@example.com")
    # The counts come back exactly; the spread of rates is fitted to them again, to within a
    # percent of where the running service's fit had got.
    assert second.planner.rates.state("hot@example.com") == planner.rates.state("hot@example.com")
    assert again == pytest.approx(learned, rel=0.01)
    with engine.connect() as conn:
        rows = {r.room: r for r in conn.execute(select(RoomState))}
    assert rows["hot@example.com"].rates_at == t


def test_changes_found_are_the_calendar_writes_ultimo_side_changes_caused() -> None:
    from syncd.engine.cycle import RoomResult

    result = RoomResult(ROOMS[0])
    result.writes.update(exchange_created=2, exchange_moved=1, exchange_removed=1, ultimo_created=5, linked=3)
    assert ultimo_side_changes(result) == 4
