"""Reversing a C2B payment with Safaricom (REFERENCE §9.3): an admin asks, with a reason;
with maker-checker on (the reassignments' switch) another admin approves; the reversals
drain sends it; Safaricom's result undoes the repayment through ``reverse_payment``
(payments/reversals.py), the path a reassignment takes.

A second reversal of the same payment is refused before anything is sent: one live
reversal per payment (a partial unique index), and none for a payment already reversed.
Like a payout, a reversal is marked ``sent`` and committed before it leaves and is sent
once; no clear answer makes it ``ambiguous`` until Transaction Status (asked about the
receipt) says whether the payment was reversed.

Services take the session and plain values and never commit."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lenders.book import record_audit
from lenders.database import claim_rows
from lenders.jobs import wake_on_commit
from lenders.models import StaffUser
from payments.backoffice import maker_checker_on
from payments.daraja import DarajaError, DarajaUnavailable, Result, ServerError, UnexpectedResponse
from payments.daraja_queries import callback_url, new_query
from payments.models import C2BPayment, PaymentStatus
from payments.money_models import DarajaQuery, Reversal
from payments.shortcodes import ShortcodeError, daraja_client, explain, initiator_credential

log = logging.getLogger("marejesho.reversal")
LIVE = ("requested", "approved", "sent", "ambiguous", "completed")
IN_FLIGHT = ("sent", "ambiguous")
RESULT_WAIT = timedelta(minutes=2)
CLAIM_LEASE = timedelta(seconds=60)
WORDS = {
    "R000001": "The payment had already been reversed.",
    "R000002": "M-Pesa does not know this receipt for this shortcode.",
    1: "The shortcode's balance is too low to reverse it.",
    11: "The paying account is not in a state to reverse; ask Safaricom.",
    21: "The initiator lacks the Org Reversals Initiator role on the M-Pesa portal.",
    2001: "The initiator's name or password is wrong.",
    2006: "An account rule declined it.",
    2028: "This shortcode is not set up for reversals.",
    8006: "The initiator's password is locked on the M-Pesa portal.",
}


class ReversalRefused(ValueError):
    """A reversal step refused; the message is for the admin."""


def words_for(code, description: str = "") -> str:
    return WORDS.get(code) or f"M-Pesa said: {description or 'failed'} (code {code})."


def request_reversal(
    session: Session, payment_id: int, *, actor: StaffUser, reason: str
) -> Reversal:
    """An admin's request to give a payment's money back to its payer. Sent once the
    caller commits, or, with maker-checker on, once another admin approves."""
    why = (reason or "").strip()[:500]
    if not actor.is_admin:
        raise ReversalRefused("only an admin reverses a payment")
    if not why:
        raise ReversalRefused("say why: a reason is required")
    payment = session.get(C2BPayment, payment_id)
    if payment is None:
        raise ReversalRefused("no such payment")
    if payment.status == PaymentStatus.REVERSED:
        raise ReversalRefused(f"payment {payment.trans_id} is reversed already")
    if live := live_reversal(session, payment.id):
        raise ReversalRefused(f"a reversal of {payment.trans_id} is {live.status} already")
    from payments.refunds import refund_in_the_way

    if problem := refund_in_the_way(session, payment):
        raise ReversalRefused(f"payment {payment.trans_id} cannot be reversed: {problem}")
    waits = maker_checker_on(session)
    reversal = Reversal(
        payment_id=payment.id,
        amount=payment.amount,
        reason=why,
        status="requested" if waits else "approved",
        requested_by_id=actor.id,
    )
    if not waits:
        reversal.decided_by_id, reversal.decided_at = actor.id, datetime.now(UTC)
    try:
        with session.begin_nested():
            session.add(reversal)
    except IntegrityError:  # another admin asked at the same moment
        raise ReversalRefused(f"a reversal of {payment.trans_id} is under way already") from None
    record_audit(
        session,
        "payment.reversal_requested",
        payment,
        actor=actor,
        after={"reversal_id": reversal.id, "status": reversal.status},
        reason=why,
    )
    if not waits:
        wake_on_commit(session, "money")
    return reversal


def live_reversal(session: Session, payment_id: int) -> Reversal | None:
    return session.scalar(
        select(Reversal).where(Reversal.payment_id == payment_id, Reversal.status.in_(LIVE))
    )


def decide_reversal(
    session: Session, reversal_id: int, *, approve: bool, actor: StaffUser, note: str = ""
) -> Reversal:
    """Another admin approves (sent once the caller commits) or rejects a request."""
    reversal = session.get(Reversal, reversal_id)
    if reversal is None:
        raise ReversalRefused("no such reversal")
    if not actor.is_admin:
        raise ReversalRefused("only an admin decides a reversal")
    if reversal.requested_by_id == actor.id:
        raise ReversalRefused("a reversal is approved by someone other than who asked")
    moved = _move(
        session,
        reversal.id,
        ("requested",),
        status="approved" if approve else "rejected",
        decided_by_id=actor.id,
        decided_at=datetime.now(UTC),
        decision_note=(note or "").strip()[:500] or None,
    )
    if not moved:
        raise ReversalRefused("this reversal is no longer waiting")
    session.refresh(reversal)
    record_audit(
        session,
        "payment.reversal_approved" if approve else "payment.reversal_rejected",
        reversal.payment,
        actor=actor,
        after={"reversal_id": reversal.id},
        reason=reversal.decision_note,
    )
    if approve:
        wake_on_commit(session, "money")
    return reversal


def _move(session: Session, reversal_id: int, statuses, **values) -> bool:
    return bool(
        session.execute(
            update(Reversal)
            .where(Reversal.id == reversal_id, Reversal.status.in_(statuses))
            .values(**values)
            .execution_options(synchronize_session=False)
        ).rowcount
    )


def _claim(session: Session, statuses, condition, limit: int, **values) -> list[int]:
    return claim_rows(
        session,
        Reversal,
        Reversal.status.in_(statuses),
        condition,
        order_by=Reversal.id,
        limit=limit,
        values=values,
    )


def claim_approved(session: Session, limit: int, now: datetime | None = None) -> list[int]:
    """Approved reversals, marked ``sent`` before they leave."""
    now = now or datetime.now(UTC)
    return _claim(
        session,
        ("approved",),
        true(),
        limit,
        status="sent",
        sent_at=now,
        check_after=now + RESULT_WAIT,
    )


def send_claimed(session: Session, reversal_id: int, config: dict) -> str:
    """Send one reversal marked ``sent``, once; returns its status."""
    reversal = session.get(Reversal, reversal_id)
    if reversal.status != "sent":
        return reversal.status
    payment = reversal.payment
    shortcode = payment.shortcode
    try:
        credential = initiator_credential(shortcode, config)
        with daraja_client(shortcode, config, max_retries=0) as client:
            answer = client.reverse_transaction(
                initiator_name=shortcode.initiator_name,
                security_credential=credential,
                transaction_id=payment.trans_id,
                amount=payment.amount,
                receiver_party=shortcode.number,
                result_url=callback_url(config, reversal.callback_token, "reversal/result"),
                queue_timeout_url=callback_url(config, reversal.callback_token, "reversal/timeout"),
                remarks="Payment reversal",
            )
    except (DarajaUnavailable, ServerError, UnexpectedResponse) as exc:
        return _unsure(session, reversal, f"No clear answer from Daraja ({explain(exc)}).")
    except (ShortcodeError, DarajaError) as exc:
        why = str(exc) if isinstance(exc, ShortcodeError) else explain(exc)
        _move(session, reversal.id, ("sent",), status="failed", result_desc=f"Refused: {why}")
        return "failed"
    session.execute(
        update(Reversal)
        .where(Reversal.id == reversal.id, Reversal.conversation_id.is_(None))
        .values(
            originator_conversation_id=str(answer.get("OriginatorConversationID") or "")[:64],
            conversation_id=str(answer.get("ConversationID") or "")[:64],
        )
    )
    return "sent"


def _unsure(session: Session, reversal: Reversal, why: str) -> str:
    _move(
        session,
        reversal.id,
        IN_FLIGHT,
        status="ambiguous",
        result_desc=f"{why} Transaction Status will say whether it was reversed.",
        check_after=datetime.now(UTC),
    )
    return "ambiguous"


def apply_reversal_result(session: Session, reversal_id: int, result: Result, which: str) -> str:
    """Safaricom's reversal result: success (or "already reversed") undoes the payment on
    our books once; a failure says why. ``applied``, ``duplicate`` or ``conflict``."""
    reversal = _locked(session, reversal_id)
    if which == "timeout":
        if reversal.status != "sent":
            return "duplicate"
        _unsure(session, reversal, "Safaricom's queue timed out.")
        return "applied"
    if result.succeeded or result.result_code == "R000001":
        return "applied" if complete_reversal(session, reversal, result) else "duplicate"
    if reversal.status not in IN_FLIGHT:
        return "conflict" if reversal.status == "completed" else "duplicate"
    _move(
        session,
        reversal.id,
        IN_FLIGHT,
        status="failed",
        result_code=str(result.result_code),
        result_desc=words_for(result.result_code, result.result_desc),
        check_after=None,
    )
    return "applied"


def _locked(session: Session, reversal_id: int) -> Reversal:
    session.execute(
        update(Reversal).where(Reversal.id == reversal_id).values(status=Reversal.status)
    )
    return session.scalars(
        select(Reversal).where(Reversal.id == reversal_id).execution_options(populate_existing=True)
    ).one()


def complete_reversal(session: Session, reversal: Reversal, result: Result) -> bool:
    """The money went back: the reversal is completed and the payment reversed, once."""
    from payments.reversals import reverse_payment  # one path for every source of a reversal

    if not _move(
        session,
        reversal.id,
        ("approved", "sent", "ambiguous", "failed"),
        status="completed",
        result_code=str(result.result_code),
        result_desc=words_for(result.result_code, result.result_desc)
        if result.result_code != 0
        else "Reversed.",
        reversal_receipt=(result.transaction_id or None),
        completed_at=datetime.now(UTC),
        check_after=None,
    ):
        return False
    session.refresh(reversal)
    # Undone on the book, with its officers told; when the credit it left was spent the
    # payment waits in review for a person (reverse_payment flags it, once).
    reverse_payment(
        session,
        reversal.payment,
        source="reversal_result",
        reason=reversal.reason,
        actor=reversal.decided_by,
        receipt=reversal.reversal_receipt,
    )
    return True


def claim_due_checks(session: Session, limit: int, now: datetime | None = None) -> list[int]:
    now = now or datetime.now(UTC)
    return _claim(
        session,
        IN_FLIGHT,
        Reversal.check_after <= now,
        limit,
        check_after=now + CLAIM_LEASE,
    )


def start_status_check(session: Session, reversal_id: int, now=None) -> DarajaQuery | None:
    """A Transaction Status query about the reversed receipt, ready to commit and send."""
    now = now or datetime.now(UTC)
    reversal = _locked(session, reversal_id)
    if reversal.status not in IN_FLIGHT:
        return None
    reversal.status, reversal.check_after = "ambiguous", now + RESULT_WAIT
    payment = reversal.payment
    return new_query(
        session,
        "status",
        payment.shortcode,
        payment_id=payment.id,
        reversal_id=reversal.id,
        transaction_id=payment.trans_id,
    )


def settle_by_status(session: Session, query: DarajaQuery, result: Result) -> str:
    """Transaction Status on the receipt says ``Reversed`` (the reversal completed) or
    still ``Completed`` (it was not reversed)."""
    reversal = _locked(session, query.reversal_id)
    if reversal.status not in IN_FLIGHT or not result.succeeded:
        return "duplicate"
    state = result.text("TransactionStatus").lower()
    if state == "reversed":
        return "applied" if complete_reversal(session, reversal, result) else "duplicate"
    if state == "completed":
        _move(
            session,
            reversal.id,
            IN_FLIGHT,
            status="failed",
            result_desc="Safaricom reports the payment still completed: it was not reversed.",
            check_after=None,
        )
    return "applied"
