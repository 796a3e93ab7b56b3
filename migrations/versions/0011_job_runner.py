"""job runner: periodic jobs' lease rows; leases on payments and messages being worked

Revision ID: 0011_job_runner
Revises: 0010_lighter_payment_insert
Create Date: 2026-12-03 08:00:00.000000

``scheduled_job`` holds one row per periodic job: the process whose UPDATE moves its
``due_at`` on runs that interval's turn, with or without Redis. A payment waiting in received carries
the lease of the worker that claimed it (``claimed_until``). A message that failed is queued
again with ``next_attempt_at``; the messages drain claims queued messages through a partial
index.
"""

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0011_job_runner'
down_revision = '0010_lighter_payment_insert'
branch_labels = None
depends_on = None

_QUEUED = sa.text("status = 'queued'")


def upgrade():
    op.create_table(
        'scheduled_job',
        sa.Column('name', sa.String(length=120), nullable=False),
        sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_scheduled_job')),
    )
    with op.batch_alter_table('sms_message', schema=None) as batch_op:
        batch_op.add_column(sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('c2b_payment', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claimed_until', sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        'ix_sms_message_queued',
        'sms_message',
        ['id'],
        unique=False,
        sqlite_where=_QUEUED,
        postgresql_where=_QUEUED,
    )


def downgrade():
    op.drop_index('ix_sms_message_queued', table_name='sms_message')
    with op.batch_alter_table('c2b_payment', schema=None) as batch_op:
        batch_op.drop_column('claimed_until')
    with op.batch_alter_table('sms_message', schema=None) as batch_op:
        batch_op.drop_column('next_attempt_at')
    op.drop_table('scheduled_job')
