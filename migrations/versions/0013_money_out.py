"""money out and back: disbursements, STK prompts, status and balance queries, reversals

Revision ID: 0013_money_out
Revises: 0012_callback_attention_index
Create Date: 2026-12-03 08:20:45.521940

Each request Marejesho makes to Safaricom that moves or checks money is a row with its own
callback token: ``disbursement`` (B2C payouts of pending loans, maker-checker, our
OriginatorConversationID), ``stk_request`` (STK prompts), ``daraja_query`` (Transaction
Status and Account Balance) and ``reversal``. Partial unique indexes keep one live
disbursement per loan, one open prompt per phone and one live reversal per payment.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0013_money_out'
down_revision = '0012_callback_attention_index'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('disbursement',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('loan_id', sa.Integer(), nullable=False),
    sa.Column('amount', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('fees_deducted', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('phone', sa.String(length=12), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('requested_by_id', sa.Integer(), nullable=False),
    sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('approved_by_id', sa.Integer(), nullable=True),
    sa.Column('approved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('shortcode_id', sa.Integer(), nullable=True),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('originator_conversation_id', sa.String(length=64), nullable=False),
    sa.Column('callback_token', sa.String(length=64), nullable=False),
    sa.Column('conversation_id', sa.String(length=64), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('check_after', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status_checks', sa.Integer(), nullable=False),
    sa.Column('result_code', sa.String(length=16), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('receipt', sa.String(length=32), nullable=True),
    sa.Column('receiver_name', sa.String(length=200), nullable=True),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('requested', 'approved', 'sent', 'completed', 'failed', 'ambiguous', 'cancelled')", name=op.f('ck_disbursement_status')),
    sa.CheckConstraint('amount > 0', name=op.f('ck_disbursement_amount_positive')),
    sa.ForeignKeyConstraint(['approved_by_id'], ['staff_user.id'], name=op.f('fk_disbursement_approved_by_id_staff_user')),
    sa.ForeignKeyConstraint(['loan_id'], ['loan.id'], name=op.f('fk_disbursement_loan_id_loan')),
    sa.ForeignKeyConstraint(['requested_by_id'], ['staff_user.id'], name=op.f('fk_disbursement_requested_by_id_staff_user')),
    sa.ForeignKeyConstraint(['shortcode_id'], ['shortcode.id'], name=op.f('fk_disbursement_shortcode_id_shortcode')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_disbursement')),
    sa.UniqueConstraint('callback_token', name=op.f('uq_disbursement_callback_token')),
    sa.UniqueConstraint('originator_conversation_id', name=op.f('uq_disbursement_originator_conversation_id'))
    )
    with op.batch_alter_table('disbursement', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_disbursement_loan_id'), ['loan_id'], unique=False)
        batch_op.create_index('ix_disbursement_status_check_after', ['status', 'check_after'], unique=False)
        batch_op.create_index('uq_disbursement_live_loan', ['loan_id'], unique=True, sqlite_where=sa.text("status <> 'cancelled'"), postgresql_where=sa.text("status <> 'cancelled'"))

    op.create_table('reversal',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('payment_id', sa.Integer(), nullable=False),
    sa.Column('amount', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('requested_by_id', sa.Integer(), nullable=False),
    sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('decided_by_id', sa.Integer(), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('decision_note', sa.Text(), nullable=True),
    sa.Column('callback_token', sa.String(length=64), nullable=False),
    sa.Column('originator_conversation_id', sa.String(length=64), nullable=True),
    sa.Column('conversation_id', sa.String(length=64), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('check_after', sa.DateTime(timezone=True), nullable=True),
    sa.Column('result_code', sa.String(length=16), nullable=True),
    sa.Column('result_desc', sa.Text(), nullable=True),
    sa.Column('reversal_receipt', sa.String(length=32), nullable=True),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('requested', 'rejected', 'approved', 'sent', 'completed', 'failed', 'ambiguous')", name=op.f('ck_reversal_status')),
    sa.ForeignKeyConstraint(['decided_by_id'], ['staff_user.id'], name=op.f('fk_reversal_decided_by_id_staff_user')),
    sa.ForeignKeyConstraint(['payment_id'], ['c2b_payment.id'], name=op.f('fk_reversal_payment_id_c2b_payment')),
    sa.ForeignKeyConstraint(['requested_by_id'], ['staff_user.id'], name=op.f('fk_reversal_requested_by_id_staff_user')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reversal')),
    sa.UniqueConstraint('callback_token', name=op.f('uq_reversal_callback_token'))
    )
    with op.batch_alter_table('reversal', schema=None) as batch_op:
        batch_op.create_index('ix_reversal_status_check_after', ['status', 'check_after'], unique=False)
        batch_op.create_index('uq_reversal_live_payment', ['payment_id'], unique=True, sqlite_where=sa.text("status IN ('requested', 'approved', 'sent', 'ambiguous', 'completed')"), postgresql_where=sa.text("status IN ('requested', 'approved', 'sent', 'ambiguous', 'completed')"))

    op.create_table('stk_request',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('loan_id', sa.Integer(), nullable=False),
    sa.Column('shortcode_id', sa.Integer(), nullable=False),
    sa.Column('phone', sa.String(length=12), nullable=False),
    sa.Column('amount', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('account_reference', sa.String(length=12), nullable=False),
    sa.Column('description', sa.String(length=13), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('callback_token', sa.String(length=64), nullable=False),
    sa.Column('merchant_request_id', sa.String(length=64), nullable=True),
    sa.Column('checkout_request_id', sa.String(length=64), nullable=True),
    sa.Column('result_code', sa.String(length=16), nullable=True),
    sa.Column('result_desc', sa.Text(), nullable=True),
    sa.Column('receipt', sa.String(length=32), nullable=True),
    sa.Column('payment_id', sa.Integer(), nullable=True),
    sa.Column('settled_by', sa.String(length=12), nullable=True),
    sa.Column('requested_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('answered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('settled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('next_query_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('queries', sa.Integer(), nullable=False),
    sa.CheckConstraint("status IN ('sending', 'pending', 'completed', 'failed', 'cancelled', 'expired')", name=op.f('ck_stk_request_status')),
    sa.CheckConstraint('amount > 0', name=op.f('ck_stk_request_amount_positive')),
    sa.ForeignKeyConstraint(['loan_id'], ['loan.id'], name=op.f('fk_stk_request_loan_id_loan')),
    sa.ForeignKeyConstraint(['payment_id'], ['c2b_payment.id'], name=op.f('fk_stk_request_payment_id_c2b_payment')),
    sa.ForeignKeyConstraint(['requested_by_id'], ['staff_user.id'], name=op.f('fk_stk_request_requested_by_id_staff_user')),
    sa.ForeignKeyConstraint(['shortcode_id'], ['shortcode.id'], name=op.f('fk_stk_request_shortcode_id_shortcode')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stk_request')),
    sa.UniqueConstraint('callback_token', name=op.f('uq_stk_request_callback_token')),
    sa.UniqueConstraint('checkout_request_id', name=op.f('uq_stk_request_checkout_request_id'))
    )
    with op.batch_alter_table('stk_request', schema=None) as batch_op:
        batch_op.create_index('ix_stk_request_loan_id', ['loan_id'], unique=False)
        batch_op.create_index('ix_stk_request_phone_created_at', ['phone', 'created_at'], unique=False)
        batch_op.create_index('ix_stk_request_status_next_query_at', ['status', 'next_query_at'], unique=False)
        batch_op.create_index('uq_stk_request_open_phone', ['phone'], unique=True, sqlite_where=sa.text("status IN ('sending', 'pending')"), postgresql_where=sa.text("status IN ('sending', 'pending')"))

    op.create_table('daraja_query',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('shortcode_id', sa.Integer(), nullable=False),
    sa.Column('callback_token', sa.String(length=64), nullable=False),
    sa.Column('payment_id', sa.Integer(), nullable=True),
    sa.Column('disbursement_id', sa.Integer(), nullable=True),
    sa.Column('reversal_id', sa.Integer(), nullable=True),
    sa.Column('transaction_id', sa.String(length=32), nullable=True),
    sa.Column('original_conversation_id', sa.String(length=64), nullable=True),
    sa.Column('originator_conversation_id', sa.String(length=64), nullable=True),
    sa.Column('conversation_id', sa.String(length=64), nullable=True),
    sa.Column('result_code', sa.String(length=16), nullable=True),
    sa.Column('result_desc', sa.Text(), nullable=True),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('requested_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('answered_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("kind IN ('status', 'balance')", name=op.f('ck_daraja_query_kind')),
    sa.CheckConstraint("status IN ('sending', 'sent', 'answered', 'failed', 'unanswered')", name=op.f('ck_daraja_query_status')),
    sa.ForeignKeyConstraint(['disbursement_id'], ['disbursement.id'], name=op.f('fk_daraja_query_disbursement_id_disbursement')),
    sa.ForeignKeyConstraint(['payment_id'], ['c2b_payment.id'], name=op.f('fk_daraja_query_payment_id_c2b_payment')),
    sa.ForeignKeyConstraint(['requested_by_id'], ['staff_user.id'], name=op.f('fk_daraja_query_requested_by_id_staff_user')),
    sa.ForeignKeyConstraint(['reversal_id'], ['reversal.id'], name=op.f('fk_daraja_query_reversal_id_reversal')),
    sa.ForeignKeyConstraint(['shortcode_id'], ['shortcode.id'], name=op.f('fk_daraja_query_shortcode_id_shortcode')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_daraja_query')),
    sa.UniqueConstraint('callback_token', name=op.f('uq_daraja_query_callback_token'))
    )
    with op.batch_alter_table('daraja_query', schema=None) as batch_op:
        batch_op.create_index('ix_daraja_query_disbursement_id', ['disbursement_id'], unique=False)
        batch_op.create_index('ix_daraja_query_payment_id', ['payment_id'], unique=False)
        batch_op.create_index('ix_daraja_query_shortcode_kind', ['shortcode_id', 'kind', 'id'], unique=False)



def downgrade():
    with op.batch_alter_table('daraja_query', schema=None) as batch_op:
        batch_op.drop_index('ix_daraja_query_shortcode_kind')
        batch_op.drop_index('ix_daraja_query_payment_id')
        batch_op.drop_index('ix_daraja_query_disbursement_id')

    op.drop_table('daraja_query')
    with op.batch_alter_table('stk_request', schema=None) as batch_op:
        batch_op.drop_index('uq_stk_request_open_phone', sqlite_where=sa.text("status IN ('sending', 'pending')"), postgresql_where=sa.text("status IN ('sending', 'pending')"))
        batch_op.drop_index('ix_stk_request_status_next_query_at')
        batch_op.drop_index('ix_stk_request_phone_created_at')
        batch_op.drop_index('ix_stk_request_loan_id')

    op.drop_table('stk_request')
    with op.batch_alter_table('reversal', schema=None) as batch_op:
        batch_op.drop_index('uq_reversal_live_payment', sqlite_where=sa.text("status IN ('requested', 'approved', 'sent', 'ambiguous', 'completed')"), postgresql_where=sa.text("status IN ('requested', 'approved', 'sent', 'ambiguous', 'completed')"))
        batch_op.drop_index('ix_reversal_status_check_after')

    op.drop_table('reversal')
    with op.batch_alter_table('disbursement', schema=None) as batch_op:
        batch_op.drop_index('uq_disbursement_live_loan', sqlite_where=sa.text("status <> 'cancelled'"), postgresql_where=sa.text("status <> 'cancelled'"))
        batch_op.drop_index('ix_disbursement_status_check_after')
        batch_op.drop_index(batch_op.f('ix_disbursement_loan_id'))

    op.drop_table('disbursement')
