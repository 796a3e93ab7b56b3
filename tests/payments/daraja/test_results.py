"""The initiator APIs over HTTP (B2C v3 and v1, Transaction Status, Account Balance,
Reversal) with their asynchronous results, and Pull Transactions."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta

import pytest
import requests

from payments.daraja import (
    DuplicateOriginatorConversationID,
    InvalidRequest,
    default_certificate,
    security_credential,
)
from payments.daraja.credentials import NAIROBI

PHONE = "254705912645"


def hooks(receiver, name):
    return {
        "result_url": receiver.hook_url(f"{name}/result"),
        "queue_timeout_url": receiver.hook_url(f"{name}/timeout"),
    }


def result_for(receiver, name, ocid):
    [body] = receiver.wait_for(
        f"{name}/result", where=lambda b: b["Result"]["OriginatorConversationID"] == ocid
    )
    return body["Result"]


def parameters(result) -> dict:
    return {
        p["Key"]: p.get("Value", "absent") for p in result["ResultParameters"]["ResultParameter"]
    }


def disburse(daraja, emulator, receiver, credential, **kwargs):
    options = {
        "originator_conversation_id": f"MJ-{uuid.uuid4().hex[:16]}",
        "initiator_name": emulator.initiator,
        "security_credential": credential,
        "amount": 1500,
        "party_a": "600000",
        "party_b": PHONE,
        "occasion": "Loan LOAN-000123",
        **hooks(receiver, "b2c"),
    }
    options.update(kwargs)
    return daraja.b2c_payment(**options)


def paid_c2b(daraja, emulator, receiver, amount=500) -> str:
    """A C2B payment into the paybill; its receipt."""
    daraja.register_c2b_urls(
        emulator.paybill, receiver.hook_url("c2b/confirmation"), receiver.hook_url("c2b/v")
    )
    reference = uuid.uuid4().hex[:8]
    daraja.simulate_c2b(emulator.paybill, amount, "254712345678", bill_ref=reference)
    [body] = receiver.wait_for("c2b/confirmation", where=lambda b: b["BillRefNumber"] == reference)
    return body["TransID"]


def test_b2c_v3_pays_and_reports_in_daraja_shape(emulator, daraja, receiver, credential):
    answer = disburse(daraja, emulator, receiver, credential, originator_conversation_id="MJ-1")
    assert answer["OriginatorConversationID"] == "MJ-1"
    assert answer["ResponseCode"] == "0"
    assert answer["ResponseDescription"] == "Accept the service request successfully."
    assert re.fullmatch(r"AG_\d{8}_[0-9a-f]{20}", answer["ConversationID"])
    result = result_for(receiver, "b2c", "MJ-1")
    assert (result["ResultType"], result["ResultCode"]) == (0, 0)
    assert result["ConversationID"] == answer["ConversationID"]
    values = parameters(result)
    assert values["TransactionAmount"] == 1500
    assert values["TransactionReceipt"] == result["TransactionID"]
    assert values["ReceiverPartyPublicName"] == "254705912645 - NICHOLAS JOHN SONGOK"
    assert re.fullmatch(r"\d\d\.\d\d\.\d{4} \d\d:\d\d:\d\d", values["TransactionCompletedDateTime"])
    assert values["B2CRecipientIsRegisteredCustomer"] == "Y"
    assert isinstance(values["B2CUtilityAccountAvailableFunds"], float)
    assert result["ReferenceData"]["ReferenceItem"]["Key"] == "QueueTimeoutURL"  # sic


def test_reused_originator_conversation_id_is_refused_once(emulator, daraja, receiver, credential):
    disburse(daraja, emulator, receiver, credential, originator_conversation_id="MJ-2")
    emulator.clear_calls()
    with pytest.raises(DuplicateOriginatorConversationID) as caught:
        disburse(daraja, emulator, receiver, credential, originator_conversation_id="MJ-2")
    assert caught.value.error_code == "500.002.1001"
    assert caught.value.error_message == "Duplicate OriginatorConversationID."
    assert len(emulator.calls("/mpesa/b2c/v3/paymentrequest")) == 1


def test_wrong_initiator_password_fails_with_2001(emulator, daraja, receiver):
    wrong = security_credential("Wrong999!", emulator.certificate())
    ocid = disburse(daraja, emulator, receiver, wrong)["OriginatorConversationID"]
    result = result_for(receiver, "b2c", ocid)
    assert result["ResultCode"] == 2001
    assert result["ResultDesc"] == "The initiator information is invalid."
    assert "ResultParameters" not in result


def test_credential_for_safaricoms_certificate_fails_with_2001(emulator, daraja, receiver):
    other = security_credential(emulator.initiator_password, default_certificate("sandbox"))
    ocid = disburse(daraja, emulator, receiver, other)["OriginatorConversationID"]
    assert result_for(receiver, "b2c", ocid)["ResultCode"] == 2001


def test_a_credential_that_is_not_one_is_a_bad_request(emulator, daraja, receiver):
    with pytest.raises(InvalidRequest) as caught:
        disburse(daraja, emulator, receiver, "not base64 at all")
    assert caught.value.error_code == "400.002.02"
    assert caught.value.error_message == "Bad Request - Invalid SecurityCredential"


def test_locked_after_repeated_wrong_passwords(start_emulator, make_client, receiver):
    strict = start_emulator(credential_lock_after=2)
    daraja = make_client(on=strict)
    wrong = security_credential("Wrong999!", strict.certificate())
    codes = []
    for _ in range(3):
        ocid = disburse(daraja, strict, receiver, wrong)["OriginatorConversationID"]
        codes.append(result_for(receiver, "b2c", ocid)["ResultCode"])
    assert codes == [2001, 2001, 8006]


def test_b2c_v1_gets_a_daraja_generated_originator_id(emulator, daraja, receiver, credential):
    answer = disburse(
        daraja, emulator, receiver, credential, originator_conversation_id=None, version="v1"
    )
    assert re.fullmatch(r"\d{5}-\d{7}-1", answer["OriginatorConversationID"])
    assert result_for(receiver, "b2c", answer["OriginatorConversationID"])["ResultCode"] == 0


def test_queue_timeout_goes_to_the_queue_timeout_url(emulator, daraja, receiver, credential):
    emulator.faults(queue_timeout=1)
    ocid = disburse(daraja, emulator, receiver, credential)["OriginatorConversationID"]
    [body] = receiver.wait_for("b2c/timeout")
    assert body["Result"]["OriginatorConversationID"] == ocid
    assert body["Result"]["ResultCode"] == 1
    assert receiver.bodies("b2c/result") == []


def test_transaction_status_of_a_c2b_receipt(emulator, daraja, receiver, credential):
    receipt = paid_c2b(daraja, emulator, receiver, amount=700)
    answer = daraja.transaction_status(
        initiator_name=emulator.initiator,
        security_credential=credential,
        party_a=emulator.paybill,
        transaction_id=receipt,
        occasion="reconcile",
        **hooks(receiver, "status"),
    )
    result = result_for(receiver, "status", answer["OriginatorConversationID"])
    assert result["ResultCode"] == 0
    assert result["TransactionID"].endswith("0000000")  # no money moved for a query
    values = parameters(result)
    assert values["ReceiptNo"] == receipt
    assert values["TransactionStatus"] == "Completed"
    assert values["Amount"] == 700.0
    assert values["CreditPartyCharges"] == "absent"  # keys may come with no Value
    assert isinstance(values["InitiatedTime"], int)
    assert result["ReferenceData"]["ReferenceItem"] == {"Key": "Occasion", "Value": "reconcile"}


def test_transaction_status_of_our_b2c_by_originator_id(emulator, daraja, receiver, credential):
    ocid = disburse(daraja, emulator, receiver, credential, amount=2000)["OriginatorConversationID"]
    result_for(receiver, "b2c", ocid)
    answer = daraja.transaction_status(
        initiator_name=emulator.initiator,
        security_credential=credential,
        party_a="600000",
        original_conversation_id=ocid,
        **hooks(receiver, "status"),
    )
    values = parameters(result_for(receiver, "status", answer["OriginatorConversationID"]))
    assert values["OriginatorConversationID"] == ocid
    assert values["TransactionStatus"] == "Completed"
    assert values["Amount"] == 2000.0


def test_transaction_status_of_an_unknown_receipt(emulator, daraja, receiver, credential):
    """REFERENCE §9.1: Transaction Status's result codes are 0 and SFC_IC0003, a string;
    a Reversal code (R000002) would mislead whoever asked."""
    answer = daraja.transaction_status(
        initiator_name=emulator.initiator,
        security_credential=credential,
        party_a=emulator.paybill,
        transaction_id="TK00000000",
        **hooks(receiver, "status"),
    )
    result = result_for(receiver, "status", answer["OriginatorConversationID"])
    assert (result["ResultType"], result["ResultCode"]) == (0, "SFC_IC0003")
    assert result["ResultDesc"] == "The operator does not exist."
    assert "ResultParameters" not in result
    assert result["TransactionID"].endswith("0000000")


def test_account_balance_result_has_string_codes(emulator, daraja, receiver, credential):
    answer = daraja.account_balance(
        initiator_name=emulator.initiator,
        security_credential=credential,
        party_a="600000",
        **hooks(receiver, "balance"),
    )
    result = result_for(receiver, "balance", answer["OriginatorConversationID"])
    assert (result["ResultType"], result["ResultCode"]) == ("0", "0")
    values = parameters(result)
    accounts = [line.split("|") for line in values["AccountBalance"].split("&")]
    assert [a[0] for a in accounts][:3] == ["Working Account", "Float Account", "Utility Account"]
    assert all(a[1] == "KES" and len(a) == 6 for a in accounts)
    assert re.fullmatch(r"\d{14}", values["BOCompletedTime"])


def test_reversal_once_then_already_reversed(emulator, daraja, receiver, credential):
    receipt = paid_c2b(daraja, emulator, receiver)
    outcomes = []
    for _ in range(2):
        answer = daraja.reverse_transaction(
            initiator_name=emulator.initiator,
            security_credential=credential,
            transaction_id=receipt,
            amount=500,
            receiver_party=emulator.paybill,
            **hooks(receiver, "reversal"),
        )
        outcomes.append(result_for(receiver, "reversal", answer["OriginatorConversationID"]))
    assert outcomes[0]["ResultCode"] == 0
    values = parameters(outcomes[0])
    assert values["OriginalTransactionID"] == receipt
    assert values["DebitAccountBalance"].startswith("Utility Account|KES|")
    assert (outcomes[1]["ResultCode"], outcomes[1]["ResultDesc"]) == (
        "R000001",
        "The transaction has already been reversed.",
    )


def test_reversal_of_an_unknown_receipt(emulator, daraja, receiver, credential):
    answer = daraja.reverse_transaction(
        initiator_name=emulator.initiator,
        security_credential=credential,
        transaction_id="TK00000001",
        amount=10,
        receiver_party=emulator.paybill,
        **hooks(receiver, "reversal"),
    )
    result = result_for(receiver, "reversal", answer["OriginatorConversationID"])
    assert result["ResultCode"] == "R000002"


def test_reversal_needs_dararas_misspelt_key(emulator, daraja, receiver, credential):
    body = {
        "Initiator": emulator.initiator,
        "SecurityCredential": credential,
        "CommandID": "TransactionReversal",
        "TransactionID": "TK00000002",
        "Amount": "10",
        "ReceiverParty": emulator.paybill,
        "ReceiverIdentifierType": "11",  # spelt right, which Daraja does not read
        "ResultURL": receiver.hook_url("reversal/result"),
        "QueueTimeOutURL": receiver.hook_url("reversal/timeout"),
        "Remarks": "Reversal",
    }
    answer = requests.post(
        f"{emulator.url}/mpesa/reversal/v1/request",
        json=body,
        headers={"Authorization": f"Bearer {daraja.access_token()}"},
        timeout=5,
    )
    assert answer.status_code == 400
    assert answer.json()["errorMessage"] == "Bad Request - Invalid RecieverIdentifierType"


def test_pull_register_then_query(emulator, daraja, receiver):
    first = daraja.register_pull(emulator.paybill, "0722000000", receiver.hook_url("pull"))
    again = daraja.register_pull(emulator.paybill, "0722000000", receiver.hook_url("pull"))
    assert (first["ResponseStatus"], again["ResponseStatus"]) == ("1000", "1001")
    receipt = paid_c2b(daraja, emulator, receiver, amount=168)
    now = datetime.now(NAIROBI)
    rows = daraja.query_pull(emulator.paybill, now - timedelta(hours=1), now + timedelta(minutes=1))
    [row] = [r for r in rows if r["transactionId"] == receipt]
    assert row["amount"] == "168.00"
    assert row["transactiontype"] == "c2b-pay-bill-debit"
    assert row["msisdn"] == 254712345678
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row["trxDate"])
    assert (
        daraja.query_pull(emulator.paybill, now - timedelta(hours=3), now - timedelta(hours=2))
        == []
    )


def test_pull_query_of_an_unregistered_shortcode(emulator, daraja):
    now = datetime.now(NAIROBI)
    with pytest.raises(InvalidRequest) as caught:
        daraja.query_pull(emulator.stk_shortcode, now - timedelta(hours=1), now)
    assert caught.value.error_code == "400.001"
