"""indexes for budgets, breaker and quarantine

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('host_failures', schema=None) as batch_op:
        batch_op.create_index('ix_host_failures_time', ['occurred_at'], unique=False)

    with op.batch_alter_table('restarts', schema=None) as batch_op:
        batch_op.create_index('ix_restarts_created', ['created_at'], unique=False)
        batch_op.create_index('ix_restarts_result_at', ['result_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('restarts', schema=None) as batch_op:
        batch_op.drop_index('ix_restarts_result_at')
        batch_op.drop_index('ix_restarts_created')

    with op.batch_alter_table('host_failures', schema=None) as batch_op:
        batch_op.drop_index('ix_host_failures_time')

