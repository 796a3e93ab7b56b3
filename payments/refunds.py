"""Refunding a posted payment's borrower credit by B2C (DESIGN.md, "Matching", last
paragraph: what remains "is held as borrower credit, shown on screen, refundable by B2C").

A refund is a ``Disbursement`` with ``purpose = 'refund'`` (lenders/disbursements.py): the
same maker-checker (requested by an officer for a payment in their portfolio, or an admin;
approved by a different admin), the same ``money`` drain, the same "no answer is
ambiguous, only Transaction Status settles it, never sent twice" (payments/disbursing.py).
This module is what the book cannot know: which payment left how much credit.

What a payment may still have refunded = the ``to_credit`` of its live (not reversed)
repayments, less its refunds holding credit (requested, approved, sent, ambiguous or
completed), and never more than the borrower's credit now. Services take the session and
plain values, never commit, and raise ``RefundRefused`` with a sentence for the person."""

from __future__ import annotations

import secrets
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lenders.days import nairobi_midnight
from lenders.disbursements import (
    B2C_MAX,
    B2C_MIN,
    HOLDING,
    Disbursement,
    DisbursementError,
    hold_credit,
    lock_borrower,
    new_originator_id,
)
from lenders.models import ZERO, Borrower, Loan, Repayment, StaffUser
from lenders.money import format_kes
from payments.models import C2BPayment, PaymentStatus, payment_repayment
from payments.visibility import get_payment

REASON_MAX = 500
AMOUNT = "amount"


class RefundRefused(ValueError):
    """A refund the rules refuse; the message is for the person who asked, ``field`` the
    form field it is about (``amount``, ``reason``), if any."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def live_credit(session: Session, payment_id: int) -> tuple[Decimal, set[int]]:
    """What the payment's live repayments left as credit, and whose (borrower ids)."""
    rows = session.execute(
        select(Repayment.to_credit, Loan.borrower_id)
        .join(payment_repayment, payment_repayment.c.repayment_id == Repayment.id)
        .join(Loan, Loan.id == Repayment.loan_id)
        .where(payment_repayment.c.payment_id == payment_id, Repayment.reversed_at.is_(None))
    ).all()
    return sum((Decimal(c) for c, _ in rows), ZERO), {b for c, b in rows if c}


def held_by_refunds(session: Session, payment_id: int) -> Decimal:
    """The payment's credit its refunds hold or have spent."""
    total = session.scalar(
        select(func.sum(Disbursement.amount)).where(
            Disbursement.purpose == "refund",
            Disbursement.payment_id == payment_id,
            Disbursement.status.in_(HOLDING),
        )
    )
    return Decimal(total or 0)


def refund_in_the_way(session: Session, payment: C2BPayment) -> str | None:
    """Why the payment's postings cannot be undone (reassigned, reversed) as the book does
    it, or None: a refund holds or has paid out part of its credit, which undoing the
    postings would take off the borrower a second time."""
    held = held_by_refunds(session, payment.id)
    if not held:
        return None
    return (
        f"{format_kes(held)} of its credit is refunded by M-Pesa or waiting to be: cancel "
        "a refund that is not sent yet, or settle it by hand"
    )


def refundable(session: Session, payment: C2BPayment) -> Decimal:
    """What may still be refunded of the payment's credit (0 when nothing)."""
    if payment.status != PaymentStatus.POSTED:
        return ZERO
    credit, owners = live_credit(session, payment.id)
    if len(owners) != 1:
        return ZERO
    borrower = session.get(Borrower, next(iter(owners)))
    left = credit - held_by_refunds(session, payment.id)
    return max(ZERO, min(left, borrower.credit))


def payment_refunds(session: Session, payment_id: int) -> list[Disbursement]:
    """The payment's refunds, newest first."""
    return list(
        session.scalars(
            select(Disbursement)
            .where(Disbursement.purpose == "refund", Disbursement.payment_id == payment_id)
            .order_by(Disbursement.id.desc())
        )
    )


