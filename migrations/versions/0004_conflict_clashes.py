"""Conflicts say what they clash with and what syncd did about them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

`conflicts.clashes_with`: a JSON list, one object per reservation, event or version the
booking clashes with (syncd.core.model.Clash.as_dict). `conflicts.outcome`: what syncd did,
e.g. that the room declined the meeting and why. Both nullable: rows from before stay valid.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conflicts") as batch:
        batch.add_column(sa.Column("clashes_with", sa.Text(), nullable=True))
        batch.add_column(sa.Column("outcome", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("conflicts") as batch:
        batch.drop_column("outcome")
        batch.drop_column("clashes_with")
