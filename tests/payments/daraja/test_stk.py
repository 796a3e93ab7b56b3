"""STK Push and STK Query over HTTP: the password the emulator checks, the callback after
the simulated customer answers, the query's string codes and its pending error."""

from __future__ import annotations

import re

import pytest
import requests

from payments.daraja import (
    RequestRefused,
    SubscriberLocked,
    TransactionPending,
    WrongCredentials,
    stk_password,
    stk_timestamp,
)


@pytest.fixture(scope="module")
def emulator_overrides():
    return {"stk_user_delay": 0.3}  # long enough to ask while the prompt is open


def push(daraja, emulator, receiver, phone, **kwargs):
    options = {
        "shortcode": emulator.stk_shortcode,
        "passkey": emulator.passkey,
        "amount": 1,
        "phone": phone,
        "callback_url": receiver.hook_url("stk/callback"),
        "account_reference": "LOAN-000123",
    }
    options.update(kwargs)
    return daraja.stk_push(**options)


def callback_for(receiver, checkout_id):
    [body] = receiver.wait_for(
        "stk/callback",
        where=lambda b: b["Body"]["stkCallback"]["CheckoutRequestID"] == checkout_id,
    )
    return body["Body"]["stkCallback"]


def test_push_is_accepted_and_the_paid_callback_follows(emulator, daraja, receiver):
    answer = push(daraja, emulator, receiver, "0712345678", amount=150)
    assert answer["ResponseCode"] == "0"
    assert answer["CustomerMessage"] == "Success. Request accepted for processing"
    checkout_id = answer["CheckoutRequestID"]
    assert re.fullmatch(r"ws_CO_\d{17}712345678", checkout_id)
    callback = callback_for(receiver, checkout_id)
    assert callback["MerchantRequestID"] == answer["MerchantRequestID"]
    assert callback["ResultCode"] == 0
    assert callback["ResultDesc"] == "The service request is processed successfully."
    items = {
        item["Name"]: item.get("Value", "absent") for item in callback["CallbackMetadata"]["Item"]
    }
    assert items["Amount"] == 150
    assert isinstance(items["Amount"], float)
    assert re.fullmatch(r"[A-Z0-9]{10}", items["MpesaReceiptNumber"])
    assert items["Balance"] == "absent"  # Safaricom sends {"Name": "Balance"} with no Value
    assert isinstance(items["TransactionDate"], int) and len(str(items["TransactionDate"])) == 14
    assert items["PhoneNumber"] == 254712345678


def test_query_while_the_prompt_is_open_is_pending(emulator, daraja, receiver):
    checkout_id = push(daraja, emulator, receiver, "254712000001")["CheckoutRequestID"]
    emulator.clear_calls()
    with pytest.raises(TransactionPending) as caught:
        daraja.stk_query(emulator.stk_shortcode, emulator.passkey, checkout_id)
    assert caught.value.error_code == "500.001.1001"
    assert caught.value.request_id == checkout_id
    assert caught.value.http_status == 500
    assert len(emulator.calls("/mpesa/stkpushquery/v1/query")) == 1  # not retried


def test_query_after_the_answer_has_string_codes_and_daraja_typo(emulator, daraja, receiver):
    checkout_id = push(daraja, emulator, receiver, "254712000002")["CheckoutRequestID"]
    callback_for(receiver, checkout_id)
    answer = daraja.stk_query(emulator.stk_shortcode, emulator.passkey, checkout_id)
    assert answer["ResultCode"] == "0"
    assert answer["ResponseDescription"] == "The service request has been accepted successsfully"
    assert answer["CheckoutRequestID"] == checkout_id


@pytest.mark.parametrize(
    ("code", "desc"),
    [(1032, "Request cancelled by user"), (1037, "DS timeout user cannot be reached")],
)
def test_customer_who_does_not_pay(emulator, daraja, receiver, code, desc):
    emulator.faults(stk_result_code=code)
    checkout_id = push(daraja, emulator, receiver, "254712000003")["CheckoutRequestID"]
    callback = callback_for(receiver, checkout_id)
    assert (callback["ResultCode"], callback["ResultDesc"]) == (code, desc)
    assert "CallbackMetadata" not in callback
    answer = daraja.stk_query(emulator.stk_shortcode, emulator.passkey, checkout_id)
    assert answer["ResultCode"] == str(code)


