"""The loan book's portfolio figures, as the dashboard shows them: portfolio at risk by
officer, and installments due today and overdue. An officer's figures cover their own
loans; an admin's, every active loan."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from lenders.models import Installment, Loan, StaffUser
from lenders.money import CENT


def portfolio_at_risk(session: Session, viewer: StaffUser, today: date) -> list[dict]:
    """PAR1 and PAR30 by officer: the share of outstanding balance on loans with an
    installment unpaid for more than 1 / 30 days."""
    oldest_unpaid = (
        select(Installment.loan_id, func.min(Installment.due_on).label("due_on"))
        .where(Installment.amount_paid < Installment.amount_due)
        .group_by(Installment.loan_id)
        .subquery()
    )
    outstanding = Loan.principal + Loan.interest + Loan.fees - Loan.paid
    query = (
        select(
            StaffUser.name,
            func.sum(outstanding),
            func.sum(
                case((oldest_unpaid.c.due_on < today - timedelta(days=1), outstanding), else_=0)
            ),
            func.sum(
                case((oldest_unpaid.c.due_on < today - timedelta(days=30), outstanding), else_=0)
            ),
            func.count(Loan.id),
        )
        .select_from(Loan)
        .join(StaffUser, StaffUser.id == Loan.officer_id)
        .outerjoin(oldest_unpaid, oldest_unpaid.c.loan_id == Loan.id)
        .where(Loan.status == "active")
        .group_by(StaffUser.name)
        .order_by(StaffUser.name)
    )
    if not viewer.is_admin:
        query = query.where(Loan.officer_id == viewer.id)
    rows = []
    for name, total, par1, par30, count in session.execute(query):
        total = Decimal(total or 0)
        rows.append(
            {
                "officer": name,
                "loans": count,
                "outstanding": total.quantize(CENT),
                "par1": float(Decimal(par1 or 0) / total) if total else 0.0,
                "par30": float(Decimal(par30 or 0) / total) if total else 0.0,
            }
        )
    return rows


def installments_due(session: Session, viewer: StaffUser, today: date):
    """(count, amount) of installments due today, and of those overdue, on active loans."""
    left = Installment.amount_due - Installment.amount_paid
    base = (
        select(func.count(), func.coalesce(func.sum(left), 0))
        .join(Loan, Loan.id == Installment.loan_id)
        .where(Loan.status == "active", Installment.amount_paid < Installment.amount_due)
    )
    if not viewer.is_admin:
        base = base.where(Loan.officer_id == viewer.id)
    due = session.execute(base.where(Installment.due_on == today)).one()
    late = session.execute(base.where(Installment.due_on < today)).one()
    return (
        (due[0], Decimal(due[1]).quantize(CENT)),
        (late[0], Decimal(late[1]).quantize(CENT)),
    )
