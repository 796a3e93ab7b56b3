"""A stream of realistic confirmations for the demo paybill, POSTed to our own callback URL
(as Daraja would), so that a newcomer running ``make run`` sees payments arrive: sloppy
references, IDs and phones typed as the account, hashed and masked MSISDNs, and payers
nobody knows. The demo paybill itself is production-safe code: ``payments/demo.py``."""

from __future__ import annotations

import random
import time
from datetime import datetime
from decimal import Decimal

import requests
from sqlalchemy import select
from sqlalchemy.orm import Session

from lenders.models import Loan
from lenders.phones import phone_sha256
from payments.demo import DEMO_SHORTCODE
from payments.emulator.payloads import NAIROBI, receipt
from payments.models import Shortcode


def sloppy(number: str, rng: random.Random) -> str:
    digits = str(int("".join(ch for ch in number if ch.isdigit()) or "0"))
    return rng.choice(
        [
            number,
            number.lower(),
            f"loan {digits}",
            f"LOAN{digits.zfill(6)}",
            digits,
            f"Loan-{digits}",
            f" {number} ",
        ]
    )


def demo_confirmation(session: Session, rng: random.Random) -> dict:
    """One confirmation as Daraja v2 would send it for the demo book."""
    now = datetime.now(NAIROBI)
    loan = rng.choice(
        list(
            session.scalars(
                select(Loan).where(Loan.status == "active").order_by(Loan.id).limit(200)
            )
        )
        or [None]
    )
    borrower = loan.borrower if loan else None
    phone = borrower.phones[0].number if borrower and borrower.phones else "254700000000"
    first = borrower.name.split()[0].upper() if borrower else "PAYER"
    amount = Decimal(rng.choice([200, 500, 1000, 1500, 2500, 3000]))
    if loan is not None and rng.random() < 0.3:
        amount = (loan.outstanding / max(1, len(loan.installments))).quantize(Decimal("1"))
    scenario = rng.random()
    bill_ref, msisdn = "", f"{phone[:4]} ***** {phone[-3:]}"
    if scenario < 0.45 and loan:
        bill_ref = sloppy(loan.number, rng)
    elif scenario < 0.55 and borrower:
        bill_ref = borrower.national_id
    elif scenario < 0.65:
        bill_ref = "0" + phone[3:]
    elif scenario < 0.75:
        msisdn = phone_sha256(phone)
    elif scenario < 0.8 and loan:  # a typo: two digits swapped, for the suggestions
        digits = str(int("".join(ch for ch in loan.number if ch.isdigit()) or "0"))
        if len(digits) > 1:
            i = rng.randrange(len(digits) - 1)
            digits = digits[:i] + digits[i + 1] + digits[i] + digits[i + 2 :]
        bill_ref, msisdn, first = f"LOAN-{digits}", "2547 ***** 000", "RELATIVE"
    elif scenario < 0.85:
        bill_ref, msisdn, first = (
            rng.choice(["rent", "school fees", "x", ""]),
            "2547 ***** 000",
            "VISITOR",
        )
    else:
        bill_ref = rng.choice(["", "mkopo", "pay"])
    return {
        "TransactionType": "Pay Bill",
        "TransID": receipt(now),
        "TransTime": now.strftime("%Y%m%d%H%M%S"),
        "TransAmount": f"{max(amount, Decimal(10)):.2f}",
        "BusinessShortCode": DEMO_SHORTCODE,
        "BillRefNumber": bill_ref,
        "InvoiceNumber": "",
        "OrgAccountBalance": f"{rng.randrange(10_000, 900_000)}.00",
        "ThirdPartyTransID": "",
        "MSISDN": msisdn,
        "FirstName": first,
    }


def send_demo_traffic(
    session_factory,
    base_url: str,
    *,
    every: float,
    count: int | None,
    seed: int | None = None,
    echo=print,
) -> int:
    """POST demo confirmations to our own callback URL until ``count`` are sent."""
    rng = random.Random(seed)
    sent = 0
    while count is None or sent < count:
        with session_factory() as session:
            token = session.scalar(
                select(Shortcode.callback_token).where(Shortcode.number == DEMO_SHORTCODE)
            )
            body = demo_confirmation(session, rng)
        url = f"{base_url}/payments/c2b/{token}/confirmation"
        try:
            answer = requests.post(url, json=body, timeout=10)
            echo(
                f"demo payment {body['TransID']} KES {body['TransAmount']} "
                f"ref {body['BillRefNumber']!r}: {answer.status_code}"
            )
            sent += 1
        except requests.ConnectionError:
            echo("demo traffic: the app is not up yet")
        time.sleep(every)
    return sent
