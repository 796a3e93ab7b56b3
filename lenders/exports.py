"""The loans export (CONTRACT §6): the loan book as an accountant opens it."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lenders.disbursements import Disbursement
from lenders.models import Borrower, Installment, Loan

EXPORT_COLUMNS = (
    "loan_number",
    "borrower_name",
    "national_id",
    "status",
    "total_due",
    "paid",
    "outstanding",
    "next_due_on",
    "disbursement_status",
    "disbursement_receipt",
)


def export_loans(session: Session) -> Iterator[list]:
    """The loan book as rows for ``lenders.csvfile`` (header first), in loan-number
    order: amounts as Decimal, the next due date as a date; a loan paid out through
    Marejesho with its latest payout's status and M-Pesa receipt (empty otherwise)."""
    next_due = (
        select(Installment.loan_id, func.min(Installment.due_on).label("due_on"))
        .where(Installment.amount_paid < Installment.amount_due)
        .group_by(Installment.loan_id)
        .subquery()
    )
    latest = (
        select(func.max(Disbursement.id).label("id"))
        .where(Disbursement.purpose == "loan")
        .group_by(Disbursement.loan_id)
        .subquery()
    )
    payout = (
        select(Disbursement.loan_id, Disbursement.status, Disbursement.receipt)
        .join(latest, latest.c.id == Disbursement.id)
        .subquery()
    )
    query = (
        select(
            Loan,
            Borrower.name,
            Borrower.national_id,
            next_due.c.due_on,
            payout.c.status,
            payout.c.receipt,
        )
        .join(Borrower, Loan.borrower_id == Borrower.id)
        .outerjoin(next_due, next_due.c.loan_id == Loan.id)
        .outerjoin(payout, payout.c.loan_id == Loan.id)
        .order_by(Loan.number)
        .execution_options(yield_per=2000)
    )
    yield list(EXPORT_COLUMNS)
    for loan, name, national_id, due_on, payout_status, receipt in session.execute(query):
        yield [
            loan.number,
            name,
            national_id,
            loan.status,
            loan.total_due,
            loan.paid,
            loan.outstanding,
            due_on,
            payout_status or "",
            receipt or "",
        ]
