"""C2B over HTTP: URL registration (v1/v2 and the fallback on 401.003.01), Safaricom's URL
rules, simulate, and the callbacks the emulator makes: validation then confirmation, in
Daraja's shapes, with the MSISDN in each of its forms and every delivery fault."""

from __future__ import annotations

import hashlib
import re
import time
import uuid

import pytest
import requests

from payments.daraja import ForbiddenCallbackUrl, SandboxOnly, UrlsAlreadyRegistered

NICHOLAS_HASH = "94c392c311d522da950619227b3361752a42042db7e1e699b26e628305c68a88"
PAYER = "254712345126"


@pytest.fixture(scope="module")
def emulator_overrides():
    return {"validation_timeout": 0.5}


def register(daraja, shortcode, receiver, **kwargs):
    return daraja.register_c2b_urls(
        shortcode,
        receiver.hook_url("c2b/confirmation"),
        receiver.hook_url("c2b/validation"),
        **kwargs,
    )


def pay(daraja, shortcode, amount=100, msisdn=PAYER, **kwargs) -> str:
    """Simulate a payment with a bill reference of its own; returns the reference."""
    bill_ref = kwargs.pop("bill_ref", uuid.uuid4().hex[:10].upper())
    answer = daraja.simulate_c2b(shortcode, amount, msisdn, bill_ref=bill_ref, **kwargs)
    assert answer["ResponseDescription"] == "Accept the service request successfully."
    return bill_ref


def confirmations(receiver, bill_ref, count=1, timeout=5.0):
    return receiver.wait_for(
        "c2b/confirmation",
        count,
        timeout=timeout,
        where=lambda body: body["BillRefNumber"] == bill_ref,
    )


def test_register_v2_answers_with_daraja_typo(emulator, daraja, receiver):
    registration = register(daraja, emulator.paybill, receiver)
    assert registration.version == "v2" and not registration.fell_back
    assert registration.response["ResponseCode"] == "0"
    assert registration.response["ResponseDescription"] == "Success"
    assert "OriginatorCoversationID" in registration.response  # sic


def test_register_falls_back_to_v1_on_401_003_01(emulator, make_client, receiver):
    daraja = make_client(emulator.key_v1, emulator.secret_v1)
    daraja.access_token()
    emulator.clear_calls()
    registration = register(daraja, emulator.v1_paybill, receiver, version="v2")
    assert (registration.version, registration.fell_back) == ("v1", True)
    assert registration.response["ResponseDescription"] == "success"
    assert [(c["path"], c["status"], c["error_code"]) for c in emulator.calls()] == [
        ("/mpesa/c2b/v2/registerurl", 401, "401.003.01"),
        ("/mpesa/c2b/v1/registerurl", 200, None),
    ]


def test_register_falls_back_to_v2_when_v1_is_not_the_apps_product(emulator, daraja, receiver):
    registration = register(daraja, emulator.paybill, receiver, version="v1")
    assert (registration.version, registration.fell_back) == ("v2", True)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://lender.example/mpesa/confirm", ["mpesa"]),
        ("https://lender.example/M-Pesa/confirm", ["m-pesa"]),
        ("https://safaricom-hooks.example/confirm", ["safaricom"]),
        ("https://lender.example/c2b/Execute", ["exe", "exec"]),
        ("https://lender.example/cmd/confirm", ["cmd"]),
        ("https://lender.example/SQL/confirm", ["sql"]),
        ("https://lender.example/c2b/query", ["query"]),
        ("https://lender.example/c2b/%71uery", ["query"]),
    ],
)
def test_forbidden_words_are_refused_before_anything_is_sent(
    emulator, daraja, receiver, url, words
):
    emulator.clear_calls()
    with pytest.raises(ForbiddenCallbackUrl) as caught:
        daraja.register_c2b_urls(emulator.paybill, url, receiver.hook_url("c2b/validation"))
    assert caught.value.field == "ConfirmationURL"
    assert caught.value.words == words
    assert url not in str(caught.value)  # callback URLs carry secret tokens
    assert emulator.calls() == []


def test_the_emulator_refuses_forbidden_words_from_any_client(emulator, daraja, receiver):
    answer = requests.post(
        f"{emulator.url}/mpesa/c2b/v2/registerurl",
        json={
            "ShortCode": emulator.paybill,
            "ResponseType": "Completed",
            "ConfirmationURL": receiver.hook_url("mpesa/confirmation"),
            "ValidationURL": receiver.hook_url("c2b/validation"),
        },
        headers={"Authorization": f"Bearer {daraja.access_token()}"},
        timeout=5,
    )
    assert answer.status_code == 400
    body = answer.json()
    assert list(body) == ["requestId", "errorCode", "errorMessage"]
    assert body["errorCode"] == "400.002.02"
    assert body["errorMessage"] == "Bad Request - Invalid ConfirmationURL"


