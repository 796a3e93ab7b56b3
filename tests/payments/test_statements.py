"""Reconciliation: the M-Pesa statement brings in what no callback delivered, once."""

import json
from datetime import date
from decimal import Decimal

import pytest
from openpyxl import Workbook
from sqlalchemy import func, select

from lenders.extensions import db
from lenders.models import Loan
from payments.models import C2BPayment
from tests.payments.conftest import c2b_body, payment_by_receipt

pytestmark = pytest.mark.both_databases
HEADER = (
    "Receipt No.,Completion Time,Initiation Time,Details,Transaction Status,Paid In,"
    "Withdrawn,Balance,Balance Confirmed,Reason Type,Other Party Info,"
    "Linked Transaction ID,A/C No."
)
ROWS = [
    # a payment whose callback arrived
    "TK6SEEN001,15-01-2025 14:30:12,15-01-2025 14:30:12,Pay Bill,Completed,500.00,,"
    '"1,500.00",TRUE,Pay Bill Online,254712345678 - JANE WANJIKU,,LOAN-000123',
    # one whose callback was lost
    'TK6LOST001,15-01-2025 15:00:00,15-01-2025 15:00:00,Pay Bill,Completed,"1,200.00",,'
    '"2,700.00",TRUE,Pay Bill Online,254712345678 - JANE WANJIKU,,loan 123',
    # a withdrawal, a failed payment: not money in
    "TK6WDRW001,15-01-2025 16:00:00,15-01-2025 16:00:00,Withdraw,Completed,,-1000.00,"
    "1700.00,TRUE,Withdraw Funds to Bank,Bank,,",
    "TK6FAIL001,15-01-2025 16:30:00,15-01-2025 16:30:00,Pay Bill,Failed,300.00,,1700.00,"
    "TRUE,Pay Bill Online,254712345678 - JANE WANJIKU,,LOAN-000123",
    # junk
    "TK6JUNK001,15-01-2025 17:00:00,15-01-2025 17:00:00,Pay Bill,Completed,lots,,,TRUE,"
    "Pay Bill Online,254712345678 - JANE,,LOAN-000123",
]


@pytest.fixture
def book(make_borrower, make_loan):
    jane = make_borrower("Jane Wanjiku", phones=("0712345678",))
    return make_loan(
        borrower=jane,
        number="LOAN-000123",
        principal="10000.00",
        interest="0",
        fees="0",
        installments=4,
        disbursed_on=date(2025, 1, 1),
    )


def statement(tmp_path, rows=ROWS):
    path = tmp_path / "statement.csv"
    path.write_text(
        "Organization Name,Demo Lender\nPaybill,600984\n" + HEADER + "\n" + "\n".join(rows) + "\n",
        encoding="utf-8",
    )
    return path


def run(runner, path, *extra):
    result = runner.invoke(args=["payments", "import-statement", str(path), *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def test_statement_fills_the_gaps_and_counts_the_rest(runner, tmp_path, confirm, book):
    confirm(c2b_body(TransID="TK6SEEN001", TransAmount="500.00", BillRefNumber="LOAN-000123"))
    summary = run(runner, statement(tmp_path), "--shortcode", "600984")
    assert summary == {
        "rows": 5,
        "already_recorded": 1,
        "gaps_filled": 1,
        "ignored": 2,
        "errors": ["line 8: bad amount 'lots' in Paid In"],
    }
    lost = payment_by_receipt("TK6LOST001")
    assert lost.status == "posted" and lost.rule == "bill_ref" and lost.amount == Decimal("1200.00")
    assert db.session.get(Loan, book.id).paid == Decimal("1700.00")


def test_importing_the_same_statement_twice_changes_nothing(runner, tmp_path, shortcode, book):
    path = statement(tmp_path)
    first = run(runner, path)
    second = run(runner, path)
    assert first["gaps_filled"] == 2 and second["gaps_filled"] == 0
    assert second["already_recorded"] == 2
    db.session.expire_all()
    assert db.session.scalar(select(func.count()).select_from(C2BPayment)) == 2
    assert db.session.get(Loan, book.id).paid == Decimal("1700.00")


def test_xlsx_statements_work_too(runner, tmp_path, shortcode, book):
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["Organization Name", "Demo Lender"])
    sheet.append(HEADER.split(","))
    sheet.append(
        [
            "TK6XLSX001",
            "15-01-2025 15:00:00",
            "15-01-2025 15:00:00",
            "Pay Bill",
            "Completed",
            800,
            None,
            2700,
            True,
            "Pay Bill Online",
            "254712345678 - JANE WANJIKU",
            None,
            "LOAN-000123",
        ]
    )
    path = tmp_path / "statement.xlsx"
    workbook.save(path)
    summary = run(runner, path)
    assert summary["gaps_filled"] == 1 and summary["errors"] == []


def test_a_file_that_is_not_a_statement_says_so(runner, tmp_path, shortcode):
    path = tmp_path / "other.csv"
    path.write_text("name,amount\nx,1\n")
    summary = run(runner, path)
    assert summary["rows"] == 0 and "Receipt No." in summary["errors"][0]
