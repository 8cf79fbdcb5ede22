"""policy round two: run host counts, error signatures, held restarts, blackout deferrals

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("execution_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("host_count", sa.Integer(), nullable=True))
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("signature", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("deferred_by", sa.String(length=100), nullable=True))
        batch_op.add_column(
            sa.Column("held_until", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.create_index("ix_decisions_signature", ["signature", "created_at"], unique=False)
    with op.batch_alter_table("restarts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("hold_signature", sa.String(length=16), nullable=True))
        batch_op.create_index("ix_restarts_held", ["hold_signature", "id"], unique=False)
    op.create_table(
        "signatures",
        sa.Column("key", sa.String(length=16), nullable=False),
        sa.Column("failure_class", sa.String(length=32), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_signatures")),
    )


def downgrade() -> None:
    op.drop_table("signatures")
    with op.batch_alter_table("restarts", schema=None) as batch_op:
        batch_op.drop_index("ix_restarts_held")
        batch_op.drop_column("hold_signature")
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_decisions_signature")
        batch_op.drop_column("held_until")
        batch_op.drop_column("deferred_by")
        batch_op.drop_column("signature")
    with op.batch_alter_table("execution_runs", schema=None) as batch_op:
        batch_op.drop_column("host_count")
