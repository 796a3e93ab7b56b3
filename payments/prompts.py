"""STK prompts (M-Pesa Express, REFERENCE §6): an officer asks a borrower's phone to pay
a loan; Safaricom settles the prompt by callback, or, when no callback comes, STK Query
does (payments/money_jobs.py).

How it holds:
- the request row and its callback token are committed (``prompt_borrower``, status
  ``sending``) before the push is sent (``send_prompt``), so the callback always finds its
  row; one that comes before the push's answer is recorded is applied all the same, and
  the answer recorded after it does not undo it;
- a phone has at most one open prompt (a partial unique index) and at most
  ``STK_PROMPTS_PER_MINUTE`` a minute;
- the money of a paid prompt is a C2B payment like any other, keyed by its receipt: the
  STK callback and Safaricom's C2B confirmation for the same receipt make one payment, in
  either order and at the same time (the (shortcode, TransID) unique constraint), which
  the payments drain posts once. A prompt that STK Query says was paid carries no receipt:
  it is linked to the payment that arrives by account reference, phone and amount within
  24 hours (``link_receiptless``), and never posted on its own.

Services take the session and plain values and never commit."""

from __future__ import annotations

import logging
import math
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lenders.jobs import wake_on_commit
from lenders.models import Loan, StaffUser
from lenders.phones import mask_phone
from lenders.references import reference_key
from lenders.web import nairobi_time, nairobi_today
from payments.daraja import DarajaError, StkOutcome
from payments.daraja_queries import callback_url
from payments.intake import STK_TRANS_TYPE
from payments.models import C2BPayment, PaymentStatus, Shortcode
from payments.money_models import OPEN_STK, StkRequest
from payments.shortcodes import ShortcodeError, daraja_client, explain

log = logging.getLogger("marejesho.stk")
DEFAULTS = {
    "STK_QUERY_AFTER_SECONDS": 90,  # no callback by then: ask STK Query
    "STK_QUERY_EVERY_SECONDS": 30,  # "still processing": ask again this much later
    "STK_PROMPT_LIFETIME_SECONDS": 180,  # never asked about after this
    "STK_PROMPTS_PER_MINUTE": 5,
}
STK_MAX = Decimal("250000")
CLAIM_LEASE = timedelta(seconds=60)
LINK_WINDOW = timedelta(hours=24)
WORDS = {
    0: "Paid.",
    1: "The borrower's M-Pesa balance was too low.",
    2: "Declined: below M-Pesa's minimum amount.",
    3: "Declined: above M-Pesa's maximum for one payment.",
    4: "Declined: it would pass the borrower's daily M-Pesa limit.",
    8: "Declined: the paybill would pass its maximum balance.",
    17: "M-Pesa refused it: the same amount was asked of this phone within two minutes.",
    26: "M-Pesa was too busy; try again shortly.",
    1001: "The borrower's phone was busy with another M-Pesa transaction.",
    1019: "The prompt expired before the borrower answered.",
    1025: "M-Pesa could not send the prompt (the message was too long).",
    1032: "The borrower cancelled the prompt.",
    1037: "The borrower's phone could not be reached (switched off or no answer).",
    2001: "The borrower entered a wrong M-Pesa PIN.",
    2028: "This paybill is not set up for STK payments (product assignment).",
    8006: "The borrower's M-Pesa PIN is locked.",
    9999: "M-Pesa could not send the prompt.",
    "SFC_IC0003": "This paybill is not set up for STK payments (wrong paybill or till).",
}
STATUS_BY_CODE = {0: "completed", 1032: "cancelled", 1037: "expired", 1019: "expired"}


class PromptRefused(ValueError):
    """A prompt not sent; the message is for the officer."""


def setting(config: dict, name: str) -> float:
    return float(config.get(name, DEFAULTS[name]))


def words_for(code, description: str = "") -> str:
    """A result code as a sentence (REFERENCE §6.4)."""
    if code in WORDS:
        return WORDS[code]
    return f"M-Pesa said: {description or 'failed'} (code {code})."


