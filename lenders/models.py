"""The lending book's tables: staff, borrowers and their phones, loans, installments,
repayments with their allocations, and the append-only audit trail."""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime
from decimal import Decimal

from flask import current_app, has_app_context
from flask_login import UserMixin
from sqlalchemy import (
    JSON,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    event,
    false,
    inspect,
    select,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.orm.attributes import set_committed_value
from werkzeug.security import check_password_hash, generate_password_hash

from lenders.config import PASSWORD_HASH_METHOD
from lenders.extensions import db
from lenders.phones import name_key
from lenders.references import reference_key

Money = Numeric(14, 2)
ZERO = Decimal("0.00")


def utcnow() -> datetime:
    return datetime.now(UTC)


def password_hash_method() -> str:
    """The app's PASSWORD_HASH_METHOD: scrypt, unless a test's configuration says otherwise."""
    if has_app_context():
        return current_app.config.get("PASSWORD_HASH_METHOD", PASSWORD_HASH_METHOD)
    return PASSWORD_HASH_METHOD


class UTCDateTime(db.TypeDecorator):
    """Timestamps stored in UTC and always handed back timezone-aware (SQLite drops tzinfo)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: store times in UTC with tzinfo")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


ROLES = ("admin", "officer")


class StaffUser(UserMixin, db.Model):
    """Someone who logs in: an admin or a loan officer."""

    __tablename__ = "staff_user"
    __table_args__ = (CheckConstraint("role IN ('admin', 'officer')", name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(default=True)
    # Part of the login cookie's identity: changing it ends every session of the user.
    session_token: Mapped[str] = mapped_column(String(32), default=lambda: secrets.token_hex(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    loans: Mapped[list[Loan]] = relationship(back_populates="officer")

    def __repr__(self) -> str:
        return f"<StaffUser {self.email} {self.role}>"

    @property
    def is_active(self) -> bool:  # Flask-Login refuses inactive users
        return self.active

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def get_id(self) -> str:
        return f"{self.id}:{self.session_token}"

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password, method=password_hash_method())
        self.end_sessions()

    def check_password(self, password: str) -> bool:
        return bool(self.password_hash) and check_password_hash(self.password_hash, password)

    def end_sessions(self) -> None:
        """Invalidate every login cookie issued so far (logout, deactivation, new password)."""
        self.session_token = secrets.token_hex(16)


class Borrower(db.Model):
    """A person who owes; identified across the book by national ID."""

    __tablename__ = "borrower"
    __table_args__ = (
        CheckConstraint("credit >= 0", name="credit_not_negative"),
        Index("ix_borrower_name_id", "name", "id"),  # list order and keyset pages
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    national_id: Mapped[str] = mapped_column(String(32), unique=True)
    # Money received beyond every active loan, held for the borrower (refundable).
    credit: Mapped[Decimal] = mapped_column(Money, default=ZERO)
    sms_language: Mapped[str] = mapped_column(String(2), default="en", server_default="en")
    sms_opt_out: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    phones: Mapped[list[BorrowerPhone]] = relationship(
        back_populates="borrower", cascade="all, delete-orphan", order_by="BorrowerPhone.id"
    )
    loans: Mapped[list[Loan]] = relationship(back_populates="borrower", order_by="Loan.id")

    def __repr__(self) -> str:
        return f"<Borrower {self.national_id}>"

    @property
    def first_name(self) -> str:
        return self.name.split()[0] if self.name.split() else ""


class BorrowerPhone(db.Model):
    """One of a borrower's phones, canonical (2547XXXXXXXX / 2541XXXXXXXX), with the forms
    Safaricom may send it in: its SHA-256 hex and the visible parts of the masked form."""

    __tablename__ = "borrower_phone"
    __table_args__ = (
        UniqueConstraint("borrower_id", "number", name="uq_borrower_phone_borrower_number"),
        CheckConstraint("length(number) = 12", name="canonical_length"),
        # A masked MSISDN and a FirstName: about a thousand phones share a masked key at a
        # million loans, so the name is checked in this index, which also holds what the
        # answer needs (one index range, no row of either table read but the matches).
        Index(
            "ix_borrower_phone_masked_key_name_key",
            "masked_key",
            "name_key",
            "borrower_id",
            "number",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    borrower_id: Mapped[int] = mapped_column(ForeignKey("borrower.id", ondelete="CASCADE"))
    number: Mapped[str] = mapped_column(String(12), index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    # "2547" + last three digits: what a masked MSISDN ("2547 ***** 126") shows.
    masked_key: Mapped[str] = mapped_column(String(7))
    # The borrower's name as masked matching compares it (lenders.phones.name_key), kept in
    # step by the events below and by the importer. None for a row written behind the
    # app's back: matching then reads the borrower's name instead.
    name_key: Mapped[str | None] = mapped_column(Text)

    borrower: Mapped[Borrower] = relationship(back_populates="phones")

    def __repr__(self) -> str:
        return f"<BorrowerPhone {self.masked}>"

    @property
    def masked(self) -> str:
        return f"{self.number[:4]}****{self.number[-4:]}"


LOAN_STATUSES = ("pending", "active", "closed", "written_off")
FREQUENCIES = ("weekly", "monthly")


class Loan(db.Model):
    """A loan: what was lent, what is due by when, and what has been paid."""

    __tablename__ = "loan"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'active', 'closed', 'written_off')", name="status"),
        CheckConstraint("frequency IN ('weekly', 'monthly')", name="frequency"),
        CheckConstraint("principal > 0 AND interest >= 0 AND fees >= 0", name="amounts"),
        # Half a cent of slack: SQLite adds NUMERIC columns as binary floats.
        CheckConstraint(
            "paid >= 0 AND paid <= principal + interest + fees + 0.005", name="paid_in_range"
        ),
        CheckConstraint("installment_count >= 1", name="installment_count"),
        Index("ix_loan_officer_id_status", "officer_id", "status"),
        Index("ix_loan_status_disbursed_on", "status", "disbursed_on"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    # The number as matching compares it (see lenders.references.reference_key).
    reference_key: Mapped[str] = mapped_column(String(32), index=True)
    borrower_id: Mapped[int] = mapped_column(ForeignKey("borrower.id"), index=True)
    officer_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id"))
    principal: Mapped[Decimal] = mapped_column(Money)
    interest: Mapped[Decimal] = mapped_column(Money, default=ZERO)
    fees: Mapped[Decimal] = mapped_column(Money, default=ZERO)
    # Kept equal to the sum of the installments' amount_paid by post/reverse_repayment.
    paid: Mapped[Decimal] = mapped_column(Money, default=ZERO)
    disbursed_on: Mapped[date] = mapped_column(Date)
    installment_count: Mapped[int]
    frequency: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    borrower: Mapped[Borrower] = relationship(back_populates="loans")
    officer: Mapped[StaffUser | None] = relationship(back_populates="loans")
    installments: Mapped[list[Installment]] = relationship(
        back_populates="loan", cascade="all, delete-orphan", order_by="Installment.seq"
    )
    repayments: Mapped[list[Repayment]] = relationship(
        back_populates="loan", order_by="Repayment.id"
    )

    def __repr__(self) -> str:
        return f"<Loan {self.number} {self.status}>"

    @property
    def total_due(self) -> Decimal:
        return self.principal + self.interest + self.fees

    @property
    def outstanding(self) -> Decimal:
        return self.total_due - self.paid

    @property
    def next_due(self) -> Installment | None:
        """The oldest installment not fully paid."""
        return next((i for i in self.installments if i.outstanding > 0), None)


class Installment(db.Model):
    """One scheduled amount of a loan, with what has been allocated to it so far."""

    __tablename__ = "installment"
    __table_args__ = (
        UniqueConstraint("loan_id", "seq", name="uq_installment_loan_seq"),
        CheckConstraint("amount_due > 0", name="amount_due_positive"),
        CheckConstraint("amount_paid >= 0 AND amount_paid <= amount_due", name="paid_in_range"),
        Index("ix_installment_due_on", "due_on"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    loan_id: Mapped[int] = mapped_column(ForeignKey("loan.id", ondelete="CASCADE"))
    seq: Mapped[int]
    due_on: Mapped[date] = mapped_column(Date)
    amount_due: Mapped[Decimal] = mapped_column(Money)
    amount_paid: Mapped[Decimal] = mapped_column(Money, default=ZERO)

    loan: Mapped[Loan] = relationship(back_populates="installments")

    def __repr__(self) -> str:
        return f"<Installment {self.loan_id}#{self.seq} {self.due_on}>"

    @property
    def outstanding(self) -> Decimal:
        return self.amount_due - self.amount_paid

    def state(self, today: date) -> str:
        """paid, overdue or due, as the schedule shows it."""
        if self.outstanding <= 0:
            return "paid"
        return "overdue" if self.due_on < today else "due"


REPAYMENT_SOURCES = ("import", "mpesa", "manual")


class Repayment(db.Model):
    """Money received for a loan. ``amount`` was applied to the loan's installments (see
    allocations); ``to_credit`` is what exceeded the loan and was held as borrower credit."""

    __tablename__ = "repayment"
    __table_args__ = (
        CheckConstraint(
            "amount >= 0 AND to_credit >= 0 AND amount + to_credit > 0", name="amounts"
        ),
        CheckConstraint("source IN ('import', 'mpesa', 'manual')", name="source"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    loan_id: Mapped[int] = mapped_column(ForeignKey("loan.id"), index=True)
    amount: Mapped[Decimal] = mapped_column(Money)
    to_credit: Mapped[Decimal] = mapped_column(Money, default=ZERO)
    source: Mapped[str] = mapped_column(String(16))
    reference: Mapped[str | None] = mapped_column(String(64), index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    posted_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id"))
    reversed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reversed_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id"))
    reversal_reason: Mapped[str | None] = mapped_column(Text)

    loan: Mapped[Loan] = relationship(back_populates="repayments")
    allocations: Mapped[list[Allocation]] = relationship(
        back_populates="repayment", cascade="all, delete-orphan", order_by="Allocation.id"
    )

    def __repr__(self) -> str:
        return f"<Repayment {self.id} {self.amount} loan={self.loan_id}>"

    @property
    def reversed(self) -> bool:
        return self.reversed_at is not None


class Allocation(db.Model):
    """The part of a repayment applied to one installment."""

    __tablename__ = "allocation"
    __table_args__ = (CheckConstraint("amount > 0", name="amount_positive"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    repayment_id: Mapped[int] = mapped_column(ForeignKey("repayment.id"), index=True)
    installment_id: Mapped[int] = mapped_column(ForeignKey("installment.id"), index=True)
    amount: Mapped[Decimal] = mapped_column(Money)

    repayment: Mapped[Repayment] = relationship(back_populates="allocations")
    installment: Mapped[Installment] = relationship()

    def __repr__(self) -> str:
        return f"<Allocation {self.amount} -> installment {self.installment_id}>"


class AuditEvent(db.Model):
    """Who did what to which record, when and why, with before and after. Append-only:
    the ORM refuses updates and deletes, and database triggers refuse them too."""

    __tablename__ = "audit_event"
    __table_args__ = (Index("ix_audit_event_entity", "entity_type", "entity_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id"))
    action: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(64))
    before: Mapped[dict | None] = mapped_column(JSON)
    after: Mapped[dict | None] = mapped_column(JSON)
    reason: Mapped[str | None] = mapped_column(Text)

    actor: Mapped[StaffUser | None] = relationship()

    def __repr__(self) -> str:
        return f"<AuditEvent {self.action} {self.entity_type}:{self.entity_id}>"


@event.listens_for(Loan.number, "set", retval=True)
def _keep_reference_key(loan, value, oldvalue, initiator):
    loan.reference_key = reference_key(value)
    return value


@event.listens_for(BorrowerPhone, "before_insert")
@event.listens_for(BorrowerPhone, "before_update")
def _keep_phone_name_key(mapper, connection, phone):
    """A phone added or moved carries its borrower's name key."""
    borrower = phone.__dict__.get("borrower")
    if borrower is not None and borrower.id in (None, phone.borrower_id):
        name = borrower.name
    else:
        name = connection.scalar(select(Borrower.name).where(Borrower.id == phone.borrower_id))
    phone.name_key = name_key(name) if name is not None else None