def test_simulate_is_refused_for_a_production_client(emulator, make_client):
    daraja = make_client(environment="production")
    emulator.clear_calls()
    with pytest.raises(SandboxOnly):
        daraja.simulate_c2b(emulator.paybill, 10, PAYER)
    assert emulator.calls() == []


def test_production_client_refuses_plain_http_callback_urls(emulator, make_client, receiver):
    daraja = make_client(environment="production")
    with pytest.raises(ForbiddenCallbackUrl, match="https"):
        register(daraja, emulator.paybill, receiver)


def test_simulate_calls_validation_then_confirmation(emulator, daraja, receiver):
    register(daraja, emulator.paybill, receiver)
    bill_ref = pay(daraja, emulator.paybill, amount=250)
    [confirmation] = confirmations(receiver, bill_ref)
    [validation] = receiver.bodies("c2b/validation")
    names = [name for name, _ in receiver.received]
    assert names == ["c2b/validation", "c2b/confirmation"]
    assert validation["TransID"] == confirmation["TransID"]
    assert re.fullmatch(r"[L-Z][A-L][1-9A-V][A-Z0-9]{7}", confirmation["TransID"])
    assert validation["OrgAccountBalance"] == ""
    assert re.fullmatch(r"\d+\.\d\d", confirmation["OrgAccountBalance"])
    assert confirmation["TransAmount"] == "250.00"
    assert confirmation["TransactionType"] == "Pay Bill"
    assert confirmation["BusinessShortCode"] == emulator.paybill
    assert re.fullmatch(r"\d{14}", confirmation["TransTime"])
    assert list(confirmation) == [
        "TransactionType",
        "TransID",
        "TransTime",
        "TransAmount",
        "BusinessShortCode",
        "BillRefNumber",
        "InvoiceNumber",
        "OrgAccountBalance",
        "ThirdPartyTransID",
        "MSISDN",
        "FirstName",
        "MiddleName",
        "LastName",
    ]


def test_simulate_v1_answers_as_the_2018_sandbox_did(emulator, daraja, receiver):
    register(daraja, emulator.paybill, receiver)
    answer = daraja.simulate_c2b(emulator.paybill, 10, PAYER, bill_ref="V1", version="v1")
    assert set(answer) == {"ConversationID", "OriginatorCoversationID", "ResponseDescription"}
    assert re.fullmatch(r"AG_\d{8}_[0-9a-f]{20}", answer["ConversationID"])
    confirmations(receiver, "V1")


def test_v2_registration_masks_the_msisdn_exactly(emulator, daraja, receiver):
    register(daraja, emulator.paybill, receiver)
    [body] = confirmations(receiver, pay(daraja, emulator.paybill))
    assert body["MSISDN"] == "2547 ***** 126"


def test_v1_registration_hashes_the_msisdn(emulator, make_client, receiver):
    daraja = make_client(emulator.key_v1, emulator.secret_v1)
    register(daraja, emulator.v1_paybill, receiver, version="v1")
    [body] = confirmations(receiver, pay(daraja, emulator.v1_paybill))
    assert body["MSISDN"] == hashlib.sha256(PAYER.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", body["MSISDN"])


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("hashed", hashlib.sha256(PAYER.encode()).hexdigest()),
        ("masked", "2547 ***** 126"),
        ("plain", PAYER),
    ],
)
def test_msisdn_mode_switch(emulator, daraja, receiver, mode, expected):
    register(daraja, emulator.paybill, receiver)
    emulator.faults(msisdn_mode=mode)
    [body] = confirmations(receiver, pay(daraja, emulator.paybill))
    assert body["MSISDN"] == expected


def test_sandbox_single_subscriber_reports_nicholas_whoever_paid(emulator, make_client, receiver):
    daraja = make_client(emulator.key_v1, emulator.secret_v1)
    register(daraja, emulator.v1_paybill, receiver, version="v1")
    emulator.faults(sandbox_single_subscriber=True)
    [body] = confirmations(receiver, pay(daraja, emulator.v1_paybill, msisdn="254708374149"))
    assert body["MSISDN"] == NICHOLAS_HASH
    assert (body["FirstName"], body["MiddleName"], body["LastName"]) == (
        "NICHOLAS",
        "JOHN",
        "SONGOK",
    )


def test_sandbox_single_subscriber_masked_for_v2(emulator, daraja, receiver):
    register(daraja, emulator.paybill, receiver)
    emulator.faults(sandbox_single_subscriber=True)
    [body] = confirmations(receiver, pay(daraja, emulator.paybill))
    assert body["MSISDN"] == "2547 ***** 645"
    assert body["FirstName"] == "NICHOLAS"


def test_rejected_validation_means_no_confirmation(emulator, daraja, receiver):
    register(daraja, emulator.paybill, receiver)
    receiver.validation_answer = {"ResultCode": "C2B00012", "ResultDesc": "Rejected"}
    bill_ref = pay(daraja, emulator.paybill)
    [validation] = receiver.wait_for("c2b/validation")
    assert emulator.wait_for_delivery(validation["TransID"], "payment")[0]["outcome"] == "cancelled"
    assert receiver.bodies("c2b/confirmation") == []
    assert bill_ref == validation["BillRefNumber"]


