"""Our readers of Daraja's results and STK callbacks (payments/daraja/results.py) against
every shape Daraja is known to send (REFERENCE §6.2-§6.3, §7.4-§7.5, §9, §13): ResultCode
and ResultType as numbers or strings, ResultParameter as a list or a single object, keys
with no Value, the older spaced keys, and bodies that are not results at all."""

from __future__ import annotations

import contextlib
import copy
import json
from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payments.daraja import (
    MalformedResult,
    account_balances,
    parse_result,
    parse_stk_callback,
    parse_stk_query,
    result_code,
)
from payments.daraja.credentials import NAIROBI

QUEUE = {"Key": "QueueTimeoutURL", "Value": "https://internalsandbox.safaricom.co.ke/x"}

B2C_PAID = {  # §7.4
    "Result": {
        "ResultType": 0,
        "ResultCode": 0,
        "ResultDesc": "The service request is processed successfully.",
        "OriginatorConversationID": "MJ-DISB-42",
        "ConversationID": "AG_20240706_2010364430d9bbdaf872",
        "TransactionID": "SG632NMUAB",
        "ResultParameters": {
            "ResultParameter": [
                {"Key": "TransactionAmount", "Value": 10},
                {"Key": "TransactionReceipt", "Value": "SG632NMUAB"},
                {"Key": "ReceiverPartyPublicName", "Value": "254705912645 - NICHOLAS JOHN SONGOK"},
                {"Key": "TransactionCompletedDateTime", "Value": "06.07.2024 22:48:52"},
                {"Key": "B2CUtilityAccountAvailableFunds", "Value": 8959269.60},
                {"Key": "B2CWorkingAccountAvailableFunds", "Value": 1199371.00},
                {"Key": "B2CRecipientIsRegisteredCustomer", "Value": "Y"},
                {"Key": "B2CChargesPaidAccountAvailableFunds", "Value": -1980.00},
            ]
        },
        "ReferenceData": {"ReferenceItem": QUEUE},
    }
}
B2C_FAILED = {  # §7.4, no ResultParameters
    "Result": {
        "ResultType": 0,
        "ResultCode": 2001,
        "ResultDesc": "The initiator information is invalid.",
        "OriginatorConversationID": "MJ-DISB-43",
        "ConversationID": "AG_20240707_201062f6f6f5804f7a33",
        "TransactionID": "SG722NMVXQ",
        "ReferenceData": {"ReferenceItem": QUEUE},
    }
}
STATUS_COMPLETED = {  # §9.1, a production capture: keys with no Value
    "Result": {
        "ResultType": 0,
        "ResultCode": 0,
        "ResultDesc": "The service request is processed successfully.",
        "OriginatorConversationID": "8aec-4878-bb2e-835d301b747563942456",
        "ConversationID": "AG_20240206_202018931e291815db5d",
        "TransactionID": "SB60000000",
        "ResultParameters": {
            "ResultParameter": [
                {"Key": "DebitPartyName", "Value": "254722810063 - SALIM RURU"},
                {"Key": "InitiatedTime", "Value": 20240206143645},
                {"Key": "CreditPartyCharges"},
                {"Key": "TransactionReason"},
                {"Key": "TransactionStatus", "Value": "Completed"},
                {"Key": "Amount", "Value": 1.0},
                {"Key": "ReceiptNo", "Value": "SB659DEI29"},
            ]
        },
        "ReferenceData": {"ReferenceItem": {"Key": "Occasion", "Value": "invoice"}},
    }
}
STATUS_UNKNOWN = {  # §9.1's other code; Occasion sent with no Value (mpesakit#102)
    "Result": {
        "ResultType": 0,
        "ResultCode": "SFC_IC0003",
        "ResultDesc": "The operator does not exist.",
        "OriginatorConversationID": "41ee-4e5a-ac1d-f88e26237e3b6251",
        "ConversationID": "AG_20251106_010010281a6ti4fj86cj",
        "TransactionID": "TK61000000",
        "ReferenceData": {"ReferenceItem": {"Key": "Occasion"}},
    }
}
LINES = (
    "Working Account|KES|700000.00|700000.00|0.00|0.00&Float Account|KES|0.00|0.00|0.00|0.00"
    "&Utility Account|KES|228037.00|228037.00|0.00|0.00"
    "&Charges Paid Account|KES|-1540.00|-1540.00|0.00|0.00"
)
BALANCE = {  # §9.2: string ResultType and ResultCode
    "Result": {
        "ResultType": "0",
        "ResultCode": "0",
        "ResultDesc": "The service request is processed successfully",
        "OriginatorConversationID": "16917-22577599-3",
        "ConversationID": "AG_20200206_00005e091a8ec6b9eac5",
        "TransactionID": "OA90000000",
        "ResultParameters": {
            "ResultParameter": [
                {"Key": "AccountBalance", "Value": LINES},
                {"Key": "BOCompletedTime", "Value": "20200109125710"},
            ]
        },
        "ReferenceData": {"ReferenceItem": QUEUE},
    }
}
BALANCE_FAILED = {  # §13: a production failure with ResultParameter a single object
    "Result": {
        "ResultType": "0",
        "ResultCode": "2001",
        "ResultDesc": "The initiator information is invalid.",
        "OriginatorConversationID": "16917-22577599-4",
        "ConversationID": "AG_20200206_00005e091a8ec6b9eac6",
        "TransactionID": "OA90000000",
        "ResultParameters": {
            "ResultParameter": {"Key": "BOCompletedTime", "Value": 20200109125710}
        },
        "ReferenceData": {"ReferenceItem": QUEUE},
    }
}
REVERSED = {  # §9.3
    "Result": {
        "ResultType": 0,
        "ResultCode": 0,
        "ResultDesc": "The service request is processed successfully.",
        "OriginatorConversationID": "dad6-4c34-8787-c8cb963a496d1268232",
        "ConversationID": "AG_20211114_201018edbbf9f1582eaa",
        "TransactionID": "SKE52PAWR9",
        "ResultParameters": {
            "ResultParameter": [
                {
                    "Key": "DebitAccountBalance",
                    "Value": "Utility Account|KES|7722179.62|7722179.62|0.00|0.00",
                },
                {"Key": "Amount", "Value": 1.00},
                {"Key": "TransCompletedTime", "Value": 20211114132711},
                {"Key": "OriginalTransactionID", "Value": "SKC82PACB8"},
                {"Key": "Charge", "Value": 0.00},
            ]
        },
        "ReferenceData": {"ReferenceItem": QUEUE},
    }
}
ALREADY_REVERSED = {
    "Result": {
        "ResultType": 0,
        "ResultCode": "R000001",
        "ResultDesc": "The transaction has already been reversed.",
        "OriginatorConversationID": "dad6-4c34-8787-c8cb963a496d1268233",
        "ConversationID": "AG_20211114_201018edbbf9f1582eab",
        "TransactionID": "SKE52PAWS0",
    }
}
B2C_TIMEOUT = {  # §7.5, modelled (Safaricom does not document it)
    "Result": {
        "ResultType": 0,
        "ResultCode": 1,
        "ResultDesc": "The service request has timed out.",
        "OriginatorConversationID": "MJ-DISB-44",
        "ConversationID": "AG_20240707_201062f6f6f5804f7a34",
        "TransactionID": "SG70000000",
    }
}
STK_PAID = {  # §6.2, Balance with no Value
    "Body": {
        "stkCallback": {
            "MerchantRequestID": "29115-34620561-1",
            "CheckoutRequestID": "ws_CO_191220191020363925",
            "ResultCode": 0,
            "ResultDesc": "The service request is processed successfully.",
            "CallbackMetadata": {
                "Item": [
                    {"Name": "Amount", "Value": 1.00},
                    {"Name": "MpesaReceiptNumber", "Value": "NLJ7RT61SV"},
                    {"Name": "Balance"},
                    {"Name": "TransactionDate", "Value": 20191219102115},
                    {"Name": "PhoneNumber", "Value": 254708374149},
                ]
            },
        }
    }
}
STK_CANCELLED = {
    "Body": {
        "stkCallback": {
            "MerchantRequestID": "f1e2-4b95-a71d-b30d3cdbb7a7942864",
            "CheckoutRequestID": "ws_CO_21072024125243250722943992",
            "ResultCode": 1032,
            "ResultDesc": "Request cancelled by user",
        }
    }
}
# what each result must read as, whichever variant it came in
EXPECTED = {
    "b2c_paid": (B2C_PAID, 0, {"TransactionAmount": Decimal("10.00")}),
    "b2c_failed": (B2C_FAILED, 2001, {}),
    "b2c_timeout": (B2C_TIMEOUT, 1, {}),
    "status_completed": (STATUS_COMPLETED, 0, {"Amount": Decimal("1.00")}),
    "status_unknown": (STATUS_UNKNOWN, "SFC_IC0003", {}),
    "balance": (BALANCE, 0, {}),
    "balance_failed": (BALANCE_FAILED, 2001, {}),
    "reversed": (REVERSED, 0, {"Amount": Decimal("1.00"), "Charge": Decimal("0.00")}),
    "already_reversed": (ALREADY_REVERSED, "R000001", {}),
}


