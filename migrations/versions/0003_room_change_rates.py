"""room_state.ultimo_changes, ultimo_exposure_s, rates_at: each room's learned rate of
Ultimo-side changes, so that a restarted service reads where changes happen at once.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

Rooms synced before this revision have none: they start from the prior (their size).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("room_state") as batch:
        batch.add_column(sa.Column("ultimo_changes", sa.Float(), nullable=True))
        batch.add_column(sa.Column("ultimo_exposure_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("rates_at", sa.DateTime(timezone=False), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("room_state") as batch:
        batch.drop_column("rates_at")
        batch.drop_column("ultimo_exposure_s")
        batch.drop_column("ultimo_changes")
