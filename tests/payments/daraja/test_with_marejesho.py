"""The emulator paying into Marejesho itself, both over real HTTP: our client registers the
shortcode's callback URLs, simulates a payment, and the emulator's validation and
confirmation land on /payments/c2b/<token>/… where intake stores and posts the payment
exactly once, duplicate delivery included."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from lenders.extensions import db
from payments.emulator.server import background_server
from payments.models import C2BPayment


def payments_when(predicate, timeout: float = 10.0) -> list[C2BPayment]:
    deadline = time.monotonic() + timeout
    while True:
        with Session(db.engine) as session:
            found = list(session.scalars(select(C2BPayment).order_by(C2BPayment.id)))
        if predicate(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def pay_marejesho(app, shortcode, emulator, make_client, bill_ref: str):
    with background_server(app) as marejesho:
        daraja = make_client()
        base = f"{marejesho}/payments/c2b/{shortcode.callback_token}"
        registration = daraja.register_c2b_urls(
            shortcode.number, f"{base}/confirmation", f"{base}/validation"
        )
        assert registration.version == "v2"
        daraja.simulate_c2b(shortcode.number, 1000, "0712345678", bill_ref=bill_ref)
        payments = payments_when(lambda found: any(p.status == "posted" for p in found))
        emulator.wait_for_delivery(payments[0].trans_id, "confirmation")
        time.sleep(0.2)  # a second delivery, if any, has landed
        return payments_when(lambda found: False, timeout=0)


def test_a_simulated_payment_is_posted_to_the_loan(
    app, make_loan, make_shortcode, emulator, make_client
):
    loan = make_loan(number="LOAN-000123")
    before = loan.outstanding
    shortcode = make_shortcode(emulator.paybill)
    [payment] = pay_marejesho(app, shortcode, emulator, make_client, "loan 123")
    assert payment.status == "posted"
    assert payment.msisdn == "2547 ***** 678" and payment.msisdn_form == "masked"
    assert str(payment.amount) == "1000.00"
    db.session.expire_all()
    assert before - loan.outstanding == 1000


def test_duplicate_delivery_posts_once(app, make_loan, make_shortcode, emulator, make_client):
    make_loan(number="LOAN-000124")
    shortcode = make_shortcode(emulator.paybill)
    emulator.faults(duplicate_delivery=True)
    payments = pay_marejesho(app, shortcode, emulator, make_client, "LOAN-000124")
    assert [p.status for p in payments] == ["posted"]
    deliveries = emulator.wait_for_delivery(payments[0].trans_id, "confirmation")
    assert [d["status"] for d in deliveries] == [200, 200]
