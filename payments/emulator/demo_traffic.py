"""A stream of realistic payments to the demo paybill, so that a newcomer running ``make run``
sees payments arrive: sloppy references, IDs and phones typed as the account, hashed and
masked MSISDNs, and payers nobody knows.

Each payment goes through the Daraja emulator (``POST /_emulator/demo-payments``), which
receives it as M-Pesa would: it writes the receipt, the time and the paybill's running
balance (OrgAccountBalance), keeps the payment for Pull Transactions, reversals and the
statement (``/_emulator/statement.csv``), and delivers the confirmation to our callback URL
through its courier, so dropped, duplicate and late callbacks apply here too. When the
emulator does not answer, no payment is made: the traffic says so once and waits for it
(or gives up after ``give_up_after`` seconds); it never makes up a balance. The demo
paybill itself is production-safe code: ``payments/demo.py``. While our database is down,
payers go on paying (recent ones again), as they would on M-Pesa."""

from __future__ import annotations

import random
import time
from collections import deque
from decimal import Decimal

import requests
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from lenders.models import Loan
from lenders.phones import phone_sha256
from payments.demo import DEMO_SHORTCODE
from payments.models import Shortcode


class DemoTrafficStopped(Exception):
    """The demo traffic cannot go on; the message says why."""


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


def demo_confirmation(session: Session, rng: random.Random) -> tuple[str, dict]:
    """The payer's real number and what M-Pesa's confirmation would tell us of a payment to
    the demo book (Daraja v2's shape; TransID, TransTime and OrgAccountBalance are the
    emulator's to write)."""
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
    stranger = f"2547{rng.randrange(100_000):05d}000"  # someone "2547 ***** 000" stands for
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
        bill_ref, msisdn, first, phone = f"LOAN-{digits}", "2547 ***** 000", "RELATIVE", stranger
    elif scenario < 0.85:
        bill_ref, msisdn, first, phone = (
            rng.choice(["rent", "school fees", "x", ""]),
            "2547 ***** 000",
            "VISITOR",
            stranger,
        )
    else:
        bill_ref = rng.choice(["", "mkopo", "pay"])
    return phone, {
        "TransactionType": "Pay Bill",
        "TransAmount": f"{max(amount, Decimal(10)):.2f}",
        "BusinessShortCode": DEMO_SHORTCODE,
        "BillRefNumber": bill_ref,
        "InvoiceNumber": "",
        "ThirdPartyTransID": "",
        "MSISDN": msisdn,
        "FirstName": first,
    }


def app_is_up(base_url: str) -> bool:
    """Marejesho answers at ``base_url``: its /healthz answers at all. (A 503 there says a
    part is down, Redis say; Safaricom goes on paying then, and so does the demo.)"""
    try:
        with requests.get(f"{base_url}/healthz", timeout=5):
            return True
    except requests.RequestException:
        return False


def send_demo_traffic(
    session_factory,
    base_url: str,
    emulator_url: str,
    *,
    every: float,
    count: int | None,
    seed: int | None = None,
    echo=print,
    give_up_after: float | None = None,
) -> int:
    """Pay the demo paybill through the emulator at ``emulator_url`` until ``count``
    payments are made (one every ``every`` seconds), their confirmations going to our own
    callback URL at ``base_url``; how many were made. Waits while the app or the emulator
    is down, saying so once each time; raises DemoTrafficStopped when the emulator has
    not answered for ``give_up_after`` seconds, or refuses a payment (it is not this
    emulator, or a newer one)."""
    rng = random.Random(seed)
    pause = max(every, 0.1)
    made = 0
    app_down = emulator_down_since = None
    database_down = False
    seen: deque = deque(maxlen=50)  # recent payments, to go on paying while the database is down
    while count is None or made < count:
        if not app_is_up(base_url):
            if not app_down:
                echo(f"demo traffic: the app at {base_url} is not up yet; waiting for it")
            app_down = True
            time.sleep(pause)
            continue
        app_down = False
        try:
            with session_factory() as session:
                token = session.scalar(
                    select(Shortcode.callback_token).where(Shortcode.number == DEMO_SHORTCODE)
                )
                payer, notice = demo_confirmation(session, rng)
            if database_down:
                echo("demo traffic: the database answers again")
                database_down = False
            seen.append((token, payer, notice))
        except DBAPIError as exc:
            if not seen:
                raise
            if not database_down:
                echo(
                    f"demo traffic: the database does not answer ({type(exc.orig).__name__}); "
                    "payers go on paying, as on M-Pesa: repeating recent payers"
                )
            database_down = True
            token, payer, notice = rng.choice(seen)
        if token is None:
            raise DemoTrafficStopped(
                f"no demo paybill {DEMO_SHORTCODE} here: run flask payments load-demo"
            )
        order = {
            "confirmation_url": f"{base_url}/payments/c2b/{token}/confirmation",
            "msisdn": payer,
            "notice": notice,
        }
        try:
            answer = requests.post(
                f"{emulator_url}/_emulator/demo-payments", json=order, timeout=10
            )
        except requests.RequestException as exc:
            now = time.monotonic()
            if emulator_down_since is None:
                emulator_down_since = now
                echo(
                    f"demo traffic: the Daraja emulator at {emulator_url} does not answer "
                    f"({type(exc).__name__}); no payment is made until it does, waiting"
                )
            if give_up_after is not None and now - emulator_down_since >= give_up_after:
                raise DemoTrafficStopped(
                    f"the Daraja emulator at {emulator_url} has not answered for "
                    f"{now - emulator_down_since:.0f} s; start it with flask emulator serve"
                ) from None
            time.sleep(pause)
            continue
        if emulator_down_since is not None:
            echo(f"demo traffic: the Daraja emulator at {emulator_url} answers again")
            emulator_down_since = None
        with answer:
            if answer.status_code != 200:
                raise DemoTrafficStopped(
                    f"the Daraja emulator at {emulator_url} refused a demo payment "
                    f"({answer.status_code}: {answer.text[:200]}); is it this version's?"
                )
            sent = answer.json()
        made += 1
        echo(
            f"demo payment {sent['TransID']} KES {sent['TransAmount']} "
            f"ref {sent['BillRefNumber']!r}: paybill balance {sent['OrgAccountBalance']}"
        )
        if count is None or made < count:
            time.sleep(every)
    return made
