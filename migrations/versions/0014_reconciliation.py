"""reconciliation: statement imports and their lines, daily sign-offs, Pull Transactions

Revision ID: 0014_reconciliation
Revises: 0013_money_out
Create Date: 2026-12-05 08:00:00.000000

``statement_import`` is one statement file (or Pull Transactions run) with its progress and
summary; ``statement_line`` every row of Safaricom's record, classified, once per
(shortcode, receipt, kind), with a partial index of reversals waiting for the reversals
drain; ``reconciliation_sign_off`` an admin's sign-off of a shortcode's Nairobi day;
``pull_registration`` a shortcode registered for Pull Transactions and its last pull.
A payment's day is found by (shortcode_id, trans_time). An officer's notice has a kind, so
a reversal's notice sits beside the payment's.
"""

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0014_reconciliation"
down_revision = "0013_money_out"
branch_labels = None
depends_on = None

_PENDING = sa.text("outcome = 'pending'")
_LINKED = sa.text("linked_receipt IS NOT NULL")


def upgrade():
    op.create_table(
        "statement_import",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("shortcode_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=12), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("rows_total", sa.Integer(), nullable=False),
        sa.Column("rows_done", sa.Integer(), nullable=False),
        sa.Column("period_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("period_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("content", sa.LargeBinary(), nullable=True),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "source IN ('statement', 'pull')", name=op.f("ck_statement_import_source")
        ),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'done', 'failed')",
            name=op.f("ck_statement_import_status"),
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["staff_user.id"],
            name=op.f("fk_statement_import_created_by_id_staff_user"),
        ),
        sa.ForeignKeyConstraint(
            ["shortcode_id"],
            ["shortcode.id"],
            name=op.f("fk_statement_import_shortcode_id_shortcode"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_statement_import")),
    )
    op.create_index(
        "ix_statement_import_shortcode_created",
        "statement_import",
        ["shortcode_id", "created_at"],
        unique=False,
    )
    op.create_table(
        "statement_line",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("shortcode_id", sa.Integer(), nullable=False),
        sa.Column("import_id", sa.Integer(), nullable=False),
        sa.Column("receipt", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paid_in", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("withdrawn", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("balance", sa.Numeric(precision=14, scale=2), nullable=True),
        sa.Column("linked_receipt", sa.String(length=32), nullable=True),
        sa.Column("bill_ref", sa.String(length=64), nullable=False),
        sa.Column("party", sa.String(length=120), nullable=False),
        sa.Column("reason_type", sa.String(length=80), nullable=False),
        sa.Column("details", sa.String(length=200), nullable=False),
        sa.Column("payment_id", sa.Integer(), nullable=True),
        sa.Column("disbursement_id", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "kind IN ('customer_payment', 'reversal', 'organisation_transfer', 'b2c', "
            "'charge', 'settlement', 'failed')",
            name=op.f("ck_statement_line_kind"),
        ),
        sa.CheckConstraint(
            "paid_in >= 0 AND withdrawn >= 0", name=op.f("ck_statement_line_amounts")
        ),
        sa.ForeignKeyConstraint(
            ["disbursement_id"],
            ["disbursement.id"],
            name=op.f("fk_statement_line_disbursement_id_disbursement"),
        ),
        sa.ForeignKeyConstraint(
            ["import_id"],
            ["statement_import.id"],
            name=op.f("fk_statement_line_import_id_statement_import"),
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["c2b_payment.id"],
            name=op.f("fk_statement_line_payment_id_c2b_payment"),
        ),
        sa.ForeignKeyConstraint(
            ["shortcode_id"],
            ["shortcode.id"],
            name=op.f("fk_statement_line_shortcode_id_shortcode"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_statement_line")),
        sa.UniqueConstraint(
            "shortcode_id",
            "receipt",
            "kind",
            name="uq_statement_line_shortcode_receipt_kind",
        ),
    )
    op.create_index(
        "ix_statement_line_shortcode_completed",
        "statement_line",
        ["shortcode_id", "completed_at"],
        unique=False,
    )
    op.create_index(
        "ix_statement_line_linked_receipt",
        "statement_line",
        ["linked_receipt"],
        unique=False,
        sqlite_where=_LINKED,
        postgresql_where=_LINKED,
    )
    op.create_index("ix_statement_line_import_id", "statement_line", ["import_id"], unique=False)
    op.create_index(
        "ix_statement_line_pending",
        "statement_line",
        ["id"],
        unique=False,
        sqlite_where=_PENDING,
        postgresql_where=_PENDING,
    )
    op.create_table(
        "reconciliation_sign_off",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("shortcode_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("signed_off_by_id", sa.Integer(), nullable=False),
        sa.Column("signed_off_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["shortcode_id"],
            ["shortcode.id"],
            name=op.f("fk_reconciliation_sign_off_shortcode_id_shortcode"),
        ),
        sa.ForeignKeyConstraint(
            ["signed_off_by_id"],
            ["staff_user.id"],
            name=op.f("fk_reconciliation_sign_off_signed_off_by_id_staff_user"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_sign_off")),
        sa.UniqueConstraint(
            "shortcode_id", "day", name="uq_reconciliation_sign_off_shortcode_day"
        ),
    )
    op.create_index(
        "ix_reconciliation_sign_off_day", "reconciliation_sign_off", ["day"], unique=False
    )
    op.create_table(
        "pull_registration",
        sa.Column("shortcode_id", sa.Integer(), nullable=False),
        sa.Column("nominated_number", sa.String(length=12), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("registered_by_id", sa.Integer(), nullable=True),
        sa.Column("response", sa.Text(), nullable=False),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_pull_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_pull_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_import_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["last_import_id"],
            ["statement_import.id"],
            name=op.f("fk_pull_registration_last_import_id_statement_import"),
        ),
        sa.ForeignKeyConstraint(
            ["registered_by_id"],
            ["staff_user.id"],
            name=op.f("fk_pull_registration_registered_by_id_staff_user"),
        ),
        sa.ForeignKeyConstraint(
            ["shortcode_id"],
            ["shortcode.id"],
            name=op.f("fk_pull_registration_shortcode_id_shortcode"),
        ),
        sa.PrimaryKeyConstraint("shortcode_id", name=op.f("pk_pull_registration")),
    )
    op.create_index(
        "ix_c2b_payment_shortcode_trans_time",
        "c2b_payment",
        ["shortcode_id", "trans_time"],
        unique=False,
    )
    with op.batch_alter_table("officer_notice", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "kind", sa.String(length=12), server_default="payment", nullable=False
            )
        )
        batch_op.drop_constraint("uq_officer_notice_staff_payment", type_="unique")
        batch_op.create_unique_constraint(
            "uq_officer_notice_staff_payment_kind", ["staff_id", "payment_id", "kind"]
        )


def downgrade():
    with op.batch_alter_table("officer_notice", schema=None) as batch_op:
        batch_op.drop_constraint("uq_officer_notice_staff_payment_kind", type_="unique")
        batch_op.create_unique_constraint(
            "uq_officer_notice_staff_payment", ["staff_id", "payment_id"]
        )
        batch_op.drop_column("kind")
    op.drop_index("ix_c2b_payment_shortcode_trans_time", table_name="c2b_payment")
    op.drop_table("pull_registration")
    op.drop_index("ix_reconciliation_sign_off_day", table_name="reconciliation_sign_off")
    op.drop_table("reconciliation_sign_off")
    op.drop_index("ix_statement_line_pending", table_name="statement_line")
    op.drop_index("ix_statement_line_import_id", table_name="statement_line")
    op.drop_index("ix_statement_line_linked_receipt", table_name="statement_line")
    op.drop_index("ix_statement_line_shortcode_completed", table_name="statement_line")
    op.drop_table("statement_line")
    op.drop_index("ix_statement_import_shortcode_created", table_name="statement_import")
    op.drop_table("statement_import")
