"""Daraja's asynchronous answers read as Daraja really sends them, not only as documented:
the result posted to a ResultURL or QueueTimeOutURL (B2C, Transaction Status, Account
Balance, Reversal: REFERENCE §7.4-§7.5, §9) and the STK callback and query (§6.2-§6.3).

What varies in the wild, and is read alike here (REFERENCE §13):
- ``ResultCode`` and ``ResultType`` as a number or a string (``0``, ``"0"``); alphanumeric
  codes (``"SFC_IC0003"``, ``"R000001"``) stay strings, numeric ones become ``int``;
- ``ResultParameters.ResultParameter`` as a list, a single object, or absent; a
  parameter with no ``Value`` key; ``ReferenceData.ReferenceItem`` likewise;
- the older spaced keys (``"Conversation ID"``, ``"Originator Conversation ID"``, §9.1);
- STK ``CallbackMetadata.Item`` in any order, ``Balance`` with no value, numbers for
  ``Amount``, ``TransactionDate`` and ``PhoneNumber``.

Money comes back as ``Decimal`` to the cent, times as aware Nairobi datetimes. A body that
is not a result at all raises ``MalformedResult`` (a ``ValueError``) naming what is wrong,
never anything else. No Flask, no database."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from types import MappingProxyType

from payments.daraja.credentials import NAIROBI

CENT = Decimal("0.01")
_TIME_FORMATS = ("%Y%m%d%H%M%S", "%d.%m.%Y %H:%M:%S", "%Y-%m-%d %H:%M:%S")


class MalformedResult(ValueError):
    """The body is not a Daraja result or callback (says which part is missing or wrong)."""


def result_code(value) -> int | str:
    """A ResultCode as one type: numbers for numeric codes whether sent as ``0``, ``"0"``
    or ``0.0``; the text for alphanumeric ones (``"SFC_IC0003"``). MalformedResult for
    anything else (absent, empty, a boolean, a list)."""
    if isinstance(value, bool) or value is None:
        raise MalformedResult(f"ResultCode {value!r} is not a code")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise MalformedResult(f"ResultCode {value!r} is not a code")
    if isinstance(value, str) and value.strip():
        text = value.strip()
        return int(text) if text.isdigit() else text
    raise MalformedResult(f"ResultCode {value!r} is not a code")


def money(value) -> Decimal | None:
    """``10``, ``1.0``, ``"1540.00"`` or ``-1980.0`` as a Decimal to the cent; None when
    there is no value or it is not a finite number."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        amount = Decimal(str(value).strip())
        return amount.quantize(CENT) if amount.is_finite() else None
    except InvalidOperation:  # not a number, or too large to hold to the cent
        return None


def moment(value) -> datetime | None:
    """Daraja's times as aware Nairobi datetimes: ``20240206143645`` (number or string),
    B2C's ``"06.07.2024 22:48:52"``; None when absent or unreadable."""
    if value is None or isinstance(value, bool):
        return None
    text = _digits(value) if isinstance(value, float) else str(value).strip()
    for pattern in _TIME_FORMATS:
        try:
            return datetime.strptime(text, pattern).replace(tzinfo=NAIROBI)
        except ValueError:
            continue
    return None


def _items(value, what: str) -> list[dict]:
    """A list of Key/Value (or Name/Value) objects from a list, a single object, or nothing."""
    if value is None or value == "":
        return []
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        raise MalformedResult(f"{what} is neither an object nor a list of objects")
    return list(value)


def _pairs(value, what: str, name_key: str = "Key") -> Mapping[str, object]:
    """``{Key: Value}`` of the items; a key sent with no Value maps to None."""
    pairs: dict[str, object] = {}
    for item in _items(value, what):
        key = item.get(name_key)
        if not isinstance(key, str):
            raise MalformedResult(f"an item of {what} has no {name_key}")
        pairs[key] = item.get("Value")
    return MappingProxyType(pairs)


def _unspaced(data: Mapping) -> dict:
    """The older docs' ``"Conversation ID"`` read as ``ConversationID``."""
    return {str(key).replace(" ", ""): value for key, value in data.items()}


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def _digits(value: float) -> str:
    """A number sent as a float (``2.5470837415e11``) as its digits; ``""`` if it has none."""
    return str(int(value)) if value.is_integer() else ""


@dataclass(frozen=True)
class Result:
    """One ``{"Result": {...}}`` body: B2C result or queue timeout, Transaction Status,
    Account Balance or Reversal."""

    result_type: int
    result_code: int | str
    result_desc: str
    originator_conversation_id: str
    conversation_id: str
    transaction_id: str
    parameters: Mapping[str, object] = field(default_factory=dict)
    reference: Mapping[str, object] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.result_code == 0

    def text(self, key: str) -> str:
        """A parameter as text (``""`` when absent or sent with no value)."""
        return _text(self.parameters.get(key))

    def amount(self, key: str) -> Decimal | None:
        """A money parameter (``TransactionAmount``, ``Amount``, ``B2CUtilityAccount…``)."""
        return money(self.parameters.get(key))

    def time(self, key: str) -> datetime | None:
        """A time parameter (``TransactionCompletedDateTime``, ``FinalisedTime``, …)."""
        return moment(self.parameters.get(key))


