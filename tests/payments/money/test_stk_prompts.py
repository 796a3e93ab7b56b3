"""STK prompts against the emulator over HTTP: every way a prompt ends, the callback that
comes before the push is recorded, STK Query when no callback comes (never past the
prompt's lifetime), the token, repeats, and the per-phone rules."""

from __future__ import annotations

import time
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import requests
from sqlalchemy import func, select

from lenders.extensions import db
from lenders.models import Loan, Repayment
from payments.models import C2BPayment, CallbackLog
from payments.money_jobs import ask_about_prompts
from payments.money_models import StkRequest
from payments.prompt_checks import link_receiptless
from payments.prompts import PromptRefused, prompt_borrower, send_prompt
from tests.payments.conftest import c2b_body, post_callback
from tests.payments.money.conftest import active_loan, eventually, fresh_phone, logged, post_json

pytestmark = [pytest.mark.usefixtures("live"), pytest.mark.both_databases]
NAIROBI = ZoneInfo("Africa/Nairobi")


def prompt(app, loan, amount=None, *, phone=None, actor=None) -> StkRequest:
    """What the STK button does: the row committed, then the push sent and recorded."""
    made = prompt_borrower(
        db.session,
        loan,
        actor=actor,
        config=app.config,
        amount=Decimal(amount) if amount is not None else None,
        phone=phone,
    )
    db.session.commit()
    made = send_prompt(db.session, made.id, app.config)
    db.session.commit()
    return made


def settled(request_id: int) -> StkRequest:
    return eventually(lambda: (r := db.session.get(StkRequest, request_id)) and not r.is_open and r)


def repayments_of(loan_id: int) -> list[Repayment]:
    return list(db.session.scalars(select(Repayment).where(Repayment.loan_id == loan_id)))


def test_a_paid_prompt_is_posted_to_its_loan_once(app, paybill, emulator):
    emulator.faults(duplicate_delivery=True)  # Safaricom sends the callback twice
    loan = active_loan()
    made = prompt(app, loan, "1500")
    assert made.status in ("pending", "completed") and made.checkout_request_id

    done = settled(made.id)
    assert (done.status, done.result_code, done.settled_by) == ("completed", "0", "callback")
    assert done.result_desc == "Paid." and len(done.receipt) == 10
    payment = eventually(
        lambda: (p := db.session.get(C2BPayment, done.payment_id)) and p.status == "posted" and p
    )
    assert (payment.trans_id, payment.amount, payment.bill_ref) == (
        done.receipt,
        Decimal("1500.00"),
        loan.number,
    )
    assert [r.amount for r in repayments_of(loan.id)] == [Decimal("1500.00")]
    assert db.session.get(Loan, loan.id).outstanding == Decimal("8500.00")
    outcomes = eventually(lambda: len(logged("stk")) == 2 and [c.outcome for c in logged("stk")])
    assert outcomes == ["applied", "duplicate"]


@pytest.mark.parametrize(
    ("code", "status", "words"),
    [
        (1032, "cancelled", "The borrower cancelled the prompt."),
        (1, "failed", "The borrower's M-Pesa balance was too low."),
        (2001, "failed", "The borrower entered a wrong M-Pesa PIN."),
        (8006, "failed", "The borrower's M-Pesa PIN is locked."),
        ("SFC_IC0003", "failed", "This paybill is not set up for STK payments"),
        (9, "failed", "M-Pesa said: The service request failed. (code 9)."),
    ],
)
def test_each_refusal_is_said_in_words_and_posts_nothing(
    app, paybill, emulator, code, status, words
):
    emulator.faults(stk_result_code=code)
    loan = active_loan()
    done = settled(prompt(app, loan, "700").id)
    assert (done.status, done.result_code) == (status, str(code))
    assert done.result_desc.startswith(words)
    assert done.payment_id is None and repayments_of(loan.id) == []


def test_the_sandbox_test_number_never_answers_and_expires(app, paybill):
    loan = active_loan(phone="254708374149")
    done = settled(prompt(app, loan, "300").id)  # the emulator's lifetime here is 2 s
    assert (done.status, done.result_code, done.settled_by) == ("expired", "1037", "callback")
    assert "could not be reached" in done.result_desc


def test_the_same_amount_twice_within_the_window_is_rule_limited(app, paybill):
    loan = active_loan()
    first = settled(prompt(app, loan, "450").id)
    second = settled(prompt(app, loan, "450").id)
    assert (first.status, second.status, second.result_code) == ("completed", "failed", "17")
    assert "same amount" in second.result_desc
    assert len(eventually(lambda: repayments_of(loan.id))) == 1