def test_alphanumeric_result_code_is_a_string_in_the_callback(emulator, daraja, receiver):
    emulator.faults(stk_result_code="SFC_IC0003")
    checkout_id = push(daraja, emulator, receiver, "254712000004")["CheckoutRequestID"]
    assert callback_for(receiver, checkout_id)["ResultCode"] == "SFC_IC0003"


def test_wrong_passkey_is_wrong_credentials(emulator, daraja, receiver):
    emulator.clear_calls()
    with pytest.raises(WrongCredentials) as caught:
        push(daraja, emulator, receiver, "254712000005", passkey="not-the-passkey")
    assert caught.value.error_code == "500.001.1001"
    assert caught.value.error_message == "Wrong credentials"
    assert len(emulator.calls("/mpesa/stkpush/v1/processrequest")) == 1  # not retried


def test_password_must_match_the_timestamp_sent(emulator, daraja, receiver):
    timestamp = stk_timestamp()
    body = {
        "BusinessShortCode": emulator.stk_shortcode,
        "Password": stk_password(emulator.stk_shortcode, emulator.passkey, "20210628092408"),
        "Timestamp": timestamp,
        "TransactionType": "CustomerPayBillOnline",
        "Amount": "1",
        "PartyA": "254712000006",
        "PartyB": emulator.stk_shortcode,
        "PhoneNumber": "254712000006",
        "CallBackURL": receiver.hook_url("stk/callback"),
        "AccountReference": "LOAN-1",
        "TransactionDesc": "Repayment",
    }
    answer = requests.post(
        f"{emulator.url}/mpesa/stkpush/v1/processrequest",
        json=body,
        headers={"Authorization": f"Bearer {daraja.access_token()}"},
        timeout=5,
    )
    assert answer.status_code == 500
    assert answer.json()["errorMessage"] == "Wrong credentials"


def test_second_prompt_while_one_is_open_is_refused(emulator, daraja, receiver):
    push(daraja, emulator, receiver, "254712000007")
    with pytest.raises(SubscriberLocked):
        push(daraja, emulator, receiver, "254712000007")


def test_over_long_account_reference_is_refused_here(emulator, daraja, receiver):
    with pytest.raises(RequestRefused, match="AccountReference"):
        push(daraja, emulator, receiver, "254712000008", account_reference="LOAN-000000123")


def test_dropped_callback_leaves_the_query_to_tell(emulator, daraja, receiver):
    emulator.faults(drop_callback=True)
    checkout_id = push(daraja, emulator, receiver, "254712000009")["CheckoutRequestID"]
    assert emulator.wait_for_delivery(checkout_id, "stk_callback")[0]["outcome"] == "dropped"
    # only this push's: an earlier test's callback may still land late on a busy machine
    mine = [
        body
        for body in receiver.bodies("stk/callback")
        if body["Body"]["stkCallback"]["CheckoutRequestID"] == checkout_id
    ]
    assert mine == []
    answer = daraja.stk_query(emulator.stk_shortcode, emulator.passkey, checkout_id)
    assert answer["ResultCode"] == "0"


def test_duplicate_stk_callback(emulator, daraja, receiver):
    emulator.faults(duplicate_delivery=True)
    checkout_id = push(daraja, emulator, receiver, "254712000010")["CheckoutRequestID"]
    receiver.wait_for("stk/callback", count=2)
    assert {
        b["Body"]["stkCallback"]["CheckoutRequestID"] for b in receiver.bodies("stk/callback")
    } == {checkout_id}


def test_stk_payment_can_also_produce_a_c2b_confirmation(start_emulator, make_client, receiver):
    emulator = start_emulator(stk_sends_c2b_confirmation=True, stk_user_delay=0.05)
    daraja = make_client(on=emulator)
    daraja.register_c2b_urls(
        emulator.stk_shortcode,
        receiver.hook_url("c2b/confirmation"),
        receiver.hook_url("c2b/validation"),
    )
    checkout_id = push(daraja, emulator, receiver, "254712000011")["CheckoutRequestID"]
    items = callback_for(receiver, checkout_id)["CallbackMetadata"]["Item"]
    receipt = next(i["Value"] for i in items if i["Name"] == "MpesaReceiptNumber")
    [confirmation] = receiver.wait_for("c2b/confirmation")
    assert confirmation["TransID"] == receipt
    assert confirmation["BillRefNumber"] == "LOAN-000123"
    assert confirmation["MSISDN"] == "2547 ***** 011"
    assert receiver.bodies("c2b/validation") == []  # the customer already approved it
