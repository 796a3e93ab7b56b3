"""The org portal's statement of a shortcode (REFERENCE §10.2), as the CSV an admin
downloads there and uploads on Reconciliation: a few lines about the organisation, the
13-column header, newest first, day-first Nairobi times, thousands separators, money out
as a negative Withdrawn, and the utility account's Balance after each line. Read from the
emulator's ledger, so it holds everything that moved money (payments whose callback was
dropped included, reversals with their Linked Transaction ID, B2C payouts) and its Balance
is the OrgAccountBalance the confirmations carried.

Written with ``csv`` itself, not the product's writer (``lenders/csvfile.py``): this is
Safaricom's file, not one the product writes, and the product's formula guard would turn a
negative Withdrawn or an account reference typed as ``-12`` into text no portal writes."""

from __future__ import annotations

import csv
import io
from datetime import datetime, time
from decimal import Decimal

from payments.emulator import payloads as make
from payments.emulator.state import ORGANISATION, Emulator

HEADER = (
    "Receipt No.",
    "Completion Time",
    "Initiation Time",
    "Details",
    "Transaction Status",
    "Paid In",
    "Withdrawn",
    "Balance",
    "Balance Confirmed",
    "Reason Type",
    "Other Party Info",
    "Linked Transaction ID",
    "A/C No.",
)
TIME = "%d-%m-%Y %H:%M:%S"


def bound(text: str | None, *, end: bool = False) -> datetime | None:
    """``2026-12-03`` or ``2026-12-03 14:30[:00]`` (``T`` too), Nairobi time; a date alone
    is the start of that day, or its last moment when ``end``. None for no bound; raises
    ValueError for anything else."""
    text = (text or "").strip()
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is not None:
        return moment.astimezone(make.NAIROBI)
    if end and len(text) == 10:
        moment = datetime.combine(moment.date(), time.max)
    return moment.replace(tzinfo=make.NAIROBI)


def statement_lines(
    emu: Emulator, shortcode: str, start: datetime | None = None, end: datetime | None = None
) -> list[dict]:
    """The shortcode's ledger lines between ``start`` and ``end`` (inclusive), newest first."""
    with emu.lock:
        lines = [
            dict(line)
            for line in emu.ledger
            if line["shortcode"] == shortcode
            and (start is None or line["moment"] >= start)
            and (end is None or line["moment"] <= end)
        ]
    return lines[::-1]  # booked in order: the newest is last


def _money(value: Decimal) -> str:
    return f"{value:,.2f}"


def statement_csv(
    emu: Emulator, shortcode: str, start: datetime | None = None, end: datetime | None = None
) -> str:
    """The statement as the org portal's CSV (no byte-order mark; the caller adds one)."""
    lines = statement_lines(emu, shortcode, start, end)
    times = [line["moment"] for line in lines]
    first, last = start or (min(times) if times else None), end or (max(times) if times else None)
    period = f"{first:{TIME}} - {last:{TIME}}" if first and last else ""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows(
        [["Organization Name", ORGANISATION], ["Paybill", shortcode], ["Time Period", period], []]
    )
    writer.writerow(HEADER)
    for line in lines:
        when = line["moment"].astimezone(make.NAIROBI).strftime(TIME)
        amount = line["amount"]
        writer.writerow(
            [
                line["receipt"],
                when,
                when,
                line["details"],
                "Completed",
                _money(amount) if amount > 0 else "",
                _money(amount) if amount < 0 else "",
                _money(line["balance"]),
                "TRUE",
                line["reason"],
                line["party"],
                line["linked"],
                line["account"],
            ]
        )
    return out.getvalue()


def filename(shortcode: str, moment: datetime | None = None) -> str:
    moment = moment or make.now_nairobi()
    return f"MPESA_{shortcode}_{moment:%Y%m%d%H%M%S}.csv"
