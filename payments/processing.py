"""Turning a received payment into money on a loan: one transaction per payment."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from lenders.book import post_repayment, record_audit
from lenders.models import Loan
from payments.matching import Decision, gather_facts, match_payment
from payments.models import C2BPayment, Shortcode

PROCESSABLE = ("received", "failed")


def claim_payment(
    session: Session, payment_id: int, statuses: tuple[str, ...] = PROCESSABLE
) -> C2BPayment | None:
    """The payment, if it is in one of ``statuses``, claimed for this transaction: the
    claim is a write (``attempts + 1``), so a second claimant waits for the first to
    commit and then finds the status changed. A SELECT ... FOR UPDATE alone would not do
    on SQLite, which ignores it. Returns None when there is nothing to claim."""
    claimed = session.execute(
        update(C2BPayment)
        .where(C2BPayment.id == payment_id, C2BPayment.status.in_(statuses))
        .values(attempts=C2BPayment.attempts + 1)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not claimed:
        return None
    return session.scalars(
        select(C2BPayment)
        .where(C2BPayment.id == payment_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


def payment_snapshot(payment: C2BPayment) -> dict:
    return {"status": payment.status, "rule": payment.rule, "borrower_id": payment.borrower_id}


def decide(session: Session, payment: C2BPayment) -> Decision:
    """Match a stored payment against the book as it is now."""
    tolerance = session.scalar(
        select(Shortcode.amount_tolerance).where(Shortcode.id == payment.shortcode_id)
    )
    facts = gather_facts(
        session,
        amount=payment.amount,
        bill_ref=payment.bill_ref,
        msisdn=payment.msisdn,
        msisdn_form=payment.msisdn_form,
        first_name=payment.first_name,
        tolerance=tolerance if tolerance is not None else Decimal("10.00"),
    )
    return match_payment(facts)


def apply_decision(session: Session, payment: C2BPayment, decision: Decision, *, actor=None):
    """Post the decision's plan (or leave the payment unmatched) and record why."""
    before = payment_snapshot(payment)
    payment.reason = decision.reason
    payment.borrower_id = decision.borrower_id
    payment.processed_at = datetime.now(UTC)
    payment.error = None
    if not decision.matched:
        payment.status, payment.rule = "unmatched", None
        record_audit(
            session,
            "payment.unmatched",
            payment,
            actor=actor,
            before=before,
            after=payment_snapshot(payment),
            reason=decision.reason,
        )
        return payment
    credit = Decimal("0.00")
    for loan_id, amount in decision.plan:
        repayment = post_repayment(
            session,
            session.get(Loan, loan_id),
            amount,
            source="mpesa",
            reference=payment.trans_id,
            received_at=payment.trans_time,
            actor=actor,
            reason=decision.reason,
        )
        payment.repayments.append(repayment)
        credit += repayment.to_credit
    payment.status, payment.rule, payment.credit = "posted", decision.rule, credit
    record_audit(
        session,
        "payment.posted",
        payment,
        actor=actor,
        before=before,
        after=payment_snapshot(payment) | {"repayments": [r.id for r in payment.repayments]},
        reason=decision.reason,
    )
    return payment


def process_payment(session: Session, payment_id: int) -> str | None:
    """Match and post one payment, exactly once: the payment row is locked and only a
    ``received`` or ``failed`` payment is processed, so a second run changes nothing.
    Returns the new status, or None when there was nothing to do. Does not commit."""
    payment = claim_payment(session, payment_id)
    if payment is None:
        return None
    apply_decision(session, payment, decide(session, payment))
    return payment.status


def mark_failed(session: Session, payment_id: int, error: str) -> None:
    """Park a payment that could not be processed, with the error, for an officer."""
    payment = claim_payment(session, payment_id)
    if payment is None:
        return
    before = payment_snapshot(payment)
    payment.status, payment.error = "failed", error[:2000]
    payment.processed_at = datetime.now(UTC)
    record_audit(
        session,
        "payment.failed",
        payment,
        before=before,
        after=payment_snapshot(payment),
        reason=error[:500],
    )
