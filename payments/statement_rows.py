"""One row of Safaricom's record of a paybill, read and classified: customer payment,
reversal, organisation transfer, B2C payout, charge, settlement or failed (DESIGN.md,
"Reconciliation"), from its Reason Type, its Details and the sign of its amounts. Pure:
no database. Statement files and Pull Transactions answers both become ``Row``s."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from payments.parsing import clean_text, msisdn_form
from payments.statement_file import amount, moment

ZERO = Decimal("0.00")
COMPLETED = ("", "completed", "complete", "success", "successful", "confirmed")
# Words of Reason Type and Details, in the order they are looked for: "Pay Bill Charge" is a
# charge, "Business Pay Bill" an organisation's payment, "Organization Settlement" a
# settlement, "Business Payment to Customer" a B2C payout; only then is "Pay Bill" a customer.
_WORDS = (
    ("reversal", ("revers",)),
    ("charge", ("charge", " fee", "commission", "tariff")),
    ("settlement", ("withdraw", "settlement", "to bank", "bank transfer", "sweep")),
    (
        "b2c",
        (
            "business payment",
            "salary payment",
            "promotion payment",
            "b2c",
            "payment to customer",
            "pay to customer",
            "disburse",
        ),
    ),
    (
        "organisation_transfer",
        (
            "funds transfer",
            "organization",
            "organisation",
            "business to business",
            "b2b",
            "business pay bill",
            "business buy goods",
            "working account",
            "utility account",
            "move funds",
            "transfer from",
            "transfer to",
        ),
    ),
    (
        "customer_payment",
        (
            "pay bill",
            "paybill",
            "pay utility",
            "pay merchant",
            "buy goods",
            "merchant payment",
            "customer",
            "c2b",
            "lipa na",
            "pay-bill",
        ),
    ),
)
_PARTY = re.compile(r"^\s*([\d*+Xx][\d*\sXx+]*?)\s*-\s*(.*)$")
_RECEIPT_IN_TEXT = re.compile(r"\b(?=[A-Z0-9]*\d)(?=[A-Z0-9]*[A-Z])[A-Z0-9]{10}\b")
_TRANS_ID = re.compile(r"^[A-Za-z0-9]{4,32}$")
_ACCOUNT_IN_DETAILS = re.compile(r"\bAcc(?:ount)?\.?\s*(?:No\.?)?\s*(\S.*)$", re.IGNORECASE)


@dataclass(slots=True)
class Row:
    """A statement row as the import uses it. Money is split by direction: ``paid_in``
    (money into the paybill) and ``withdrawn`` (out), both positive, whatever the signs and
    columns the file used."""

    line: int
    receipt: str
    kind: str
    completed_at: datetime | None
    paid_in: Decimal
    withdrawn: Decimal
    balance: Decimal | None
    linked_receipt: str | None
    bill_ref: str
    party: str
    msisdn: str
    payer_names: tuple[str, ...]
    reason_type: str
    details: str
    note: str = ""

    @property
    def amount(self) -> Decimal:
        return self.paid_in or self.withdrawn

    def payment_values(self, shortcode_id: int, status: str, now: datetime) -> dict:
        """The C2B payment this customer payment (or the receipt a reversal names) is, as
        ``intake.store_payments`` stores it: the statement's own words for the payer, its
        Balance as the paybill's balance after the payment."""
        names = self.payer_names if self.msisdn else ()
        receipt = self.receipt if self.kind != "reversal" else self.linked_receipt
        return {
            "shortcode_id": shortcode_id,
            "trans_id": receipt,
            "trans_type": self.reason_type[:40],
            "trans_time": self.completed_at,
            "amount": self.amount,
            "bill_ref": self.bill_ref if self.kind != "reversal" else "",
            "invoice_number": "",
            "third_party_trans_id": "",
            "org_account_balance": self.balance if self.kind != "reversal" else None,
            "msisdn": self.msisdn[:64],
            "msisdn_form": msisdn_form(self.msisdn),
            "first_name": names[0][:80] if names else "",
            "middle_name": " ".join(names[1:-1])[:80],
            "last_name": names[-1][:80] if len(names) > 1 else "",
            "status": status,
            "error": None,
            "credit": ZERO,
            "attempts": 0,
            "received_at": now,
        }


class BadRow(ValueError):
    """A row that cannot be read; the message names the cell."""


def split_party(text: str) -> tuple[str, tuple[str, ...]]:
    """``254712345678 - JANE WANJIKU``, ``2547****5678 - JANE``, ``2547 ***** 013 -
    JACKLINE``, ``2547XXXXXXXX- Customer Credits`` → the number as written and the name's
    words; ``Bank`` or ``Demo Lender Ltd`` → no number."""
    found = _PARTY.match(text or "")
    if not found:
        return "", tuple((text or "").split())
    return found.group(1).strip(), tuple(found.group(2).split())