def variant(body: dict, code_type: str, shape: str) -> dict:
    """``body`` with its codes as numbers or strings and, when it holds one parameter, the
    parameter as a list or a bare object."""
    changed = copy.deepcopy(body)
    result = changed["Result"]
    for key in ("ResultType", "ResultCode"):
        value = result[key]
        if str(value).isdigit():
            result[key] = str(value) if code_type == "string" else int(value)
    items = result.get("ResultParameters", {}).get("ResultParameter")
    if items is not None:
        items = items if isinstance(items, list) else [items]
        single = shape == "object" and len(items) == 1
        result["ResultParameters"]["ResultParameter"] = items[0] if single else items
    return changed


@pytest.mark.parametrize("shape", ["list", "object"])
@pytest.mark.parametrize("code_type", ["number", "string"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_result_reads_alike_in_every_variant(name, code_type, shape):
    body, code, amounts = EXPECTED[name]
    result = parse_result(json.loads(json.dumps(variant(body, code_type, shape))))
    assert (result.result_type, result.result_code) == (0, code)
    assert result.succeeded == (code == 0)
    assert result.originator_conversation_id == body["Result"]["OriginatorConversationID"]
    assert result.transaction_id == body["Result"]["TransactionID"]
    for key, amount in amounts.items():
        assert result.amount(key) == amount


def test_a_b2c_result_gives_its_receipt_name_time_and_funds():
    result = parse_result(B2C_PAID)
    assert result.text("TransactionReceipt") == "SG632NMUAB"
    assert result.text("ReceiverPartyPublicName") == "254705912645 - NICHOLAS JOHN SONGOK"
    assert result.time("TransactionCompletedDateTime") == datetime(
        2024, 7, 6, 22, 48, 52, tzinfo=NAIROBI
    )
    assert result.amount("B2CUtilityAccountAvailableFunds") == Decimal("8959269.60")
    assert result.amount("B2CChargesPaidAccountAvailableFunds") == Decimal("-1980.00")
    assert result.reference == {"QueueTimeoutURL": QUEUE["Value"]}


def test_keys_with_no_value_read_as_none_and_empty_text():
    result = parse_result(STATUS_COMPLETED)
    assert "CreditPartyCharges" in result.parameters
    assert result.parameters["CreditPartyCharges"] is None
    assert result.text("TransactionReason") == ""
    assert result.amount("CreditPartyCharges") is None
    assert result.time("InitiatedTime") == datetime(2024, 2, 6, 14, 36, 45, tzinfo=NAIROBI)
    assert parse_result(STATUS_UNKNOWN).reference == {"Occasion": None}


def test_a_single_object_parameter_is_read_as_one_parameter():
    result = parse_result(BALANCE_FAILED)
    assert dict(result.parameters) == {"BOCompletedTime": 20200109125710}
    assert result.time("BOCompletedTime") == datetime(2020, 1, 9, 12, 57, 10, tzinfo=NAIROBI)


def test_account_balances_by_name_in_decimals():
    balances = account_balances(parse_result(BALANCE).text("AccountBalance"))
    assert list(balances) == [
        "Working Account",
        "Float Account",
        "Utility Account",
        "Charges Paid Account",
    ]
    utility = balances["Utility Account"]
    assert (utility.currency, utility.available, utility.reserved) == (
        "KES",
        Decimal("228037.00"),
        Decimal("0.00"),
    )
    assert balances["Charges Paid Account"].current == Decimal("-1540.00")


@pytest.mark.parametrize("text", ["Utility Account|KES|12.00", "Utility|KES|a|b|c|d"])
def test_an_account_line_that_is_not_one_is_malformed(text):
    with pytest.raises(MalformedResult):
        account_balances(text)


def test_the_older_spaced_keys_are_read():
    old = copy.deepcopy(B2C_FAILED)
    result = old["Result"]
    result["Originator Conversation ID"] = result.pop("OriginatorConversationID")
    result["Conversation ID"] = result.pop("ConversationID")
    parsed = parse_result(old)
    assert parsed.originator_conversation_id == "MJ-DISB-43"
    assert parsed.conversation_id == "AG_20240707_201062f6f6f5804f7a33"


@pytest.mark.parametrize("code", [0, "0", " 0 ", 0.0])
def test_a_paid_stk_callback_in_every_code_type(code):
    body = copy.deepcopy(STK_PAID)
    body["Body"]["stkCallback"]["ResultCode"] = code
    outcome = parse_stk_callback(body)
    assert outcome.succeeded
    assert outcome.amount == Decimal("1.00")
    assert outcome.receipt == "NLJ7RT61SV"
    assert outcome.phone == "254708374149"
    assert outcome.paid_at == datetime(2019, 12, 19, 10, 21, 15, tzinfo=NAIROBI)
    assert outcome.balance is None


def test_stk_items_in_another_order_or_as_one_object():
    body = copy.deepcopy(STK_PAID)
    items = body["Body"]["stkCallback"]["CallbackMetadata"]["Item"]
    items.reverse()
    assert parse_stk_callback(body).receipt == "NLJ7RT61SV"
    body["Body"]["stkCallback"]["CallbackMetadata"]["Item"] = items[-1]  # Amount alone
    assert parse_stk_callback(body).amount == Decimal("1.00")


@pytest.mark.parametrize(
    ("code", "expected"), [(1032, 1032), ("1032", 1032), ("SFC_IC0003", "SFC_IC0003")]
)
def test_a_failed_stk_callback_has_no_payment(code, expected):
    body = copy.deepcopy(STK_CANCELLED)
    body["Body"]["stkCallback"]["ResultCode"] = code
    outcome = parse_stk_callback(body)
    assert (outcome.result_code, outcome.succeeded) == (expected, False)
    assert (outcome.amount, outcome.receipt, outcome.paid_at) == (None, "", None)


def test_the_stk_query_string_code_reads_as_a_number():
    answer = {
        "ResponseCode": "0",
        "ResponseDescription": "The service request has been accepted successsfully",
        "MerchantRequestID": "22205-34066-1",
        "CheckoutRequestID": "ws_CO_13012021093521236557",
        "ResultCode": "1032",
        "ResultDesc": "Request cancelled by user",
    }
    outcome = parse_stk_query(answer)
    assert (outcome.result_code, outcome.checkout_request_id) == (1032, answer["CheckoutRequestID"])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        ("0", 0),
        ("2001", 2001),
        (17.0, 17),
        (" R000002 ", "R000002"),
        ("SFC_IC0003", "SFC_IC0003"),
    ],
)
def test_result_codes_become_one_type(value, expected):
    assert result_code(value) == expected


