"""Which payments a viewer sees, shared by every screen that shows payments (transactions,
the dashboard, one payment, its messages): an admin every payment; an officer those on
their loans now and those nobody has placed yet (``PaymentStatus.OPEN``)."""

from __future__ import annotations

from sqlalchemy import Select, exists, literal, or_, select
from sqlalchemy.orm import Session, selectinload

from lenders.models import Loan, Repayment, StaffUser
from payments.models import C2BPayment, PaymentStatus, payment_repayment


def in_portfolio(viewer: StaffUser):
    """Payments that sit on the viewer's loans now (officers), or every payment (admins).
    A reversed posting does not count: a payment moved to another officer's loan is theirs."""
    if viewer.is_admin:
        return literal(True)
    return exists().where(
        payment_repayment.c.payment_id == C2BPayment.id,
        Repayment.id == payment_repayment.c.repayment_id,
        Repayment.reversed_at.is_(None),
        Loan.id == Repayment.loan_id,
        Loan.officer_id == viewer.id,
    )


def visible_payments(viewer: StaffUser) -> Select:
    """An officer sees payments in their portfolio and those nobody has placed yet."""
    query = select(C2BPayment)
    if not viewer.is_admin:
        query = query.where(or_(C2BPayment.status.in_(PaymentStatus.OPEN), in_portfolio(viewer)))
    return query


def get_payment(session: Session, viewer: StaffUser, payment_id: int) -> C2BPayment | None:
    """One payment with its postings and shortcode, or None if the viewer may not see it."""
    return session.scalar(
        visible_payments(viewer)
        .where(C2BPayment.id == payment_id)
        .options(
            selectinload(C2BPayment.repayments).selectinload(Repayment.allocations),
            selectinload(C2BPayment.shortcode),
        )
    )
