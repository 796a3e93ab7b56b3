"""Reconciliation against the M-Pesa org-portal statement (CSV or XLSX): every credit the
statement shows is either already in the book or is brought in now, through the same
storage and matching as a callback. Safaricom does not retry lost callbacks; this does."""

from __future__ import annotations

import csv
import io
import json
import re
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


def read_rows(path: Path) -> list[list[str]]:
    """Every row of the file as text cells (XLSX through openpyxl, CSV as UTF-8)."""
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        from openpyxl import load_workbook

        book = load_workbook(path, read_only=True, data_only=True)
        sheet = book.worksheets[0]
        rows = [
            ["" if c is None else _cell_text(c) for c in row]
            for row in sheet.iter_rows(values_only=True)
        ]
        book.close()
        return rows
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    return list(csv.reader(io.StringIO(text)))


def _cell_text(value) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _amount(text: str) -> Decimal | None:
    cleaned = (text or "").replace(",", "").replace("KES", "").strip()
    if not cleaned:
        return None
    value = Decimal(cleaned)  # InvalidOperation is reported by the caller
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
    rows = read_rows(path)
    header_at = next(
        (n for n, row in enumerate(rows) if any(c.strip().lower() == HEADER_MARK for c in row)),
        None,
    )
    if header_at is None:
        summary.errors.append("line 1: no 'Receipt No.' header row; is this an M-Pesa statement?")
        return summary
    header = [c.strip().lower() for c in rows[header_at]]

    def col(row, name):
        try:
            return row[header.index(name)].strip()
        except (ValueError, IndexError):
            return ""

    for number, row in enumerate(rows[header_at + 1 :], start=header_at + 2):
        if not any(c.strip() for c in row):
            continue
        summary.rows += 1
        receipt = col(row, "receipt no.")
        status = col(row, "transaction status").lower()
        try:
            paid_in = _amount(col(row, "paid in"))
        except InvalidOperation:
            summary.errors.append(f"line {number}: bad amount {col(row, 'paid in')!r} in Paid In")
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
            summary.errors.append(f"line {number}: not a payment we can store ({receipt})")
        else:
            summary.already_recorded += 1
    return summary
