"""SMS receipts and officer notices, sent in jobs after the money's transaction commits.

A provider failure never touches a posting: the receipt is its own row and its own job,
retried with backoff. The (payment, kind) unique constraint and a claim-by-write keep a
job that runs twice from texting twice. Phones are masked in logs."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lenders.jobs import wake_on_commit
from lenders.models import Borrower, Loan
from lenders.money import format_kes
from payments.models import (
    C2BPayment,
    OfficerNotice,
    PaymentStatus,
    SmsMessage,
    SmsSettings,
    SmsTemplate,
)

log = logging.getLogger("marejesho.sms")
NAIROBI = ZoneInfo("Africa/Nairobi")

DEFAULT_TEMPLATES = {
    ("receipt", "en"): "{lender}: received {amount} for {loan}, M-Pesa {receipt}. "
    "Balance {balance}. {next_due}",
    ("receipt", "sw"): "{lender}: tumepokea {amount} kwa {loan}, M-Pesa {receipt}. "
    "Salio {balance}. {next_due}",
    ("receipt_spill", "en"): "{lender}: received {amount}, M-Pesa {receipt}, applied to "
    "{allocations}. {next_due}",
    ("receipt_spill", "sw"): "{lender}: tumepokea {amount}, M-Pesa {receipt}, kwa "
    "{allocations}. {next_due}",
    ("receipt_credit", "en"): "{lender}: received {amount}, M-Pesa {receipt}. Paid "
    "{allocations}. {credit} is held for you as credit.",
    ("receipt_credit", "sw"): "{lender}: tumepokea {amount}, M-Pesa {receipt}. Tumelipa "
    "{allocations}. {credit} imewekwa kama akiba yako.",
}
VARIABLES = {
    "lender": "the lender's name",
    "amount": "the amount paid, e.g. KES 1,500.00",
    "receipt": "the M-Pesa receipt, e.g. TK60708BHZ",
    "loan": "the loan paid, e.g. LOAN-000123",
    "balance": "what remains on that loan",
    "next_due": "next installment and date, or 'Loan fully paid.'",
    "allocations": "each loan and what it got",
    "credit": "what is held as credit",
}
TEMPLATE_KEYS = ("receipt", "receipt_spill", "receipt_credit")
GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà^{}\\[~]|€"
)


def segments(text: str) -> tuple[int, str]:
    """How many SMS the text costs, and its encoding (GSM-7: 160/153, UCS-2: 70/67)."""
    if all(ch in GSM7 for ch in text):
        length = sum(2 if ch in "^{}\\[~]|€" else 1 for ch in text)
        return (1 if length <= 160 else -(-length // 153)), "GSM-7"
    units = len(text.encode("utf-16-le")) // 2  # an emoji takes two
    return (1 if units <= 70 else -(-units // 67)), "UCS-2"


def template_text(session: Session, key: str, language: str) -> str:
    row = session.get(SmsTemplate, (key, language))
    return row.body if row else DEFAULT_TEMPLATES[(key, language)]


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def render(text: str, variables: dict[str, str]) -> str:
    """Fill ``{name}`` placeholders; anything else (unknown names, a half-typed brace) is
    left as typed, never an error."""
    return _PLACEHOLDER.sub(lambda m: variables.get(m.group(1), m.group(0)), text)


def template_problems(text: str) -> list[str]:
    """Why a template would not read right: unknown variables, stray braces."""
    problems = [
        f"unknown variable {{{name}}}"
        for name in _PLACEHOLDER.findall(text)
        if name not in VARIABLES
    ]
    if _PLACEHOLDER.sub("", text).count("{") or _PLACEHOLDER.sub("", text).count("}"):
        problems.append("a { or } without a variable name")
    return problems


@dataclass
class Receipt:
    key: str
    language: str
    to_phone: str
    body: str
    borrower_id: int


@dataclass(frozen=True)
class ReceiptLine:
    """One loan a payment was posted to, as the receipt tells it."""

    loan_number: str
    amount: Decimal  # what the loan got
    to_credit: Decimal  # what rode on it as borrower credit
    outstanding: Decimal  # the loan's balance after the posting
    next_due: tuple[Decimal, date] | None  # its oldest unpaid installment: what is left, when


def compose_receipt(
    text_for, lender: str, language: str, amount: Decimal, receipt: str, lines: list[ReceiptLine]
) -> tuple[str, str]:
    """The receipt's template key and words, from what was posted (``text_for(key,
    language)`` gives a template). Pure: the posting paths gather the facts their own way."""
    first = lines[0]
    # What the borrower owes next: the first loan of this posting that still owes.
    owing = next((line for line in lines if line.outstanding > 0), None)
    nxt = owing.next_due if owing else None
    if nxt is None:
        next_due = "Loan fully paid." if language == "en" else "Mkopo umelipwa wote."
    else:
        left, due_on = nxt
        when = due_on.strftime("%d %b")
        named = f" on {owing.loan_number}" if owing is not first else ""
        next_due = (
            f"Next {format_kes(left)}{named} by {when}."
            if language == "en"
            else f"Ijayo {format_kes(left)}{named.replace(' on ', ' kwa ')} kufikia {when}."
        )
    credit = sum((line.to_credit for line in lines), Decimal("0.00"))
    allocations = ", ".join(
        f"{line.loan_number} {format_kes(line.amount)}" for line in lines if line.amount
    )
    key = "receipt_credit" if credit else ("receipt_spill" if len(lines) > 1 else "receipt")
    variables = {
        "lender": lender,
        "amount": format_kes(amount),
        "receipt": receipt,
        "loan": first.loan_number,
        "balance": format_kes(first.outstanding),
        "next_due": next_due,
        "allocations": allocations,
        "credit": format_kes(credit),
    }
    return key, render(text_for(key, language), variables)


def receipt_for(session: Session, payment: C2BPayment, lender: str) -> Receipt | str:
    """The borrower's receipt for a posted payment, or why none is sent."""
    if payment.status != PaymentStatus.POSTED or payment.borrower_id is None:
        return "the payment is not posted to a borrower"
    borrower = session.get(Borrower, payment.borrower_id)
    if borrower.sms_opt_out:
        return "the borrower opted out of SMS"
    if not borrower.phones:
        return "the borrower has no phone"
    live = [r for r in payment.repayments if not r.reversed]
    if not live:
        return "nothing was posted"
    lines = []
    for repayment in live:
        loan = session.get(Loan, repayment.loan_id)
        nxt = loan.next_due
        lines.append(
            ReceiptLine(
                loan.number,
                repayment.amount,
                repayment.to_credit,
                loan.outstanding,
                (nxt.outstanding, nxt.due_on) if nxt else None,
            )
        )
    language = borrower.sms_language if borrower.sms_language in ("en", "sw") else "en"
    key, body = compose_receipt(
        lambda k, lang: template_text(session, k, lang),
        lender,
        language,
        payment.amount,
        payment.trans_id,
        lines,
    )
    return Receipt(key, language, borrower.phones[0].number, body, borrower.id)


