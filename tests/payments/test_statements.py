"""Reconciliation against the M-Pesa statement: what no callback delivered is brought in
and posted once, reversals reverse, everything that is not a borrower's payment is listed
and never posted, and importing the same statement (or its XLSX twin) changes nothing."""

from __future__ import annotations

import json
import random
import re
import time
import zipfile
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from openpyxl import Workbook
from sqlalchemy import func, select

from lenders.book import loan_is_balanced
from lenders.extensions import db
from lenders.models import AuditEvent, Loan, Repayment
from payments import statement_file
from payments.models import C2BPayment, OfficerNotice
from payments.reconciliation_models import StatementImport, StatementLine
from tests.payments.conftest import c2b_body, payment_by_receipt
from tests.payments.statement_files import (
    HEADER,
    Line,
    payment,
    reversal,
    transfer_in,
    with_balances,
    write_csv,
    write_xlsx,
)

pytestmark = pytest.mark.both_databases
D = Decimal
DAY = datetime(2025, 1, 15, 8, 0, 0)


@pytest.fixture
def book(make_staff, make_borrower, make_loan):
    officer = make_staff(name="Otieno Officer")
    jane = make_borrower("Jane Wanjiku", phones=("0712345678",))
    return make_loan(
        borrower=jane,
        number="LOAN-000123",
        principal="10000.00",
        interest="0",
        fees="0",
        installments=4,
        disbursed_on=date(2025, 1, 1),
        officer=officer,
    )


def run(runner, path, *extra) -> dict:
    result = runner.invoke(args=["payments", "import-statement", str(path), *extra])
    assert result.exit_code == 0, result.output
    return json.loads(next(ln for ln in result.output.splitlines() if ln.startswith("{")))


def at(minutes: int) -> datetime:
    from datetime import timedelta

    return DAY + timedelta(minutes=minutes)


def count(model) -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(model))


def test_statement_fills_the_gaps_and_lists_the_rest(runner, tmp_path, confirm, book):
    confirm(c2b_body(TransID="TK6SEEN001", TransAmount="500.00", BillRefNumber="LOAN-000123"))
    lines = [
        payment("TK6SEEN001", at(0), "500.00", "LOAN-000123"),
        payment("TK6LOST001", at(30), "1200.00", "loan 123"),
        transfer_in("TK6ORGT001", at(40), "50000.00"),
        Line("TK6CHRG001", at(41), reason="Pay Bill Charge", withdrawn=D("12.00"), party=""),
        Line("TK6WDRW001", at(60), reason="Withdraw Funds to Bank", withdrawn=D("1000.00")),
        Line(
            "TK6BTWC001",
            at(61),
            reason="Business Payment to Customer via API",
            withdrawn=D("3000.00"),
        ),  # fmt: skip
        Line("TK6FAIL001", at(90), paid_in=D("300.00"), status="Failed", account="LOAN-000123"),
    ]
    path = write_csv(tmp_path / "statement.csv", lines)
    path.write_text(
        path.read_text(encoding="utf-8-sig").replace(
            "TK6FAIL001", "TK6JUNK001,15-01-2025 17:00:00,,,Completed,lots,,,,,,,\nTK6FAIL001", 1
        ),
        encoding="utf-8",
    )
    summary = run(runner, path, "--shortcode", "600984")
    assert {k: v for k, v in summary.items() if k not in ("classes", "new_lines")} == {
        "rows": 8,
        "already_recorded": 1,
        "gaps_filled": 1,
        "gaps_amount": "1200.00",
        "reversals": 0,
        "reversed_amount": "0.00",
        "review": 0,
        "not_repayments": {
            "organisation_transfer": 1,
            "b2c": 1,
            "charge": 1,
            "settlement": 1,
            "failed": 1,
        },
        "paid_in": "52000.00",
        "withdrawn": "4012.00",
        "errors": ["line 5: bad amount 'lots' in Paid In"],
    }
    lost = payment_by_receipt("TK6LOST001")
    assert lost.status == "posted" and lost.rule == "bill_ref" and lost.amount == D("1200.00")
    assert db.session.get(Loan, book.id).paid == D("1700.00")
    assert count(C2BPayment) == 2  # the transfer, the payout, the failed row: never payments
    stored = db.session.scalars(select(StatementImport)).one()
    assert stored.status == "done" and stored.summary["gaps_filled"] == 1


