"""The emulator's bodies and identifiers, shaped as Daraja's (REFERENCE §3-§10 and §13):
the same keys, types and misspellings, so that code which works here works against Safaricom.
Pure functions of their arguments (and of the clock and a random source)."""

from __future__ import annotations

import hashlib
import secrets
import string
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

NAIROBI = ZoneInfo("Africa/Nairobi")
SANDBOX_SUBSCRIBER = "254705912645"
SANDBOX_SUBSCRIBER_NAMES = ("NICHOLAS", "JOHN", "SONGOK")
# The sandbox's test MSISDN never answers an STK prompt: 1037 "No response from user." (§5)
TEST_MSISDN = "254708374149"
NO_RESPONSE = "No response from user."
_ALNUM = string.ascii_uppercase + string.digits
_TOKEN_CHARS = string.ascii_letters + string.digits

STK_RESULTS: dict[int | str, str] = {
    0: "The service request is processed successfully.",
    1: "The balance is insufficient for the transaction.",
    2: "Declined due to limit rule.",
    17: "Rule limited.",
    1019: "Transaction has expired.",
    1025: "An error occurred while sending a push request.",
    1032: "Request cancelled by user",
    1037: "DS timeout user cannot be reached",
    2001: "The initiator information is invalid.",
    2028: "The request is not permitted according to product assignment.",
    8006: "The security credential is locked.",
    "SFC_IC0003": "The operator does not exist.",
}
RESULTS: dict[int | str, str] = {
    0: "The service request is processed successfully.",
    1: "The balance is insufficient for the transaction.",
    2: "Declined due to limit rule: less than the minimum transaction amount.",
    3: "Declined due to limit rule: greater than the maximum transaction amount.",
    2001: "The initiator information is invalid.",
    8006: "The security credential is locked.",
    "R000001": "The transaction has already been reversed.",
    "R000002": "The OriginalTransactionID is invalid.",
}
QUEUE_TIMEOUT_REFERENCE = "https://internalsandbox.safaricom.co.ke/mpesa/{}results/v1/submit"


def now_nairobi() -> datetime:
    return datetime.now(NAIROBI)


def access_token() -> str:
    """28 letters and digits, like ``c9SQxWWhmdVRlyh0zh8gZDTkubVF``."""
    return "".join(secrets.choice(_TOKEN_CHARS) for _ in range(28))


def daraja_id(digits: int = 7) -> str:
    """Daraja's newer request and originator ids: ``53e3-4aa8-9fe0-8fb5e4092cdd3533373``."""
    hexes = secrets.token_hex(12)
    tail = "".join(secrets.choice(string.digits) for _ in range(digits))
    return f"{hexes[:4]}-{hexes[4:8]}-{hexes[8:12]}-{secrets.token_hex(6)}{tail}"


def legacy_id() -> str:
    """The older dash form Daraja generated for B2C v1: ``10571-7910404-1``."""
    return f"{secrets.randbelow(90000) + 10000}-{secrets.randbelow(9000000) + 1000000}-1"


def conversation_id(moment: datetime) -> str:
    """``AG_20240706_2010364430d9bbdaf872``."""
    return f"AG_{moment:%Y%m%d}_{secrets.token_hex(10)}"


def checkout_request_id(moment: datetime, msisdn: str) -> str:
    """``ws_CO_`` + DDMMYYYYHHmmss + milliseconds + the subscriber's last 9 digits."""
    return f"ws_CO_{moment:%d%m%Y%H%M%S}{moment.microsecond // 1000:03d}{msisdn[-9:]}"


def _receipt_prefix(moment: datetime) -> str:
    year = chr(ord("A") + (moment.year - 2006) % 26)  # L=2017 … U=2026, round again after Z
    month = chr(ord("A") + moment.month - 1)
    day = str(moment.day) if moment.day < 10 else chr(ord("A") + moment.day - 10)
    return year + month + day


def receipt(moment: datetime) -> str:
    """An M-Pesa receipt: year, month and day letters, then 7 characters (``TK60708BHZ``)."""
    return _receipt_prefix(moment) + "".join(secrets.choice(_ALNUM) for _ in range(7))


def non_financial_id(moment: datetime) -> str:
    """What a result carries as TransactionID when no money moved: ``OA90000000``."""
    return _receipt_prefix(moment) + "0000000"


def masked_msisdn(msisdn: str) -> str:
    """C2B v2's ``2547 ***** 126``."""
    return f"{msisdn[:4]} ***** {msisdn[-3:]}"


def hashed_msisdn(msisdn: str) -> str:
    """C2B v1's SHA-256 hex of the 12-digit number."""
    return hashlib.sha256(msisdn.encode("ascii")).hexdigest()


def money(amount: Decimal) -> str:
    return f"{amount:.2f}"


