"""When an STK prompt's callback does not come (payments/prompts.py): STK Query asks
Safaricom after ``STK_QUERY_AFTER_SECONDS`` and again while it says "still processing",
never after the prompt's lifetime; prompts Daraja never answered expire with their
lifetime; prompts STK Query called paid (it gives no receipt) are linked to the payment
that carried their money. The jobs that run these are in payments/money_jobs.py.

Services take the session and plain values and never commit."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from lenders.database import claim_rows
from lenders.phones import phone_sha256
from lenders.references import reference_key
from payments.daraja import DarajaError, TransactionPending
from payments.daraja.results import MalformedResult, parse_stk_query
from payments.models import C2BPayment
from payments.money_models import StkRequest
from payments.parsing import masked_parts
from payments.prompts import apply_outcome, setting, settle
from payments.shortcodes import ShortcodeError, daraja_client

log = logging.getLogger("marejesho.stk")
CLAIM_LEASE = timedelta(seconds=60)
LINK_WINDOW = timedelta(hours=24)


def claim_due_prompts(session: Session, limit: int, now: datetime | None = None) -> list[int]:
    """Pending prompts whose time to ask STK Query has come, claimed for a minute."""
    now = now or datetime.now(UTC)
    return claim_rows(
        session,
        StkRequest,
        StkRequest.status == "pending",
        StkRequest.next_query_at <= now,
        order_by=StkRequest.next_query_at,
        limit=limit,
        values={"next_query_at": now + CLAIM_LEASE},
    )


def ask_about_prompt(
    session: Session, request_id: int, config: dict, now: datetime | None = None
) -> str:
    """Ask STK Query what became of a prompt and settle it; "still processing" is asked
    again ``STK_QUERY_EVERY_SECONDS`` later, never after the prompt's lifetime, when it is
    called expired. The caller commits. Returns the prompt's status."""
    now = now or datetime.now(UTC)
    request = session.get(StkRequest, request_id)
    if request.status != "pending":
        return request.status
    if now > request.expires_at + CLAIM_LEASE:
        return _give_up(session, request, now)
    shortcode = request.shortcode
    try:
        with daraja_client(shortcode, config) as client:
            answer = client.stk_query(
                shortcode.number, shortcode.passkey or "", request.checkout_request_id
            )
        outcome = parse_stk_query(answer)
    except (TransactionPending, DarajaError, MalformedResult, ShortcodeError) as exc:
        if not isinstance(exc, TransactionPending):
            log.warning("STK query for %s failed: %s", request.id, type(exc).__name__)
        request.queries += 1
        again = now + timedelta(seconds=setting(config, "STK_QUERY_EVERY_SECONDS"))
        if again > request.expires_at:
            return _give_up(session, request, now)
        request.next_query_at = again
        return "pending"
    request.queries += 1
    apply_outcome(session, request.id, outcome, via="query")
    session.flush()
    return request.status


def _give_up(session: Session, request: StkRequest, now: datetime) -> str:
    settle(
        session,
        request,
        "expired",
        1019,
        "No answer from Safaricom within the prompt's lifetime. If the borrower paid, the "
        "payment still arrives and is posted.",
        "timeout",
        now,
    )
    return "expired"


def expire_unanswered(session: Session, now: datetime | None = None) -> int:
    """Prompts Daraja never answered (``sending``) whose lifetime has ended."""
    now = now or datetime.now(UTC)
    stale = session.scalars(
        select(StkRequest).where(StkRequest.status == "sending", StkRequest.expires_at < now)
    ).all()
    for request in stale:
        _give_up(session, request, now)
    return len(stale)


def phone_matches(payment: C2BPayment, phone: str) -> bool:
    """The payer's MSISDN, in whichever form Safaricom sent it, is this phone."""
    if payment.msisdn_form == "hashed":
        return payment.msisdn.lower() == phone_sha256(phone)
    if payment.msisdn_form == "masked":
        parts = masked_parts(payment.msisdn)
        return bool(parts) and phone.startswith(parts[0]) and phone.endswith(parts[1])
    return re.sub(r"\D", "", payment.msisdn)[-9:] == phone[-9:]


def link_receiptless(session: Session, now: datetime | None = None) -> int:
    """Prompts STK Query called paid (no receipt) get the payment that carried their money:
    same shortcode and amount, the account reference and the phone, within 24 hours."""
    now = now or datetime.now(UTC)
    linked = 0
    waiting = session.scalars(
        select(StkRequest).where(
            StkRequest.status == "completed",
            StkRequest.payment_id.is_(None),
            StkRequest.created_at >= now - LINK_WINDOW,
        )
    ).all()
    for request in waiting:
        taken = exists().where(StkRequest.payment_id == C2BPayment.id)
        candidates = session.scalars(
            select(C2BPayment)
            .where(
                C2BPayment.shortcode_id == request.shortcode_id,
                C2BPayment.amount == request.amount,
                C2BPayment.trans_time >= request.created_at - timedelta(minutes=10),
                C2BPayment.trans_time <= request.created_at + LINK_WINDOW,
                ~taken,
            )
            .order_by(C2BPayment.trans_time)
        ).all()
        key = reference_key(request.account_reference)
        found = next(
            (
                p
                for p in candidates
                if reference_key(p.bill_ref) == key and phone_matches(p, request.phone)
            ),
            None,
        )
        if found is not None:
            request.payment_id, request.receipt = found.id, found.trans_id
            linked += 1
    return linked
