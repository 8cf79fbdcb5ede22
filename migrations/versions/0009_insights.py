"""restart insights: counters per error signature, scope, item and day

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

COUNTERS = (
    "failures",
    "restarts",
    "hosts",
    "settled",
    "recovered",
    "host_succeeded",
    "host_failed_same",
    "host_failed_other",
)


def upgrade() -> None:
    op.create_table(
        "insight_counts",
        sa.Column("signature", sa.String(length=16), nullable=False),
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("item", sa.String(length=255), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in COUNTERS),
        sa.Column("recovery_seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "signature", "scope", "item", "day", name=op.f("pk_insight_counts")
        ),
    )
    with op.batch_alter_table("insight_counts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_insight_counts_scope_day", ["scope", "day", "signature"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("insight_counts", schema=None) as batch_op:
        batch_op.drop_index("ix_insight_counts_scope_day")
    op.drop_table("insight_counts")
