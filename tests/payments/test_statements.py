"""Reconciliation: the M-Pesa statement brings in what no callback delivered, once."""

import json
import re
import time
import zipfile
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from openpyxl import Workbook
from sqlalchemy import func, select

from lenders.extensions import db
from lenders.models import Loan
from payments import statements
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


# --- a hostile file: answered at once, in little memory, with a clear message -------------


def rewritten_xlsx(tmp_path, sheet_rows: str, extra: dict[str, bytes] | None = None) -> Path:
    """A real workbook whose first sheet holds ``sheet_rows`` (sheetData XML), written
    straight into the zip: 300,000 rows take a second, not openpyxl's minutes."""
    source = tmp_path / "source.xlsx"
    Workbook().save(source)
    path = tmp_path / "statement.xlsx"
    with (
        zipfile.ZipFile(source) as original,
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out,
    ):
        for item in original.infolist():
            data = original.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                text = data.decode()
                start, end = text.index("<sheetData"), text.index("</worksheet>")
                data = (text[:start] + f"<sheetData>{sheet_rows}</sheetData>" + text[end:]).encode()
                data = re.sub(rb"<dimension[^>]*/>", b"", data)
            out.writestr(item, data)
        for name, data in (extra or {}).items():
            out.writestr(name, data)
    return path


def junk_rows(count: int, first: int = 1) -> str:
    return "".join(
        f'<row r="{n}"><c r="A{n}" t="inlineStr"><is><t>x</t></is></c></row>'
        for n in range(first, first + count)
    )


def test_a_huge_workbook_without_a_header_is_refused_at_once(runner, tmp_path, shortcode):
    path = rewritten_xlsx(tmp_path, junk_rows(300_000))
    assert path.stat().st_size < 2_000_000
    started = time.monotonic()
    summary = run(runner, path)
    assert time.monotonic() - started < 10
    assert summary["rows"] == 0
    assert "first 30 rows" in summary["errors"][0]


def test_a_header_below_the_first_rows_is_not_looked_for(runner, tmp_path, shortcode):
    path = statement(tmp_path, rows=ROWS)
    path.write_text("\n" * 30 + path.read_text(), encoding="utf-8")
    summary = run(runner, path)
    assert summary["gaps_filled"] == 0 and "first 30 rows" in summary["errors"][0]


def test_a_statement_over_the_row_limit_imports_nothing(
    runner, tmp_path, shortcode, book, monkeypatch
):
    monkeypatch.setattr(statements, "MAX_ROWS", 4)
    summary = run(runner, statement(tmp_path))
    assert summary["gaps_filled"] == 0 and "more than 4 rows" in summary["errors"][0]
    assert db.session.scalar(select(func.count()).select_from(C2BPayment)) == 0


def test_a_workbook_that_unpacks_into_too_much_is_refused(runner, tmp_path, shortcode, book):
    header = "".join(
        f'<c r="{chr(65 + i)}2" t="inlineStr"><is><t>{name}</t></is></c>'
        for i, name in enumerate(HEADER.split(","))
    )
    bomb = {"xl/media/padding.bin": b"\0" * (statements.MAX_UNPACKED_BYTES + 1)}
    path = rewritten_xlsx(tmp_path, f'<row r="2">{header}</row>', extra=bomb)
    assert path.stat().st_size < 1_000_000
    summary = run(runner, path)
    assert summary["rows"] == 0 and "unpacks to" in summary["errors"][0]


def test_a_row_reaching_the_last_column_is_read_as_a_statement_row(
    runner, tmp_path, shortcode, book
):
    header = "".join(
        f'<c r="{chr(65 + i)}1" t="inlineStr"><is><t>{name}</t></is></c>'
        for i, name in enumerate(HEADER.split(","))
    )
    cells = ["TK6WIDE001", "15-01-2025 15:00:00", "", "Pay Bill", "Completed", "800", "", "", ""]
    cells += ["Pay Bill Online", "254712345678 - JANE WANJIKU", "", "LOAN-000123"]
    row = "".join(
        f'<c r="{chr(65 + i)}2" t="inlineStr"><is><t>{value}</t></is></c>'
        for i, value in enumerate(cells)
    )
    far = '<c r="XFD2" t="inlineStr"><is><t>far away</t></is></c>'
    path = rewritten_xlsx(tmp_path, f'<row r="1">{header}</row><row r="2">{row}{far}</row>')
    summary = run(runner, path)
    assert summary["gaps_filled"] == 1 and summary["errors"] == []


@pytest.mark.parametrize("content", [b"not a zip", b"PK\x03\x04 broken"])
def test_a_file_named_xlsx_that_is_not_one_says_so(runner, tmp_path, shortcode, content):
    path = tmp_path / "statement.xlsx"
    path.write_bytes(content)
    summary = run(runner, path)
    assert summary["rows"] == 0 and "XLSX" in summary["errors"][0]
