"""The requests Marejesho makes to Safaricom that move or check money: STK prompts,
Transaction Status and Account Balance queries, and reversals (B2C payouts are the
lending book's ``Disbursement``, lenders/disbursements.py).

Each is a row with a state machine, committed with its unguessable callback token before
anything is sent, so that Safaricom's answer always finds it; a job asks Safaricom when no
answer comes (STK Query, Transaction Status). Unique and partial unique indexes, not
checks in code, keep a phone to one open prompt and a payment to one live reversal."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lenders.extensions import db
from lenders.models import Loan, StaffUser, UTCDateTime, utcnow
from payments.models import C2BPayment, Money, PaymentStatus, Shortcode, new_callback_token

STK_STATUSES = ("sending", "pending", "completed", "failed", "cancelled", "expired")
OPEN_STK = ("sending", "pending")  # Safaricom may still prompt the phone
# How long the loan page watches a paid prompt for its payment to reach the loan (the drain
# posts in about a second; a prompt settled by STK Query waits for the C2B confirmation).
POSTING_WATCH = timedelta(minutes=2)
_OPEN_STK_SQL = "status IN ('sending', 'pending')"


class StkRequest(db.Model):
    """An STK prompt (M-Pesa Express) to a borrower's phone for a loan.

    ``sending``: committed, not yet answered by Daraja; ``pending``: Daraja accepted it and
    the borrower is being asked; then ``completed``, ``failed``, ``cancelled`` or
    ``expired`` by the callback, by STK Query, or by its lifetime running out."""

    __tablename__ = "stk_request"
    __table_args__ = (
        CheckConstraint(
            "status IN ('sending', 'pending', 'completed', 'failed', 'cancelled', 'expired')",
            name="status",
        ),
        CheckConstraint("amount > 0", name="amount_positive"),
        Index(
            "uq_stk_request_open_phone",
            "phone",
            unique=True,
            sqlite_where=text(_OPEN_STK_SQL),
            postgresql_where=text(_OPEN_STK_SQL),
        ),
        Index("ix_stk_request_phone_created_at", "phone", "created_at"),
        Index("ix_stk_request_status_next_query_at", "status", "next_query_at"),
        Index("ix_stk_request_loan_id", "loan_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    loan_id: Mapped[int] = mapped_column(ForeignKey("loan.id"))
    shortcode_id: Mapped[int] = mapped_column(ForeignKey("shortcode.id"))
    phone: Mapped[str] = mapped_column(String(12))
    amount: Mapped[Decimal] = mapped_column(Money)
    account_reference: Mapped[str] = mapped_column(String(12))
    description: Mapped[str] = mapped_column(String(13))
    status: Mapped[str] = mapped_column(String(12), default="sending")
    callback_token: Mapped[str] = mapped_column(String(64), unique=True, default=new_callback_token)
    merchant_request_id: Mapped[str | None] = mapped_column(String(64))
    checkout_request_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    result_code: Mapped[str | None] = mapped_column(String(16))
    result_desc: Mapped[str | None] = mapped_column(Text)
    receipt: Mapped[str | None] = mapped_column(String(32))
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("c2b_payment.id"))
    settled_by: Mapped[str | None] = mapped_column(String(12))  # callback|query|daraja|timeout
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_query_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    queries: Mapped[int] = mapped_column(default=0)

    loan: Mapped[Loan] = relationship()
    shortcode: Mapped[Shortcode] = relationship()
    payment: Mapped[C2BPayment | None] = relationship()
    requested_by: Mapped[StaffUser | None] = relationship()

    def __repr__(self) -> str:
        return f"<StkRequest {self.id} {self.status}>"

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STK

    @property
    def posting(self) -> bool:
        """Paid, and its payment not on the loan yet (watched for ``POSTING_WATCH``)."""
        if self.status != "completed" or self.settled_at is None:
            return False
        if self.payment is not None and self.payment.status != PaymentStatus.RECEIVED:
            return False
        return utcnow() - self.settled_at < POSTING_WATCH


QUERY_KINDS = ("status", "balance")
QUERY_STATUSES = ("sending", "sent", "answered", "failed", "unanswered")


class DarajaQuery(db.Model):
    """A Transaction Status or Account Balance query: about a payment, a disbursement, a
    reversal, or (balance) a shortcode. ``answered`` holds Safaricom's result."""

    __tablename__ = "daraja_query"
    __table_args__ = (
        CheckConstraint("kind IN ('status', 'balance')", name="kind"),
        CheckConstraint(
            "status IN ('sending', 'sent', 'answered', 'failed', 'unanswered')", name="status"
        ),
        Index("ix_daraja_query_shortcode_kind", "shortcode_id", "kind", "id"),
        Index("ix_daraja_query_payment_id", "payment_id"),
        Index("ix_daraja_query_disbursement_id", "disbursement_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(12), default="sending")
    shortcode_id: Mapped[int] = mapped_column(ForeignKey("shortcode.id"))
    callback_token: Mapped[str] = mapped_column(String(64), unique=True, default=new_callback_token)
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("c2b_payment.id"))
    disbursement_id: Mapped[int | None] = mapped_column(ForeignKey("disbursement.id"))
    reversal_id: Mapped[int | None] = mapped_column(ForeignKey("reversal.id"))
    transaction_id: Mapped[str | None] = mapped_column(String(32))  # a receipt asked about
    original_conversation_id: Mapped[str | None] = mapped_column(String(64))
    originator_conversation_id: Mapped[str | None] = mapped_column(String(64))  # Daraja's
    conversation_id: Mapped[str | None] = mapped_column(String(64))
    result_code: Mapped[str | None] = mapped_column(String(16))
    result_desc: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict | None] = mapped_column(JSON)  # the parameters, or the balances
    error: Mapped[str | None] = mapped_column(Text)
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    shortcode: Mapped[Shortcode] = relationship()

    def __repr__(self) -> str:
        return f"<DarajaQuery {self.kind} {self.status}>"


