"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    
    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('target', sa.String(length=255), nullable=False),
    sa.Column('detail', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_log_at'), ['at'], unique=False)

    op.create_table('executions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('execution_id', sa.String(length=128), nullable=False),
    sa.Column('account_alias', sa.String(length=128), nullable=False),
    sa.Column('job_id', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('run_index', sa.Integer(), nullable=False),
    sa.Column('status_rank', sa.Integer(), nullable=False),
    sa.Column('run_count', sa.Integer(), nullable=False),
    sa.Column('failed_hosts', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('repository_log', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('is_vpn_established', sa.Boolean(), nullable=True),
    sa.Column('first_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_event_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('first_failure_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('restart_count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_executions')),
    sa.UniqueConstraint('execution_id', name=op.f('uq_executions_execution_id'))
    )
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_executions_account_alias'), ['account_alias'], unique=False)
        batch_op.create_index(batch_op.f('ix_executions_job_id'), ['job_id'], unique=False)
        batch_op.create_index('ix_executions_last_seen', ['last_seen_at', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_executions_status'), ['status'], unique=False)

    op.create_table('jobs',
    sa.Column('job_id', sa.String(length=128), nullable=False),
    sa.Column('account_alias', sa.String(length=128), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('fetched_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('fetch_error', sa.String(length=255), nullable=True),
    sa.PrimaryKeyConstraint('job_id', name=op.f('pk_jobs'))
    )
    op.create_table('pauses',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.String(length=128), nullable=False),
    sa.Column('paused_by', sa.String(length=128), nullable=False),
    sa.Column('reason', sa.String(length=255), nullable=True),
    sa.Column('paused_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pauses')),
    sa.UniqueConstraint('job_id', name=op.f('uq_pauses_job_id'))
    )
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('failed_logins', sa.Integer(), nullable=False),
    sa.Column('locked_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('name', name=op.f('uq_users_name'))
    )
    op.create_table('decisions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('execution_pk', sa.Integer(), nullable=False),
    sa.Column('run_index', sa.Integer(), nullable=False),
    sa.Column('decision_key', sa.String(length=96), nullable=False),
    sa.Column('origin', sa.String(length=16), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('hosts', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('excluded_hosts', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('backoff_seconds', sa.Float(), nullable=True),
    sa.Column('rule', sa.String(length=128), nullable=False),
    sa.Column('reason_code', sa.String(length=32), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('policy_version', sa.String(length=64), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['execution_pk'], ['executions.id'], name=op.f('fk_decisions_execution_pk_executions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_decisions')),
    sa.UniqueConstraint('decision_key', name=op.f('uq_decisions_decision_key'))
    )
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_decisions_created_at'), ['created_at'], unique=False)
        batch_op.create_index('ix_decisions_execution', ['execution_pk', 'id'], unique=False)

    op.create_table('events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('execution_pk', sa.Integer(), nullable=False),
    sa.Column('run_index', sa.Integer(), nullable=False),
    sa.Column('delivery_key', sa.String(length=64), nullable=False),
    sa.Column('webhook_key', sa.String(length=64), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('event_type', sa.String(length=64), nullable=True),
    sa.Column('event_id', sa.String(length=128), nullable=True),
    sa.Column('host', sa.String(length=255), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=True),
    sa.Column('event_ms', sa.BigInteger(), nullable=True),
    sa.Column('event_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('payload', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.ForeignKeyConstraint(['execution_pk'], ['executions.id'], name=op.f('fk_events_execution_pk_executions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_events')),
    sa.UniqueConstraint('delivery_key', name=op.f('uq_events_delivery_key')),
    sa.UniqueConstraint('webhook_key', name=op.f('uq_events_webhook_key'))
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_execution', ['execution_pk', 'id'], unique=False)

    op.create_table('execution_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('execution_pk', sa.Integer(), nullable=False),
    sa.Column('run_index', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('start_ms', sa.BigInteger(), nullable=True),
    sa.Column('end_ms', sa.BigInteger(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('start_derived', sa.Boolean(), nullable=False),
    sa.Column('end_derived', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['execution_pk'], ['executions.id'], name=op.f('fk_execution_runs_execution_pk_executions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_execution_runs')),
    sa.UniqueConstraint('execution_pk', 'run_index', name=op.f('uq_execution_runs_execution_pk_run_index'))
    )
    op.create_table('host_failures',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('execution_pk', sa.Integer(), nullable=False),
    sa.Column('run_index', sa.Integer(), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('failure_class', sa.String(length=16), nullable=False),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('stderr_tail', sa.Text(), nullable=True),
    sa.Column('rc', sa.Integer(), nullable=True),
    sa.Column('changed', sa.Integer(), nullable=True),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['execution_pk'], ['executions.id'], name=op.f('fk_host_failures_execution_pk_executions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_host_failures')),
    sa.UniqueConstraint('execution_pk', 'run_index', 'host', name=op.f('uq_host_failures_execution_pk_run_index_host'))
    )
    with op.batch_alter_table('host_failures', schema=None) as batch_op:
        batch_op.create_index('ix_host_failures_host_time', ['host', 'occurred_at'], unique=False)

    op.create_table('restarts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('decision_id', sa.Integer(), nullable=False),
    sa.Column('execution_pk', sa.Integer(), nullable=False),
    sa.Column('run_index', sa.Integer(), nullable=False),
    sa.Column('manual', sa.Boolean(), nullable=False),
    sa.Column('counts_against_budget', sa.Boolean(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('hosts', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('timers_before', sa.Integer(), nullable=False),
    sa.Column('outcome', sa.String(length=32), nullable=True),
    sa.Column('outcome_detail', sa.Text(), nullable=True),
    sa.Column('result', sa.String(length=16), nullable=True),
    sa.Column('result_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cancelled_by', sa.String(length=128), nullable=True),
    sa.ForeignKeyConstraint(['decision_id'], ['decisions.id'], name=op.f('fk_restarts_decision_id_decisions')),
    sa.ForeignKeyConstraint(['execution_pk'], ['executions.id'], name=op.f('fk_restarts_execution_pk_executions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_restarts')),
    sa.UniqueConstraint('decision_id', name=op.f('uq_restarts_decision_id'))
    )
    with op.batch_alter_table('restarts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_restarts_execution_pk'), ['execution_pk'], unique=False)
        batch_op.create_index(batch_op.f('ix_restarts_sent_at'), ['sent_at'], unique=False)
        batch_op.create_index('ix_restarts_state_due', ['state', 'due_at'], unique=False)

    op.create_table('restart_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('restart_id', sa.Integer(), nullable=False),
    sa.Column('worker', sa.String(length=64), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('outcome', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['restart_id'], ['restarts.id'], name=op.f('fk_restart_attempts_restart_id_restarts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_restart_attempts'))
    )
    with op.batch_alter_table('restart_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_restart_attempts_restart', ['restart_id', 'id'], unique=False)

    


def downgrade() -> None:
    
    with op.batch_alter_table('restart_attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_restart_attempts_restart')

    op.drop_table('restart_attempts')
    with op.batch_alter_table('restarts', schema=None) as batch_op:
        batch_op.drop_index('ix_restarts_state_due')
        batch_op.drop_index(batch_op.f('ix_restarts_sent_at'))
        batch_op.drop_index(batch_op.f('ix_restarts_execution_pk'))

    op.drop_table('restarts')
    with op.batch_alter_table('host_failures', schema=None) as batch_op:
        batch_op.drop_index('ix_host_failures_host_time')

    op.drop_table('host_failures')
    op.drop_table('execution_runs')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_execution')

    op.drop_table('events')
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.drop_index('ix_decisions_execution')
        batch_op.drop_index(batch_op.f('ix_decisions_created_at'))

    op.drop_table('decisions')
    op.drop_table('users')
    op.drop_table('pauses')
    op.drop_table('jobs')
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_executions_status'))
        batch_op.drop_index('ix_executions_last_seen')
        batch_op.drop_index(batch_op.f('ix_executions_job_id'))
        batch_op.drop_index(batch_op.f('ix_executions_account_alias'))

    op.drop_table('executions')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_at'))

    op.drop_table('audit_log')
    
