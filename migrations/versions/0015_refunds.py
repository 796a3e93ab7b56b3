"""refunds: a disbursement's purpose is a loan payout or a refund of borrower credit

Revision ID: 0015_refunds
Revises: 0014_reconciliation
Create Date: 2026-12-03 14:30:00.000000

A refund pays a posted C2B payment's borrower credit back by B2C through the same
``disbursement`` row and drain as a loan payout: ``purpose`` ('loan' for every existing
row), ``loan_id`` becomes nullable, ``payment_id`` and ``borrower_id`` name the refunded
payment and the borrower whose credit it is, ``note`` the requester's reason; a check
constraint ties each purpose to its columns. Downgrading deletes refund rows (their
credit moves were audited) before ``loan_id`` is made required again.
"""

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0015_refunds"
down_revision = "0014_reconciliation"
branch_labels = None
depends_on = None

_LIVE = sa.text("status <> 'cancelled'")
_TARGET = (
    "(purpose = 'loan' AND loan_id IS NOT NULL AND payment_id IS NULL) OR "
    "(purpose = 'refund' AND loan_id IS NULL AND payment_id IS NOT NULL "
    "AND borrower_id IS NOT NULL)"
)


def upgrade():
    with op.batch_alter_table("disbursement", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("purpose", sa.String(length=8), server_default="loan", nullable=False)
        )
        batch_op.add_column(sa.Column("payment_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("borrower_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("note", sa.Text(), nullable=True))
        batch_op.alter_column("loan_id", existing_type=sa.Integer(), nullable=True)
        batch_op.create_foreign_key(
            batch_op.f("fk_disbursement_payment_id_c2b_payment"),
            "c2b_payment",
            ["payment_id"],
            ["id"],
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_disbursement_borrower_id_borrower"), "borrower", ["borrower_id"], ["id"]
        )
        batch_op.create_check_constraint(
            batch_op.f("ck_disbursement_purpose"), "purpose IN ('loan', 'refund')"
        )
        batch_op.create_check_constraint(batch_op.f("ck_disbursement_purpose_target"), _TARGET)
        batch_op.create_index(
            batch_op.f("ix_disbursement_payment_id"), ["payment_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_disbursement_borrower_id"), ["borrower_id"], unique=False
        )


def downgrade():
    op.execute(
        "DELETE FROM daraja_query WHERE disbursement_id IN "
        "(SELECT id FROM disbursement WHERE purpose = 'refund')"
    )
    op.execute("DELETE FROM disbursement WHERE purpose = 'refund'")
    with op.batch_alter_table("disbursement", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_disbursement_borrower_id"))
        batch_op.drop_index(batch_op.f("ix_disbursement_payment_id"))
        batch_op.drop_constraint(batch_op.f("ck_disbursement_purpose_target"), type_="check")
        batch_op.drop_constraint(batch_op.f("ck_disbursement_purpose"), type_="check")
        batch_op.drop_constraint(
            batch_op.f("fk_disbursement_borrower_id_borrower"), type_="foreignkey"
        )
        batch_op.drop_constraint(
            batch_op.f("fk_disbursement_payment_id_c2b_payment"), type_="foreignkey"
        )
        batch_op.alter_column("loan_id", existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column("note")
        batch_op.drop_column("borrower_id")
        batch_op.drop_column("payment_id")
        batch_op.drop_column("purpose")
