"""One receipt, one posting: a paid prompt's STK callback and Safaricom's C2B confirmation
for the same receipt make one payment, whichever comes first and when they come at once."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from lenders.extensions import db
from lenders.models import Loan, Repayment
from payments.models import C2BPayment
from payments.money_models import StkRequest
from payments.prompts import prompt_borrower, send_prompt
from tests.payments.conftest import c2b_body
from tests.payments.money.conftest import (
    active_loan,
    all_at_once,
    eventually,
    logged,
    post_json,
    stk_paid,
)

pytestmark = [pytest.mark.usefixtures("live"), pytest.mark.both_databases]
NAIROBI = ZoneInfo("Africa/Nairobi")
ACCEPTED = {"ResultCode": 0, "ResultDesc": "Accepted"}


def silent_prompt(app, emulator, amount: str) -> StkRequest:
    """A prompt whose real callback is dropped: the test sends Safaricom's messages."""
    emulator.faults(drop_callback=True)
    made = prompt_borrower(
        db.session, active_loan(), actor=None, config=app.config, amount=Decimal(amount)
    )
    db.session.commit()
    made = send_prompt(db.session, made.id, app.config)
    db.session.commit()
    return made


def confirmation(made: StkRequest, receipt: str) -> dict:
    """Safaricom's C2B confirmation for the prompt's money (masked MSISDN, as v2 sends)."""
    return c2b_body(
        TransID=receipt,
        TransTime=datetime.now(NAIROBI).strftime("%Y%m%d%H%M%S"),
        TransAmount=f"{made.amount:.2f}",
        BillRefNumber=made.account_reference,
        MSISDN=f"{made.phone[:4]} ***** {made.phone[-3:]}",
        FirstName="GRACE",
    )


def urls(live, paybill, made) -> tuple[str, str]:
    return (
        f"{live}/payments/c2b/{made.callback_token}/stk",
        f"{live}/payments/c2b/{paybill.callback_token}/confirmation",
    )


def postings(receipt: str) -> list[Repayment]:
    return list(db.session.scalars(select(Repayment).where(Repayment.reference == receipt)))


def one_posting(receipt: str, amount: str) -> C2BPayment:
    """Exactly one payment with this receipt, posted once, for ``amount``."""
    [payment] = eventually(
        lambda: (
            (
                found := db.session.scalars(
                    select(C2BPayment).where(C2BPayment.trans_id == receipt)
                ).all()
            )
            and found[0].status == "posted"
            and found
        )
    )
    assert [r.amount for r in postings(receipt)] == [Decimal(amount)]
    return payment


def test_stk_callback_first_then_the_confirmation(app, paybill, emulator, live):
    made = silent_prompt(app, emulator, "1100")
    stk_url, c2b_url = urls(live, paybill, made)
    assert post_json(stk_url, stk_paid(made, "TK6A000001")).json() == ACCEPTED
    assert post_json(c2b_url, confirmation(made, "TK6A000001")).json() == ACCEPTED
    payment = one_posting("TK6A000001", "1100.00")
    assert db.session.get(StkRequest, made.id).payment_id == payment.id
    assert [c.outcome for c in logged("confirmation")] == ["duplicate"]
    assert db.session.get(Loan, made.loan_id).outstanding == Decimal("8900.00")


def test_confirmation_first_then_the_stk_callback(app, paybill, emulator, live):
    made = silent_prompt(app, emulator, "1300")
    stk_url, c2b_url = urls(live, paybill, made)
    assert post_json(c2b_url, confirmation(made, "TK6A000002")).json() == ACCEPTED
    one_posting("TK6A000002", "1300.00")
    assert post_json(stk_url, stk_paid(made, "TK6A000002")).json() == ACCEPTED
    payment = one_posting("TK6A000002", "1300.00")
    done = db.session.get(StkRequest, made.id)
    assert (done.status, done.payment_id, done.receipt) == ("completed", payment.id, "TK6A000002")
    assert payment.msisdn_form == "masked"  # the confirmation's payment, not a second one


def test_both_at_once_post_once(app, paybill, emulator, live):
    prompts = [silent_prompt(app, emulator, str(500 + n)) for n in range(8)]
    pairs = [(made, f"TK6B{n:06d}") for n, made in enumerate(prompts)]
    messages = []  # plain values: the threads have no app context
    for made, receipt in pairs:
        stk_url, c2b_url = urls(live, paybill, made)
        messages += [(stk_url, stk_paid(made, receipt)), (c2b_url, confirmation(made, receipt))]

    for start in range(0, len(messages), 4):  # two pairs at a time, all four together
        batch = messages[start : start + 4]
        assert all_at_once(4, lambda i, batch=batch: post_json(*batch[i]).status_code) == [200] * 4
    for made, receipt in pairs:
        payment = one_posting(receipt, f"{made.amount:.2f}")
        assert db.session.get(StkRequest, made.id).payment_id == payment.id


def test_an_stk_payment_that_also_sends_a_confirmation(app, paybill, start_emulator, live):
    emulator = start_emulator(stk_sends_c2b_confirmation=True, stk_user_delay=0.05)
    app.config["DARAJA_SANDBOX_URL"] = emulator.url
    from payments.shortcodes import register_urls

    register_urls(db.session, paybill, app.config, actor=None)
    db.session.commit()
    loan = active_loan()
    made = prompt_borrower(db.session, loan, actor=None, config=app.config, amount=Decimal("2100"))
    db.session.commit()
    made = send_prompt(db.session, made.id, app.config)
    db.session.commit()
    done = eventually(lambda: (r := db.session.get(StkRequest, made.id)).receipt and r)
    emulator.wait_for_delivery(done.receipt, "confirmation")
    one_posting(done.receipt, "2100.00")
    assert eventually(lambda: logged("confirmation"))[0].outcome == "duplicate"