# --- the steps the jobs take ----------------------------------------------------------


def queue_receipt(session: Session, payment_id: int, lender: str) -> SmsMessage | None:
    """The receipt row for a payment, created once (the unique constraint decides)."""
    existing = session.scalar(
        select(SmsMessage).where(SmsMessage.payment_id == payment_id, SmsMessage.kind == "receipt")
    )
    if existing is not None:
        return existing
    payment = session.get(C2BPayment, payment_id)
    if payment is None:
        return None
    made = receipt_for(session, payment, lender)
    message = SmsMessage(kind="receipt", payment_id=payment_id, to_phone="", body="")
    if isinstance(made, str):
        message.status, message.error = "skipped", made
        if payment.borrower_id:
            message.borrower_id = payment.borrower_id
    else:
        message.to_phone, message.body, message.language = made.to_phone, made.body, made.language
        message.borrower_id = made.borrower_id
    try:
        with session.begin_nested():
            session.add(message)
    except IntegrityError:
        return session.scalar(
            select(SmsMessage).where(
                SmsMessage.payment_id == payment_id, SmsMessage.kind == "receipt"
            )
        )
    return message


SMS_ATTEMPTS = 5  # then the message is failed, for a person to look at
RETRY_SECONDS = (30, 120, 600, 1800)  # between a failed attempt and the next


