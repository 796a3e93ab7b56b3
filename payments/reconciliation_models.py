"""Reconciliation's tables: each statement import (or Pull Transactions run) with its
summary, every line Safaricom's record shows, the daily close's sign-offs, and a
shortcode's Pull Transactions registration and last pull."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, deferred, mapped_column, relationship

from lenders.extensions import db
from lenders.models import StaffUser, UTCDateTime, utcnow
from payments.models import Money, Shortcode

# What a statement row is (DESIGN.md, "Reconciliation"). Only customer payments are repayments.
LINE_KINDS = (
    "customer_payment",
    "reversal",
    "organisation_transfer",
    "b2c",
    "charge",
    "settlement",
    "failed",
)
NOT_REPAYMENTS = ("organisation_transfer", "b2c", "charge", "settlement", "failed")
# What became of a line: customer payments are recorded (already in the book), gap (stored
# now), gap_reversed (stored as reversed, never posted) or differs (recorded with another
# amount or account: review); reversals wait (pending) for the reversals drain, then are
# reversed or review (a person must look); B2C payouts are disbursement (matched) or
# listed, like everything else that is not money for a loan.
LINE_OUTCOMES = (
    "recorded",
    "gap",
    "gap_reversed",
    "differs",
    "pending",
    "reversed",
    "review",
    "disbursement",
    "listed",
)
NEEDS_A_PERSON = ("differs", "review")
IMPORT_STATUSES = ("queued", "running", "done", "failed")
_PENDING_SQL = "outcome = 'pending'"
_LINKED_SQL = "linked_receipt IS NOT NULL"


class StatementImport(db.Model):
    """One statement file imported (or one Pull Transactions run), its progress while it
    runs and its summary after. The uploaded file waits in ``content`` for the job that
    imports it, and is dropped once imported."""

    __tablename__ = "statement_import"
    __table_args__ = (
        CheckConstraint("source IN ('statement', 'pull')", name="source"),
        CheckConstraint("status IN ('queued', 'running', 'done', 'failed')", name="status"),
        Index("ix_statement_import_shortcode_created", "shortcode_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    shortcode_id: Mapped[int] = mapped_column(ForeignKey("shortcode.id"))
    source: Mapped[str] = mapped_column(String(12), default="statement")
    filename: Mapped[str] = mapped_column(String(255), default="")
    sha256: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(12), default="queued")
    rows_total: Mapped[int] = mapped_column(default=0)
    rows_done: Mapped[int] = mapped_column(default=0)
    # The time span the file's rows (or the pull's window) cover, UTC.
    period_from: Mapped[datetime | None] = mapped_column(UTCDateTime)
    period_to: Mapped[datetime | None] = mapped_column(UTCDateTime)
    summary: Mapped[dict | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    content: Mapped[bytes | None] = deferred(mapped_column(LargeBinary))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    shortcode: Mapped[Shortcode] = relationship()
    created_by: Mapped[StaffUser | None] = relationship()

    def __repr__(self) -> str:
        return f"<StatementImport {self.id} {self.source} {self.status}>"

    @property
    def percent(self) -> int:
        if self.status == "done":
            return 100
        return min(99, self.rows_done * 100 // self.rows_total) if self.rows_total else 0


class StatementLine(db.Model):
    """One row of Safaricom's record of the paybill (org-portal statement or Pull
    Transactions), classified, once per (shortcode, receipt, kind): a B2C payout and its
    charge share a receipt. Importing a file again finds its lines here and adds nothing."""

    __tablename__ = "statement_line"
    __table_args__ = (
        UniqueConstraint(
            "shortcode_id", "receipt", "kind", name="uq_statement_line_shortcode_receipt_kind"
        ),
        CheckConstraint(
            "kind IN ('customer_payment', 'reversal', 'organisation_transfer', 'b2c', "
            "'charge', 'settlement', 'failed')",
            name="kind",
        ),
        CheckConstraint("paid_in >= 0 AND withdrawn >= 0", name="amounts"),
        Index("ix_statement_line_shortcode_completed", "shortcode_id", "completed_at"),
        # Only reversals link a receipt: a partial index, which the other lines never write.
        Index(
            "ix_statement_line_linked_receipt",
            "linked_receipt",
            sqlite_where=text(_LINKED_SQL),
            postgresql_where=text(_LINKED_SQL),
        ),
        Index("ix_statement_line_import_id", "import_id"),
        # The reversals drain's claim: lines waiting to reverse their payment.
        Index(
            "ix_statement_line_pending",
            "id",
            sqlite_where=text(_PENDING_SQL),
            postgresql_where=text(_PENDING_SQL),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    shortcode_id: Mapped[int] = mapped_column(ForeignKey("shortcode.id"))
    import_id: Mapped[int] = mapped_column(ForeignKey("statement_import.id"))
    receipt: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(24))
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    paid_in: Mapped[Decimal] = mapped_column(Money, default=Decimal("0.00"))
    withdrawn: Mapped[Decimal] = mapped_column(Money, default=Decimal("0.00"))
    balance: Mapped[Decimal | None] = mapped_column(Money)
    linked_receipt: Mapped[str | None] = mapped_column(String(32))
    bill_ref: Mapped[str] = mapped_column(String(64), default="")
    party: Mapped[str] = mapped_column(String(120), default="")
    reason_type: Mapped[str] = mapped_column(String(80), default="")
    details: Mapped[str] = mapped_column(String(200), default="")
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("c2b_payment.id"))
    # A B2C payout's disbursement (lenders/disbursements.py), found by its M-Pesa receipt.
    disbursement_id: Mapped[int | None] = mapped_column(ForeignKey("disbursement.id"))
    outcome: Mapped[str] = mapped_column(String(16), default="listed")
    note: Mapped[str | None] = mapped_column(Text)

    def __repr__(self) -> str:
        return f"<StatementLine {self.receipt} {self.kind} {self.outcome}>"

    @property
    def amount(self) -> Decimal:
        return self.paid_in or self.withdrawn


class ReconciliationSignOff(db.Model):
    """An admin's sign-off of one shortcode's Nairobi day, with the figures signed."""

    __tablename__ = "reconciliation_sign_off"
    __table_args__ = (
        UniqueConstraint("shortcode_id", "day", name="uq_reconciliation_sign_off_shortcode_day"),
        Index("ix_reconciliation_sign_off_day", "day"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    shortcode_id: Mapped[int] = mapped_column(ForeignKey("shortcode.id"))
    day: Mapped[date] = mapped_column(Date)
    signed_off_by_id: Mapped[int] = mapped_column(ForeignKey("staff_user.id"))
    signed_off_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    figures: Mapped[dict] = mapped_column(JSON)
    note: Mapped[str | None] = mapped_column(Text)

    shortcode: Mapped[Shortcode] = relationship()
    signed_off_by: Mapped[StaffUser] = relationship()

    def __repr__(self) -> str:
        return f"<ReconciliationSignOff {self.shortcode_id} {self.day}>"


class PullRegistration(db.Model):
    """A shortcode registered for Pull Transactions, and its last successful pull."""

    __tablename__ = "pull_registration"

    shortcode_id: Mapped[int] = mapped_column(ForeignKey("shortcode.id"), primary_key=True)
    nominated_number: Mapped[str] = mapped_column(String(12))
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    registered_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id"))
    response: Mapped[str] = mapped_column(Text, default="")
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_pull_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_pull_to: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_import_id: Mapped[int | None] = mapped_column(ForeignKey("statement_import.id"))

    shortcode: Mapped[Shortcode] = relationship()
    last_import: Mapped[StatementImport | None] = relationship()

    def __repr__(self) -> str:
        return f"<PullRegistration {self.shortcode_id}>"
