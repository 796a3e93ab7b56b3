"""Turning a received payment into money on a loan: one transaction per payment."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from lenders.book import post_repayment, record_audit
from lenders.database import claim_rows
from lenders.jobs import is_transient
from lenders.models import Loan
from payments.matching import BorrowerFacts, Decision, MatchFacts, gather_facts, match_payment
from payments.models import C2BPayment, PaymentStatus, Shortcode
from payments.sms import queue_messages_for

PROCESSABLE = (PaymentStatus.RECEIVED, PaymentStatus.FAILED)
MAX_ATTEMPTS = 5  # a payment that keeps meeting transient errors is parked as failed
log = logging.getLogger("marejesho.jobs")


def claim_payment(
    session: Session,
    payment_id: int,
    statuses: tuple[str, ...] = PROCESSABLE,
    *,
    count_attempt: bool = True,
) -> C2BPayment | None:
    """The payment, if it is in one of ``statuses``, claimed for this transaction: the
    claim is a write (``attempts + 1``, or the drain's lease cleared when the drain has
    counted the attempt already), so a second claimant waits for the first to commit and
    then finds the status changed. A SELECT ... FOR UPDATE alone would not do on SQLite,
    which ignores it. Returns None when there is nothing to claim."""
    values = {"attempts": C2BPayment.attempts + 1} if count_attempt else {"claimed_until": None}
    claimed = session.execute(
        update(C2BPayment)
        .where(C2BPayment.id == payment_id, C2BPayment.status.in_(statuses))
        .values(**values)
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
    return match_payment(_facts(session, payment))


def _facts(session: Session, payment: C2BPayment) -> MatchFacts:
    tolerance = session.scalar(
        select(Shortcode.amount_tolerance).where(Shortcode.id == payment.shortcode_id)
    )
    return gather_facts(
        session,
        amount=payment.amount,
        bill_ref=payment.bill_ref,
        msisdn=payment.msisdn,
        msisdn_form=payment.msisdn_form,
        first_name=payment.first_name,
        tolerance=tolerance if tolerance is not None else Decimal("10.00"),
    )


def _balances_seen(facts: MatchFacts, borrower_id: int) -> dict[int, Decimal] | None:
    """The active loans and balances the decision for ``borrower_id`` was made on."""
    for borrower in (facts.ref_borrower, facts.payer):
        if isinstance(borrower, BorrowerFacts) and borrower.id == borrower_id:
            return {loan.id: loan.outstanding for loan in borrower.active_loans}
    return None


def _lock_balances(session: Session, borrower_id: int) -> dict[int, Decimal]:
    """Lock every loan of the borrower, in id order (so two postings for one borrower never
    deadlock), and read the active ones' balances as they are now."""
    rows = session.execute(
        select(Loan.id, Loan.status, Loan.principal + Loan.interest + Loan.fees - Loan.paid)
        .where(Loan.borrower_id == borrower_id)
        .order_by(Loan.id)
        .with_for_update()
    ).all()
    return {id_: Decimal(owed) for id_, status, owed in rows if status == "active"}


def decide_current(session: Session, payment: C2BPayment) -> Decision:
    """Match a payment on balances no concurrent posting can change before this transaction
    ends. The decision is made without locks (most payments meet no race); then the chosen
    borrower's loans are locked and, if another posting changed them in between, the
    payment is decided again on what is now locked. On SQLite the claim's write already
    serialises every writer, so the first decision stands."""
    facts = _facts(session, payment)
    decision = match_payment(facts)
    if not decision.matched or session.get_bind().dialect.name == "sqlite":
        return decision
    if _lock_balances(session, decision.borrower_id) == _balances_seen(facts, decision.borrower_id):
        return decision
    log.info("payment %s: balances changed while deciding; deciding again", payment.trans_id)
    return decide(session, payment)


def apply_decision(session: Session, payment: C2BPayment, decision: Decision, *, actor=None):
    """Post the decision's plan (or leave the payment unmatched) and record why."""
    before = payment_snapshot(payment)
    payment.reason = decision.reason
    payment.borrower_id = decision.borrower_id
    payment.processed_at = datetime.now(UTC)
    payment.error = None
    if not decision.matched:
        payment.status, payment.rule = PaymentStatus.UNMATCHED, None
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
    payment.status, payment.rule, payment.credit = PaymentStatus.POSTED, decision.rule, credit
    record_audit(
        session,
        "payment.posted",
        payment,
        actor=actor,
        before=before,
        after=payment_snapshot(payment) | {"repayments": [r.id for r in payment.repayments]},
        reason=decision.reason,
    )
    queue_messages_for(session, payment)
    return payment


