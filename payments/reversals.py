"""Applying a reversal to the books: the payment becomes ``reversed`` and what it put on
loans is undone through the audited path a reassignment uses (``reverse_repayment``).

A minimal version for the money-out branch (#14). The reconciliation work (#15) owns the
fuller one with the same name and signature (officer notices, statements and Pull
Transactions as sources); a merge keeps that one."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from lenders.book import record_audit, reverse_repayment
from lenders.models import StaffUser
from payments.models import C2BPayment, PaymentStatus


def reverse_payment(
    session: Session,
    payment: C2BPayment,
    *,
    source: str,
    reason: str,
    actor: StaffUser | None = None,
    receipt: str | None = None,
) -> bool:
    """Mark ``payment`` reversed and undo each of its live repayments, in the caller's
    transaction. Idempotent: a second call for the same payment changes nothing and
    returns False. Raises ``lenders.book.BookError`` when the book refuses (the credit a
    repayment left has been spent)."""
    before = {"status": payment.status}
    claimed = session.execute(
        update(C2BPayment)
        .where(C2BPayment.id == payment.id, C2BPayment.status != PaymentStatus.REVERSED)
        .values(status=PaymentStatus.REVERSED)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not claimed:
        return False
    payment = session.scalars(
        select(C2BPayment)
        .where(C2BPayment.id == payment.id)
        .execution_options(populate_existing=True)
    ).one()
    why = f"{source}: {reason}".strip()
    for repayment in list(payment.repayments):
        if not repayment.reversed:
            reverse_repayment(session, repayment, actor=actor, reason=why)
    record_audit(
        session,
        "payment.reversed",
        payment,
        actor=actor,
        before=before,
        after={"status": PaymentStatus.REVERSED, "source": source, "receipt": receipt},
        reason=reason,
    )
    return True
