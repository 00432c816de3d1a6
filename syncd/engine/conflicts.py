"""The conflict store: conflicts as rows, one open row per booking and cause.

A conflict seen again on the next cycle updates its row instead of adding one, so the
report stays one line per problem however long it lasts. A resolved conflict that comes
back is reopened under its old id: the facility manager sees the same case again, not a
new one.

Every function works on a caller's SQLAlchemy `Session` and only flushes: the caller
owns the transaction and commits it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from syncd.core.model import Clash, ConflictInfo, utc
from syncd.store.schema import Conflict

OPEN = "open"
RESOLVED = "resolved"


def _utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value)


def record(
    session: Session,
    *,
    room: str,
    space_id: str,
    info: ConflictInfo,
    link_id: int | None,
    now: datetime,
) -> int:
    """Record `info` for `room` and give the conflict's id.

    The row for (room, booking_key, kind) is reused when there is one: an open row is
    refreshed (last_seen_at, message and booking details; detected_at is kept), a
    resolved row is reopened. Otherwise a new open row is added. Raises ValueError on a
    naive datetime."""
    now = utc(now)
    # Open first, then the newest: should history ever hold several rows for one key,
    # the live one wins and older resolved ones stay as they were.
    row = session.scalars(
        select(Conflict)
        .where(
            Conflict.room == room,
            Conflict.booking_key == info.booking_key,
            Conflict.kind == info.kind,
        )
        .order_by(case((Conflict.status == OPEN, 0), else_=1), Conflict.id.desc())
        .limit(1)
    ).first()
    if row is None:
        row = Conflict(
            room=room,
            booking_key=info.booking_key,
            kind=info.kind,
            detected_at=now,
            status=OPEN,
        )
        session.add(row)
    elif row.status != OPEN:
        row.status = OPEN
        row.resolved_at = None
    row.space_id = space_id
    row.last_seen_at = now
    row.message = info.message
    row.code = info.code
    row.subject = info.subject
    row.organizer = info.organizer
    row.start = _utc_or_none(info.start)
    row.end = _utc_or_none(info.end)
    # What it clashes with, as last seen; a sighting that cannot tell keeps what we had.
    if info.clashes_with:
        row.clashes_with = json.dumps([c.as_dict() for c in info.clashes_with], ensure_ascii=False)
    row.outcome = info.outcome
    # A later sighting may come from the side that does not know these; keep what we had.
    if info.ultimo_id is not None:
        row.ultimo_id = info.ultimo_id
    if link_id is not None:
        row.link_id = link_id
    session.flush()
    return row.id


def note_outcome(session: Session, *, room: str, booking_key: str, kind: str, outcome: str | None) -> None:
    """Say on the newest conflict of one booking and kind what syncd did about it (a decline);
    None takes a note back."""
    row = session.scalars(
        select(Conflict)
        .where(Conflict.room == room, Conflict.booking_key == booking_key, Conflict.kind == kind)
        .order_by(Conflict.id.desc())
        .limit(1)
    ).first()
    if row is not None:
        row.outcome = outcome
        session.flush()


def clashes_of(row: Conflict) -> list[Clash]:
    """The stored `clashes_with` of a conflict row ([] when none or unreadable)."""
    if not row.clashes_with:
        return []
    try:
        data = json.loads(row.clashes_with)
        return [Clash.from_dict(d) for d in data if isinstance(d, dict)]
    except (ValueError, TypeError):
        return []


def resolve(
    session: Session,
    *,
    room: str,
    booking_key: str,
    now: datetime,
    kinds: Iterable[str] | None = None,
) -> int:
    """Mark the open conflicts of one booking resolved (only `kinds`, when given) and
    give how many were resolved. Raises ValueError on a naive datetime."""
    now = utc(now)
    stmt = select(Conflict).where(
        Conflict.room == room,
        Conflict.booking_key == booking_key,
        Conflict.status == OPEN,
    )
    if kinds is not None:
        wanted = list(kinds)
        if not wanted:
            return 0
        stmt = stmt.where(Conflict.kind.in_(wanted))
    rows = session.scalars(stmt).all()
    for row in rows:
        row.status = RESOLVED
        row.resolved_at = now
    session.flush()
    return len(rows)


def open_for_room(session: Session, room: str) -> list[Conflict]:
    """The open conflicts of one room, oldest first."""
    return list(
        session.scalars(
            select(Conflict)
            .where(Conflict.room == room, Conflict.status == OPEN)
            .order_by(Conflict.detected_at, Conflict.id)
        )
    )


def count_open(session: Session) -> int:
    """How many conflicts are open, over all rooms."""
    return session.scalar(select(func.count()).select_from(Conflict).where(Conflict.status == OPEN)) or 0


def query(session: Session, *, include_resolved: bool, since: datetime | None) -> list[Conflict]:
    """The conflicts for a report, oldest first: the open ones (all with
    `include_resolved`), only those first detected at or after `since` when given.
    Raises ValueError when `since` is naive."""
    stmt = select(Conflict)
    if not include_resolved:
        stmt = stmt.where(Conflict.status == OPEN)
    if since is not None:
        stmt = stmt.where(Conflict.detected_at >= utc(since))
    return list(session.scalars(stmt.order_by(Conflict.detected_at, Conflict.id)))
