"""insights read by index: a signature's latest decisions and its top jobs and hosts

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30

The Insights page reads, per signature shown, its latest decisions (newest first, ties by
id) and its few top jobs and hosts. Both orders now come from an index, so the page reads
what it shows instead of sorting every decision or host row of the signature.
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_decisions_signature")
        batch_op.create_index("ix_decisions_signature", ["signature", "created_at", "id"])
    with op.batch_alter_table("insight_counts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_insight_counts_top",
            ["signature", "scope", "day", "restarts", "failures", "item"],
        )


def downgrade() -> None:
    with op.batch_alter_table("insight_counts", schema=None) as batch_op:
        batch_op.drop_index("ix_insight_counts_top")
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_decisions_signature")
        batch_op.create_index("ix_decisions_signature", ["signature", "created_at"])