def test_the_summary_agrees_with_the_file_to_the_cent(runner, tmp_path, shortcode, book):
    rng = random.Random(7)
    lines = []
    reasons = {
        "org": "Organization Funds Transfer",
        "charge": "Pay Bill Charge",
        "out": "Organization Settlement",
        "b2c": "Salary Payment via API",
    }
    for n in range(60):
        amount = D(rng.randrange(100, 500_000)) / 100
        kind = rng.choice(["pay", "pay", "pay", "org", "charge", "out", "b2c", "fail"])
        receipt = f"TK6SUM{n:04d}"
        if kind == "pay":
            lines.append(payment(receipt, at(n), amount, "LOAN-000123"))
        elif kind == "fail":
            lines.append(Line(receipt, at(n), paid_in=amount, status="Failed"))
        elif kind == "org":
            lines.append(transfer_in(receipt, at(n), amount))
        else:
            lines.append(Line(receipt, at(n), reason=reasons[kind], withdrawn=amount))
    summary = run(runner, write_csv(tmp_path / "s.csv", with_balances(lines)))
    file_in = sum((ln.paid_in or 0 for ln in lines), D(0))
    file_out = sum((ln.withdrawn or 0 for ln in lines), D(0))
    assert (D(summary["paid_in"]), D(summary["withdrawn"])) == (file_in, file_out)
    classes = summary["classes"].values()
    assert sum(D(c["paid_in"]) for c in classes) == file_in
    assert sum(D(c["withdrawn"]) for c in classes) == file_out
    assert sum(c["rows"] for c in classes) == summary["rows"] == 60
    customer = [ln for ln in lines if ln.reason == "Pay Bill Online" and ln.status == "Completed"]
    assert summary["gaps_filled"] == len(customer)
    assert D(summary["gaps_amount"]) == sum((ln.paid_in for ln in customer), D(0))


def test_the_same_statement_or_its_xlsx_twin_again_changes_nothing(
    runner, tmp_path, shortcode, book
):
    lines = with_balances(
        [
            payment("TK6TWIN001", at(0), "800.00", "LOAN-000123"),
            payment("TK6TWIN002", at(5), "1500.00", "LOAN-000123"),
            payment("TK6TWIN003", at(9), "200.00", "LOAN-000123"),
            reversal("TK6TWINR01", at(20), "TK6TWIN003", "200.00"),
            transfer_in("TK6TWINT01", at(30), "10000.00"),
        ]
    )
    first = run(runner, write_csv(tmp_path / "s.csv", lines))
    state = lambda: (  # noqa: E731
        count(C2BPayment),
        count(StatementLine),
        count(Repayment),
        db.session.get(Loan, book.id).paid,
        sorted(p.status for p in db.session.scalars(select(C2BPayment))),
    )
    before = state()
    again = run(runner, write_csv(tmp_path / "s.csv", lines))
    twin = run(runner, write_xlsx(tmp_path / "s.xlsx", lines))
    assert state() == before == (3, 5, 2, D("2300.00"), ["posted", "posted", "reversed"])
    assert first["gaps_filled"] == 3 and again["gaps_filled"] == twin["gaps_filled"] == 0
    assert again["already_recorded"] == twin["already_recorded"] == 3
    assert again["new_lines"] == twin["new_lines"] == 0
    assert {k: v for k, v in twin.items() if k != "new_lines"} == {
        k: v for k, v in again.items() if k != "new_lines"
    }