def queue_messages_for(session: Session, payment: C2BPayment) -> None:
    """What a posting owes people, written in the posting's own transaction: the borrower's
    receipt (once per payment) and a notice to each officer whose portfolio it landed in.
    The messages drain sends the receipt after the commit, so a lost job or a crashed
    worker never loses a message."""
    from flask import current_app

    queue_receipt(session, payment.id, current_app.config.get("LENDER_NAME", "Marejesho"))
    notify_officers(session, payment.id)
    wake_on_commit(session, "messages")


# A claimed message another worker may take after this: a worker killed after claiming a
# batch delays its messages by this much. Taking one too early sends nothing twice: a
# message is marked sending only from queued.
CLAIM_LEASE = timedelta(seconds=30)


def claim_messages(session: Session, limit: int, now: datetime | None = None) -> list[int]:
    """Claim up to ``limit`` queued messages whose time has come: each stays ``queued`` but
    is not due again for CLAIM_LEASE, so other workers pass it by, and a worker that dies
    before handing it to the provider leaves it to be sent later. The caller commits."""
    now = now or datetime.now(UTC)
    due = (
        select(SmsMessage.id)
        .where(
            SmsMessage.status == "queued",
            or_(SmsMessage.next_attempt_at.is_(None), SmsMessage.next_attempt_at <= now),
        )
        .order_by(SmsMessage.id)
        .limit(limit)
        .with_for_update(skip_locked=True, key_share=True)
    )
    claimed = session.execute(
        update(SmsMessage)
        .where(SmsMessage.id.in_(due.scalar_subquery()))
        .values(next_attempt_at=now + CLAIM_LEASE)
        .returning(SmsMessage.id)
        .execution_options(synchronize_session=False)
    ).scalars()
    return sorted(claimed)


def start_sending(session: Session, message_id: int) -> bool:
    """Mark a claimed message ``sending`` (attempts + 1) just before the provider is called;
    False if another worker got there first. The caller commits before calling: from then
    on the message is never sent again without a person (the provider may have taken it)."""
    return bool(
        session.execute(
            update(SmsMessage)
            .where(SmsMessage.id == message_id, SmsMessage.status == "queued")
            .values(
                status="sending",
                attempts=SmsMessage.attempts + 1,
                next_attempt_at=datetime.now(UTC),  # sending since
            )
            .execution_options(synchronize_session=False)
        ).rowcount
    )


def send_claimed_message(session: Session, provider, message_id: int) -> str:
    """Hand one message marked ``sending`` to the provider and record what happened:
    ``sent``, or ``queued`` again for a later time, or after the last attempt ``failed``.
    Never raises for the provider's failures. The caller commits."""
    message = session.get(SmsMessage, message_id)
    try:
        provider_id = provider.send(message.to_phone, message.body)
    except Exception as exc:  # noqa: BLE001 - any provider failure is kept, never raised
        final = message.attempts >= SMS_ATTEMPTS
        pause = RETRY_SECONDS[min(message.attempts, len(RETRY_SECONDS)) - 1]
        record_failure(
            session,
            message_id,
            str(exc) or type(exc).__name__,
            final=final,
            retry_at=datetime.now(UTC) + timedelta(seconds=pause),
        )
        log.warning(
            "%s %s not sent (attempt %s): %s",
            message.kind,
            message.id,
            message.attempts,
            type(exc).__name__,
        )
        return "failed" if final else "queued"
    record_sent(session, message_id, provider.name, provider_id)
    return "sent"


