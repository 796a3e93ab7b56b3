"""SMS receipts and officer notices, sent in jobs after the money's transaction commits.

A provider failure never touches a posting: the receipt is its own row and its own job,
retried with backoff. The (payment, kind) unique constraint and a claim-by-write keep a
job that runs twice from texting twice. Phones are masked in logs."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import select
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
        text = payment_notice_text(payment, numbers)
        try:
            with session.begin_nested():
                session.add(OfficerNotice(staff_id=officer_id, payment_id=payment_id, text=text))
            made += 1
        except IntegrityError:
            continue
    return made


def payment_notice_text(payment, loan_numbers: list[str]) -> str:
    """An officer's notice that a payment (``first_name``, ``amount``, ``trans_id``) landed
    on their loans."""
    return (
        f"{payment.first_name or 'A borrower'} paid {format_kes(payment.amount)} "
        f"({payment.trans_id}) to {', '.join(loan_numbers)}"
    )


def in_quiet_hours(settings: SmsSettings | None, now: datetime) -> bool:
    """Non-receipt messages wait outside quiet hours (Nairobi time)."""
    if settings is None:
        return False
    hour = now.astimezone(NAIROBI).hour
    start, end = settings.quiet_start, settings.quiet_end
    return (start <= hour or hour < end) if start > end else (start <= hour < end)
