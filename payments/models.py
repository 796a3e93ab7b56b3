"""M-Pesa tables: shortcodes, every callback as it arrived, and C2B payments."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from enum import StrEnum, nonmember

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lenders.extensions import db
from lenders.models import Borrower, Loan, Repayment, StaffUser, UTCDateTime, utcnow
from lenders.vault import EncryptedText

Money = Numeric(14, 2)


class PaymentStatus(StrEnum):
    """Where a C2B payment stands, stored as the member's value. A member equals its text
    (``"posted" == PaymentStatus.POSTED``), so rows read by the ORM or a raw cursor compare
    alike; templates see the enum as the Jinja global ``PaymentStatus``."""

    RECEIVED = "received"  # stored, waiting for the payments drain
    POSTED = "posted"  # on a loan (or loans): by a rule, or by an officer
    UNMATCHED = "unmatched"  # no rule found its loan: waits for an officer
    FAILED = "failed"  # processing refused it or kept failing: waits for an officer
    REVERSED = "reversed"  # its postings were reversed
    REVIEW = "review"  # its receipt came again with another amount or account; stays posted

    # Nobody's portfolio yet, so every officer sees them (the transactions page's first
    # branch). Not REVIEW: flagging keeps a payment where it was posted, in that portfolio.
    OPEN = nonmember((RECEIVED, UNMATCHED, FAILED))
    # What assign and match-again accept: exactly the open payments, so an officer can
    # place whatever nobody has placed yet.
    ASSIGNABLE = nonmember(OPEN)
    # What reassign (and an approved reassignment) accepts: money sitting on a loan.
    MOVABLE = nonmember((POSTED, REVIEW))


class MatchRule(StrEnum):
    """How a payment found its loan (DESIGN.md, "Matching"), stored as the value."""

    BILL_REF = "bill_ref"  # 1. the account typed names the loan
    SINGLE_LOAN = "single_loan"  # 2. the payer (or the borrower named) has one active loan
    AMOUNT = "amount"  # 3. the amount is within the tolerance of one loan's balance
    OLDEST_DUE = "oldest_due"  # 4. the loan with the earliest unpaid installment
    MANUAL = "manual"  # placed by an officer

    AUTOMATIC = nonmember((BILL_REF, SINGLE_LOAN, AMOUNT, OLDEST_DUE))


def sql_values(values: Iterable[str]) -> str:
    """``('a', 'b')`` for SQL text. Only for an enum's own values, never for input."""
    return "(" + ", ".join(f"'{value}'" for value in values) + ")"


# Callbacks an admin should look at (the quarantined-callbacks screen), and the predicate of
# the partial index that finds them: confirmations only write it in these rare outcomes.
ATTENTION_OUTCOMES = ("quarantined", "conflict")
ATTENTION_SQL = "outcome IN ('quarantined', 'conflict')"


def new_callback_token() -> str:
    """160 bits from ``secrets``, in hex so no word Safaricom forbids can appear in it."""
    return secrets.token_hex(20)


