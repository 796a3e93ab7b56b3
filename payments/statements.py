"""Reconciliation against the M-Pesa org-portal statement (CSV or XLSX): every credit the
statement shows is either already in the book or is brought in now, through the same
storage and matching as a callback. Safaricom does not retry lost callbacks; this does."""

from __future__ import annotations

import csv
import json
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from payments.intake import record_confirmation
from payments.models import C2BPayment, Shortcode

NAIROBI = ZoneInfo("Africa/Nairobi")
HEADER_MARK = "receipt no."
# The org portal's statement has a few lines about the organisation above its header.
HEADER_WITHIN = 30
MAX_ROWS = 100_000  # a statement beyond this is imported in parts, one period at a time
MAX_COLUMNS = 40  # it has 13; a cell at column XFD must not widen every row to 16,384
MAX_UNPACKED_BYTES = 64 * 2**20  # a CSV file, or what an XLSX's zip unpacks to
_DATE_FORMATS = (
    "%d-%m-%Y %H:%M:%S",
    "%d-%m-%Y %H:%M",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
)
_PARTY = re.compile(r"^\s*(\S+?)\s*-\s*(.*)$")


@dataclass
class StatementSummary:
    rows: int = 0
    already_recorded: int = 0
    gaps_filled: int = 0
    ignored: int = 0
    errors: list[str] = field(default_factory=list)
    new_payment_ids: list[int] = field(default_factory=list)

    def as_json(self) -> dict:
        return {
            "rows": self.rows,
            "already_recorded": self.already_recorded,
            "gaps_filled": self.gaps_filled,
            "ignored": self.ignored,
            "errors": self.errors,
        }


class UnreadableStatement(ValueError):
    """The file cannot be read as a statement, or is too large to; the message says why."""


def _xlsx_rows(path: Path) -> Iterator[list[str]]:
    """An XLSX's first sheet, row by row (openpyxl's read-only mode streams the sheet),
    after checking what its zip says it holds, so a small file cannot unpack into gigabytes."""
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnreadableStatement(
            "line 1: not an XLSX workbook; export the statement again"
        ) from exc
    if unpacked > MAX_UNPACKED_BYTES:
        raise UnreadableStatement(
            f"line 1: the workbook unpacks to {unpacked // 2**20} MB, more than "
            f"{MAX_UNPACKED_BYTES // 2**20} MB; export a shorter period"
        )
    from openpyxl import load_workbook

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many kinds for a bad file
        raise UnreadableStatement("line 1: not a readable XLSX workbook") from exc
    try:
        sheet = book.worksheets[0]
        for row in sheet.iter_rows(values_only=True, max_col=MAX_COLUMNS):
            yield ["" if c is None else _cell_text(c) for c in row]
    finally:
        book.close()


def _csv_rows(path: Path) -> Iterator[list[str]]:
    """A CSV statement (UTF-8, a byte-order mark allowed), row by row."""
    if path.stat().st_size > MAX_UNPACKED_BYTES:
        raise UnreadableStatement(
            f"line 1: the file is more than {MAX_UNPACKED_BYTES // 2**20} MB; "
            "export a shorter period"
        )
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as stream:
        try:
            for row in csv.reader(stream):
                yield row[:MAX_COLUMNS]
        except csv.Error as exc:
            raise UnreadableStatement(f"the file is not readable CSV ({exc})") from exc


def read_rows(path: Path) -> Iterator[list[str]]:
    """Every row of the file as text cells, as a stream (XLSX through openpyxl, CSV as
    UTF-8). Raises UnreadableStatement for a file that cannot be read or is too large."""
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        return _xlsx_rows(path)
    return _csv_rows(path)


