"""events double as the inbox: pending deliveries by execution

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("execution_id", sa.String(length=128), nullable=True))
        batch_op.add_column(
            sa.Column("pending", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(
            sa.Column("attempts", sa.Integer(), server_default="0", nullable=False)
        )
    op.execute(
        "UPDATE events SET execution_id = "
        "(SELECT executions.execution_id FROM executions WHERE executions.id = events.execution_pk)"
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.alter_column("execution_id", existing_type=sa.String(length=128), nullable=False)
        batch_op.alter_column("execution_pk", existing_type=sa.Integer(), nullable=True)
        batch_op.alter_column("run_index", existing_type=sa.Integer(), nullable=True)
        batch_op.create_index(
            "ix_events_pending",
            ["execution_id", "id"],
            unique=False,
            postgresql_where=sa.text("pending"),
            sqlite_where=sa.text("pending"),
        )


def downgrade() -> None:
    op.execute("DELETE FROM events WHERE pending")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_pending")
        batch_op.alter_column("run_index", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("execution_pk", existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column("attempts")
        batch_op.drop_column("pending")
        batch_op.drop_column("execution_id")