def is_customer_number(number: str) -> bool:
    """A phone as statements show a customer's: 12 digits, 07…/01…, or masked with ``*``;
    a 5–7 digit number is a shortcode (another organisation)."""
    compact = number.replace(" ", "")
    if "*" in compact or "X" in compact.upper():
        return compact[:3] == "254" or compact[:1] == "0"
    digits = compact.lstrip("+")
    return digits.isdigit() and (
        (len(digits) == 12 and digits.startswith("254")) or (len(digits) == 10 and digits[0] == "0")
    )


def _words_kind(text: str) -> str | None:
    for kind, words in _WORDS:
        if any(word in text for word in words):
            return kind
    return None


_reason_kind = lru_cache(maxsize=512)(_words_kind)  # a statement has a handful of Reason Types


def classify(
    status: str, reason: str, details: str, money_in: Decimal, money_out: Decimal, customer: bool
) -> tuple[str, str]:
    """The row's kind and, when it was not plain from its words, why it was taken so."""
    if status.strip().lower() not in COMPLETED:
        return "failed", f"status {status.strip()[:30]}"
    kind = _reason_kind(f" {reason} ".lower()) or _words_kind(f" {details} ".lower())
    if kind == "customer_payment" and money_out and not money_in:
        return "reversal", "money out on a customer payment's row: taken as its reversal"
    if kind is not None:
        return kind, ""
    shown = (reason or details or "none").strip()[:40]
    if money_in:
        taken = "customer_payment" if customer else "organisation_transfer"
    else:
        taken = "b2c" if customer else "settlement"
    return taken, f"unknown type {shown!r}: taken as {taken.replace('_', ' ')} from its party"


def _linked(linked: str, details: str, receipt: str) -> str | None:
    text = (linked or "").strip().upper()
    if _TRANS_ID.match(text):
        return text
    for found in _RECEIPT_IN_TEXT.findall((details or "").upper()):
        if found != receipt:
            return found
    return None


def _account_in(details: str) -> str:
    """``Pay Bill from 2547XXXXXXXX - Customer Credits Acc. LOAN-123`` → ``LOAN-123``, for
    statements without an A/C No. column."""
    found = _ACCOUNT_IN_DETAILS.search(details or "")
    return found.group(1).strip() if found else ""


def read_row(line: int, cells: list[str], columns: dict[str, int]) -> Row:
    """One statement row; raises BadRow naming what could not be read."""

    width = len(cells)
    cell = {name: cells[at].strip() for name, at in columns.items() if at < width}.get

    receipt = cell("receipt", "").upper()
    if not _TRANS_ID.match(receipt):
        raise BadRow(f"line {line}: no receipt number ({receipt[:20]!r})")
    money: dict[str, Decimal] = {}
    for name in ("paid_in", "withdrawn", "balance"):
        try:
            money[name] = amount(cell(name, ""))
        except InvalidOperation:
            label = {"paid_in": "Paid In", "withdrawn": "Withdrawn", "balance": "Balance"}[name]
            raise BadRow(f"line {line}: bad amount {cell(name, '')[:20]!r} in {label}") from None
    try:
        when = moment(cell("completed", "")) or moment(cell("initiated", ""))
    except ValueError as exc:
        raise BadRow(f"line {line}: {exc}") from None
    signed_in, signed_out = money["paid_in"] or ZERO, money["withdrawn"] or ZERO
    paid_in = signed_in if signed_in > 0 else ZERO
    withdrawn = abs(signed_out) + (-signed_in if signed_in < 0 else ZERO)
    if paid_in and withdrawn:
        raise BadRow(f"line {line}: money both in and out on one row")
    party = clean_text(cell("party", ""), 120)
    number, names = split_party(party)
    details, reason = clean_text(cell("details", ""), 200), clean_text(cell("reason", ""), 80)
    kind, note = classify(
        cell("status", ""), reason, details, paid_in, withdrawn, is_customer_number(number)
    )
    if kind != "failed" and not (paid_in or withdrawn):
        raise BadRow(f"line {line}: no amount in Paid In or Withdrawn")
    if when is None and kind != "failed":
        raise BadRow(f"line {line}: no Completion Time")
    return Row(
        line=line,
        receipt=receipt,
        kind=kind,
        completed_at=when,
        paid_in=paid_in,
        withdrawn=withdrawn,
        balance=money["balance"],
        linked_receipt=_linked(cell("linked", ""), details, receipt)
        if kind == "reversal"
        else None,
        bill_ref=clean_text(cell("account", "") or _account_in(details), 64),
        party=party,
        msisdn=number if is_customer_number(number) else "",
        payer_names=names,
        reason_type=reason,
        details=details,
        note=note,
    )