def process_payment(session: Session, payment_id: int) -> str | None:
    """Match and post one payment, exactly once: the payment row is locked and only a
    ``received`` or ``failed`` payment is processed, so a second run changes nothing.
    Returns the new status, or None when there was nothing to do. Does not commit."""
    payment = claim_payment(session, payment_id)
    if payment is None:
        return None
    apply_decision(session, payment, decide_current(session, payment))
    return payment.status


CLAIM_LEASE = timedelta(seconds=15)  # another worker may take a claimed payment after this


def claim_received_payments(session: Session, limit: int) -> list[int]:
    """Take up to ``limit`` payments waiting in ``received``, oldest first, for this worker:
    each gets a lease (``claimed_until``) so that other workers pass it by, and its attempt
    is counted. The caller commits; each payment is then posted in a transaction of its own
    (a batch in one transaction would hold one borrower's loan locks while waiting for
    another's: workers deadlock). A worker that dies leaves its leases to run out.
    PostgreSQL skips rows another claim holds (FOR NO KEY UPDATE SKIP LOCKED: not FOR
    UPDATE, which would also skip a payment whose callback_log row is being written, as the
    foreign key check holds a KEY SHARE lock on it); on SQLite claims follow one another."""
    now = datetime.now(UTC)
    return claim_rows(
        session,
        C2BPayment,
        C2BPayment.status == PaymentStatus.RECEIVED,
        or_(C2BPayment.claimed_until.is_(None), C2BPayment.claimed_until < now),
        order_by=C2BPayment.id,
        limit=limit,
        values={"attempts": C2BPayment.attempts + 1, "claimed_until": now + CLAIM_LEASE},
        key_share=True,
    )


def post_claimed_payment(session: Session, payment_id: int) -> str | None:
    """Match and post one payment the drain claimed, in the caller's transaction (the
    caller commits, or rolls back and calls ``after_failure``). None when another worker
    got to it first."""
    payment = claim_payment(session, payment_id, (PaymentStatus.RECEIVED,), count_attempt=False)
    if payment is None:
        return None
    apply_decision(session, payment, decide_current(session, payment))
    return payment.status


def after_failure(session: Session, payment_id: int, exc: Exception) -> str:
    """After a payment's transaction failed and was rolled back: a transient error (a
    deadlock, a lock timeout) leaves it in ``received`` for the next pass once its lease
    runs out, up to MAX_ATTEMPTS; anything else parks it as ``failed`` with the error, for
    an officer. The caller commits. Raises again when the database itself is gone."""
    if getattr(exc, "connection_invalidated", False):
        raise exc
    attempts = session.scalar(select(C2BPayment.attempts).where(C2BPayment.id == payment_id))
    if is_transient(exc) and (attempts or 0) < MAX_ATTEMPTS:
        log.warning("payment %s: transient error, tried again later: %s", payment_id, exc)
        return PaymentStatus.RECEIVED
    log.error("payment %s failed", payment_id, exc_info=exc)
    payment = claim_payment(session, payment_id, (PaymentStatus.RECEIVED,), count_attempt=False)
    if payment is not None:
        park_failed(session, payment, f"{type(exc).__name__}: {exc}")
    return PaymentStatus.FAILED


def mark_failed(session: Session, payment_id: int, error: str) -> None:
    """Park a payment that could not be processed, with the error, for an officer."""
    payment = claim_payment(session, payment_id)
    if payment is not None:
        park_failed(session, payment, error)


def park_failed(session: Session, payment: C2BPayment, error: str) -> None:
    """Record a claimed payment as ``failed``, with the error and an audit event."""
    before = payment_snapshot(payment)
    payment.status, payment.error = PaymentStatus.FAILED, error[:2000]
    payment.processed_at = datetime.now(UTC)
    record_audit(
        session,
        "payment.failed",
        payment,
        before=before,
        after=payment_snapshot(payment),
        reason=error[:500],
    )
