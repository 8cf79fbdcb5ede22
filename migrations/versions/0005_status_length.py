"""statuses up to 32 characters: unknown Runner statuses are stored as given

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TABLES = (("executions", False), ("execution_runs", False), ("events", True))


def upgrade() -> None:
    for table, nullable in _TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(
                "status",
                existing_type=sa.String(length=16),
                type_=sa.String(length=32),
                existing_nullable=nullable,
            )


def downgrade() -> None:
    for table, nullable in _TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(
                "status",
                existing_type=sa.String(length=32),
                type_=sa.String(length=16),
                existing_nullable=nullable,
            )
