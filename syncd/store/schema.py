"""SQLAlchemy 2 models: everything syncd remembers between runs.

Every schema change is an Alembic revision in `migrations/`; a test checks that these
models and the migrations agree on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every database.

    Stored as naive UTC (SQLite has no zone support); naive input is refused."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):  # noqa: ANN001
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect):  # noqa: ANN001
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def now_utc() -> datetime:
    return datetime.now(UTC)


# Link states.
LINK_ACTIVE = "active"        # both sides exist (or the far side is read-only past)
LINK_CANCELLED = "cancelled"  # tombstone: cancelled on both sides; never resurrected
# Origins.
ORIGIN_EXCHANGE = "exchange"
ORIGIN_ULTIMO = "ultimo"
ORIGIN_BOTH = "both"          # linked on a first run: equal bookings already on both sides


class Link(Base):
    """One booking known on both sides: its Exchange identity and its UltimoId.

    `intent` names a remote write in flight for this link (set and committed before the
    write, cleared with the outcome after it); `journal` holds the full history."""

    __tablename__ = "links"
    __table_args__ = (
        UniqueConstraint("room", "exchange_key", name="uq_links_room_exchange_key"),
        UniqueConstraint("ultimo_id", name="uq_links_ultimo_id"),
        UniqueConstraint("external_id", name="uq_links_external_id"),
        UniqueConstraint("stamp", name="uq_links_stamp"),
        Index("ix_links_room_state", "room", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    room: Mapped[str] = mapped_column(String(320))
    space_id: Mapped[str] = mapped_column(String(100))
    origin: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default=LINK_ACTIVE)
    # Exchange side
    exchange_key: Mapped[str | None] = mapped_column(String(512))
    exchange_item_id: Mapped[str | None] = mapped_column(Text)
    exchange_change_key: Mapped[str | None] = mapped_column(String(256))
    stamp: Mapped[str | None] = mapped_column(String(128))
    # Ultimo side
    external_id: Mapped[str | None] = mapped_column(String(64))
    ultimo_id: Mapped[str | None] = mapped_column(String(64))
    # The last synced state (both sides agreed on these), UTC.
    start: Mapped[datetime] = mapped_column(UTCDateTime())
    end: Mapped[datetime] = mapped_column(UTCDateTime())
    synced_hash: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str | None] = mapped_column(Text)
    organizer: Mapped[str | None] = mapped_column(String(320))
    # Write in flight.
    intent: Mapped[str | None] = mapped_column(String(32))
    intent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=now_utc)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=now_utc, onupdate=now_utc)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class JournalEntry(Base):
    """Write-ahead journal: one row per remote write, committed before the write
    (`status='pending'`) and settled after it (`done` / `failed`)."""

    __tablename__ = "journal"
    __table_args__ = (Index("ix_journal_status", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    link_id: Mapped[int | None] = mapped_column(ForeignKey("links.id", ondelete="SET NULL"))
    room: Mapped[str] = mapped_column(String(320))
    side: Mapped[str] = mapped_column(String(16))      # ultimo | exchange
    action: Mapped[str] = mapped_column(String(16))    # create | move | cancel | decline
    payload: Mapped[str] = mapped_column(Text)         # JSON: what the write sends
    status: Mapped[str] = mapped_column(String(16), default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=now_utc)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Conflict(Base):
    """A booking syncd could not bring into agreement; the conflict report's rows.

    `booking_key` identifies the booking so the same cause seen again each cycle
    updates one row instead of adding another."""

    __tablename__ = "conflicts"
    __table_args__ = (Index("ix_conflicts_status", "status"), Index("ix_conflicts_key", "room", "booking_key"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    link_id: Mapped[int | None] = mapped_column(ForeignKey("links.id", ondelete="SET NULL"))
    room: Mapped[str] = mapped_column(String(320))
    space_id: Mapped[str] = mapped_column(String(100))
    booking_key: Mapped[str] = mapped_column(String(512))
    kind: Mapped[str] = mapped_column(String(64))
    code: Mapped[str | None] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text, default="")
    subject: Mapped[str | None] = mapped_column(Text)
    organizer: Mapped[str | None] = mapped_column(String(320))
    start: Mapped[datetime | None] = mapped_column(UTCDateTime())
    end: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ultimo_id: Mapped[str | None] = mapped_column(String(64))
    clashes_with: Mapped[str | None] = mapped_column(Text)   # JSON list (syncd.core.model.Clash.as_dict)
    outcome: Mapped[str | None] = mapped_column(Text)        # what syncd did about it, e.g. declined the meeting
    status: Mapped[str] = mapped_column(String(16), default="open")
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=now_utc)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=now_utc)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class RoomState(Base):
    """Per-room sync state: the calendar's sync token and when each side was last read."""

    __tablename__ = "room_state"

    room: Mapped[str] = mapped_column(String(320), primary_key=True)
    space_id: Mapped[str] = mapped_column(String(100))
    exchange_sync_state: Mapped[str | None] = mapped_column(Text)
    exchange_read_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ultimo_read_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    exchange_seen: Mapped[int | None] = mapped_column(Integer)   # bookings in the last full read
    ultimo_seen: Mapped[int | None] = mapped_column(Integer)
    last_change_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    halted: Mapped[str | None] = mapped_column(Text)   # why the room was stopped (mass cancellation guard)
    # The calendar backend (ews | graph) the links' item ids and the sync state above belong to.
    calendar_backend: Mapped[str | None] = mapped_column(String(16))
    # The learned rate of Ultimo-side changes (syncd.service.rates): decayed counts as of rates_at.
    ultimo_changes: Mapped[float | None] = mapped_column(Float)
    ultimo_exposure_s: Mapped[float | None] = mapped_column(Float)
    rates_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Run(Base):
    """One reconcile (or one service cycle): when, what it did, how it ended."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))       # reconcile | service | dry-run
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=now_utc)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), default="running")   # running | ok | partial | failed
    summary: Mapped[str | None] = mapped_column(Text)   # JSON per room


class UltimoBudget(Base):
    """Ultimo calls spent per UTC day, across restarts and processes."""

    __tablename__ = "ultimo_budget"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)   # YYYY-MM-DD (UTC)
    calls: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=now_utc, onupdate=now_utc)
