"""lighter payment insert: no index on trans_time, borrower index only for matched payments

Revision ID: 0010_lighter_payment_insert
Revises: 0009_borrower_phone_first_name
Create Date: 2026-11-23 20:45:00.000000

Every index on c2b_payment is one more B-tree page that each confirmation writes before
Safaricom is answered. Nothing searches or sorts payments by TransTime, so its index
goes; ``borrower_id`` is empty until a payment is matched, so its index keeps only the
rows that have one (lookups by borrower, ``borrower_id = ?``, still use it).
"""

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0010_lighter_payment_insert'
down_revision = '0009_borrower_phone_first_name'
branch_labels = None
depends_on = None

_MATCHED = sa.text('borrower_id IS NOT NULL')


def upgrade():
    op.drop_index('ix_c2b_payment_trans_time', table_name='c2b_payment')
    op.drop_index('ix_c2b_payment_borrower_id', table_name='c2b_payment')
    op.create_index(
        'ix_c2b_payment_borrower_id',
        'c2b_payment',
        ['borrower_id'],
        unique=False,
        sqlite_where=_MATCHED,
        postgresql_where=_MATCHED,
    )


def downgrade():
    op.drop_index('ix_c2b_payment_borrower_id', table_name='c2b_payment')
    op.create_index('ix_c2b_payment_borrower_id', 'c2b_payment', ['borrower_id'], unique=False)
    op.create_index('ix_c2b_payment_trans_time', 'c2b_payment', ['trans_time'], unique=False)