REVERSAL_STATUSES = (
    "requested",
    "rejected",
    "approved",
    "sent",
    "completed",
    "failed",
    "ambiguous",
)
_LIVE_REVERSAL_SQL = "status IN ('requested', 'approved', 'sent', 'ambiguous', 'completed')"


class Reversal(db.Model):
    """An admin's request that Safaricom reverse a C2B payment (the money goes back to the
    payer), approved by another admin when maker-checker is on. On Safaricom's success the
    payment becomes ``reversed`` and its repayments are undone (payments/reversals.py)."""

    __tablename__ = "reversal"
    __table_args__ = (
        CheckConstraint(
            "status IN ('requested', 'rejected', 'approved', 'sent', 'completed', 'failed', "
            "'ambiguous')",
            name="status",
        ),
        Index(
            "uq_reversal_live_payment",
            "payment_id",
            unique=True,
            sqlite_where=text(_LIVE_REVERSAL_SQL),
            postgresql_where=text(_LIVE_REVERSAL_SQL),
        ),
        Index("ix_reversal_status_check_after", "status", "check_after"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("c2b_payment.id"))
    amount: Mapped[Decimal] = mapped_column(Money)
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(12), default="requested")
    requested_by_id: Mapped[int] = mapped_column(ForeignKey("staff_user.id"))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decision_note: Mapped[str | None] = mapped_column(Text)
    callback_token: Mapped[str] = mapped_column(String(64), unique=True, default=new_callback_token)
    originator_conversation_id: Mapped[str | None] = mapped_column(String(64))
    conversation_id: Mapped[str | None] = mapped_column(String(64))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    check_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    result_code: Mapped[str | None] = mapped_column(String(16))
    result_desc: Mapped[str | None] = mapped_column(Text)
    reversal_receipt: Mapped[str | None] = mapped_column(String(32))
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    payment: Mapped[C2BPayment] = relationship()
    requested_by: Mapped[StaffUser] = relationship(foreign_keys=[requested_by_id])
    decided_by: Mapped[StaffUser | None] = relationship(foreign_keys=[decided_by_id])

    def __repr__(self) -> str:
        return f"<Reversal {self.payment_id} {self.status}>"