def due_now(loan: Loan, today) -> Decimal:
    """What the borrower should pay today: every installment due by today (or the next
    one when none is), never more than the loan's balance; whole shillings, rounded up."""
    owed = sum((i.outstanding for i in loan.installments if i.due_on <= today), Decimal("0"))
    if owed <= 0 and loan.next_due is not None:
        owed = loan.next_due.outstanding
    owed = min(owed, loan.outstanding)
    return Decimal(math.ceil(owed)) if owed > 0 else Decimal("0")


def account_reference(loan: Loan) -> str:
    """The loan number the borrower sees on the prompt (Daraja takes 12 characters at
    most); a longer number is sent as the key matching files it under."""
    return loan.number if len(loan.number) <= 12 else reference_key(loan.number)[:12]


def prompting_shortcode(session: Session) -> Shortcode:
    """The paybill (or till) that takes STK payments: the first with a passkey."""
    found = session.scalar(
        select(Shortcode)
        .where(Shortcode.passkey.is_not(None), Shortcode.consumer_key.is_not(None))
        .order_by(Shortcode.kind, Shortcode.number)
        .limit(1)
    )
    if found is None:
        raise PromptRefused(
            "No paybill has a Lipa na M-Pesa passkey yet: an admin adds one in Configuration."
        )
    return found


def prompt_borrower(
    session: Session,
    loan: Loan,
    *,
    actor: StaffUser | None,
    config: dict,
    amount: Decimal | None = None,
    phone: str | None = None,
    now: datetime | None = None,
) -> StkRequest:
    """The prompt's row, in ``sending``, checked against the rules; the caller commits it
    and then calls ``send_prompt``. Raises PromptRefused with the reason."""
    now = now or datetime.now(UTC)
    if loan.status != "active":
        raise PromptRefused(
            f"Loan {loan.number} is {loan.status.replace('_', ' ')}: nothing to collect."
        )
    phones = [p.number for p in loan.borrower.phones]
    chosen = phone or (phones[0] if phones else None)
    if chosen not in phones:
        raise PromptRefused("Prompt one of the borrower's own phones.")
    asked = due_now(loan, nairobi_today()) if amount is None else amount
    if asked != asked.to_integral_value() or asked < 1:
        raise PromptRefused("M-Pesa prompts for whole shillings, at least KES 1.")
    if asked > max(Decimal(math.ceil(loan.outstanding)), Decimal("1")) or asked > STK_MAX:
        raise PromptRefused(f"KES {asked:,.0f} is more than loan {loan.number} owes.")
    shortcode = prompting_shortcode(session)
    _refuse_busy_phone(session, chosen, config, now)
    lifetime = timedelta(seconds=setting(config, "STK_PROMPT_LIFETIME_SECONDS"))
    request = StkRequest(
        loan_id=loan.id,
        shortcode_id=shortcode.id,
        phone=chosen,
        amount=asked,
        account_reference=account_reference(loan),
        description="Loan payment",
        requested_by_id=actor.id if actor else None,
        created_at=now,
        expires_at=now + lifetime,
    )
    try:
        with session.begin_nested():
            session.add(request)
    except IntegrityError:  # another prompt to this phone was opened meanwhile
        raise PromptRefused(f"A prompt to {mask_phone(chosen)} is already open.") from None
    return request


def _refuse_busy_phone(session: Session, phone: str, config: dict, now: datetime) -> None:
    """One open prompt per phone (an old one past its lifetime is closed here) and at most
    STK_PROMPTS_PER_MINUTE a minute."""
    for stale in session.scalars(
        select(StkRequest).where(
            StkRequest.phone == phone,
            StkRequest.status.in_(OPEN_STK),
            StkRequest.expires_at <= now,
        )
    ):
        settle(session, stale, "expired", 1019, WORDS[1019], "timeout", now)
    open_one = session.scalar(
        select(StkRequest).where(StkRequest.phone == phone, StkRequest.status.in_(OPEN_STK))
    )
    if open_one is not None:
        raise PromptRefused(
            f"A prompt to {mask_phone(phone)} is already open (sent "
            f"{nairobi_time(open_one.created_at, '%H:%M')}): wait for the borrower to answer "
            "or for it to expire."
        )
    limit = int(setting(config, "STK_PROMPTS_PER_MINUTE"))
    recent = session.scalar(
        select(func.count(StkRequest.id)).where(
            StkRequest.phone == phone, StkRequest.created_at > now - timedelta(minutes=1)
        )
    )
    if recent >= limit:
        raise PromptRefused(
            f"{mask_phone(phone)} was prompted {recent} times in the last minute; "
            "wait a minute before prompting again."
        )


