"""M-Pesa org-portal statements for tests, written the way the portal writes them: a
preamble, the 13-column header, newest first, day-first times, thousands separators and
money out as negative Withdrawn. ``Line`` is one row; ``write_csv`` / ``write_xlsx`` make the
file (the XLSX with real date cells and numbers, the CSV's twin)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from payments.emulator.statement import HEADER as STATEMENT_HEADER

HEADER = list(STATEMENT_HEADER)  # the org portal's 13 columns, as the emulator writes them
PREAMBLE = [["Organization Name", "Demo Lender"], ["Paybill", "600984"], []]


@dataclass
class Line:
    receipt: str
    at: datetime  # Nairobi local time, naive
    reason: str = "Pay Bill Online"
    paid_in: Decimal | None = None
    withdrawn: Decimal | None = None  # positive here; written negative
    party: str = "254712345678 - JANE WANJIKU"
    account: str = ""
    linked: str = ""
    status: str = "Completed"
    balance: Decimal | None = None
    details: str = ""

    def cells(self, *, for_xlsx: bool = False) -> list:
        when = self.at if for_xlsx else self.at.strftime("%d-%m-%Y %H:%M:%S")

        def money(value: Decimal | None, sign: int = 1):
            if value is None:
                return None if for_xlsx else ""
            return float(sign * value) if for_xlsx else f"{sign * value:,.2f}"

        return [
            self.receipt,
            when,
            when,
            self.details or self.reason,
            self.status,
            money(self.paid_in),
            money(self.withdrawn, -1),
            money(self.balance),
            True if for_xlsx else "TRUE",
            self.reason,
            self.party,
            self.linked,
            self.account,
        ]


def payment(receipt: str, at: datetime, amount, account: str = "", **kw) -> Line:
    return Line(receipt, at, paid_in=Decimal(str(amount)), account=account, **kw)


def reversal(receipt: str, at: datetime, original: str, amount, **kw) -> Line:
    return Line(
        receipt,
        at,
        reason="Reversal",
        withdrawn=Decimal(str(amount)),
        linked=original,
        details=f"Reversal of transaction {original}",
        **kw,
    )


def transfer_in(receipt: str, at: datetime, amount) -> Line:
    return Line(
        receipt,
        at,
        reason="Organization Funds Transfer",
        paid_in=Decimal(str(amount)),
        party="600111 - Demo Lender Ltd Working Account",
    )


def with_balances(lines: list[Line], opening: Decimal = Decimal("0.00")) -> list[Line]:
    """The running balance after each completed line, oldest first."""
    balance = opening
    for line in sorted(lines, key=lambda ln: (ln.at, ln.receipt)):
        if line.status == "Completed":
            balance += (line.paid_in or 0) - (line.withdrawn or 0)
        line.balance = balance
    return lines


def _newest_first(lines: list[Line]) -> list[Line]:
    return sorted(lines, key=lambda ln: (ln.at, ln.receipt), reverse=True)


def write_csv(path: Path, lines: list[Line]) -> Path:
    import csv

    with path.open("w", encoding="utf-8-sig", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerows(PREAMBLE)
        writer.writerow(HEADER)
        writer.writerows(line.cells() for line in _newest_first(lines))
    return path


def write_xlsx(path: Path, lines: list[Line]) -> Path:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    for row in PREAMBLE:
        sheet.append(row or [None])
    sheet.append(HEADER)
    for line in _newest_first(lines):
        sheet.append(line.cells(for_xlsx=True))
    book.save(path)
    return path


def day_at(day: datetime, minutes: int) -> datetime:
    return day + timedelta(minutes=minutes)