def test_a_reversal_on_the_statement_undoes_the_posted_payment(runner, tmp_path, confirm, book):
    confirm(c2b_body(TransID="TK6POST001", TransAmount="2500.00", BillRefNumber="LOAN-000123"))
    assert db.session.get(Loan, book.id).paid == D("2500.00")
    lines = [
        payment("TK6POST001", at(0), "2500.00", "LOAN-000123"),
        reversal("TK6REVS001", at(50), "TK6POST001", "2500.00"),
    ]
    summary = run(runner, write_csv(tmp_path / "s.csv", lines))
    assert (summary["reversals"], summary["reversed_amount"]) == (1, "2500.00")
    reversed_ = payment_by_receipt("TK6POST001")
    assert reversed_.status == "reversed" and reversed_.credit == 0
    loan = db.session.get(Loan, book.id)
    assert loan.paid == D("0.00") and loan_is_balanced(loan)
    assert all(r.reversed for r in reversed_.repayments)
    notice = db.session.scalars(select(OfficerNotice).where(OfficerNotice.kind == "reversal")).one()
    assert "M-Pesa reversed" in notice.text and "LOAN-000123 owes KES 10,000.00" in notice.text
    line = db.session.scalars(select(StatementLine).where(StatementLine.kind == "reversal")).one()
    assert (line.outcome, line.payment_id) == ("reversed", reversed_.id)
    events = db.session.scalars(
        select(AuditEvent.action).where(AuditEvent.action.like("%reversed"))
    ).all()
    assert sorted(events) == ["payment.reversed", "repayment.reversed"]


def test_a_lost_payment_the_statement_shows_reversed_is_never_posted(
    runner, tmp_path, shortcode, book
):
    lines = [
        payment("TK6GONE001", at(0), "3000.00", "LOAN-000123"),
        Line("TK6GONER01", at(10), paid_in=D("-3000.00"), linked="TK6GONE001"),  # negative Paid In
    ]
    summary = run(runner, write_csv(tmp_path / "s.csv", lines))
    assert summary["gaps_filled"] == 1 and summary["reversals"] == 1
    gone = payment_by_receipt("TK6GONE001")
    assert gone.status == "reversed" and gone.repayments == []
    assert db.session.get(Loan, book.id).paid == D("0.00")
    assert count(C2BPayment) == 1  # the reversal is not a payment


def test_a_reversal_of_a_receipt_never_seen_is_recorded_reversed(runner, tmp_path, shortcode, book):
    run(runner, write_csv(tmp_path / "s.csv", [reversal("TK6ONLYR01", at(5), "TK6UNSEEN1", "700")]))
    unseen = payment_by_receipt("TK6UNSEEN1")
    assert (unseen.status, unseen.amount, unseen.repayments) == ("reversed", D("700.00"), [])
    # the payment's own row in a later statement changes nothing
    later = run(
        runner, write_csv(tmp_path / "t.csv", [payment("TK6UNSEEN1", at(1), "700", "LOAN-000123")])
    )
    assert later["gaps_filled"] == 0 and later["already_recorded"] == 1
    assert payment_by_receipt("TK6UNSEEN1").status == "reversed"
    assert db.session.get(Loan, book.id).paid == 0


def test_a_reversal_without_a_link_waits_for_a_person(runner, tmp_path, shortcode, book):
    line = Line("TK6NOLINK1", at(5), reason="Reversal", withdrawn=D("100.00"), details="Reversal")
    summary = run(runner, write_csv(tmp_path / "s.csv", [line]))
    assert summary["review"] == 1
    stored = db.session.scalars(select(StatementLine)).one()
    assert stored.outcome == "review" and "Linked Transaction ID" in stored.note