def parse_amount(text) -> Decimal:
    """A refund amount as typed (``1500``, ``1,500.00``): whole shillings within M-Pesa's
    limits for one B2C payment. Raises RefundRefused."""
    try:
        amount = Decimal(str(text).replace(",", "").strip())
    except (InvalidOperation, ValueError):
        raise RefundRefused(f"{str(text)[:40]!r} is not an amount", AMOUNT) from None
    if not amount.is_finite() or amount <= 0:
        raise RefundRefused("the amount must be more than zero", AMOUNT)
    if amount != amount.to_integral_value():
        raise RefundRefused(f"M-Pesa pays whole shillings; {format_kes(amount)} has cents", AMOUNT)
    if not B2C_MIN <= amount <= B2C_MAX:
        raise RefundRefused("M-Pesa pays between KES 10 and KES 250,000 in one payment", AMOUNT)
    return amount.quantize(Decimal("0.01"))


def request_refund(
    session: Session,
    payment_id: int,
    amount: Decimal,
    *,
    actor: StaffUser,
    reason: str,
    phone: str | None = None,
) -> Disbursement:
    """Ask for ``amount`` of the credit a posted payment left to be paid back to its
    borrower's registered phone; it waits for an admin other than ``actor``. The amount is
    held from the borrower's credit now (audited). Refused: a payment the actor may not
    act on (an officer: outside their portfolio), not posted, without credit left, an
    amount above what is left or that M-Pesa cannot pay, no reason, no phone."""
    reason = (reason or "").strip()
    if not reason:
        raise RefundRefused("say why the credit is refunded", "reason")
    if len(reason) > REASON_MAX:
        raise RefundRefused(f"keep the reason under {REASON_MAX} characters", "reason")
    if not (actor.is_admin or actor.role == "officer"):
        raise RefundRefused("only an officer or an admin asks for a refund")
    payment = get_payment(session, actor, payment_id)
    if payment is None or (not actor.is_admin and payment.status != PaymentStatus.POSTED):
        raise RefundRefused("this payment is outside your portfolio")
    if payment.status != PaymentStatus.POSTED:
        raise RefundRefused(
            f"payment {payment.trans_id} is {payment.status}: only a posted payment's "
            "credit is refunded"
        )
    amount = parse_amount(amount)
    credit, owners = live_credit(session, payment.id)
    if not owners:
        raise RefundRefused(f"payment {payment.trans_id} left no credit to refund")
    if len(owners) > 1:
        raise RefundRefused("this payment's credit belongs to several borrowers; ask an admin")
    # Lock the borrower first: two requests at once are counted one after the other.
    borrower = lock_borrower(session, next(iter(owners)))
    left = max(ZERO, min(credit - held_by_refunds(session, payment.id), borrower.credit))
    if amount > left:
        raise RefundRefused(
            f"at most {format_kes(left)} of payment {payment.trans_id}'s credit can be "
            f"refunded, not {format_kes(amount)}",
            AMOUNT,
        )
    phones = [p.number for p in borrower.phones]
    if not phones:
        raise RefundRefused(f"{borrower.name} has no registered phone to pay to")
    chosen = phone or phones[0]
    if chosen not in phones:
        raise RefundRefused("pay to one of the borrower's own phones")
    refund = Disbursement(
        purpose="refund",
        payment_id=payment.id,
        borrower_id=borrower.id,
        amount=amount,
        phone=chosen,
        note=reason,
        requested_by_id=actor.id,
        originator_conversation_id=f"pending-{secrets.token_hex(8)}",
    )
    try:
        with session.begin_nested():
            session.add(refund)
    except IntegrityError:  # pragma: no cover - only a broken row gets here
        raise RefundRefused("the refund could not be recorded") from None
    refund.originator_conversation_id = new_originator_id(refund.id, 1)
    try:
        hold_credit(session, refund, "requested", actor=actor, reason=reason)
    except DisbursementError as exc:
        raise RefundRefused(str(exc)) from None
    return refund


def refunds_for(session: Session, shortcode_id: int, day: date) -> dict[int, Decimal]:
    """{payment id: credit refunded by B2C (completed refunds)} for the shortcode's payments
    of that Nairobi day (by their TransTime, as the daily close counts them)."""
    start, end = nairobi_midnight(day), nairobi_midnight(day + timedelta(days=1))
    rows = session.execute(
        select(Disbursement.payment_id, func.sum(Disbursement.amount))
        .join(C2BPayment, C2BPayment.id == Disbursement.payment_id)
        .where(
            Disbursement.purpose == "refund",
            Disbursement.status == "completed",
            C2BPayment.shortcode_id == shortcode_id,
            C2BPayment.trans_time >= start,
            C2BPayment.trans_time < end,
        )
        .group_by(Disbursement.payment_id)
    ).all()
    return {pid: Decimal(total) for pid, total in rows}
