"""M-Pesa reversals of C2B payments, from whichever source sees one first: a statement, a
Pull Transactions answer, or the result of a reversal an admin asked for (DESIGN.md,
"Money out and back"). One path for all: the payment becomes ``reversed``, its live
repayments are undone through lenders.book's audited path, and its officers are told.
Each call is idempotent with every other: a second one, from any source, changes nothing.

``reverse_payment(session, payment, *, source, reason, actor=None, receipt=None)`` is the
shared entry point (the money-out work calls it from its reversal-result handler): keep
its name and signature stable. Nothing here commits."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lenders.book import BookError, record_audit, reverse_repayment
from lenders.models import Loan, StaffUser
from lenders.money import format_kes
from payments.intake import store_payments
from payments.models import C2BPayment, OfficerNotice, PaymentStatus
from payments.processing import claim_payment, payment_snapshot

log = logging.getLogger("marejesho.reversals")

SOURCES = ("statement", "pull", "reversal_result", "admin")
REVERSIBLE = (*PaymentStatus.OPEN, *PaymentStatus.MOVABLE)  # every status but reversed
# What a call did: the payment is now reversed; it was already; or M-Pesa reversed it but
# the book could not follow (the credit it left was spent) and a person must settle it.
REVERSED, ALREADY, REVIEW = "reversed", "already_reversed", "review"
BLOCKED_PREFIX = "M-Pesa reversed this payment"


def _why(source: str, reason: str, receipt: str | None) -> str:
    said = (reason or "").strip() or "reversed on M-Pesa"
    by = f"{source} {receipt}" if receipt else source
    return f"{said} ({by})"[:500]


def reverse_payment(
    session: Session,
    payment: C2BPayment,
    *,
    source: str,
    reason: str,
    actor: StaffUser | None = None,
    receipt: str | None = None,
) -> str:
    """Reverse ``payment`` because M-Pesa reversed it (``source``: statement, pull,
    reversal_result or admin; ``receipt``: the reversal's own M-Pesa receipt). Its live
    repayments are undone, it becomes ``reversed`` with its credit gone, an audit event
    says who and why, and each officer whose loan it was on gets a notice. Returns
    ``reversed``; ``already_reversed`` when it was (nothing changes); or ``review`` when
    the book cannot follow (the credit it left was spent): then the payment is flagged for
    a person, once."""
    why = _why(source, reason, receipt)
    claimed = claim_payment(session, payment.id, REVERSIBLE, count_attempt=False)
    if claimed is None:
        return ALREADY
    if claimed.status == PaymentStatus.REVIEW and (claimed.error or "").startswith(BLOCKED_PREFIX):
        return REVIEW  # blocked before, flagged once: a person is on it
    session.refresh(claimed, ["repayments"])
    live = [r for r in claimed.repayments if not r.reversed]
    before = payment_snapshot(claimed) | {"repayments": [r.id for r in live]}
    from payments.refunds import refund_in_the_way

    if problem := refund_in_the_way(session, claimed):  # M-Pesa reversed it all the same
        _blocked(session, claimed, before, why, problem, actor)
        return REVIEW
    try:
        with session.begin_nested():
            for repayment in live:
                reverse_repayment(session, repayment, actor=actor, reason=f"M-Pesa reversal: {why}")
    except BookError as exc:
        _blocked(session, claimed, before, why, str(exc), actor)
        return REVIEW
    claimed.status, claimed.credit = PaymentStatus.REVERSED, Decimal("0.00")
    claimed.processed_at, claimed.error = datetime.now(UTC), None
    record_audit(
        session,
        "payment.reversed",
        claimed,
        actor=actor,
        before=before,
        after=payment_snapshot(claimed) | {"source": source, "reversal_receipt": receipt},
        reason=why,
    )
    _tell_officers(session, claimed, live)
    return REVERSED


def _blocked(session, payment, before: dict, why: str, problem: str, actor) -> None:
    payment.status = PaymentStatus.REVIEW
    payment.error = f"{BLOCKED_PREFIX} ({why}), but {problem}: settle it by hand"[:2000]
    record_audit(
        session,
        "payment.reversal_blocked",
        payment,
        actor=actor,
        before=before,
        after=payment_snapshot(payment),
        reason=payment.error,
    )
    log.warning("reversal of %s blocked: %s", payment.trans_id, problem)


def _tell_officers(session: Session, payment: C2BPayment, undone) -> int:
    """One notice per officer whose portfolio lost the money (kind ``reversal``)."""
    loans: dict[int, list[Loan]] = {}
    for repayment in undone:
        loan = session.get(Loan, repayment.loan_id)
        if loan.officer_id:
            loans.setdefault(loan.officer_id, []).append(loan)
    for officer_id, theirs in loans.items():
        owed = ", ".join(f"{loan.number} owes {format_kes(loan.outstanding)}" for loan in theirs)
        text = (
            f"M-Pesa reversed {payment.first_name or 'a borrower'}'s payment of "
            f"{format_kes(payment.amount)} ({payment.trans_id}); {owed} again"
        )
        try:
            with session.begin_nested():
                session.add(
                    OfficerNotice(
                        staff_id=officer_id, payment_id=payment.id, kind="reversal", text=text
                    )
                )
        except IntegrityError:
            continue
    return len(loans)


def record_reversed_receipts(
    session: Session, rows: list[dict], *, source: str, reason: str
) -> dict[str, int]:
    """Store receipts M-Pesa shows reversed that the book has never seen, as ``reversed``
    payments that are never posted (``rows``: ``intake.store_payments`` values), each with
    its audit event. Returns {trans_id: id} of those stored; a receipt already here is
    left to ``reverse_payment``."""
    stored = store_payments(session, [row | {"status": PaymentStatus.REVERSED} for row in rows])
    for payment_id in stored.values():
        payment = session.get(C2BPayment, payment_id)
        record_audit(
            session,
            "payment.reversed",
            payment,
            after={"status": PaymentStatus.REVERSED, "source": source},
            reason=_why(source, reason, None) + ": first seen reversed, never posted",
        )
    return stored


def reverse_receipt(
    session: Session,
    shortcode_id: int,
    trans_id: str,
    *,
    source: str,
    reason: str,
    values: dict | None = None,
    actor: StaffUser | None = None,
    receipt: str | None = None,
) -> tuple[str, int | None]:
    """Reverse the payment with this receipt on the shortcode; one never seen is stored
    reversed from ``values`` (its amount and time, as ``intake.store_payments`` takes
    them), or, without them, left for a person. Returns (outcome, payment id)."""
    payment = session.scalar(
        select(C2BPayment).where(
            C2BPayment.shortcode_id == shortcode_id, C2BPayment.trans_id == trans_id
        )
    )
    if payment is None and values is not None:
        stored = record_reversed_receipts(session, [values], source=source, reason=reason)
        if trans_id in stored:
            return REVERSED, stored[trans_id]
        payment = session.scalar(
            select(C2BPayment).where(
                C2BPayment.shortcode_id == shortcode_id, C2BPayment.trans_id == trans_id
            )
        )
    if payment is None:
        return REVIEW, None
    outcome = reverse_payment(
        session, payment, source=source, reason=reason, actor=actor, receipt=receipt
    )
    return outcome, payment.id


def settle_reversal_line(session: Session, line_id: int) -> str | None:
    """Apply one reversal a statement or a pull showed (a ``pending`` line), in the
    caller's transaction: the line is claimed by a write, so a second worker finds it
    settled. Returns the line's outcome, or None when it was not pending."""
    from payments.reconciliation_models import StatementImport, StatementLine

    claimed = session.execute(
        update(StatementLine)
        .where(StatementLine.id == line_id, StatementLine.outcome == "pending")
        .values(outcome="review")
        .execution_options(synchronize_session=False)
    ).rowcount
    if not claimed:
        return None
    line = session.get(StatementLine, line_id, populate_existing=True)
    source = session.get(StatementImport, line.import_id).source
    payment = session.scalar(
        select(C2BPayment).where(
            C2BPayment.shortcode_id == line.shortcode_id,
            C2BPayment.trans_id == line.linked_receipt,
        )
    )
    if payment is not None and payment.amount != line.withdrawn:
        line.payment_id = payment.id
        line.note = (
            f"reverses {line.withdrawn:.2f} of a {payment.amount:.2f} payment: a partial "
            "reversal is settled by hand"
        )
        return line.outcome
    outcome, line.payment_id = reverse_receipt(
        session,
        line.shortcode_id,
        line.linked_receipt,
        source=source,
        reason=f"reversal {line.receipt} on the {source}",
        values=_values_from_line(line),
        receipt=line.receipt,
    )
    if outcome == REVIEW:
        line.note = "the book could not undo it: see the payment"
    else:
        line.outcome = "reversed"
    return line.outcome


def _values_from_line(line) -> dict:
    """The payment a reversal line names, for a receipt never seen: its amount and time
    are the reversal's, the payer is the reversal's other party."""
    from payments.parsing import msisdn_form
    from payments.statement_rows import is_customer_number, split_party

    number, names = split_party(line.party)
    number = number if is_customer_number(number) else ""
    return {
        "shortcode_id": line.shortcode_id,
        "trans_id": line.linked_receipt,
        "trans_type": "",
        "trans_time": line.completed_at or datetime.now(UTC),
        "amount": line.withdrawn,
        "bill_ref": "",
        "invoice_number": "",
        "third_party_trans_id": "",
        "org_account_balance": None,
        "msisdn": number,
        "msisdn_form": msisdn_form(number),
        "first_name": names[0][:80] if number and names else "",
        "middle_name": "",
        "last_name": names[-1][:80] if number and len(names) > 1 else "",
        "status": PaymentStatus.REVERSED,
        "error": None,
        "credit": Decimal("0.00"),
        "attempts": 0,
        "received_at": datetime.now(UTC),
    }
