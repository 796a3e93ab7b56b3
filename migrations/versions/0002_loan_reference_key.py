"""loan reference key: the loan number as payment matching compares it

Revision ID: 0002_loan_reference_key
Revises: 0001_loan_book
Create Date: 2026-11-23 15:11:47

"""
import re

import sqlalchemy as sa
from alembic import op

revision = '0002_loan_reference_key'
down_revision = '0001_loan_book'
branch_labels = None
depends_on = None


def _key(number):
    # A copy of lenders.references.reference_key as of this migration.
    compact = re.sub(r"[^0-9A-Z]", "", (number or "").upper())
    body = re.sub(r"^(?:LOAN|LN)(?:NO|NUMBER)?", "", compact)
    return str(int(body)) if body.isdigit() else compact


def upgrade():
    with op.batch_alter_table('loan', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reference_key', sa.String(length=32), nullable=True))
    bind = op.get_bind()
    loans = sa.table('loan', sa.column('id', sa.Integer), sa.column('number', sa.String),
                     sa.column('reference_key', sa.String))
    rows = bind.execute(sa.select(loans.c.id, loans.c.number)).all()
    if rows:
        bind.execute(
            loans.update().where(loans.c.id == sa.bindparam('loan_id'))
            .values(reference_key=sa.bindparam('key')),
            [{'loan_id': loan_id, 'key': _key(number)} for loan_id, number in rows],
        )
    with op.batch_alter_table('loan', schema=None) as batch_op:
        batch_op.alter_column('reference_key', existing_type=sa.String(length=32), nullable=False)
        batch_op.create_index(batch_op.f('ix_loan_reference_key'), ['reference_key'], unique=False)


def downgrade():
    with op.batch_alter_table('loan', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_loan_reference_key'))
        batch_op.drop_column('reference_key')