def send_prompt(session: Session, request_id: int, config: dict) -> StkRequest:
    """Send a committed prompt and record Daraja's answer: ``pending`` with its
    CheckoutRequestID, or ``failed`` with Daraja's refusal in words. No answer at all
    leaves it ``sending`` until its lifetime ends (a callback may still come). The caller
    commits."""
    request = session.get(StkRequest, request_id)
    shortcode = request.shortcode
    try:
        with daraja_client(shortcode, config) as client:
            answer = client.stk_push(
                shortcode.number,
                shortcode.passkey or "",
                int(request.amount),
                request.phone,
                callback_url(config, request.callback_token, "stk"),
                request.account_reference,
                request.description,
                transaction_type=(
                    "CustomerBuyGoodsOnline"
                    if shortcode.kind == "till"
                    else "CustomerPayBillOnline"
                ),
            )
    except (ShortcodeError, DarajaError) as exc:
        return _push_failed(session, request, exc)
    if str(answer.get("ResponseCode", "0")).strip() not in ("0", ""):
        why = str(answer.get("ResponseDescription") or "no reason given")[:300]
        return _push_failed(session, request, ShortcodeError(f"Daraja did not accept it: {why}"))
    now = datetime.now(UTC)
    ids = {
        "checkout_request_id": str(answer.get("CheckoutRequestID") or "")[:64] or None,
        "merchant_request_id": str(answer.get("MerchantRequestID") or "")[:64] or None,
        "answered_at": now,
    }
    first_query = now + timedelta(seconds=setting(config, "STK_QUERY_AFTER_SECONDS"))
    moved = _move(
        session,
        request.id,
        ("sending",),
        status="pending",
        next_query_at=min(first_query, request.expires_at),
        **ids,
    )
    if not moved:  # the callback came first and settled it: keep its word, add the ids
        session.execute(
            update(StkRequest)
            .where(StkRequest.id == request.id)
            .values(
                answered_at=now,
                checkout_request_id=func.coalesce(
                    StkRequest.checkout_request_id, ids["checkout_request_id"]
                ),
                merchant_request_id=func.coalesce(
                    StkRequest.merchant_request_id, ids["merchant_request_id"]
                ),
            )
        )
    return _fresh(session, request.id)


def _push_failed(session: Session, request: StkRequest, exc: Exception) -> StkRequest:
    from payments.daraja import DarajaUnavailable, SubscriberLocked

    if isinstance(exc, DarajaUnavailable):
        log.warning("STK push %s: no answer from Daraja", request.id)
        session.execute(
            update(StkRequest)
            .where(StkRequest.id == request.id, StkRequest.status == "sending")
            .values(
                result_desc="Daraja did not answer; if the prompt reached the phone, "
                "its outcome still comes."
            )
        )
        return _fresh(session, request.id)
    if isinstance(exc, SubscriberLocked):
        why = "The borrower's phone is busy with another M-Pesa transaction; try again in a minute."
    elif isinstance(exc, ShortcodeError):
        why = str(exc)
    else:
        why = explain(exc)
    _move(
        session,
        request.id,
        ("sending",),
        status="failed",
        result_desc=why,
        settled_by="daraja",
        settled_at=datetime.now(UTC),
    )
    return _fresh(session, request.id)


def _move(session: Session, request_id: int, statuses, **values) -> bool:
    return bool(
        session.execute(
            update(StkRequest)
            .where(StkRequest.id == request_id, StkRequest.status.in_(statuses))
            .values(**values)
            .execution_options(synchronize_session=False)
        ).rowcount
    )


def _fresh(session: Session, request_id: int) -> StkRequest:
    return session.scalars(
        select(StkRequest)
        .where(StkRequest.id == request_id)
        .execution_options(populate_existing=True)
    ).one()