def test_without_external_validation_only_the_confirmation_comes(
    start_emulator, make_client, receiver
):
    emulator = start_emulator(external_validation=False)
    daraja = make_client(on=emulator)
    register(daraja, emulator.paybill, receiver)
    confirmations(receiver, pay(daraja, emulator.paybill))
    assert receiver.bodies("c2b/validation") == []


def test_numeric_zero_accepts_too(emulator, daraja, receiver):
    register(daraja, emulator.paybill, receiver)
    receiver.validation_answer = {"ResultCode": 0, "ResultDesc": "Accepted"}
    confirmations(receiver, pay(daraja, emulator.paybill))


def test_third_party_trans_id_from_validation_comes_back_in_confirmation(
    emulator, daraja, receiver
):
    register(daraja, emulator.paybill, receiver)
    receiver.validation_answer = {
        "ResultCode": "0",
        "ResultDesc": "Accepted",
        "ThirdPartyTransID": "LOAN-000123",
    }
    [body] = confirmations(receiver, pay(daraja, emulator.paybill))
    assert body["ThirdPartyTransID"] == "LOAN-000123"


@pytest.mark.parametrize(
    ("response_type", "slow", "confirmed"),
    [
        ("Completed", "timeout", True),
        ("Cancelled", "timeout", False),
        ("Completed", "error", True),
        ("Cancelled", "error", False),
    ],
)
def test_unreachable_validation_applies_the_response_type(
    emulator, daraja, receiver, response_type, slow, confirmed
):
    register(daraja, emulator.paybill, receiver, response_type=response_type)
    if slow == "timeout":
        receiver.validation_delay = 0.8  # past the emulator's 0.5 s (Daraja: ~8 s)
    else:
        receiver.validation_answer, receiver.validation_status = None, 500
    bill_ref = pay(daraja, emulator.paybill)
    [validation] = receiver.wait_for("c2b/validation")
    if confirmed:
        confirmations(receiver, bill_ref)
    else:
        emulator.wait_for_delivery(validation["TransID"], "payment")
        assert receiver.bodies("c2b/confirmation") == []
    [verdict] = emulator.deliveries(validation["TransID"])[:1]
    assert verdict["kind"] == "validation" and verdict["outcome"].startswith("unreachable")


def test_duplicate_delivery_sends_the_confirmation_twice(emulator, daraja, receiver):
    register(daraja, emulator.paybill, receiver)
    emulator.faults(duplicate_delivery=True)
    first, second = confirmations(receiver, pay(daraja, emulator.paybill), count=2)
    assert first == second
    assert len(receiver.bodies("c2b/validation")) == 1


def test_dropped_callback_never_arrives(emulator, daraja, receiver):
    register(daraja, emulator.paybill, receiver)
    emulator.faults(drop_callback=True)
    pay(daraja, emulator.paybill)
    [validation] = receiver.wait_for("c2b/validation")
    [drop] = emulator.wait_for_delivery(validation["TransID"], "confirmation")
    assert drop["outcome"] == "dropped"
    time.sleep(0.2)
    assert receiver.bodies("c2b/confirmation") == []


def test_delayed_callback_waits_the_delay(emulator, daraja, receiver):
    register(daraja, emulator.paybill, receiver)
    emulator.faults(callback_delay_seconds=0.6)
    started = time.monotonic()
    bill_ref = pay(daraja, emulator.paybill)
    receiver.wait_for("c2b/validation")
    assert receiver.bodies("c2b/confirmation") == []
    confirmations(receiver, bill_ref)
    assert time.monotonic() - started >= 0.6


def test_production_registers_urls_once(start_emulator, make_client):
    production = start_emulator(environment="production")
    daraja = make_client(on=production, environment="production")
    urls = ("https://pay.lender.example/hooks/c2b/confirmation", "https://pay.lender.example/v")
    assert daraja.register_c2b_urls("600984", *urls).version == "v2"
    production.clear_calls()
    with pytest.raises(UrlsAlreadyRegistered) as caught:
        daraja.register_c2b_urls("600984", *urls)
    assert caught.value.error_code == "500.003.1001"
    assert len(production.calls("/mpesa/c2b/v2/registerurl")) == 1  # a refusal, not retried


def test_production_has_no_simulate(start_emulator, make_client):
    production = start_emulator(environment="production")
    token = make_client(on=production).access_token()
    answer = requests.post(
        f"{production.url}/mpesa/c2b/v2/simulate",
        json={"ShortCode": "600984", "CommandID": "CustomerPayBillOnline", "Amount": 1},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert answer.status_code == 404
    assert answer.json()["fault"]["detail"]["errorcode"].endswith("ApplicationNotFound")