class Shortcode(db.Model):
    """A paybill or till that pays into this lender, with its callback token."""

    __tablename__ = "shortcode"
    __table_args__ = (
        CheckConstraint("kind IN ('paybill', 'till')", name="kind"),
        CheckConstraint("environment IN ('sandbox', 'production')", name="environment"),
        CheckConstraint("register_version IN ('v1', 'v2')", name="register_version"),
        CheckConstraint(
            "validation_policy IN ('accept_all', 'reject_unknown')", name="validation_policy"
        ),
        CheckConstraint("amount_tolerance >= 0", name="amount_tolerance"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(12), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    kind: Mapped[str] = mapped_column(String(8), default="paybill")
    environment: Mapped[str] = mapped_column(String(12), default="sandbox")
    callback_token: Mapped[str] = mapped_column(String(64), unique=True, default=new_callback_token)
    # v1 sends the payer's MSISDN as a SHA-256 hash, v2 masked ("2547 ***** 126").
    register_version: Mapped[str] = mapped_column(String(2), default="v2")
    amount_tolerance: Mapped[Decimal] = mapped_column(Money, default=Decimal("10.00"))
    validation_policy: Mapped[str] = mapped_column(String(16), default="accept_all")
    # Comma-separated addresses or networks; empty accepts callbacks from anywhere.
    allowed_ips: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Daraja credentials, encrypted at rest and never rendered back into a page.
    consumer_key: Mapped[str | None] = mapped_column(EncryptedText)
    consumer_secret: Mapped[str | None] = mapped_column(EncryptedText)
    passkey: Mapped[str | None] = mapped_column(EncryptedText)
    initiator_name: Mapped[str | None] = mapped_column(String(80))
    initiator_password: Mapped[str | None] = mapped_column(EncryptedText)
    urls_registered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    SECRET_FIELDS = ("consumer_key", "consumer_secret", "passkey", "initiator_password")

    def __repr__(self) -> str:
        return f"<Shortcode {self.number} {self.environment}>"


class CallbackLog(db.Model):
    """One request Safaricom (or anyone with the token) sent, kept as it arrived."""

    __tablename__ = "callback_log"
    __table_args__ = (
        Index("ix_callback_log_shortcode_received", "shortcode_id", "received_at"),
        Index(
            "ix_callback_log_attention",
            "id",
            sqlite_where=text(ATTENTION_SQL),
            postgresql_where=text(ATTENTION_SQL),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    shortcode_id: Mapped[int] = mapped_column(ForeignKey("shortcode.id"))
    kind: Mapped[str] = mapped_column(String(16))  # validation | confirmation
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    source_ip: Mapped[str | None] = mapped_column(String(45))
    headers: Mapped[dict | None] = mapped_column(JSON)
    body: Mapped[str] = mapped_column(Text)
    # stored | duplicate | conflict | quarantined | accepted | rejected:<code>
    outcome: Mapped[str] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("c2b_payment.id"))

    def __repr__(self) -> str:
        return f"<CallbackLog {self.kind} {self.outcome}>"


payment_repayment = Table(
    "payment_repayment",
    db.metadata,
    Column("payment_id", Integer, ForeignKey("c2b_payment.id"), primary_key=True),
    Column("repayment_id", Integer, ForeignKey("repayment.id"), primary_key=True, unique=True),
)


class C2BPayment(db.Model):
    """A customer's payment to a shortcode, unique per (shortcode, TransID): the database
    constraint, not a check in code, is what makes a repeated callback change nothing."""

    __tablename__ = "c2b_payment"
    __table_args__ = (
        UniqueConstraint("shortcode_id", "trans_id", name="uq_c2b_payment_shortcode_trans_id"),
        CheckConstraint(f"status IN {sql_values(PaymentStatus)}", name="status"),
        CheckConstraint("amount > 0", name="amount_positive"),
        Index("ix_c2b_payment_status_received", "status", "received_at"),
        Index("ix_c2b_payment_status_id", "status", "id"),  # a status's keyset pages
        Index("ix_c2b_payment_trans_id", "trans_id"),  # a receipt typed in the search
        Index("ix_c2b_payment_msisdn", "msisdn"),  # a phone in any form
        Index("ix_c2b_payment_shortcode_trans_time", "shortcode_id", "trans_time"),  # a day
        # Only matched payments have a borrower: a confirmation's INSERT (borrower unknown
        # yet) does not touch this index, and lookups by borrower (``= ?``) still use it.
        Index(
            "ix_c2b_payment_borrower_id",
            "borrower_id",
            sqlite_where=text("borrower_id IS NOT NULL"),
            postgresql_where=text("borrower_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    shortcode_id: Mapped[int] = mapped_column(ForeignKey("shortcode.id"))
    trans_id: Mapped[str] = mapped_column(String(32))
    trans_type: Mapped[str] = mapped_column(String(40), default="")
    trans_time: Mapped[datetime] = mapped_column(UTCDateTime)
    amount: Mapped[Decimal] = mapped_column(Money)
    bill_ref: Mapped[str] = mapped_column(String(64), default="")
    invoice_number: Mapped[str] = mapped_column(String(64), default="")
    third_party_trans_id: Mapped[str] = mapped_column(String(64), default="")
    org_account_balance: Mapped[Decimal | None] = mapped_column(Money)
    # As Safaricom sent it: plain 2547…, a SHA-256 hex, or masked "2547 ***** 126".
    msisdn: Mapped[str] = mapped_column(String(64), default="")
    msisdn_form: Mapped[str] = mapped_column(String(8), default="")  # plain|hashed|masked|""
    first_name: Mapped[str] = mapped_column(String(80), default="")
    middle_name: Mapped[str] = mapped_column(String(80), default="")
    last_name: Mapped[str] = mapped_column(String(80), default="")

    status: Mapped[str] = mapped_column(String(12), default=PaymentStatus.RECEIVED)
    # A worker's lease on a payment waiting in received (payments.processing).
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rule: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    borrower_id: Mapped[int | None] = mapped_column(ForeignKey("borrower.id"))
    credit: Mapped[Decimal] = mapped_column(Money, default=Decimal("0.00"))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    shortcode: Mapped[Shortcode] = relationship()
    borrower: Mapped[Borrower | None] = relationship()
    repayments: Mapped[list[Repayment]] = relationship(
        secondary=payment_repayment, order_by=Repayment.id
    )

    def __repr__(self) -> str:
        return f"<C2BPayment {self.trans_id} {self.amount} {self.status}>"

    @property
    def payer_name(self) -> str:
        return " ".join(p for p in (self.first_name, self.middle_name, self.last_name) if p)


class ReassignmentRequest(db.Model):
    """An officer's request to move a posted payment to another loan, waiting for an
    admin when maker-checker is on. Money moves only when it is approved."""

    __tablename__ = "reassignment_request"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'approved', 'rejected')", name="status"),
        Index("ix_reassignment_request_status", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("c2b_payment.id"))
    to_loan_id: Mapped[int] = mapped_column(ForeignKey("loan.id"))
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(12), default="pending")
    requested_by_id: Mapped[int] = mapped_column(ForeignKey("staff_user.id"))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decision_note: Mapped[str | None] = mapped_column(Text)

    payment: Mapped[C2BPayment] = relationship()
    to_loan: Mapped[Loan] = relationship()
    requested_by: Mapped[StaffUser] = relationship(foreign_keys=[requested_by_id])

    def __repr__(self) -> str:
        return f"<ReassignmentRequest {self.payment_id} -> {self.to_loan_id} {self.status}>"


SMS_STATUSES = ("queued", "sending", "sent", "delivered", "failed", "skipped")


class SmsMessage(db.Model):
    """One message to a borrower or a member of staff, with where it got to. A payment
    has at most one receipt: the unique constraint, not a check, keeps a job that runs
    twice from texting twice."""

    __tablename__ = "sms_message"
    __table_args__ = (
        UniqueConstraint("payment_id", "kind", name="uq_sms_message_payment_kind"),
        CheckConstraint(
            "status IN ('queued', 'sending', 'sent', 'delivered', 'failed', 'skipped')",
            name="status",
        ),
        Index("ix_sms_message_provider_message_id", "provider_message_id"),
        # The messages drain's claim: queued messages, oldest first.
        Index(
            "ix_sms_message_queued",
            "id",
            sqlite_where=text("status = 'queued'"),
            postgresql_where=text("status = 'queued'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # receipt | notice | alert
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("c2b_payment.id"))
    borrower_id: Mapped[int | None] = mapped_column(ForeignKey("borrower.id"), index=True)
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id"))
    to_phone: Mapped[str] = mapped_column(String(12))
    language: Mapped[str] = mapped_column(String(2), default="en")
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(12), default="queued")
    provider: Mapped[str | None] = mapped_column(String(20))
    provider_message_id: Mapped[str | None] = mapped_column(String(80))
    attempts: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # after a failure
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:
        return f"<SmsMessage {self.kind} {self.status}>"


class SmsTemplate(db.Model):
    """The words of a message, per language, editable by admins."""

    __tablename__ = "sms_template"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    language: Mapped[str] = mapped_column(String(2), primary_key=True)
    body: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id"))

    def __repr__(self) -> str:
        return f"<SmsTemplate {self.key}/{self.language}>"


class SmsSettings(db.Model):
    """The lender's SMS provider (one row): console for development, Africa's Talking
    for real, with its API key encrypted like Daraja's secrets."""

    __tablename__ = "sms_settings"

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(20), default="console")
    username: Mapped[str | None] = mapped_column(EncryptedText)  # encrypted like the key
    api_key: Mapped[str | None] = mapped_column(EncryptedText)
    sender_id: Mapped[str | None] = mapped_column(String(11))
    callback_token: Mapped[str] = mapped_column(String(64), default=new_callback_token)
    quiet_start: Mapped[int] = mapped_column(default=21)  # Nairobi hours, for non-receipts
    quiet_end: Mapped[int] = mapped_column(default=7)

    def __repr__(self) -> str:
        return f"<SmsSettings {self.provider}>"


class OfficerNotice(db.Model):
    """In-app news for an officer: a payment landed in their portfolio (kind ``payment``),
    or left it again because M-Pesa reversed it (``reversal``); once per kind."""

    __tablename__ = "officer_notice"
    __table_args__ = (
        UniqueConstraint(
            "staff_id", "payment_id", "kind", name="uq_officer_notice_staff_payment_kind"
        ),
        Index("ix_officer_notice_staff_read", "staff_id", "read_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff_user.id"))
    payment_id: Mapped[int] = mapped_column(ForeignKey("c2b_payment.id"))
    kind: Mapped[str] = mapped_column(String(12), default="payment", server_default="payment")
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:
        return f"<OfficerNotice {self.staff_id} {self.payment_id}>"
