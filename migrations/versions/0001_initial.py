"""The initial schema: links, journal, conflicts, room_state, runs, ultimo_budget.

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Written out in full (no import of syncd.store.schema): a revision is a snapshot, and the
models will move on. Constraint names follow syncd.store.schema.NAMING.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _utc() -> sa.DateTime:
    # syncd.store.schema.UTCDateTime stores naive UTC.
    return sa.DateTime(timezone=False)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("started_at", _utc(), nullable=False),
        sa.Column("finished_at", _utc(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )
    op.create_table(
        "links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("room", sa.String(320), nullable=False),
        sa.Column("space_id", sa.String(100), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("exchange_key", sa.String(512), nullable=True),
        sa.Column("exchange_item_id", sa.Text(), nullable=True),
        sa.Column("exchange_change_key", sa.String(256), nullable=True),
        sa.Column("stamp", sa.String(128), nullable=True),
        sa.Column("external_id", sa.String(64), nullable=True),
        sa.Column("ultimo_id", sa.String(64), nullable=True),
        sa.Column("start", _utc(), nullable=False),
        sa.Column("end", _utc(), nullable=False),
        sa.Column("synced_hash", sa.String(32), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("organizer", sa.String(320), nullable=True),
        sa.Column("intent", sa.String(32), nullable=True),
        sa.Column("intent_at", _utc(), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.Column("cancelled_at", _utc(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_links"),
        sa.UniqueConstraint("room", "exchange_key", name="uq_links_room_exchange_key"),
        sa.UniqueConstraint("ultimo_id", name="uq_links_ultimo_id"),
        sa.UniqueConstraint("external_id", name="uq_links_external_id"),
        sa.UniqueConstraint("stamp", name="uq_links_stamp"),
    )
    op.create_index("ix_links_room_state", "links", ["room", "state"])
    op.create_table(
        "journal",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("link_id", sa.Integer(), nullable=True),
        sa.Column("room", sa.String(320), nullable=False),
        sa.Column("side", sa.String(16), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("finished_at", _utc(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_journal"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_journal_run_id_runs", ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["link_id"], ["links.id"], name="fk_journal_link_id_links", ondelete="SET NULL"),
    )
    op.create_index("ix_journal_status", "journal", ["status"])
    op.create_table(
        "conflicts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("link_id", sa.Integer(), nullable=True),
        sa.Column("room", sa.String(320), nullable=False),
        sa.Column("space_id", sa.String(100), nullable=False),
        sa.Column("booking_key", sa.String(512), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("code", sa.String(32), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("organizer", sa.String(320), nullable=True),
        sa.Column("start", _utc(), nullable=True),
        sa.Column("end", _utc(), nullable=True),
        sa.Column("ultimo_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("detected_at", _utc(), nullable=False),
        sa.Column("last_seen_at", _utc(), nullable=False),
        sa.Column("resolved_at", _utc(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_conflicts"),
        sa.ForeignKeyConstraint(
            ["link_id"], ["links.id"], name="fk_conflicts_link_id_links", ondelete="SET NULL"
        ),
    )
    op.create_index("ix_conflicts_status", "conflicts", ["status"])
    op.create_index("ix_conflicts_key", "conflicts", ["room", "booking_key"])
    op.create_table(
        "room_state",
        sa.Column("room", sa.String(320), nullable=False),
        sa.Column("space_id", sa.String(100), nullable=False),
        sa.Column("exchange_sync_state", sa.Text(), nullable=True),
        sa.Column("exchange_read_at", _utc(), nullable=True),
        sa.Column("ultimo_read_at", _utc(), nullable=True),
        sa.Column("exchange_seen", sa.Integer(), nullable=True),
        sa.Column("ultimo_seen", sa.Integer(), nullable=True),
        sa.Column("last_change_at", _utc(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", _utc(), nullable=True),
        sa.Column("halted", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("room", name="pk_room_state"),
    )
    op.create_table(
        "ultimo_budget",
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("day", name="pk_ultimo_budget"),
    )


def downgrade() -> None:
    op.drop_table("ultimo_budget")
    op.drop_table("room_state")
    op.drop_index("ix_conflicts_key", table_name="conflicts")
    op.drop_index("ix_conflicts_status", table_name="conflicts")
    op.drop_table("conflicts")
    op.drop_index("ix_journal_status", table_name="journal")
    op.drop_table("journal")
    op.drop_index("ix_links_room_state", table_name="links")
    op.drop_table("links")
    op.drop_table("runs")