def test_a_callback_that_comes_before_the_push_is_recorded_is_applied(app, paybill, emulator):
    # Daraja answers the push 0.8 s late; the customer pays (and the callback comes) in 0.05 s
    emulator.faults(answer_delay_seconds=0.8)
    loan = active_loan()
    made = prompt_borrower(db.session, loan, actor=None, config=app.config, amount=Decimal("250"))
    db.session.commit()
    made = send_prompt(db.session, made.id, app.config)
    db.session.commit()
    assert made.status == "completed" and made.settled_by == "callback"  # not undone to pending
    assert made.checkout_request_id and made.answered_at is not None
    assert eventually(lambda: repayments_of(loan.id))[0].amount == Decimal("250.00")


def test_no_callback_is_settled_by_stk_query_and_linked_to_its_payment(
    app, paybill, emulator, client
):
    emulator.faults(drop_callback=True)
    loan = active_loan()
    made = prompt(app, loan, "800")
    emulator.wait_for_delivery(made.checkout_request_id, "stk_callback")
    time.sleep(0.35)  # STK_QUERY_AFTER_SECONDS
    assert ask_about_prompts(20) == 1
    db.session.expire_all()
    done = db.session.get(StkRequest, made.id)
    assert (done.status, done.settled_by, done.receipt) == ("completed", "query", None)
    assert repayments_of(loan.id) == []  # a query gives no receipt: nothing is posted on it

    # Safaricom's C2B confirmation for that money arrives: posted once, and linked
    masked = f"{done.phone[:4]} ***** {done.phone[-3:]}"
    body = c2b_body(
        TransID="TK60000801",
        TransTime=datetime.now(NAIROBI).strftime("%Y%m%d%H%M%S"),
        TransAmount="800.00",
        BillRefNumber=loan.number,
        MSISDN=masked,
    )
    assert post_callback(client, paybill, "confirmation", body).status_code == 200
    assert link_receiptless(db.session) == 1
    db.session.commit()
    assert db.session.get(StkRequest, made.id).receipt == "TK60000801"
    assert [r.amount for r in repayments_of(loan.id)] == [Decimal("800.00")]


def test_still_processing_is_asked_again_but_never_past_the_lifetime(app, paybill, start_emulator):
    slow = start_emulator(stk_prompt_lifetime=30.0, stk_user_delay=30.0)  # never answers in time
    app.config["DARAJA_SANDBOX_URL"] = slow.url
    loan = active_loan()
    made = prompt(app, loan, "900")
    deadline = time.monotonic() + 6
    while db.session.get(StkRequest, made.id).is_open and time.monotonic() < deadline:
        ask_about_prompts(20)
        db.session.expire_all()
        time.sleep(0.1)
    done = db.session.get(StkRequest, made.id)
    assert (done.status, done.settled_by) == ("expired", "timeout")
    assert "lifetime" in done.result_desc
    asked = slow.calls("/mpesa/stkpushquery/v1/query")
    assert 2 <= len(asked) <= 10  # every 0.3 s within a 3 s lifetime, and not after it
    assert all(call["error_code"] == "500.001.1001" for call in asked)  # "being processed"
    assert done.queries == len(asked)


def test_an_unknown_token_is_404_and_writes_nothing(app, paybill, live):
    before = db.session.scalar(select(func.count(CallbackLog.id)))
    body = {"Body": {"stkCallback": {"CheckoutRequestID": "ws_CO_1", "ResultCode": 0}}}
    for token in ("0" * 40, "not-a-token", "a" * 64):
        response = post_json(f"{live}/payments/c2b/{token}/stk", body)
        assert response.status_code == 404
        assert response.json()["errorCode"] == "404.001.01"
    assert db.session.scalar(select(func.count(CallbackLog.id))) == before


