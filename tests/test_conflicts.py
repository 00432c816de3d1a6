"""The conflict store on real SQLite and (with SYNCD_TEST_POSTGRES_URL) real PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from syncd.core.model import (
    CHANGED_ON_BOTH_SIDES,
    RESERVATION_IN_PAST,
    ROOM_UNAVAILABLE,
    ConflictInfo,
    Room,
)
from syncd.engine import conflicts
from syncd.engine.journal import ApplyResult, Journal
from syncd.store.schema import Base, Conflict, Link

ROOM = "room.c25@example.com"
T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def session(request: pytest.FixtureRequest, tmp_path) -> Iterator[Session]:
    if request.param == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'conflicts.db'}")
        Base.metadata.create_all(engine)
        with Session(engine) as s:
            yield s
        engine.dispose()
        return
    url = os.environ.get("SYNCD_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("SYNCD_TEST_POSTGRES_URL is not set; PostgreSQL variant of the store tests skipped")
    # A schema of our own: other tests may use the same database at the same time.
    schema = f"test_conflicts_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    try:
        Base.metadata.create_all(engine)
        with Session(engine) as s:
            yield s
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def info(key: str = "uid-1", kind: str = ROOM_UNAVAILABLE, **kw) -> ConflictInfo:
    base = dict(
        kind=kind,
        message="Space C-25 is not available",
        booking_key=key,
        code="1015",
        subject="Budget review",
        organizer="alice@example.com",
        start=datetime(2026, 11, 23, 9, 0, tzinfo=UTC),
        end=datetime(2026, 11, 23, 10, 0, tzinfo=UTC),
    )
    base.update(kw)
    return ConflictInfo(**base)


def rec(session: Session, i: ConflictInfo, now: datetime, room: str = ROOM, link_id: int | None = None) -> int:
    cid = conflicts.record(session, room=room, space_id="C-25", info=i, link_id=link_id, now=now)
    session.commit()
    return cid


def all_rows(session: Session) -> list[Conflict]:
    session.expire_all()
    return list(session.scalars(select(Conflict).order_by(Conflict.id)))


def test_seen_again_updates_the_one_row(session: Session) -> None:
    first = rec(session, info(), T0)
    later = T0 + timedelta(minutes=5)
    moved = info(message="still taken", subject="Budget review (moved)",
                 start=datetime(2026, 11, 23, 11, 0, tzinfo=UTC), end=datetime(2026, 11, 23, 12, 0, tzinfo=UTC))
    again = rec(session, moved, later)

    assert again == first
    [row] = all_rows(session)
    assert row.status == "open"
    assert row.detected_at == T0          # first seen stays
    assert row.last_seen_at == later
    assert row.message == "still taken"
    assert row.subject == "Budget review (moved)"
    assert row.start == datetime(2026, 11, 23, 11, 0, tzinfo=UTC)
    assert row.end == datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_other_kind_or_room_or_booking_is_another_conflict(session: Session) -> None:
    ids = {
        rec(session, info(), T0),
        rec(session, info(kind=CHANGED_ON_BOTH_SIDES, code=None), T0),
        rec(session, info(), T0, room="room.b12@example.com"),
        rec(session, info(key="uid-2"), T0),
    }
    assert len(ids) == 4
    assert len(all_rows(session)) == 4
    assert conflicts.count_open(session) == 4


def test_resolve_then_seen_again_reopens_the_same_id(session: Session) -> None:
    cid = rec(session, info(), T0)
    resolved_at = T0 + timedelta(hours=1)
    assert conflicts.resolve(session, room=ROOM, booking_key="uid-1", now=resolved_at) == 1
    session.commit()
    [row] = all_rows(session)
    assert (row.status, row.resolved_at) == ("resolved", resolved_at)
    assert conflicts.count_open(session) == 0

    back = T0 + timedelta(hours=2)
    assert rec(session, info(message="taken again"), back) == cid
    [row] = all_rows(session)
    assert (row.status, row.resolved_at, row.detected_at, row.last_seen_at) == ("open", None, T0, back)
    assert row.message == "taken again"


def test_resolve_only_named_kinds_and_only_open_ones(session: Session) -> None:
    rec(session, info(), T0)
    rec(session, info(kind=RESERVATION_IN_PAST, code="1166"), T0)
    rec(session, info(key="uid-2"), T0)

    n = conflicts.resolve(session, room=ROOM, booking_key="uid-1", now=T0, kinds=[RESERVATION_IN_PAST])
    session.commit()
    assert n == 1
    assert {(r.booking_key, r.kind, r.status) for r in all_rows(session)} == {
        ("uid-1", ROOM_UNAVAILABLE, "open"),
        ("uid-1", RESERVATION_IN_PAST, "resolved"),
        ("uid-2", ROOM_UNAVAILABLE, "open"),
    }
    # Already resolved, unknown booking, other room, empty kinds: nothing to do.
    assert conflicts.resolve(session, room=ROOM, booking_key="uid-1", now=T0, kinds=[RESERVATION_IN_PAST]) == 0
    assert conflicts.resolve(session, room=ROOM, booking_key="nope", now=T0) == 0
    assert conflicts.resolve(session, room="other@example.com", booking_key="uid-1", now=T0) == 0
    assert conflicts.resolve(session, room=ROOM, booking_key="uid-1", now=T0, kinds=[]) == 0
    assert conflicts.count_open(session) == 2


def test_open_for_room_lists_that_rooms_open_ones_oldest_first(session: Session) -> None:
    b = rec(session, info(key="b"), T0 + timedelta(minutes=2))
    a = rec(session, info(key="a"), T0)
    rec(session, info(key="c"), T0, room="room.b12@example.com")
    done = rec(session, info(key="d"), T0)
    conflicts.resolve(session, room=ROOM, booking_key="d", now=T0)
    session.commit()
    assert [c.id for c in conflicts.open_for_room(session, ROOM)] == [a, b]
    assert done not in [c.id for c in conflicts.open_for_room(session, ROOM)]
    assert conflicts.open_for_room(session, "nobody@example.com") == []


def test_query_open_all_and_since(session: Session) -> None:
    old = rec(session, info(key="old"), T0 - timedelta(days=3))
    gone = rec(session, info(key="gone"), T0 - timedelta(days=1))
    new = rec(session, info(key="new"), T0 + timedelta(hours=1))
    conflicts.resolve(session, room=ROOM, booking_key="gone", now=T0)
    session.commit()

    assert [c.id for c in conflicts.query(session, include_resolved=False, since=None)] == [old, new]
    assert [c.id for c in conflicts.query(session, include_resolved=True, since=None)] == [old, gone, new]
    since = T0 - timedelta(days=2)
    assert [c.id for c in conflicts.query(session, include_resolved=True, since=since)] == [gone, new]
    assert [c.id for c in conflicts.query(session, include_resolved=False, since=since)] == [new]
    # `since` in another zone means the same instant.
    amsterdam = since.astimezone(ZoneInfo("Europe/Amsterdam"))
    assert [c.id for c in conflicts.query(session, include_resolved=True, since=amsterdam)] == [gone, new]
    with pytest.raises(ValueError):
        conflicts.query(session, include_resolved=True, since=datetime(2026, 1, 1))


def test_times_come_back_aware_utc(session: Session) -> None:
    zone = ZoneInfo("Europe/Amsterdam")
    rec(session, info(start=datetime(2026, 11, 23, 10, 0, tzinfo=zone), end=datetime(2026, 11, 23, 11, 0, tzinfo=zone)),
        datetime(2026, 11, 20, 9, 0, tzinfo=zone))
    [row] = all_rows(session)
    assert row.start == datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    assert row.start.utcoffset() == timedelta(0)
    assert row.detected_at == datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    with pytest.raises(ValueError):
        conflicts.record(session, room=ROOM, space_id="C-25", info=info(), link_id=None, now=datetime(2026, 1, 1))


def test_missing_booking_details_are_kept_empty(session: Session) -> None:
    bare = ConflictInfo(kind=CHANGED_ON_BOTH_SIDES, message="edited on both sides", booking_key="uid-9")
    rec(session, bare, T0)
    [row] = all_rows(session)
    assert (row.code, row.subject, row.organizer, row.start, row.end, row.ultimo_id) == (None,) * 6


def test_link_and_ultimo_id_survive_a_sighting_without_them(session: Session) -> None:
    link = Link(room=ROOM, space_id="C-25", origin="exchange", exchange_key="uid-1", ultimo_id="R-77",
                start=T0, end=T0 + timedelta(hours=1), synced_hash="x")
    session.add(link)
    session.commit()
    cid = rec(session, info(ultimo_id="R-77"), T0, link_id=link.id)
    assert rec(session, info(), T0 + timedelta(minutes=1)) == cid
    [row] = all_rows(session)
    assert (row.link_id, row.ultimo_id) == (link.id, "R-77")


def test_a_pass_whose_commit_fails_does_not_count_the_conflicts_it_rolled_back(tmp_path) -> None:
    """A conflict is recorded with the pass's next transaction. When that transaction fails
    (the database refuses the commit), the conflict is not stored, and the pass's summary
    and its notices must not count it either: the next pass records it and counts it then."""
    engine = create_engine(f"sqlite:///{tmp_path / 'pass.db'}")
    Base.metadata.create_all(engine)
    journal = Journal()
    journal.sessions, journal.clock = sessionmaker(engine), lambda: T0
    room = Room(ROOM, "C-25")
    result = ApplyResult()
    journal._conflict(room, info("uid-1"), None, result)
    with journal._tx(result):
        pass                                             # committed: counted
    journal._conflict(room, info("uid-2"), None, result)

    @event.listens_for(engine, "commit")
    def refuse(conn) -> None:
        raise OperationalError("COMMIT", {}, Exception("disk I/O error"))

    with pytest.raises(OperationalError):
        with journal._tx(result):
            pass
    event.remove(engine, "commit", refuse)
    assert (result.conflicts_new, [c.booking_key for c in result.recorded]) == (1, ["uid-1"])
    with Session(engine) as s:
        assert [c.booking_key for c in s.scalars(select(Conflict))] == ["uid-1"]
    engine.dispose()
