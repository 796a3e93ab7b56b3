"""Money out and back, tested against the Daraja emulator over real HTTP: the app under
test is served on a free loopback port (``live``) so that the emulator's callbacks and
results reach its tokened URLs, and its jobs run in the request (and in the test, when a
test commits) with the app's own configuration, pointed at the emulator."""

from __future__ import annotations

import json
import threading
import time
from datetime import date

import pytest
import requests
from sqlalchemy import func, select

from lenders.extensions import db
from lenders.models import AuditEvent
from payments.emulator.server import background_server
from payments.models import C2BPayment, CallbackLog, Shortcode
from payments.shortcodes import daraja_client
from tests.conftest import new_borrower, new_loan
from tests.payments.conftest import new_shortcode

PHONES = iter(f"2547{n:08d}" for n in range(10_000_000, 99_999_999, 7919))


@pytest.fixture(scope="module")
def emulator_overrides() -> dict:
    """Prompts that end fast, and result 17 only within one second (tests pay alike)."""
    return {"stk_prompt_lifetime": 2.0, "same_amount_window": 1.0}


@pytest.fixture
def live(app, emulator):
    """The app served over HTTP; its callback URLs and Daraja base URL point where the
    emulator and the app really are; short timings for the checks."""
    emulator.clear_calls()  # each test counts the requests it made
    with background_server(app) as url:
        app.config.update(
            PUBLIC_BASE_URL=url,
            DARAJA_SANDBOX_URL=emulator.url,
            DARAJA_READ_TIMEOUT=2,
            STK_QUERY_AFTER_SECONDS=0.3,
            STK_QUERY_EVERY_SECONDS=0.3,
            STK_PROMPT_LIFETIME_SECONDS=3,
            B2C_RESULT_WAIT_SECONDS=1,
            B2C_STATUS_EVERY_SECONDS=0.3,
        )
        yield url


@pytest.fixture
def paybill(app, emulator) -> Shortcode:
    """The emulator's paybill with every credential: C2B, STK and the initiator."""
    return new_shortcode(
        emulator.paybill,
        consumer_key=emulator.key,
        consumer_secret=emulator.secret,
        passkey=emulator.passkey,
        initiator_name=emulator.initiator,
        initiator_password=emulator.initiator_password,
    )


def fresh_phone() -> str:
    """A phone no other test prompted: the emulator remembers open prompts and payments."""
    return next(PHONES)


def active_loan(officer=None, *, phone: str | None = None, number: str | None = None, **kw):
    """An active loan of 10,000.00 (four monthly installments of 2,500.00, the first due
    long ago) to a new borrower with a phone of their own."""
    return new_loan(
        borrower=new_borrower("Grace Njeri", phones=(phone or fresh_phone(),)),
        number=number,
        officer=officer,
        principal=kw.pop("principal", "10000.00"),
        interest=kw.pop("interest", "0"),
        fees=kw.pop("fees", "0"),
        installments=4,
        disbursed_on=kw.pop("disbursed_on", date(2025, 1, 1)),
        **kw,
    )


def eventually(read, timeout: float = 10.0, every: float = 0.05):
    """``read()`` (in a fresh view of the database) once it is truthy; fails after
    ``timeout`` seconds with what it last returned."""
    deadline = time.monotonic() + timeout
    while True:
        db.session.rollback()
        db.session.expire_all()
        value = read()
        if value or time.monotonic() > deadline:
            assert value, f"still {value!r} after {timeout}s"
            return value
        time.sleep(every)


def paid_in(app, paybill, loan, amount: int = 1500) -> C2BPayment:
    """A customer pays the loan through the emulator; the payment as posted."""
    with daraja_client(paybill, app.config) as client:
        client.simulate_c2b(
            paybill.number, amount, loan.borrower.phones[0].number, bill_ref=loan.number
        )
    return eventually(
        lambda: (
            (p := db.session.scalar(select(C2BPayment).where(C2BPayment.bill_ref == loan.number)))
            and p.status == "posted"
            and p
        )
    )


def post_json(url: str, body) -> requests.Response:
    return requests.post(
        url, data=json.dumps(body), headers={"Content-Type": "application/json"}, timeout=10
    )


def all_at_once(count: int, work) -> list:
    """Run ``work(i)`` in ``count`` threads released together; their results in order."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def run(i):
        barrier.wait()
        results[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def audit_count(action: str) -> int:
    return db.session.scalar(select(func.count(AuditEvent.id)).where(AuditEvent.action == action))


def logged(kind: str) -> list[CallbackLog]:
    return list(
        db.session.scalars(
            select(CallbackLog).where(CallbackLog.kind == kind).order_by(CallbackLog.id)
        )
    )


def stk_paid(request, receipt: str, amount=None, code=0) -> dict:
    """The STK callback Safaricom sends for a paid prompt (REFERENCE §6.2)."""
    items = [
        {"Name": "Amount", "Value": float(amount or request.amount)},
        {"Name": "MpesaReceiptNumber", "Value": receipt},
        {"Name": "Balance"},
        {"Name": "TransactionDate", "Value": int(time.strftime("%Y%m%d%H%M%S"))},
        {"Name": "PhoneNumber", "Value": int(request.phone)},
    ]
    callback = {
        "MerchantRequestID": request.merchant_request_id,
        "CheckoutRequestID": request.checkout_request_id,
        "ResultCode": code,
        "ResultDesc": "The service request is processed successfully.",
        "CallbackMetadata": {"Item": items},
    }
    return {"Body": {"stkCallback": callback}}