def test_a_recorded_receipt_with_another_amount_or_account_is_flagged(
    runner, tmp_path, confirm, book
):
    confirm(c2b_body(TransID="TK6DIFF001", TransAmount="500.00", BillRefNumber="LOAN-000123"))
    confirm(c2b_body(TransID="TK6DIFF002", TransAmount="600.00", BillRefNumber="LOAN-000123"))
    confirm(c2b_body(TransID="TK6SAME001", TransAmount="700.00", BillRefNumber="LOAN-000123"))
    lines = [
        payment("TK6DIFF001", at(0), "5000.00", "LOAN-000123"),
        payment("TK6DIFF002", at(1), "600.00", "LOAN-999999"),
        payment("TK6SAME001", at(2), "700.00", " loan-000123 "),
    ]
    summary = run(runner, write_csv(tmp_path / "s.csv", lines))
    assert summary["review"] == 2 and summary["already_recorded"] == 3
    assert payment_by_receipt("TK6DIFF001").status == "review"
    assert payment_by_receipt("TK6DIFF002").status == "review"
    assert payment_by_receipt("TK6SAME001").status == "posted"
    notes = db.session.scalars(select(StatementLine.note).where(StatementLine.outcome == "differs"))
    assert any("5000.00" in note and "500.00" in note for note in notes)


def test_daraja_masking_on_the_statement_still_finds_the_borrower(
    runner, tmp_path, shortcode, make_borrower, make_loan
):
    jackline = make_borrower("Jackline Achieng", phones=("0711222013",))
    loan = make_loan(borrower=jackline, number="LOAN-000777")
    line = payment("TK6MASK001", at(0), "450.00", "", party="2547 ***** 013 - JACKLINE")
    run(runner, write_csv(tmp_path / "s.csv", [line]))
    found = payment_by_receipt("TK6MASK001")
    assert (found.status, found.rule, found.borrower_id) == ("posted", "single_loan", jackline.id)
    assert db.session.get(Loan, loan.id).paid == D("450.00")


def test_b2c_payouts_are_matched_to_their_disbursements(runner, tmp_path, shortcode, book):
    from lenders.disbursements import Disbursement

    paid = Disbursement(
        loan_id=book.id,
        amount=D("5000.00"),
        phone="254712345678",
        requested_by_id=book.officer_id,
        status="completed",
        originator_conversation_id="MJ000001-1-test",
        receipt="TK6B2CX001",
    )
    db.session.add(paid)
    db.session.commit()
    payout = Line("TK6B2CX001", at(3), reason="Business Payment to Customer via API",
                  withdrawn=D("5000.00"))  # fmt: skip
    stranger = Line("TK6B2CX002", at(4), reason="Business Payment to Customer via API",
                    withdrawn=D("700.00"))  # fmt: skip
    run(runner, write_csv(tmp_path / "s.csv", [payout, stranger]))
    lines = {line.receipt: line for line in db.session.scalars(select(StatementLine))}
    assert (lines["TK6B2CX001"].outcome, lines["TK6B2CX001"].disbursement_id) == (
        "disbursement",
        paid.id,
    )
    assert (lines["TK6B2CX002"].outcome, lines["TK6B2CX002"].disbursement_id) == ("listed", None)
    assert count(C2BPayment) == 0