def test_a_repeated_callback_changes_nothing(app, paybill, live, emulator):
    emulator.faults(drop_callback=True)
    loan = active_loan()
    made = prompt(app, loan, "1200")
    body = {
        "Body": {
            "stkCallback": {
                "MerchantRequestID": made.merchant_request_id,
                "CheckoutRequestID": made.checkout_request_id,
                "ResultCode": 0,
                "ResultDesc": "The service request is processed successfully.",
                "CallbackMetadata": {
                    "Item": [
                        {"Name": "Amount", "Value": 1200.0},
                        {"Name": "MpesaReceiptNumber", "Value": "TK60001200"},
                        {"Name": "Balance"},
                        {"Name": "TransactionDate", "Value": 20261203101010},
                        {"Name": "PhoneNumber", "Value": int(made.phone)},
                    ]
                },
            }
        }
    }
    url = f"{live}/payments/c2b/{made.callback_token}/stk"
    answers = [post_json(url, body) for _ in range(3)]
    assert [a.json() for a in answers] == [{"ResultCode": 0, "ResultDesc": "Accepted"}] * 3
    failed = dict(body)
    failed["Body"] = {"stkCallback": {**body["Body"]["stkCallback"], "ResultCode": 1032}}
    failed["Body"]["stkCallback"].pop("CallbackMetadata")
    assert post_json(url, failed).status_code == 200  # a contradiction: kept, not applied
    db.session.expire_all()
    assert db.session.get(StkRequest, made.id).status == "completed"
    assert [r.amount for r in repayments_of(loan.id)] == [Decimal("1200.00")]
    assert [c.outcome for c in logged("stk")] == ["applied", "duplicate", "duplicate", "conflict"]


def test_an_unreadable_callback_is_kept_and_acknowledged(app, paybill, live, emulator):
    emulator.faults(drop_callback=True)
    made = prompt(app, active_loan(), "100")
    response = requests.post(
        f"{live}/payments/c2b/{made.callback_token}/stk", data=b"\xff{", timeout=5
    )
    assert response.json() == {"ResultCode": 0, "ResultDesc": "Accepted"}
    [entry] = logged("stk")
    assert entry.outcome == "quarantined" and entry.error
    assert db.session.get(StkRequest, made.id).status == "pending"


def test_one_open_prompt_per_phone(app, paybill, emulator):
    emulator.faults(stk_prompt_expires=True)
    loan = active_loan()
    first = prompt(app, loan, "600")
    assert first.status == "pending"
    with pytest.raises(PromptRefused, match="already open"):
        prompt_borrower(db.session, loan, actor=None, config=app.config)
    db.session.rollback()
    other = active_loan()  # another phone is free
    assert prompt(app, other, "600").status == "pending"


def test_five_prompts_a_minute_per_phone(app, paybill, emulator):
    emulator.faults(stk_result_code=1032)  # each is cancelled at once, freeing the phone
    loan = active_loan()
    for n in range(5):
        settled(prompt(app, loan, str(100 + n)).id)
    with pytest.raises(PromptRefused, match="5 times in the last minute"):
        prompt_borrower(db.session, loan, actor=None, config=app.config, amount=Decimal("200"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"status": "closed"}, "is closed: nothing to collect"),
        ({"amount": "10001"}, "more than loan"),
        ({"amount": "10.50"}, "whole shillings"),
        ({"phone": "254799999999"}, "borrower's own phones"),
    ],
)
def test_prompts_the_book_refuses(app, paybill, change, message):
    loan = active_loan()
    if "status" in change:
        loan.status = change["status"]
        db.session.commit()
    with pytest.raises(PromptRefused, match=message):
        prompt_borrower(
            db.session,
            loan,
            actor=None,
            config=app.config,
            amount=Decimal(change["amount"]) if "amount" in change else None,
            phone=change.get("phone"),
        )


def test_the_default_amount_is_what_is_due_now_or_the_balance(app, paybill, emulator):
    emulator.faults(stk_prompt_expires=True)
    loan = active_loan(phone=fresh_phone())
    assert prompt(app, loan).amount == Decimal("10000")  # every installment is due


def test_a_prompt_nobody_answers_is_called_expired_by_stk_query(app, paybill, emulator):
    emulator.faults(stk_prompt_expires=True)  # no callback; the query says 1019 at the end
    # our own limit well past the emulator's 2 s, so that only the query can settle it (3 s
    # otherwise: on a busy machine the query's answer may come after that)
    app.config["STK_PROMPT_LIFETIME_SECONDS"] = 10
    loan = active_loan()
    made = prompt(app, loan, "650")
    deadline = time.monotonic() + 6
    while db.session.get(StkRequest, made.id).is_open and time.monotonic() < deadline:
        ask_about_prompts(20)
        db.session.expire_all()
        time.sleep(0.2)
    done = db.session.get(StkRequest, made.id)
    assert (done.status, done.result_code, done.settled_by) == ("expired", "1019", "query")
    assert done.result_desc == "The prompt expired before the borrower answered."
