"""The loan-book file (CONTRACT §6): reading and checking its rows.

``read_loan_rows`` parses every line and reports each bad one with its line number and
reason; ``lenders.importer`` then checks the rows against the book and writes them."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from lenders.models import ZERO
from lenders.money import InvalidAmount, parse_amount
from lenders.phones import InvalidPhone, canonical_phone
from lenders.schedule import last_due_date
from lenders.text import hidden_characters

REQUIRED_COLUMNS = (
    "loan_number",
    "borrower_name",
    "national_id",
    "phone",
    "principal",
    "interest",
    "fees",
    "disbursed_on",
    "installments",
    "frequency",
)
OPTIONAL_COLUMNS = ("amount_paid", "officer_email")
MAX_INSTALLMENTS = 520
MAX_TOTAL = Decimal("999999999999.99")  # NUMERIC(14, 2)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NATIONAL_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass
class LoanRow:
    """One good line of the file, parsed."""

    line: int
    loan_number: str
    borrower_name: str
    national_id: str
    phones: list[str]
    principal: Decimal
    interest: Decimal
    fees: Decimal
    disbursed_on: date
    installments: int
    frequency: str
    amount_paid: Decimal
    officer_email: str | None

    @property
    def total_due(self) -> Decimal:
        return self.principal + self.interest + self.fees


class _Line:
    """Collects the reasons one line is bad."""

    def __init__(self, number: int, record: dict[str, str], errors: list[str]):
        self.number, self.record, self.errors = number, record, errors
        self.bad = False

    def error(self, reason: str) -> None:
        self.bad = True
        self.errors.append(f"line {self.number}: {reason}")

    def text(self, column: str, *, required: bool = True, max_length: int = 200) -> str:
        value = (self.record.get(column) or "").strip()
        if required and not value:
            self.error(f"{column} is empty")
        elif len(value) > max_length:
            self.error(f"{column} is longer than {max_length} characters")
        elif hidden := hidden_characters(value):
            # NUL (which PostgreSQL refuses), and what would reorder or hide a name on
            # screen: the file is fixed, not the value guessed at.
            self.error(f"{column} holds a hidden character ({', '.join(hidden[:3])}): retype it")
        return value

    def amount(self, column: str, *, required: bool = True) -> Decimal:
        value = (self.record.get(column) or "").strip()
        if not value:
            if required:
                self.error(f"{column} is empty")
            return ZERO
        try:
            return parse_amount(value)
        except InvalidAmount as exc:
            reason = "negative amount" if "negative" in str(exc) else "bad amount"
            if "too large" in str(exc):
                reason = "amount too large"
            self.error(f"{reason} in {column}: {value[:20]!r}")
            return ZERO


class NotUTF8(ValueError):
    """A line of the file is not UTF-8 text."""


def utf8_lines(binary: Iterable[bytes]) -> Iterator[str]:
    """Decode an uploaded file line by line, so a bad byte is reported on its own line.
    A UTF-8 byte-order mark (Excel's "CSV UTF-8") is dropped."""
    for number, raw in enumerate(binary, start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NotUTF8(
                f"line {number}: not UTF-8 text (byte {raw[exc.start]:#04x}); save the file "
                "from your spreadsheet as CSV UTF-8"
            ) from exc


def read_loan_rows(lines: Iterable[str]) -> tuple[list[LoanRow], list[str]]:
    """Parse and check every row. Returns the good rows and the errors of the bad ones
    (line 1 is the header). Checks that need the database come later, in import_loans."""
    errors: list[str] = []
    reader = csv.DictReader(lines)
    try:
        header = [(h or "").strip().lower() for h in (reader.fieldnames or [])]
    except NotUTF8 as exc:
        return [], [str(exc)]
    except csv.Error as exc:
        return [], [f"line 1: the file is not readable CSV ({exc})"]
    if not header:
        return [], ["line 1: the file is empty; expected a header row"]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        return [], [f"line 1: missing column(s): {', '.join(missing)}"]
    reader.fieldnames = header

    rows: list[LoanRow] = []
    seen_numbers: dict[str, int] = {}
    seen_people: dict[str, tuple[str, int]] = {}
    phone_cache: dict[str, str] = {}
    line_number = 1
    try:
        for record in reader:
            line_number = reader.line_num
            if not any((v or "").strip() for v in record.values() if isinstance(v, str)):
                continue  # blank line
            row = _parse_row(_Line(line_number, record, errors), phone_cache)
            if row is None:
                continue
            key = row.loan_number.upper()
            if key in seen_numbers:
                errors.append(
                    f"line {row.line}: duplicate loan number {row.loan_number} "
                    f"(also on line {seen_numbers[key]})"
                )
                continue
            seen_numbers[key] = row.line
            person = seen_people.get(row.national_id)
            if person and same_name(person[0], row.borrower_name) is False:
                errors.append(
                    f"line {row.line}: national ID {row.national_id} is {person[0]} on line "
                    f"{person[1]}, not {row.borrower_name}"
                )
                continue
            seen_people.setdefault(row.national_id, (row.borrower_name, row.line))
            rows.append(row)
    except NotUTF8 as exc:
        errors.append(str(exc))
    except csv.Error as exc:
        errors.append(f"line {line_number + 1}: the file is not readable CSV ({exc})")
    if not rows and not errors:
        errors.append("line 2: the file has a header but no loans")
    return rows, errors


def same_name(a: str, b: str) -> bool:
    return " ".join(a.lower().split()) == " ".join(b.lower().split())


def _parse_row(line: _Line, phone_cache: dict[str, str]) -> LoanRow | None:
    if None in line.record:  # csv puts extra cells under the None key
        line.error("more cells than the header has columns")
        return None
    loan_number = line.text("loan_number", max_length=32)
    name = line.text("borrower_name")
    national_id = line.text("national_id", max_length=32)
    if national_id and not _NATIONAL_ID.match(national_id):
        line.error(f"bad national ID {national_id!r}: letters and digits only")
    phones = []
    for part in line.text("phone", max_length=500).split(";"):
        if not part.strip():
            continue
        try:
            phone = phone_cache.get(part) or canonical_phone(part)
        except InvalidPhone:
            line.error(f"bad phone {part.strip()!r}: not a Kenyan mobile number")
            continue
        phone_cache[part] = phone
        if phone not in phones:
            phones.append(phone)
    if not phones and not line.bad:
        line.error("phone is empty")
    principal = line.amount("principal")
    if principal == 0 and not line.bad:
        line.error("principal must be more than zero")
    interest = line.amount("interest")
    fees = line.amount("fees")
    amount_paid = line.amount("amount_paid", required=False)
    raw_date = line.text("disbursed_on", max_length=10)
    disbursed_on = None
    if raw_date:
        try:
            if not _DATE.match(raw_date):
                raise ValueError
            disbursed_on = date.fromisoformat(raw_date)
        except ValueError:
            line.error(f"bad date {raw_date!r} in disbursed_on: use YYYY-MM-DD")
    raw_count = line.text("installments", max_length=10)
    count = 0
    if raw_count:
        if raw_count.isascii() and raw_count.isdigit() and 1 <= int(raw_count) <= MAX_INSTALLMENTS:
            count = int(raw_count)
        else:
            line.error(
                f"bad installments {raw_count!r}: a whole number from 1 to {MAX_INSTALLMENTS}"
            )
    frequency = line.text("frequency", max_length=20).lower()
    if frequency and frequency not in ("weekly", "monthly"):
        line.error(f"unknown frequency {frequency!r}: use weekly or monthly")
    if disbursed_on and count and frequency in ("weekly", "monthly"):
        try:
            last_due_date(disbursed_on, count, frequency)
        except (OverflowError, ValueError):
            line.error(f"{count} {frequency} installments from {raw_date} end after the year 9999")
    officer_email = line.text("officer_email", required=False, max_length=254).lower() or None
    if officer_email and not EMAIL.match(officer_email):
        line.error(f"bad officer_email {officer_email!r}")
    if line.bad:
        return None
    total = principal + interest + fees
    if amount_paid > total:
        line.error(f"amount_paid {amount_paid} is more than the total due {total}")
    if total > MAX_TOTAL:
        line.error(f"total due {total} is more than the book can hold ({MAX_TOTAL})")
    if total < count * Decimal("0.01"):
        line.error(f"total due {total} is too small for {count} installments")
    if line.bad:
        return None
    return LoanRow(
        line.number,
        loan_number,
        name,
        national_id,
        phones,
        principal,
        interest,
        fees,
        disbursed_on,
        count,
        frequency,
        amount_paid,
        officer_email,
    )
