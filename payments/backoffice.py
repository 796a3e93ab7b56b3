"""What officers do to payments the matcher could not place, or placed wrongly. Each is
one audited step in the caller's transaction; none commits."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from lenders.book import BookError, record_audit, reverse_repayment
from lenders.models import Loan, Setting, StaffUser
from payments.matching import Decision, MatchFacts, borrower_facts, match_payment, spill_plan
from payments.models import C2BPayment, MatchRule, PaymentStatus, ReassignmentRequest
from payments.processing import apply_decision, claim_payment, payment_snapshot

MAKER_CHECKER = "reassign_maker_checker"


class BackofficeError(ValueError):
    """An action the book refuses; the message is for the officer."""


def _reason(reason: str | None) -> str:
    text = (reason or "").strip()
    if not text:
        raise BackofficeError("say why: a reason is required")
    return text[:500]


def refuse_outside_portfolio(
    session: Session, actor: StaffUser, plan: tuple[tuple[int, object], ...]
) -> None:
    """An officer's action lands only on loans of their own portfolio (DESIGN.md,
    "Portfolios"): a plan that would post to another officer's loan, an overpayment's
    spill included, is refused and left to an admin. Admins place money anywhere."""
    if actor.is_admin or not plan:
        return
    loan_ids = [loan_id for loan_id, _ in plan]
    officers = dict(
        session.execute(select(Loan.id, Loan.officer_id).where(Loan.id.in_(loan_ids))).all()
    )
    if all(officers.get(loan_id) == actor.id for loan_id in loan_ids):
        return
    if officers.get(loan_ids[0]) != actor.id:
        raise BackofficeError(
            "the matching order puts this payment on a loan outside your portfolio: "
            "an admin must place it"
        )
    first = session.get(Loan, loan_ids[0])
    raise BackofficeError(
        f"the payment is more than {first.number} owes, and the rest would spill to the "
        "borrower's loan outside your portfolio: an admin must place it"
    )


def _loan_facts(session: Session, loan: Loan):
    facts = borrower_facts(session, loan.borrower_id)
    chosen = next((f for f in facts.active_loans if f.id == loan.id), None)
    if chosen is None:
        raise BackofficeError(f"loan {loan.number} is {loan.status.replace('_', ' ')}, not active")
    return facts, chosen


def assign_payment(
    session: Session,
    payment_id: int,
    *,
    actor: StaffUser,
    reason: str,
    loan: Loan | None = None,
    borrower_id: int | None = None,
) -> C2BPayment:
    """Place an unmatched (or failed) payment: on a given loan, or on a borrower, whose
    loan the matching order then picks (rules 2–4). Rule ``manual``, with the reason."""
    why = _reason(reason)
    payment = _claim(session, payment_id, PaymentStatus.ASSIGNABLE, PaymentStatus.UNMATCHED)
    if loan is not None:
        facts, chosen = _loan_facts(session, loan)
        plan = spill_plan(chosen, facts, payment.amount)
        said = f"assigned by {actor.name} to loan {loan.number}: {why}"
    elif borrower_id is not None:
        facts = borrower_facts(session, borrower_id)
        picked = match_payment(
            MatchFacts(
                amount=payment.amount,
                bill_ref="",
                tolerance=payment.shortcode.amount_tolerance,
                payer_label="",
                payer=facts,
            )
        )
        if not picked.matched:
            raise BackofficeError(f"{facts.name} has no active loan to take this payment")
        plan = picked.plan
        said = f"assigned by {actor.name} to {facts.name} ({picked.rule.replace('_', ' ')}): {why}"
    else:
        raise BackofficeError("choose a borrower or a loan")
    refuse_outside_portfolio(session, actor, plan)
    apply_decision(session, payment, Decision(MatchRule.MANUAL, said, facts.id, plan), actor=actor)
    return payment


def _claim(session: Session, payment_id: int, statuses: tuple[str, ...], wanted: str):
    """Claim the payment for this action, or say why not (it moved on meanwhile)."""
    payment = claim_payment(session, payment_id, statuses)
    if payment is None:
        current = session.scalar(select(C2BPayment).where(C2BPayment.id == payment_id))
        if current is None:
            raise BackofficeError("no such payment")
        raise BackofficeError(f"payment {current.trans_id} is {current.status}, not {wanted}")
    return payment


def maker_checker_on(session: Session) -> bool:
    setting = session.get(Setting, MAKER_CHECKER)
    return bool(setting and setting.value.get("on"))


def set_maker_checker(session: Session, on: bool, *, actor: StaffUser) -> None:
    setting = session.get(Setting, MAKER_CHECKER) or Setting(key=MAKER_CHECKER, value={})
    before = dict(setting.value or {})
    setting.value = {"on": bool(on)}
    setting.updated_by_id = actor.id
    session.add(setting)
    session.flush()
    record_audit(
        session,
        "setting.changed",
        setting,
        actor=actor,
        before=before,
        after=setting.value,
    )


def move_payment(
    session: Session, payment: C2BPayment, loan: Loan, *, actor: StaffUser, why: str
) -> C2BPayment:
    """Reverse every live posting of ``payment`` and post it to ``loan`` (spilling as
    matching would), in the caller's one transaction. An officer moves only money that
    sits in their portfolio, to loans in it."""
    from payments.refunds import refund_in_the_way

    if problem := refund_in_the_way(session, payment):
        raise BackofficeError(f"payment {payment.trans_id} cannot be moved: {problem}")
    live = [r for r in payment.repayments if not r.reversed]
    if not actor.is_admin and any(r.loan.officer_id != actor.id for r in live):
        raise BackofficeError(
            "part of this payment sits on a loan outside your portfolio: an admin must move it"
        )
    facts, chosen = _loan_facts(session, loan)
    plan = spill_plan(chosen, facts, payment.amount)
    refuse_outside_portfolio(session, actor, plan)
    before = payment_snapshot(payment) | {"repayments": [r.id for r in payment.repayments]}
    for repayment in list(payment.repayments):
        if not repayment.reversed:
            reverse_repayment(session, repayment, actor=actor, reason=f"reassigned: {why}")
    said = f"reassigned by {actor.name} to loan {loan.number}: {why}"
    apply_decision(session, payment, Decision(MatchRule.MANUAL, said, facts.id, plan), actor=actor)
    record_audit(
        session,
        "payment.reassigned",
        payment,
        actor=actor,
        before=before,
        after=payment_snapshot(payment),
        reason=why,
    )
    return payment


def reassign_payment(
    session: Session, payment_id: int, loan: Loan, *, actor: StaffUser, reason: str
) -> C2BPayment | ReassignmentRequest:
    """Move a posted payment to another loan. With maker-checker on, an officer's request
    waits for an admin (returned as a ReassignmentRequest) and no money moves yet."""
    why = _reason(reason)
    payment = _claim(session, payment_id, PaymentStatus.MOVABLE, PaymentStatus.POSTED)
    live = [r for r in payment.repayments if not r.reversed]
    if len(live) == 1 and live[0].loan_id == loan.id and live[0].to_credit == 0:
        raise BackofficeError(f"the payment is already on loan {loan.number}")
    _loan_facts(session, loan)  # refuse a loan that cannot take money, before anything
    if not actor.is_admin and loan.officer_id != actor.id:
        raise BackofficeError(f"loan {loan.number} is outside your portfolio")
    if not actor.is_admin and maker_checker_on(session):
        pending = session.scalar(
            select(ReassignmentRequest).where(
                ReassignmentRequest.payment_id == payment.id,
                ReassignmentRequest.status == "pending",
            )
        )
        if pending:
            raise BackofficeError("a reassignment of this payment is already waiting for approval")
        request = ReassignmentRequest(
            payment_id=payment.id, to_loan_id=loan.id, reason=why, requested_by_id=actor.id
        )
        session.add(request)
        session.flush()
        record_audit(
            session,
            "payment.reassignment_requested",
            payment,
            actor=actor,
            after={"to_loan": loan.number, "request_id": request.id},
            reason=why,
        )
        return request
    try:
        return move_payment(session, payment, loan, actor=actor, why=why)
    except BookError as exc:
        raise BackofficeError(str(exc)) from exc


def decide_reassignment(
    session: Session, request_id: int, *, approve: bool, actor: StaffUser, note: str = ""
) -> ReassignmentRequest:
    """An admin approves (money moves now) or rejects (nothing moves) a request."""
    if not actor.is_admin:
        raise BackofficeError("only an admin decides reassignments")
    request = session.scalars(
        select(ReassignmentRequest).where(ReassignmentRequest.id == request_id).with_for_update()
    ).one_or_none()
    if request is None or request.status != "pending":
        raise BackofficeError("this request is no longer waiting")
    if request.requested_by_id == actor.id:
        raise BackofficeError("a request is decided by another person than who made it")
    request.status = "approved" if approve else "rejected"
    request.decided_by_id, request.decided_at = actor.id, datetime.now(UTC)
    request.decision_note = (note or "").strip()[:500] or None
    if approve:
        payment = _claim(session, request.payment_id, PaymentStatus.MOVABLE, PaymentStatus.POSTED)
        why = f"{request.reason} (requested by {request.requested_by.name}, approved)"
        try:
            move_payment(session, payment, request.to_loan, actor=actor, why=why)
        except BookError as exc:
            raise BackofficeError(str(exc)) from exc
    else:
        record_audit(
            session,
            "payment.reassignment_rejected",
            request.payment,
            actor=actor,
            after={"request_id": request.id},
            reason=request.decision_note,
        )
    return request


def rematch_payment(session: Session, payment_id: int, *, actor: StaffUser) -> C2BPayment:
    """Run matching again on an unmatched or failed payment (after a phone was added, say)."""
    from payments.processing import decide

    payment = claim_payment(session, payment_id, PaymentStatus.ASSIGNABLE)
    if payment is None:
        raise BackofficeError("only unmatched or failed payments are matched again")
    decision = decide(session, payment)
    refuse_outside_portfolio(session, actor, decision.plan)
    apply_decision(session, payment, decision, actor=actor)
    return payment
