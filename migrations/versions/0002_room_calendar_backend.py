"""room_state.calendar_backend: which calendar backend the room's item ids and sync state belong to.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

Rooms synced before this revision were synced through EWS (the only backend then), so
their rows say `ews`; a later pass with `calendar.backend: graph` sees the difference and
re-identifies the room's links through Graph before planning (syncd.engine.reidentify).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("room_state") as batch:
        batch.add_column(sa.Column("calendar_backend", sa.String(16), nullable=True))
    op.execute("UPDATE room_state SET calendar_backend = 'ews'")


def downgrade() -> None:
    with op.batch_alter_table("room_state") as batch:
        batch.drop_column("calendar_backend")
