"""The emulator held to the real thing (issue #14): what a third-party Daraja client found it
did differently from Daraja, each answered as Daraja does (REFERENCE cited per test), and
Marejesho's own client and parsers driven through every variant over real HTTP."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import pytest
import requests

from payments.daraja import (
    AuthenticationFailed,
    DarajaUnavailable,
    DuplicateOriginatorConversationID,
    TransactionPending,
    account_balances,
    parse_result,
    parse_stk_callback,
    parse_stk_query,
    security_credential,
)

B2C_V1, B2C_V3 = "/mpesa/b2c/v1/paymentrequest", "/mpesa/b2c/v3/paymentrequest"
BALANCE = "/mpesa/accountbalance/v1/query"
LIFETIME = 0.6
VARIANTS = [
    (code_type, shape)
    for shape in ("list", "object")
    for code_type in ("documented", "number", "string")
]


@pytest.fixture(scope="module")
def emulator_overrides():
    return {"stk_prompt_lifetime": LIFETIME}


def hooks(receiver, name):
    return {
        "result_url": receiver.hook_url(f"{name}/result"),
        "queue_timeout_url": receiver.hook_url(f"{name}/timeout"),
    }


def result_for(receiver, name, ocid, count=1):
    bodies = receiver.wait_for(
        f"{name}/result", count, where=lambda b: b["Result"]["OriginatorConversationID"] == ocid
    )
    return bodies[0]


def disburse(daraja, emulator, receiver, credential, version="v3", **kwargs):
    options = {
        "originator_conversation_id": f"MJ-{uuid.uuid4().hex[:12]}" if version == "v3" else None,
        "initiator_name": emulator.initiator,
        "security_credential": credential,
        "amount": 1500,
        "party_a": "600000",
        "party_b": "254705912645",
        "version": version,
        **hooks(receiver, "b2c"),
    }
    return daraja.b2c_payment(**options | kwargs)


def balance(daraja, emulator, receiver, credential):
    return daraja.account_balance(
        initiator_name=emulator.initiator,
        security_credential=credential,
        party_a="600000",
        **hooks(receiver, "balance"),
    )


def push(daraja, emulator, receiver, phone, amount=1):
    return daraja.stk_push(
        shortcode=emulator.stk_shortcode,
        passkey=emulator.passkey,
        amount=amount,
        phone=phone,
        callback_url=receiver.hook_url("stk/callback"),
        account_reference="LOAN-000123",
    )["CheckoutRequestID"]


def stk_callback(receiver, checkout_id, timeout=5.0):
    [body] = receiver.wait_for(
        "stk/callback",
        timeout=timeout,
        where=lambda b: b["Body"]["stkCallback"]["CheckoutRequestID"] == checkout_id,
    )
    return body


def query(daraja, emulator, checkout_id):
    return daraja.stk_query(emulator.stk_shortcode, emulator.passkey, checkout_id)


# -- OAuth: a wrong key or secret ---------------------------------------------------------------


@pytest.mark.parametrize("which", ["key", "secret"])
def test_wrong_consumer_key_or_secret_is_400_with_an_empty_body(emulator, which):
    """REFERENCE §13: HTTP 400 and no body at all (not a JSON error) for a wrong key or secret."""
    key, secret = (("nobody", emulator.secret), (emulator.key, "wrong"))[which == "secret"]
    answer = requests.get(
        f"{emulator.url}/oauth/v1/generate",
        params={"grant_type": "client_credentials"},
        auth=(key, secret),
        timeout=5,
    )
    assert (answer.status_code, answer.content) == (400, b"")


def test_our_client_reads_the_empty_400_as_refused_credentials(emulator, make_client):
    daraja = make_client(secret="not-the-secret")
    with pytest.raises(AuthenticationFailed) as caught:
        daraja.access_token()
    assert (caught.value.http_status, caught.value.error_code) == (400, None)
    assert "consumer key or secret was refused" in str(caught.value)
    assert "not-the-secret" not in str(caught.value)


# -- the synchronous answer delayed or withheld -------------------------------------------------


def test_a_slow_answer_times_out_and_the_resent_b2c_is_refused_as_a_duplicate(
    emulator, make_client, receiver, credential
):
    """The B2C is carried out, its answer comes too late; our client resends the v3 request
    (safe: the same OriginatorConversationID), Daraja refuses the duplicate, and exactly one
    payment is made, which Transaction Status then confirms."""
    daraja = make_client(timeout=(2, 0.15), max_retries=1)
    daraja.access_token()
    emulator.faults(answer_delay_seconds=0.4)
    emulator.clear_calls()
    with pytest.raises(DarajaUnavailable, match="no answer in time"):
        disburse(daraja, emulator, receiver, credential, originator_conversation_id="MJ-SLOW")
    assert [(c["status"], c["error_code"]) for c in emulator.calls(B2C_V3)] == [
        (200, None),
        (500, "500.002.1001"),
    ]
    paid = parse_result(result_for(receiver, "b2c", "MJ-SLOW"))
    assert paid.succeeded and paid.amount("TransactionAmount") == Decimal("1500.00")
    emulator.reset_faults()
    answer = daraja.transaction_status(
        initiator_name=emulator.initiator,
        security_credential=credential,
        party_a="600000",
        original_conversation_id="MJ-SLOW",
        **hooks(receiver, "status"),
    )
    status = parse_result(result_for(receiver, "status", answer["OriginatorConversationID"]))
    assert status.text("TransactionStatus") == "Completed"
    assert status.text("ReceiptNo") == paid.text("TransactionReceipt")
    assert len(receiver.bodies("b2c/result")) == 1


def test_a_withheld_answer_is_not_resent_for_b2c_v1_yet_the_money_moved(
    emulator, daraja, receiver, credential
):
    daraja.access_token()
    emulator.faults(withhold_answer=1)
    emulator.clear_calls()
    with pytest.raises(DarajaUnavailable, match="the connection broke"):
        disburse(daraja, emulator, receiver, credential, version="v1")
    [call] = emulator.calls(B2C_V1)
    assert (call["status"], call["withheld"]) == (200, True)
    [body] = receiver.wait_for("b2c/result")
    assert parse_result(body).succeeded


def test_a_withheld_b2c_v3_is_resent_and_refused_as_a_duplicate(
    emulator, daraja, receiver, credential
):
    daraja.access_token()
    emulator.faults(withhold_answer=1)
    emulator.clear_calls()
    with pytest.raises(DuplicateOriginatorConversationID):
        disburse(daraja, emulator, receiver, credential, originator_conversation_id="MJ-GONE")
    assert [(c["status"], c["withheld"]) for c in emulator.calls(B2C_V3)] == [
        (200, True),
        (500, False),
    ]
    assert parse_result(result_for(receiver, "b2c", "MJ-GONE")).succeeded
    time.sleep(0.2)  # a second payment, if there were one, would have reported by now
    assert len(receiver.bodies("b2c/result")) == 1


def test_answer_faults_spare_oauth_so_they_land_on_the_call_rehearsed(
    emulator, make_client, receiver, credential
):
    daraja = make_client()  # no token yet: the first request is OAuth
    emulator.faults(withhold_answer=1)
    emulator.clear_calls()
    assert balance(daraja, emulator, receiver, credential)["ResponseCode"] == "0"
    assert [(c["path"], c["status"], c["withheld"]) for c in emulator.calls()] == [
        ("/oauth/v1/generate", 200, False),
        (BALANCE, 200, True),
        (BALANCE, 200, False),  # a balance query is safe to resend
    ]


@pytest.mark.parametrize(
    ("switches", "message"),
    [
        ({"withhold_answer": True}, "withhold_answer must be a count"),
        ({"answer_delay_seconds": -1}, "answer_delay_seconds must be a number of seconds"),
        ({"result_code_type": "float"}, "result_code_type must be one of documented, number"),
        ({"result_parameter_shape": "dict"}, "result_parameter_shape must be one of list"),
        ({"stk_prompt_expires": "yes"}, "stk_prompt_expires must be true or false"),
    ],
)
def test_bad_switch_values_are_refused_with_a_reason(emulator, switches, message):
    answer = requests.post(f"{emulator.url}/_emulator/faults", json=switches, timeout=5)
    assert answer.status_code == 400
    assert message in answer.json()["error"]


# -- result bodies in every variant, read by our parsers ----------------------------------------


@pytest.mark.parametrize(("code_type", "shape"), VARIANTS)
def test_every_result_variant_is_sent_as_switched_and_read_alike(
    emulator, daraja, receiver, credential, code_type, shape
):
    emulator.faults(result_code_type=code_type, result_parameter_shape=shape)
    as_text = code_type in ("documented", "string")  # Account Balance's documented strings
    wrong = security_credential("Wrong999!", emulator.certificate())

    ocid = balance(daraja, emulator, receiver, credential)["OriginatorConversationID"]
    body = result_for(receiver, "balance", ocid)
    assert body["Result"]["ResultCode"] == ("0" if as_text else 0)
    assert isinstance(body["Result"]["ResultParameters"]["ResultParameter"], list)  # two
    result = parse_result(body)
    assert (result.result_type, result.result_code, result.succeeded) == (0, 0, True)
    utility = account_balances(result.text("AccountBalance"))["Utility Account"]
    assert utility.currency == "KES" and isinstance(utility.available, Decimal)

    ocid = balance(daraja, emulator, receiver, wrong)["OriginatorConversationID"]
    body = result_for(receiver, "balance", ocid)
    assert body["Result"]["ResultCode"] == ("2001" if as_text else 2001)
    if shape == "object":
        assert body["Result"]["ResultParameters"]["ResultParameter"]["Key"] == "BOCompletedTime"
    else:
        assert "ResultParameters" not in body["Result"]
    failed = parse_result(body)
    assert (failed.result_code, failed.succeeded) == (2001, False)
    assert (failed.time("BOCompletedTime") is not None) == (shape == "object")

    ocid = disburse(daraja, emulator, receiver, credential)["OriginatorConversationID"]
    body = result_for(receiver, "b2c", ocid)
    assert body["Result"]["ResultCode"] == ("0" if code_type == "string" else 0)
    assert body["Result"]["ResultType"] == ("0" if code_type == "string" else 0)
    paid = parse_result(body)
    assert paid.succeeded and paid.amount("TransactionAmount") == Decimal("1500.00")
    assert paid.text("TransactionReceipt") == paid.transaction_id
    assert paid.time("TransactionCompletedDateTime") is not None
    assert paid.reference["QueueTimeoutURL"].startswith("https://")

    answer = daraja.transaction_status(
        initiator_name=emulator.initiator,
        security_credential=credential,
        party_a=emulator.paybill,
        transaction_id="UA10000000",
        **hooks(receiver, "status"),
    )
    body = result_for(receiver, "status", answer["OriginatorConversationID"])
    assert body["Result"]["ResultCode"] == "SFC_IC0003"  # alphanumeric: a string in every variant
    assert parse_result(body).result_code == "SFC_IC0003"

    phone = f"2547110001{VARIANTS.index((code_type, shape)):02d}"  # no rule 17 between them
    checkout_id = push(daraja, emulator, receiver, phone)
    body = stk_callback(receiver, checkout_id)
    assert body["Body"]["stkCallback"]["ResultCode"] == ("0" if code_type == "string" else 0)
    outcome = parse_stk_callback(body)
    assert outcome.succeeded and outcome.receipt and outcome.phone == phone
    assert outcome.balance is None  # Balance comes with no Value
    assert parse_stk_query(query(daraja, emulator, checkout_id)).result_code == 0


# -- STK: the test number, prompt expiry, and rule 17 ------------------------------------------


def test_the_sandbox_test_number_never_answers_and_ends_in_1037(emulator, daraja, receiver):
    """REFERENCE §5: a push to 254708374149 is never answered; 1037 "No response from user."."""
    checkout_id = push(daraja, emulator, receiver, "254708374149")
    with pytest.raises(TransactionPending):
        query(daraja, emulator, checkout_id)
    callback = parse_stk_callback(stk_callback(receiver, checkout_id, timeout=LIFETIME + 3))
    assert (callback.result_code, callback.result_desc) == (1037, "No response from user.")
    assert not callback.succeeded and callback.amount is None
    answer = query(daraja, emulator, checkout_id)
    assert (answer["ResultCode"], answer["ResultDesc"]) == ("1037", "No response from user.")


def test_an_expired_prompt_sends_no_callback_and_the_query_says_expired(emulator, daraja, receiver):
    emulator.faults(stk_prompt_expires=True)
    checkout_id = push(daraja, emulator, receiver, "254711000001")
    with pytest.raises(TransactionPending):
        query(daraja, emulator, checkout_id)
    time.sleep(LIFETIME + 0.1)
    answer = query(daraja, emulator, checkout_id)
    assert (answer["ResultCode"], answer["ResultDesc"]) == ("1019", "Transaction has expired.")
    assert parse_stk_query(answer).result_code == 1019
    time.sleep(0.3)
    assert receiver.bodies("stk/callback") == []
    assert [d for d in emulator.deliveries(checkout_id) if d["kind"] == "stk_callback"] == []
    emulator.reset_faults()
    push(daraja, emulator, receiver, "254711000001")  # the subscriber is free again


def test_the_same_amount_from_the_same_phone_within_two_minutes_is_17(emulator, daraja, receiver):
    """REFERENCE §6.4: 17 "Rule limited.", the same amount to the same customer within 2 min."""
    first = push(daraja, emulator, receiver, "254711000002", amount=250)
    assert parse_stk_callback(stk_callback(receiver, first)).succeeded
    again = push(daraja, emulator, receiver, "254711000002", amount=250)
    limited = parse_stk_callback(stk_callback(receiver, again))
    assert (limited.result_code, limited.result_desc) == (17, "Rule limited.")
    assert limited.receipt == ""
    other = push(daraja, emulator, receiver, "254711000002", amount=251)
    assert parse_stk_callback(stk_callback(receiver, other)).succeeded


def test_the_same_amount_after_the_window_is_paid(start_emulator, make_client, receiver):
    other = start_emulator(same_amount_window=0.3)
    daraja = make_client(on=other)
    first = push(daraja, other, receiver, "254711000003", amount=250)
    assert parse_stk_callback(stk_callback(receiver, first)).succeeded
    time.sleep(0.35)
    later = push(daraja, other, receiver, "254711000003", amount=250)
    assert parse_stk_callback(stk_callback(receiver, later)).succeeded