def c2b_notice(
    *,
    trans_id: str,
    moment: datetime,
    amount: Decimal,
    shortcode: str,
    bill_ref: str,
    msisdn: str,
    names: tuple[str, str, str],
    org_balance: str,
    third_party_trans_id: str = "",
    transaction_type: str = "Pay Bill",
    only_first_name: bool = False,
) -> dict:
    """A validation or confirmation body. ``msisdn`` is already in the form to send;
    production's masked payloads carry FirstName only."""
    body = {
        "TransactionType": transaction_type,
        "TransID": trans_id,
        "TransTime": moment.strftime("%Y%m%d%H%M%S"),
        "TransAmount": money(amount),
        "BusinessShortCode": shortcode,
        "BillRefNumber": bill_ref,
        "InvoiceNumber": "",
        "OrgAccountBalance": org_balance,
        "ThirdPartyTransID": third_party_trans_id,
        "MSISDN": msisdn,
        "FirstName": names[0],
        "MiddleName": names[1],
        "LastName": names[2],
    }
    if only_first_name:
        del body["MiddleName"], body["LastName"]
    return body


def typed_code(code: int | str, code_type: str = "documented", as_string: bool = False):
    """A ResultCode or ResultType as the ``result_code_type`` variant sends it: "number",
    "string", or "documented" (a string when ``as_string``, as Account Balance sends them).
    An alphanumeric code (``SFC_IC0003``, ``R000001``) is a string whatever the variant."""
    if isinstance(code, str) and not code.isdigit():
        return code
    if code_type == "string" or (code_type == "documented" and as_string):
        return str(code)
    return int(code)


def stk_callback(
    *,
    merchant_request_id: str,
    checkout_request_id: str,
    result_code: int | str,
    amount: Decimal | None = None,
    receipt_number: str = "",
    moment: datetime | None = None,
    msisdn: str = "",
    result_desc: str | None = None,
    code_type: str = "documented",
) -> dict:
    """The STK callback: ResultCode a number (a string for codes like SFC_IC0003), metadata
    only on success, with numbers for Amount, TransactionDate and PhoneNumber and a Balance
    item without a Value, as Safaricom sends it."""
    inner: dict = {
        "MerchantRequestID": merchant_request_id,
        "CheckoutRequestID": checkout_request_id,
        "ResultCode": typed_code(result_code, code_type),
        "ResultDesc": result_desc or STK_RESULTS.get(result_code, "The service request failed."),
    }
    if result_code == 0 and amount is not None and moment is not None:
        inner["CallbackMetadata"] = {
            "Item": [
                {"Name": "Amount", "Value": float(amount)},
                {"Name": "MpesaReceiptNumber", "Value": receipt_number},
                {"Name": "Balance"},
                {"Name": "TransactionDate", "Value": int(moment.strftime("%Y%m%d%H%M%S"))},
                {"Name": "PhoneNumber", "Value": int(msisdn)},
            ]
        }
    return {"Body": {"stkCallback": inner}}


def result_envelope(
    *,
    result_code: int | str,
    originator_conversation_id: str,
    conversation_id: str,
    transaction_id: str,
    parameters: list[tuple[str, object]] | None = None,
    reference: tuple[str, str] | None = None,
    as_strings: bool = False,
    result_desc: str | None = None,
    code_type: str = "documented",
    parameter_shape: str = "list",
) -> dict:
    """The ``{"Result": {...}}`` posted to a ResultURL (B2C, status, balance, reversal).
    ``as_strings``: Account Balance's documented string ResultType/ResultCode; ``code_type``
    and ``parameter_shape`` are the variants (see ``faults.FAULT_DEFAULTS``). A parameter
    whose value is None is sent with no Value key, as Daraja does."""
    result: dict = {
        "ResultType": typed_code(0, code_type, as_strings),
        "ResultCode": typed_code(result_code, code_type, as_strings),
        "ResultDesc": result_desc or RESULTS.get(result_code, "The service request failed."),
        "OriginatorConversationID": originator_conversation_id,
        "ConversationID": conversation_id,
        "TransactionID": transaction_id,
    }
    if parameters:
        items = [
            {"Key": key} if value is None else {"Key": key, "Value": value}
            for key, value in parameters
        ]
        single = parameter_shape == "object" and len(items) == 1
        result["ResultParameters"] = {"ResultParameter": items[0] if single else items}
    if reference:
        result["ReferenceData"] = {"ReferenceItem": {"Key": reference[0], "Value": reference[1]}}
    return {"Result": result}


def account_line(name: str, balance: Decimal) -> str:
    """``Utility Account|KES|228037.00|228037.00|0.00|0.00``."""
    return f"{name}|KES|{money(balance)}|{money(balance)}|0.00|0.00"
