"""borrower phone name key: a masked MSISDN and a FirstName in one index range

Revision ID: 0009_borrower_phone_first_name
Revises: 0008_payment_search_indexes
Create Date: 2026-11-24 17:40:00.000000

Each phone carries its borrower's name as masked matching compares it (every word
case-folded, between single spaces), and the masked-key index becomes
(masked_key, name_key, borrower_id, number), so a masked payment's candidates are found
without reading the thousand or so phones and borrowers that share its masked key.
Existing phones are backfilled here, in batches.
"""

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0009_borrower_phone_first_name'
down_revision = '0008_payment_search_indexes'
branch_labels = None
depends_on = None

_BATCH = 5000


def _name_key(name):
    # lenders.phones.name_key as of this revision (a migration does not follow later edits).
    return f" {' '.join(word.casefold() for word in name.split())} "


def upgrade():
    with op.batch_alter_table('borrower_phone', schema=None) as batch_op:
        batch_op.add_column(sa.Column('name_key', sa.Text(), nullable=True))

    bind = op.get_bind()
    phone = sa.table(
        'borrower_phone',
        sa.column('id', sa.Integer),
        sa.column('borrower_id', sa.Integer),
        sa.column('name_key', sa.Text),
    )
    borrower = sa.table('borrower', sa.column('id', sa.Integer), sa.column('name', sa.String))
    update = (
        sa.update(phone)
        .where(phone.c.id == sa.bindparam('phone_id'))
        .values(name_key=sa.bindparam('key'))
    )
    last = 0
    while True:
        rows = bind.execute(
            sa.select(phone.c.id, borrower.c.name)
            .join(borrower, borrower.c.id == phone.c.borrower_id)
            .where(phone.c.id > last)
            .order_by(phone.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            break
        bind.execute(update, [{'phone_id': i, 'key': _name_key(name)} for i, name in rows])
        last = rows[-1][0]

    with op.batch_alter_table('borrower_phone', schema=None) as batch_op:
        batch_op.drop_index('ix_borrower_phone_masked_key')
        batch_op.create_index(
            'ix_borrower_phone_masked_key_name_key',
            ['masked_key', 'name_key', 'borrower_id', 'number'],
            unique=False,
        )


def downgrade():
    with op.batch_alter_table('borrower_phone', schema=None) as batch_op:
        batch_op.drop_index('ix_borrower_phone_masked_key_name_key')
        batch_op.create_index('ix_borrower_phone_masked_key', ['masked_key'], unique=False)
        batch_op.drop_column('name_key')