@pytest.mark.parametrize("value", [None, "", " ", True, False, 1.5, [], {}])
def test_what_is_not_a_code_is_malformed(value):
    with pytest.raises(MalformedResult):
        result_code(value)


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "Result",
        {},
        {"Result": None},
        {"Result": []},
        {"Result": {"ResultDesc": "no code"}},
        {"Result": {"ResultCode": 0, "ResultParameters": []}},
        {"Result": {"ResultCode": 0, "ResultParameters": {"ResultParameter": "x"}}},
        {"Result": {"ResultCode": 0, "ResultParameters": {"ResultParameter": [{"Value": 1}]}}},
        {"Result": {"ResultCode": 0, "ReferenceData": "x"}},
        {"Result": {"ResultCode": 0, "ResultType": "waiting"}},
    ],
)
def test_a_body_that_is_not_a_result_is_malformed(body):
    with pytest.raises(MalformedResult):
        parse_result(body)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"Body": {}},
        {"Body": {"stkCallback": "x"}},
        {"Body": {"stkCallback": {"CheckoutRequestID": "ws_CO_1"}}},
        {"Body": {"stkCallback": {"ResultCode": 0, "CallbackMetadata": []}}},
        {"Body": {"stkCallback": {"ResultCode": 0, "CallbackMetadata": {"Item": [1]}}}},
    ],
)
def test_a_body_that_is_not_an_stk_callback_is_malformed(body):
    with pytest.raises(MalformedResult):
        parse_stk_callback(body)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
KEYS = st.sampled_from(
    [
        "ResultCode",
        "ResultType",
        "ResultParameters",
        "ResultParameter",
        "ReferenceData",
        "Key",
        "Value",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEYS, JSON, max_size=6), st.dictionaries(KEYS, JSON, max_size=4))
def test_any_json_is_a_result_or_malformed_never_a_crash(result, parameters):
    result = dict(result, ResultParameters=parameters)
    for body in ({"Result": result}, {"Body": {"stkCallback": result}}, result):
        for parse in (parse_result, parse_stk_callback, parse_stk_query):
            with contextlib.suppress(MalformedResult):
                parse(body)
