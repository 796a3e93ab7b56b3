"""The only ways money moves on a loan: ``post_repayment`` and ``reverse_repayment``.

Services take the session and plain values, flush but never commit: the request or job
that calls them owns the one transaction. Every change writes an audit event."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from sqlalchemy import exists, inspect, select
from sqlalchemy.orm import Session

from lenders.models import (
    ZERO,
    Allocation,
    AuditEvent,
    Borrower,
    Installment,
    Loan,
    Repayment,
    StaffUser,
)
from lenders.schedule import allocate_oldest_first, build_schedule


class BookError(ValueError):
    """A money movement the book refuses; the message is for the person who asked."""


def record_audit(
    session: Session,
    action: str,
    entity: object,
    *,
    actor: StaffUser | None = None,
    before: dict | None = None,
    after: dict | None = None,
    reason: str | None = None,
) -> AuditEvent:
    """Append one audit event naming ``entity`` by its table and primary key (the event is
    written with the session's next flush)."""
    identity = inspect(entity).identity
    if identity is None:  # a new entity: it needs its primary key first
        session.flush()
        identity = inspect(entity).identity
    event = AuditEvent(
        actor_id=actor.id if actor else None,
        action=action,
        entity_type=entity.__tablename__,
        entity_id=":".join(str(part) for part in identity),
        before=before,
        after=after,
        reason=reason,
    )
    session.add(event)
    return event


def loan_snapshot(loan: Loan) -> dict:
    """What an audit event records of a loan's balance."""
    return {
        "status": loan.status,
        "paid": str(loan.paid),
        "outstanding": str(loan.outstanding),
    }


def lock_loan(session: Session, loan_id: int) -> Loan:
    """The loan, re-read under a row lock (PostgreSQL) so concurrent postings serialise."""
    loan = session.scalars(
        select(Loan)
        .where(Loan.id == loan_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    session.refresh(loan, ["installments"])
    return loan


def post_repayment(
    session: Session,
    loan: Loan,
    amount: Decimal,
    *,
    source: str,
    reference: str | None = None,
    received_at: datetime | None = None,
    actor: StaffUser | None = None,
    reason: str | None = None,
) -> Repayment:
    """Apply ``amount`` to ``loan``'s installments, oldest first. What exceeds the loan's
    outstanding balance is held as borrower credit (the repayment's ``to_credit``). A loan
    paid to zero is closed. Raises BookError for a non-positive amount or a loan that is
    not active."""
    if not isinstance(amount, Decimal) or amount <= 0:
        raise BookError("a repayment must be a positive amount")
    loan = lock_loan(session, loan.id)
    if loan.status != "active":
        raise BookError(f"loan {loan.number} is {loan.status.replace('_', ' ')}, not active")
    before = loan_snapshot(loan)
    owed = [(inst, inst.outstanding) for inst in loan.installments]
    parts, excess = allocate_oldest_first(owed, amount)
    repayment = Repayment(
        loan=loan,
        amount=amount - excess,
        to_credit=excess,
        source=source,
        reference=reference,
        received_at=received_at or datetime.now(UTC),
        posted_by_id=actor.id if actor else None,
    )
    session.add(repayment)
    for installment, part in parts:
        installment.amount_paid += part
        repayment.allocations.append(Allocation(installment=installment, amount=part))
    loan.paid += repayment.amount
    if excess:
        loan.borrower.credit += excess
    if loan.outstanding == 0:
        loan.status = "closed"
    after = loan_snapshot(loan) | {"repayment_id": None, "to_credit": str(excess)}
    session.flush()
    after["repayment_id"] = repayment.id
    record_audit(
        session, "repayment.posted", loan, actor=actor, before=before, after=after, reason=reason
    )
    return repayment


def reverse_repayment(
    session: Session, repayment: Repayment, *, actor: StaffUser | None, reason: str
) -> Repayment:
    """Undo a repayment: its allocations come off the installments, its credit off the
    borrower, and a closed loan reopens. The repayment stays, marked reversed. Raises
    BookError without a reason, when already reversed, or when the credit was spent."""
    if not (reason or "").strip():
        raise BookError("a reversal needs a reason")
    loan = lock_loan(session, repayment.loan_id)
    session.refresh(repayment)
    if repayment.reversed:
        raise BookError(f"repayment {repayment.id} is already reversed")
    borrower = session.get(Borrower, loan.borrower_id)
    if borrower.credit < repayment.to_credit:
        raise BookError("the credit this repayment left has already been used")
    before = loan_snapshot(loan)
    for allocation in repayment.allocations:
        allocation.installment.amount_paid -= allocation.amount
    loan.paid -= repayment.amount
    borrower.credit -= repayment.to_credit
    if loan.status == "closed" and loan.outstanding > 0:
        loan.status = "active"
    repayment.reversed_at = datetime.now(UTC)
    repayment.reversed_by_id = actor.id if actor else None
    repayment.reversal_reason = reason.strip()
    after = loan_snapshot(loan) | {"repayment_id": repayment.id}
    record_audit(
        session,
        "repayment.reversed",
        loan,
        actor=actor,
        before=before,
        after=after,
        reason=reason.strip(),
    )
    return repayment


def write_off_loan(session: Session, loan: Loan, *, actor: StaffUser | None, reason: str) -> Loan:
    """Mark an active loan written off (it stays in the book with its balance)."""
    if not (reason or "").strip():
        raise BookError("a write-off needs a reason")
    loan = lock_loan(session, loan.id)
    if loan.status != "active":
        raise BookError(f"loan {loan.number} is {loan.status.replace('_', ' ')}, not active")
    before = loan_snapshot(loan)
    loan.status = "written_off"
    record_audit(
        session,
        "loan.written_off",
        loan,
        actor=actor,
        before=before,
        after=loan_snapshot(loan),
        reason=reason.strip(),
    )
    return loan


def loan_is_balanced(loan: Loan) -> bool:
    """The book's invariant: installments add up to the loan, paid + outstanding = total."""
    due = sum((i.amount_due for i in loan.installments), ZERO)
    paid = sum((i.amount_paid for i in loan.installments), ZERO)
    return due == loan.total_due and paid == loan.paid and loan.paid + loan.outstanding == due


def create_loan(
    session: Session,
    borrower: Borrower,
    *,
    number: str,
    principal: Decimal,
    interest: Decimal = ZERO,
    fees: Decimal = ZERO,
    disbursed_on,
    installments: int,
    frequency: str,
    officer: StaffUser | None = None,
    actor: StaffUser | None = None,
) -> Loan:
    """Book one loan with its schedule (CONTRACT §6). The bulk path is import_loans."""
    loan = Loan(
        number=number,
        borrower=borrower,
        officer=officer,
        principal=principal,
        interest=interest,
        fees=fees,
        paid=ZERO,
        disbursed_on=disbursed_on,
        installment_count=installments,
        frequency=frequency,
        status="active",
    )
    for seq, due_on, amount in build_schedule(
        loan.total_due, disbursed_on, installments, frequency
    ):
        loan.installments.append(Installment(seq=seq, due_on=due_on, amount_due=amount))
    session.add(loan)
    record_audit(session, "loan.created", loan, actor=actor, after=loan_snapshot(loan))
    return loan


def activate_disbursed_loans(session: Session, today: date) -> int:
    """Pending loans whose disbursement day has come become active (one audit event each).
    A loan being paid out through Marejesho (a disbursement not cancelled) waits for
    Safaricom's word instead (lenders/disbursements.py). Returns how many."""
    from lenders.disbursements import Disbursement  # it builds on this module

    paying_out = exists().where(Disbursement.loan_id == Loan.id, Disbursement.status != "cancelled")
    loans = list(
        session.scalars(
            select(Loan)
            .where(Loan.status == "pending", Loan.disbursed_on <= today, ~paying_out)
            .with_for_update()
        )
    )
    for loan in loans:
        before = loan_snapshot(loan)
        loan.status = "active"
        record_audit(
            session,
            "loan.activated",
            loan,
            before=before,
            after=loan_snapshot(loan),
            reason=f"disbursed on {loan.disbursed_on.isoformat()}",
        )
    return len(loans)