def _locked(session: Session, request_id: int) -> StkRequest:
    """The row, after a write on it: a second callback (or the query job) waits for this
    transaction, on SQLite as on PostgreSQL, and then sees what it did."""
    session.execute(
        update(StkRequest).where(StkRequest.id == request_id).values(queries=StkRequest.queries)
    )
    return _fresh(session, request_id)


def settle(session: Session, request: StkRequest, status: str, code, desc: str, via: str, now=None):
    request.status, request.result_code = status, str(code)
    request.result_desc, request.settled_by = desc, via
    request.settled_at, request.next_query_at = now or datetime.now(UTC), None


def apply_outcome(session: Session, request_id: int, outcome: StkOutcome, *, via: str):
    """Safaricom's word on a prompt, from its callback or STK Query: ``(what happened,
    payment id)``, what happened being ``applied``, ``duplicate`` (a repeat: nothing
    changed) or ``conflict`` (it contradicts what Safaricom said before; kept, not
    applied). A paid prompt's receipt becomes a C2B payment once."""
    request = _locked(session, request_id)
    if outcome.checkout_request_id and request.checkout_request_id not in (
        None,
        outcome.checkout_request_id,
    ):
        return "conflict", None
    if outcome.checkout_request_id and request.checkout_request_id is None:
        request.checkout_request_id = outcome.checkout_request_id
        request.merchant_request_id = request.merchant_request_id or outcome.merchant_request_id
    status = STATUS_BY_CODE.get(outcome.result_code, "failed")
    if status == "completed":
        made = None
        if outcome.receipt and request.payment_id is None:
            made = record_stk_payment(session, request, outcome)
            request.payment_id, request.receipt = made, outcome.receipt
        if request.status != "completed":
            settle(session, request, "completed", 0, WORDS[0], via)
            return "applied", request.payment_id
        return ("applied" if made else "duplicate"), request.payment_id
    if request.status == "completed":
        return "conflict", request.payment_id
    if request.status in OPEN_STK or request.settled_by == "timeout":
        settle(
            session,
            request,
            status,
            outcome.result_code,
            words_for(outcome.result_code, outcome.result_desc),
            via,
        )
        return "applied", None
    return "duplicate", None


def record_stk_payment(session: Session, request: StkRequest, outcome: StkOutcome) -> int:
    """The paid prompt as a C2B payment (``received``, for the payments drain), or the
    payment Safaricom's C2B confirmation already made for this receipt."""
    table = C2BPayment.__table__
    values = {
        "shortcode_id": request.shortcode_id,
        "trans_id": outcome.receipt[:32],
        "trans_type": STK_TRANS_TYPE,
        "trans_time": (outcome.paid_at or datetime.now(UTC)).astimezone(UTC),
        "amount": outcome.amount or request.amount,
        "bill_ref": request.account_reference,
        "msisdn": re.sub(r"\D", "", outcome.phone or "")[:12] or request.phone,
        "msisdn_form": "plain",
        "org_account_balance": outcome.balance,
        "status": PaymentStatus.RECEIVED,
        "credit": Decimal("0.00"),
        "attempts": 0,
        "received_at": datetime.now(UTC),
    }
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    made = session.execute(
        insert(table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["shortcode_id", "trans_id"])
        .returning(table.c.id)
    ).scalar()
    if made is not None:
        wake_on_commit(session, "payments")
        return made
    return session.scalar(
        select(C2BPayment.id).where(
            C2BPayment.shortcode_id == request.shortcode_id,
            C2BPayment.trans_id == values["trans_id"],
        )
    )


def stk_json(request: StkRequest) -> dict:
    """CONTRACT §3's shape (phone masked)."""
    return {
        "id": request.id,
        "loan_number": request.loan.number,
        "amount": str(request.amount),
        "phone": mask_phone(request.phone),
        "status": request.status,
        "checkout_request_id": request.checkout_request_id,
        "result_code": request.result_code,
        "result_desc": request.result_desc,
        "receipt": request.receipt,
        "created_at": request.created_at.isoformat(),
    }