def find_header(path: Path) -> tuple[int, list[str]]:
    """The header row's line and its column names, looked for in the first rows only, and
    the statement's size, checked in a first pass that writes nothing. Raises
    UnreadableStatement."""
    header_at, header, count = None, [], 0
    for number, row in enumerate(read_rows(path), start=1):
        if header_at is None:
            if any(c.strip().lower() == HEADER_MARK for c in row):
                header_at, header = number, [c.strip().lower() for c in row]
            elif number >= HEADER_WITHIN:
                break
        elif (count := count + 1) > MAX_ROWS:
            raise UnreadableStatement(
                f"line {number}: the statement has more than {MAX_ROWS:,} rows; import it "
                "in parts (export one period at a time)"
            )
    if header_at is None:
        raise UnreadableStatement(
            f"line 1: no 'Receipt No.' header row in the first {HEADER_WITHIN} rows; "
            "is this an M-Pesa statement?"
        )
    return header_at, header


def _cell_text(value) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _amount(text: str) -> Decimal | None:
    cleaned = (text or "").replace(",", "").replace("KES", "").strip()
    if not cleaned:
        return None
    value = Decimal(cleaned)  # InvalidOperation is reported by the caller
    if not value.is_finite() or abs(value) >= Decimal("1e12"):
        raise InvalidOperation(text)
    return abs(value)


def _time(text: str) -> datetime:
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text.strip(), fmt).replace(tzinfo=NAIROBI)
        except ValueError:
            continue
    raise ValueError(f"unreadable time {text!r}")


def import_statement(session: Session, path: Path, shortcode: Shortcode) -> StatementSummary:
    """Bring in the statement's credits that no callback delivered. Rows already recorded
    (same receipt on this shortcode) change nothing. Does not commit; the caller commits
    and then processes ``new_payment_ids``."""
    summary = StatementSummary()
    try:
        header_at, header = find_header(path)
    except UnreadableStatement as exc:
        summary.errors.append(str(exc))
        return summary

    def col(row, name):
        try:
            return row[header.index(name)].strip()
        except (ValueError, IndexError):
            return ""

    rows = read_rows(path)
    for _ in range(header_at):  # the preamble and the header, read in the first pass
        next(rows)
    for number, row in enumerate(rows, start=header_at + 1):
        if not any(c.strip() for c in row):
            continue
        summary.rows += 1
        receipt = col(row, "receipt no.")
        status = col(row, "transaction status").lower()
        try:
            paid_in = _amount(col(row, "paid in"))
        except InvalidOperation:
            shown = col(row, "paid in")[:20]
            summary.errors.append(f"line {number}: bad amount {shown!r} in Paid In")
            continue
        if not receipt or status not in ("completed", "") or not paid_in:
            summary.ignored += 1  # withdrawals, charges, failed and pending rows
            continue
        exists = session.scalar(
            select(C2BPayment.id).where(
                C2BPayment.shortcode_id == shortcode.id, C2BPayment.trans_id == receipt.upper()
            )
        )
        if exists:
            summary.already_recorded += 1
            continue
        try:
            when = _time(col(row, "completion time") or col(row, "initiation time"))
        except ValueError as exc:
            summary.errors.append(f"line {number}: {exc}")
            continue
        party = _PARTY.match(col(row, "other party info"))
        msisdn, name = (party.group(1), party.group(2)) if party else ("", "")
        body = {
            "TransactionType": col(row, "reason type") or "Pay Bill",
            "TransID": receipt,
            "TransTime": when.strftime("%Y%m%d%H%M%S"),
            "TransAmount": f"{paid_in:.2f}",
            "BusinessShortCode": shortcode.number,
            "BillRefNumber": col(row, "a/c no."),
            "MSISDN": msisdn,
            "FirstName": (name.split() or [""])[0],
            "LastName": " ".join(name.split()[1:]),
        }
        stored = record_confirmation(
            session.connection(),
            shortcode,
            json.dumps(body).encode(),
            source_ip=None,
            headers={"X-Source": f"statement {path.name} line {number}"},
        )
        if stored.outcome == "stored":
            summary.gaps_filled += 1
            summary.new_payment_ids.append(stored.payment_id)
        elif stored.outcome == "quarantined":
            summary.errors.append(f"line {number}: not a payment we can store ({receipt[:40]!r})")
        else:
            summary.already_recorded += 1
    return summary