def test_a_day_of_lost_callbacks_reversals_and_transfers_ends_with_the_book_right(
    runner, tmp_path, client, shortcode, make_borrower, make_loan
):
    """200 customers pay; 10% of the confirmations never arrive, 2% of the payments are
    reversed, and the lender moves its own money in twice. After the statement: every
    customer payment posted once, every reversal undone, nothing else posted."""
    from tests.payments.conftest import post_callback

    rng = random.Random(1501)
    loans = [
        make_loan(borrower=make_borrower(f"Borrower {n}", phones=(f"0710{n:06d}",)),
                  number=f"LOAN-{n + 1:06d}", principal="50000.00", interest="0", fees="0")
        for n in range(40)
    ]  # fmt: skip
    lines, delivered, reversed_receipts = [], [], set()
    for n in range(200):
        loan = rng.choice(loans)
        amount = D(rng.randrange(100, 2000))
        receipt = f"TK7{n:07d}"
        lines.append(payment(receipt, at(n), amount, loan.number))
        if rng.random() >= 0.10:
            delivered.append(c2b_body(TransID=receipt, TransAmount=f"{amount:.2f}",
                                      BillRefNumber=loan.number))  # fmt: skip
        if rng.random() < 0.02 or n in (3, 150):
            reversed_receipts.add(receipt)
            lines.append(reversal(f"TK8{n:07d}", at(n + 5), receipt, amount))
    lines += [transfer_in("TK9ORG0001", at(20), "250000"), transfer_in("TK9ORG0002", at(99), "100")]
    for body in delivered:
        assert post_callback(client, shortcode, "confirmation", body).status_code == 200
    summary = run(runner, write_csv(tmp_path / "s.csv", with_balances(lines)))
    assert summary["gaps_filled"] == 200 - len(delivered)
    assert summary["not_repayments"]["organisation_transfer"] == 2
    db.session.expire_all()
    payments = {p.trans_id: p for p in db.session.scalars(select(C2BPayment))}
    assert set(payments) == {ln.receipt for ln in lines if ln.reason == "Pay Bill Online"}
    for receipt, p in payments.items():
        live = [r for r in p.repayments if not r.reversed]
        if receipt in reversed_receipts:
            assert p.status == "reversed" and live == [], receipt
        else:
            assert p.status == "posted" and sum(r.amount + r.to_credit for r in live) == p.amount
    expected = sum((p.amount for r, p in payments.items() if r not in reversed_receipts), D(0))
    assert sum((db.session.get(Loan, x.id).paid for x in loans), D(0)) == expected
    assert all(loan_is_balanced(db.session.get(Loan, x.id)) for x in loans)
    references = db.session.scalars(
        select(Repayment.reference).where(Repayment.reversed_at.is_(None))
    ).all()
    assert len(references) == len(set(references))  # each posted once


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
    path = write_csv(tmp_path / "s.csv", [payment("TK6LATE001", at(0), "10")])
    path.write_text("\n" * 30 + path.read_text(encoding="utf-8-sig"), encoding="utf-8")
    summary = run(runner, path)
    assert summary["gaps_filled"] == 0 and "first 30 rows" in summary["errors"][0]


def test_a_statement_over_the_row_limit_imports_nothing(
    runner, tmp_path, shortcode, book, monkeypatch
):
    monkeypatch.setattr(statement_file, "MAX_ROWS", 4)
    lines = [payment(f"TK6OVER{n:03d}", at(n), "10", "LOAN-000123") for n in range(5)]
    summary = run(runner, write_csv(tmp_path / "s.csv", lines))
    assert summary["gaps_filled"] == 0 and "more than 4 rows" in summary["errors"][0]
    assert count(C2BPayment) == 0


def test_a_workbook_that_unpacks_into_too_much_is_refused(runner, tmp_path, shortcode, book):
    header = "".join(
        f'<c r="{chr(65 + i)}2" t="inlineStr"><is><t>{name}</t></is></c>'
        for i, name in enumerate(HEADER)
    )
    bomb = {"xl/media/padding.bin": b"\0" * (statement_file.MAX_UNPACKED_BYTES + 1)}
    path = rewritten_xlsx(tmp_path, f'<row r="2">{header}</row>', extra=bomb)
    assert path.stat().st_size < 1_000_000
    summary = run(runner, path)
    assert summary["rows"] == 0 and "unpacks to" in summary["errors"][0]


def test_a_row_reaching_the_last_column_is_read_as_a_statement_row(
    runner, tmp_path, shortcode, book
):
    header = "".join(
        f'<c r="{chr(65 + i)}1" t="inlineStr"><is><t>{name}</t></is></c>'
        for i, name in enumerate(HEADER)
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