def parse_result(body) -> Result:
    """Read a result body (the parsed JSON) in any of the shapes Daraja sends."""
    if not isinstance(body, Mapping) or not isinstance(body.get("Result"), Mapping):
        raise MalformedResult('not a Daraja result: no "Result" object')
    result = _unspaced(body["Result"])
    if "ResultCode" not in result:
        raise MalformedResult("the result has no ResultCode")
    parameters = result.get("ResultParameters")
    if parameters is not None and not isinstance(parameters, Mapping):
        raise MalformedResult("ResultParameters is not an object")
    reference = result.get("ReferenceData")
    if reference is not None and not isinstance(reference, Mapping):
        raise MalformedResult("ReferenceData is not an object")
    result_type = result.get("ResultType", 0)
    result_type = result_code(result_type) if result_type not in (None, "") else 0
    if not isinstance(result_type, int):  # 0 completed, 1 waiting for further messages
        raise MalformedResult(f"ResultType {result_type!r} is not a number")
    return Result(
        result_type=result_type,
        result_code=result_code(result["ResultCode"]),
        result_desc=_text(result.get("ResultDesc")),
        originator_conversation_id=_text(result.get("OriginatorConversationID")),
        conversation_id=_text(result.get("ConversationID")),
        transaction_id=_text(result.get("TransactionID")),
        parameters=_pairs((parameters or {}).get("ResultParameter"), "ResultParameter"),
        reference=_pairs((reference or {}).get("ReferenceItem"), "ReferenceItem"),
    )


@dataclass(frozen=True)
class AccountBalance:
    """One account of an Account Balance result's ``AccountBalance`` parameter."""

    name: str
    currency: str
    current: Decimal
    available: Decimal
    reserved: Decimal
    uncleared: Decimal


def account_balances(text) -> dict[str, AccountBalance]:
    """``Working Account|KES|700000.00|700000.00|0.00|0.00&Utility Account|…`` by account
    name (§9.2). MalformedResult when an account is not six fields with numbers."""
    balances: dict[str, AccountBalance] = {}
    for line in _text(text).split("&"):
        if not line.strip():
            continue
        parts = [part.strip() for part in line.split("|")]
        figures = [money(part) for part in parts[2:]]
        if len(parts) != 6 or any(figure is None for figure in figures):
            raise MalformedResult(f"account balance {line!r} is not name|currency|4 amounts")
        balances[parts[0]] = AccountBalance(parts[0], parts[1], *figures)
    return balances


@dataclass(frozen=True)
class StkOutcome:
    """What became of an STK push, from its callback or from STK Query. A query carries
    no receipt or metadata: those fields are empty then."""

    merchant_request_id: str
    checkout_request_id: str
    result_code: int | str
    result_desc: str
    amount: Decimal | None = None
    receipt: str = ""
    paid_at: datetime | None = None
    phone: str = ""
    balance: Decimal | None = None

    @property
    def succeeded(self) -> bool:
        return self.result_code == 0


def parse_stk_callback(body) -> StkOutcome:
    """Read ``{"Body": {"stkCallback": {...}}}``; items by Name, in any order."""
    inner = body.get("Body") if isinstance(body, Mapping) else None
    callback = inner.get("stkCallback") if isinstance(inner, Mapping) else None
    if not isinstance(callback, Mapping):
        raise MalformedResult('not an STK callback: no "Body.stkCallback" object')
    if "ResultCode" not in callback:
        raise MalformedResult("the STK callback has no ResultCode")
    metadata = callback.get("CallbackMetadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise MalformedResult("CallbackMetadata is not an object")
    items = _pairs((metadata or {}).get("Item"), "CallbackMetadata.Item", name_key="Name")
    phone = items.get("PhoneNumber")
    return StkOutcome(
        merchant_request_id=_text(callback.get("MerchantRequestID")),
        checkout_request_id=_text(callback.get("CheckoutRequestID")),
        result_code=result_code(callback["ResultCode"]),
        result_desc=_text(callback.get("ResultDesc")),
        amount=money(items.get("Amount")),
        receipt=_text(items.get("MpesaReceiptNumber")),
        paid_at=moment(items.get("TransactionDate")),
        phone=_digits(phone) if isinstance(phone, float) else _text(phone),
        balance=money(items.get("Balance")),
    )


def parse_stk_query(answer) -> StkOutcome:
    """Read STK Query's answer (its ResultCode a string, ``"1032"``). A prompt still open
    is not an answer but an error, which the client raises as ``TransactionPending``."""
    if not isinstance(answer, Mapping) or "ResultCode" not in answer:
        raise MalformedResult("not an STK Query answer: no ResultCode")
    return StkOutcome(
        merchant_request_id=_text(answer.get("MerchantRequestID")),
        checkout_request_id=_text(answer.get("CheckoutRequestID")),
        result_code=result_code(answer["ResultCode"]),
        result_desc=_text(answer.get("ResultDesc")),
    )
