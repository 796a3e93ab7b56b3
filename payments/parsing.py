"""Daraja C2B bodies into plain facts. Types drift (amounts as strings or numbers, keys
missing in production), so parsing is defensive: a body is either a ``C2BNotice`` or a
``NotDaraja`` error that says why, never an exception of another kind."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from lenders.text import plain_text

NAIROBI = ZoneInfo("Africa/Nairobi")
MAX_AMOUNT = Decimal("999999999.99")
_TRANS_ID = re.compile(r"^[A-Za-z0-9]{4,32}$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_MASKED = re.compile(r"^(\d{3,9})\s*\*+\s*(\d{2,4})$")
_TRANS_TIME = re.compile(r"\d{14}")


class NotDaraja(ValueError):
    """The body is not a C2B notice we can act on; the message says why."""


@dataclass(frozen=True)
class C2BNotice:
    trans_id: str
    amount: Decimal
    trans_time: datetime | None  # UTC; None when Safaricom's TransTime was unreadable
    short_code: str
    bill_ref: str
    msisdn: str
    msisdn_form: str  # plain | hashed | masked | ""
    first_name: str
    middle_name: str
    last_name: str
    trans_type: str
    invoice_number: str
    third_party_trans_id: str
    org_account_balance: Decimal | None


def clean_text(value, limit: int) -> str:
    """A display-safe string: numbers become text, and hidden characters go (NUL, CR and
    LF, lone surrogates, bidi overrides, zero-width and line separators: see lenders.text),
    so a payer's name is stored and shown as it reads."""
    if value.__class__ is str and value.isprintable():  # most fields: nothing to remove
        return value.strip()[:limit]
    if value is None or isinstance(value, (dict, list, bool)):
        return ""
    return plain_text(str(value)).strip()[:limit]


def parse_amount(value, field: str = "TransAmount") -> Decimal:
    """``"10"``, ``"10.00"``, ``10`` or ``10.5`` into Decimal; refuses booleans, NaN,
    zero, negatives, more than two decimals and absurd sizes."""
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        raise NotDaraja(f"{field} is missing or not a number")
    try:
        amount = Decimal(str(value).strip().replace(",", ""))
    except InvalidOperation as exc:
        raise NotDaraja(f"{field} {str(value)[:20]!r} is not a number") from exc
    if not amount.is_finite() or amount <= 0:
        raise NotDaraja(f"{field} must be a positive amount")
    if amount > MAX_AMOUNT:
        raise NotDaraja(f"{field} is too large")
    if amount != amount.quantize(Decimal("0.01")):
        raise NotDaraja(f"{field} has more than two decimal places")
    return amount.quantize(Decimal("0.01"))


def parse_trans_time(value) -> datetime | None:
    """``YYYYMMDDHHmmss`` in Nairobi time, as UTC; None when unreadable."""
    text = clean_text(value, 20)
    if not _TRANS_TIME.fullmatch(text):
        return None
    try:
        parts = (text[:4], text[4:6], text[6:8], text[8:10], text[10:12], text[12:14])
        local = datetime(*map(int, parts), tzinfo=NAIROBI)  # strptime costs 10x as much
        return local.astimezone(UTC)
    except (ValueError, OverflowError):  # not a date, or year 1 with nowhere to go in UTC
        return None


def msisdn_form(msisdn: str) -> str:
    """Which of Safaricom's three forms an MSISDN is in."""
    compact = msisdn.replace(" ", "")
    if not compact:
        return ""
    if _HEX64.match(compact):
        return "hashed"
    if _MASKED.match(msisdn.strip()) or "*" in compact:
        return "masked"
    if compact.lstrip("+").isdigit():
        return "plain"
    return ""


def masked_parts(msisdn: str) -> tuple[str, str] | None:
    """The visible leading and trailing digits of ``2547 ***** 126`` / ``25470****149``."""
    match = _MASKED.match(msisdn.strip())
    return (match.group(1), match.group(2)) if match else None


def load_json_object(body: bytes) -> dict:
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise NotDaraja("the body is not JSON") from exc
    if not isinstance(data, dict):
        raise NotDaraja("the body is not a JSON object")
    return data


def parse_c2b(body: bytes) -> C2BNotice:
    """A validation or confirmation body as Daraja sends it. Unknown extra fields are
    ignored; MiddleName and LastName may be absent."""
    data = load_json_object(body)
    trans_id = data.get("TransID")
    if not isinstance(trans_id, str) or not _TRANS_ID.match(trans_id.strip()):
        raise NotDaraja("TransID is missing or not an M-Pesa receipt")
    short_code = clean_text(data.get("BusinessShortCode"), 12)
    msisdn = clean_text(data.get("MSISDN"), 64)
    balance = data.get("OrgAccountBalance")
    try:
        org_balance = (
            parse_amount(balance, "OrgAccountBalance") if balance not in ("", None) else None
        )
    except NotDaraja:
        org_balance = None
    return C2BNotice(
        trans_id=trans_id.strip().upper(),
        amount=parse_amount(data.get("TransAmount")),
        trans_time=parse_trans_time(data.get("TransTime")),
        short_code=short_code,
        bill_ref=clean_text(data.get("BillRefNumber"), 64),
        msisdn=msisdn,
        msisdn_form=msisdn_form(msisdn),
        first_name=clean_text(data.get("FirstName"), 80),
        middle_name=clean_text(data.get("MiddleName"), 80),
        last_name=clean_text(data.get("LastName"), 80),
        trans_type=clean_text(data.get("TransactionType"), 40),
        invoice_number=clean_text(data.get("InvoiceNumber"), 64),
        third_party_trans_id=clean_text(data.get("ThirdPartyTransID"), 64),
        org_account_balance=org_balance,
    )


def received_time(notice: C2BNotice) -> datetime:
    return notice.trans_time or datetime.now(UTC)