def resend_message(session: Session, message_id: int) -> bool:
    """Queue a failed message again, now, if no provider ever accepted it (a person asked
    for it). False when it was sent, is on its way, or does not exist."""
    return bool(
        session.execute(
            update(SmsMessage)
            .where(
                SmsMessage.id == message_id,
                SmsMessage.status == "failed",
                SmsMessage.provider_message_id.is_(None),
            )
            .values(status="queued", next_attempt_at=None, attempts=0)
            .execution_options(synchronize_session=False)
        ).rowcount
    )


def give_up_interrupted(session: Session, now: datetime | None = None) -> int:
    """A worker that died between claiming a message and recording the provider's answer
    leaves it ``sending``: after ten minutes say so, and do not guess whether the provider
    took it (sending again could text the borrower twice)."""
    now = now or datetime.now(UTC)
    return session.execute(
        update(SmsMessage)
        .where(
            SmsMessage.status == "sending",
            SmsMessage.created_at <= now - timedelta(minutes=10),
            or_(
                SmsMessage.next_attempt_at.is_(None),  # since (before next_attempt_at)
                SmsMessage.next_attempt_at <= now - timedelta(minutes=10),
            ),
        )
        .values(
            status="failed",
            attempts=SMS_ATTEMPTS,
            error="interrupted while sending; check with the provider",
        )
        .execution_options(synchronize_session=False)
    ).rowcount


def record_sent(session: Session, message_id: int, provider: str, provider_id: str) -> None:
    session.execute(
        update(SmsMessage)
        .where(SmsMessage.id == message_id)
        .values(
            status="sent",
            provider=provider,
            provider_message_id=provider_id,
            sent_at=datetime.now(UTC),
            error=None,
        )
    )


def record_failure(
    session: Session, message_id: int, error: str, *, final: bool, retry_at: datetime | None = None
) -> None:
    session.execute(
        update(SmsMessage)
        .where(SmsMessage.id == message_id)
        .values(
            status="failed" if final else "queued",
            error=error[:500],
            next_attempt_at=None if final else retry_at,
        )
    )


DELIVERY_STATUSES = {
    "Success": "delivered",
    "Failed": "failed",
    "Rejected": "failed",
    "AbsentSubscriber": "failed",
    "Expired": "failed",
}


def record_delivery(session: Session, provider_id: str, status: str, reason: str = "") -> bool:
    """Apply a delivery report; True when it named a message we sent."""
    message = session.scalar(
        select(SmsMessage).where(SmsMessage.provider_message_id == provider_id)
    )
    if message is None:
        return False
    new = DELIVERY_STATUSES.get(status)
    if new == "delivered":
        message.status, message.delivered_at = "delivered", datetime.now(UTC)
    elif new == "failed" and message.status != "delivered":
        message.status, message.error = "failed", f"{status}: {reason}"[:500]
    return True


def notify_officers(session: Session, payment_id: int) -> int:
    """One in-app notice per officer whose portfolio the payment landed in."""
    payment = session.get(C2BPayment, payment_id)
    if payment is None or payment.status != PaymentStatus.POSTED:
        return 0
    made = 0
    officers = {}
    for repayment in payment.repayments:
        loan = session.get(Loan, repayment.loan_id)
        if loan.officer_id and not repayment.reversed:
            officers.setdefault(loan.officer_id, []).append(loan.number)
    for officer_id, numbers in officers.items():
        text = (
            f"{payment.first_name or 'A borrower'} paid {format_kes(payment.amount)} "
            f"({payment.trans_id}) to {', '.join(numbers)}"
        )
        try:
            with session.begin_nested():
                session.add(OfficerNotice(staff_id=officer_id, payment_id=payment_id, text=text))
            made += 1
        except IntegrityError:
            continue
    return made


def in_quiet_hours(settings: SmsSettings | None, now: datetime) -> bool:
    """Non-receipt messages wait outside quiet hours (Nairobi time)."""
    if settings is None:
        return False
    hour = now.astimezone(NAIROBI).hour
    start, end = settings.quiet_start, settings.quiet_end
    return (start <= hour or hour < end) if start > end else (start <= hour < end)