@event.listens_for(Borrower, "after_update")
def _rekey_phones_on_rename(mapper, connection, borrower):
    """A renamed borrower's phones take the new name key (loaded ones in memory too)."""
    if not inspect(borrower).attrs.name.history.has_changes():
        return
    key = name_key(borrower.name)
    table = BorrowerPhone.__table__
    connection.execute(update(table).where(table.c.borrower_id == borrower.id).values(name_key=key))
    for phone in borrower.__dict__.get("phones", ()):
        set_committed_value(phone, "name_key", key)


@event.listens_for(AuditEvent, "before_update")
@event.listens_for(AuditEvent, "before_delete")
def _refuse_audit_change(mapper, connection, target):
    raise PermissionError("audit events are append-only")


AUDIT_APPEND_ONLY_SQL = {
    "sqlite": [
        "CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_event "
        "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END",
        "CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON audit_event "
        "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END",
    ],
    "postgresql": [
        "CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger AS $$ "
        "BEGIN RAISE EXCEPTION 'audit events are append-only'; END; $$ LANGUAGE plpgsql",
        "CREATE TRIGGER audit_event_no_change BEFORE UPDATE OR DELETE ON audit_event "
        "FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()",
    ],
}


@event.listens_for(AuditEvent.__table__, "after_create")
def _create_audit_triggers(table, connection, **kw):
    """For ``db.create_all`` (tests); the migration creates the same triggers."""
    for statement in AUDIT_APPEND_ONLY_SQL.get(connection.dialect.name, []):
        connection.exec_driver_sql(statement)


class Setting(db.Model):
    """A lender-wide switch an admin can change (e.g. maker-checker on reassignments)."""

    __tablename__ = "setting"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id"))

    def __repr__(self) -> str:
        return f"<Setting {self.key}>"
