"""Reading statement files as real portals write them: every variant of layout, date, amount,
sign and masked payer, and each row's class. Pure: no database."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from openpyxl import Workbook

from payments.statement_file import UnreadableStatement, amount, moment, statement_rows
from payments.statement_rows import BadRow, classify, read_row, split_party
from payments.statements import read_statement

HEADER = (
    "Receipt No.,Completion Time,Initiation Time,Details,Transaction Status,Paid In,"
    "Withdrawn,Balance,Balance Confirmed,Reason Type,Other Party Info,"
    "Linked Transaction ID,A/C No."
)


def csv_file(tmp_path, lines: list[str], *, preamble: str = "", bom: bool = False, name="s.csv"):
    path = tmp_path / name
    text = preamble + HEADER + "\n" + "\n".join(lines) + "\n"
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode("utf-8"))
    return path


def one(tmp_path, line: str, **kw):
    rows, errors, total = read_statement(csv_file(tmp_path, [line], **kw))
    assert total == 1 and not errors, errors
    return rows[0]


# --- amounts and times ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1500", "1500.00"),
        ("1,131,340.00", "1131340.00"),
        ("-60.00", "-60.00"),
        ("(60.00)", "-60.00"),
        ("KES 1,500.50", "1500.50"),
        ("1500.0", "1500.00"),
        ("0.30000000000000004", "0.30"),  # an Excel number's float noise
        (" 2 500 ", "2500.00"),
    ],
)
def test_amounts_as_portals_write_them(text, value):
    assert amount(text) == Decimal(value)


def test_an_empty_amount_is_none_and_junk_is_refused():
    assert amount("") is None and amount("  ") is None
    with pytest.raises(ArithmeticError):
        amount("lots")


@pytest.mark.parametrize(
    "text",
    [
        "15-01-2025 14:30:12",
        "15-01-2025 14:30",
        "2025-01-15 14:30:12",
        "2025-01-15T14:30:12",
        "15/01/2025 14:30:12",
        "15/01/2025 2:30:12 PM",
        "45672.6043055556",  # an Excel date cell's serial number: 15 Jan 2025 14:30:12
    ],
)
def test_both_date_orders_and_excel_serials_are_nairobi_time(text):
    expected = datetime(2025, 1, 15, 11, 30, 12 if text.count(":") == 2 or "." in text else 0)
    assert moment(text) == expected.replace(tzinfo=UTC)


def test_an_impossible_date_is_refused_with_its_text():
    with pytest.raises(ValueError, match="31-02-2025"):
        moment("31-02-2025 10:00")


# --- the payer --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "number", "names"),
    [
        ("254712345678 - JANE WANJIKU", "254712345678", ("JANE", "WANJIKU")),
        ("2547****5678 - JANE", "2547****5678", ("JANE",)),
        ("2547 ***** 013 - JACKLINE", "2547 ***** 013", ("JACKLINE",)),
        ("2547XXXXXXXX- Customer Credits", "2547XXXXXXXX", ("Customer", "Credits")),
        ("600000 - Demo Lender Ltd", "600000", ("Demo", "Lender", "Ltd")),
        ("Bank", "", ("Bank",)),
    ],
)
def test_other_party_info_in_every_form(text, number, names):
    assert split_party(text) == (number, names)


def test_daraja_masking_keeps_the_name_and_digits_for_matching(tmp_path):
    row = one(
        tmp_path,
        "TK6MASK001,15-01-2025 15:00:00,,Pay Bill,Completed,500.00,,,TRUE,Pay Bill Online,"
        "2547 ***** 013 - JACKLINE,,LOAN-1",
    )
    values = row.payment_values(1, "received", datetime.now(UTC))
    assert (values["msisdn"], values["msisdn_form"], values["first_name"]) == (
        "2547 ***** 013",
        "masked",
        "JACKLINE",
    )


# --- classes --------------------------------------------------------------------------

CASES = [
    # reason type, details, paid in, withdrawn, party, kind
    (
        "Pay Bill Online",
        "Pay Bill from 2547...",
        "500",
        "",
        "254712345678 - JANE",
        "customer_payment",
    ),
    ("Pay Utility", "", "500", "", "254712345678 - JANE", "customer_payment"),
    ("Pay Utility with OD Online", "", "500", "", "2547****5678 - JANE", "customer_payment"),
    ("Pay Merchant", "", "500", "", "2547****5678 - JANE", "customer_payment"),
    ("Reversal", "Reversal of TK6AAA0001", "", "500", "254712345678 - JANE", "reversal"),
    ("Pay Bill Online", "", "-500", "", "254712345678 - JANE", "reversal"),  # negative Paid In
    (
        "Organization Funds Transfer",
        "",
        "50000",
        "",
        "600111 - Demo Lender Ltd",
        "organisation_transfer",
    ),
    ("Business Pay Bill", "", "2000", "", "600222 - Other Org", "organisation_transfer"),
    ("Business Payment to Customer via API", "", "", "-3000", "254712345678 - JANE", "b2c"),
    ("Salary Payment via API", "", "", "3000", "254712345678 - JANE", "b2c"),
    ("Pay Bill Charge", "", "", "-12.00", "", "charge"),
    ("Business Payment Charge", "", "", "33", "", "charge"),
    ("Withdraw Funds to Bank", "", "", "-10000", "Bank", "settlement"),
    ("Organization Settlement", "", "", "10000", "", "settlement"),
]


@pytest.mark.parametrize(("reason", "details", "paid_in", "withdrawn", "party", "kind"), CASES)
def test_each_row_is_classified_by_its_words_and_sign(
    tmp_path, reason, details, paid_in, withdrawn, party, kind
):
    row = one(
        tmp_path,
        f"TK6CLS0001,15-01-2025 15:00:00,,{details},Completed,{paid_in},{withdrawn},,TRUE,"
        f"{reason},{party},,",
    )
    assert row.kind == kind
    assert row.paid_in >= 0 and row.withdrawn >= 0 and (row.paid_in or row.withdrawn)


def test_a_failed_row_is_failed_whatever_it_says(tmp_path):
    row = one(
        tmp_path,
        "TK6FAIL001,15-01-2025 16:30:00,,Pay Bill,Failed,300.00,,1700.00,TRUE,"
        "Pay Bill Online,254712345678 - JANE,,LOAN-000123",
    )
    assert row.kind == "failed" and row.paid_in == Decimal("300.00")


def test_a_reversal_names_its_original_by_link_or_by_its_details(tmp_path):
    linked = one(
        tmp_path,
        "TK6REV0001,15-01-2025 18:00,,Reversal,Completed,,-500,,TRUE,Reversal,"
        "254712345678 - JANE,tk6orig001,",
    )
    from_details = one(
        tmp_path,
        "TK6REV0002,15-01-2025 18:00,,Reversal of transaction TK6ORIG002 to 2547...,"
        "Completed,,500,,TRUE,Reversal,254712345678 - JANE,,",
    )
    assert linked.linked_receipt == "TK6ORIG001" and from_details.linked_receipt == "TK6ORIG002"


def test_unknown_words_are_decided_by_the_party_and_say_so():
    kind, note = classify("Completed", "Something New", "", Decimal(5), Decimal(0), True)
    assert kind == "customer_payment" and "unknown type 'Something New'" in note
    kind, _ = classify("Completed", "Something New", "", Decimal(5), Decimal(0), False)
    assert kind == "organisation_transfer"
    kind, _ = classify("Completed", "Something New", "", Decimal(0), Decimal(5), False)
    assert kind == "settlement"


def test_account_from_details_when_there_is_no_ac_column(tmp_path):
    row = one(
        tmp_path,
        "TK6DET0001,15-01-2025 15:00,,Pay Bill from 2547XXXXXXXX - Customer Credits Acc. "
        "LOAN-000123,Completed,100,,66,TRUE,Pay Utility,2547XXXXXXXX- Customer Credits,,",
    )
    assert row.bill_ref == "LOAN-000123" and row.kind == "customer_payment"


# --- the file ---------------------------------------------------------------------------


def test_preamble_rows_a_bom_and_newest_first_are_all_read(tmp_path):
    path = csv_file(
        tmp_path,
        [
            "TK6NEW0002,16-01-2025 10:00:00,,,Completed,200.00,,300.00,TRUE,Pay Bill Online,"
            "254712345678 - JANE,,L-2",
            "TK6OLD0001,15-01-2025 10:00:00,,,Completed,100.00,,100.00,TRUE,Pay Bill Online,"
            "254712345678 - JANE,,L-1",
        ],
        preamble="Organization Name,Demo Lender\nPaybill,600984\nStatement,,,\n\n",
        bom=True,
    )
    rows, errors, total = read_statement(path)
    assert total == 2 and not errors
    assert [r.receipt for r in rows] == ["TK6NEW0002", "TK6OLD0001"]
    assert rows[0].completed_at > rows[1].completed_at


def test_an_xlsx_with_date_cells_and_numbers_reads_as_its_csv_twin(tmp_path):
    line = (
        "TK6TWIN001,15-01-2025 15:00:00,15-01-2025 15:00:00,Pay Bill,Completed,800.00,,"
        "2700.00,TRUE,Pay Bill Online,2547 ***** 013 - JACKLINE,,LOAN-000123"
    )
    csv_rows, _, _ = read_statement(csv_file(tmp_path, [line]))
    book = Workbook()
    sheet = book.active
    sheet.append(["Organization Name", "Demo Lender"])
    sheet.append(HEADER.split(","))
    cells: list = line.split(",")
    cells[1] = cells[2] = datetime(2025, 1, 15, 15, 0, 0)  # Excel date cells
    cells[5], cells[7], cells[8] = 800, 2700.0, True
    sheet.append(cells)
    path = tmp_path / "s.xlsx"
    book.save(path)
    xlsx_rows, errors, _ = read_statement(path)
    assert not errors and xlsx_rows[0].line == 3  # below the preamble row
    assert [replace(r, line=0) for r in xlsx_rows] == [replace(r, line=0) for r in csv_rows]


def test_bad_rows_are_reported_by_line_and_the_rest_read(tmp_path):
    path = csv_file(
        tmp_path,
        [
            "TK6GOOD001,15-01-2025 15:00,,,Completed,100,,,TRUE,Pay Bill Online,2547****5678 - A,,",
            "TK6JUNK001,15-01-2025 15:00,,,Completed,lots,,,TRUE,Pay Bill Online,x,,",
            ",15-01-2025 15:00,,,Completed,100,,,TRUE,Pay Bill Online,x,,",
            "TK6TIME001,yesterday,,,Completed,100,,,TRUE,Pay Bill Online,x,,",
        ],
        preamble="Paybill,600984\n",
    )
    rows, errors, total = read_statement(path)
    assert total == 4 and [r.receipt for r in rows] == ["TK6GOOD001"]
    assert errors == [
        "line 4: bad amount 'lots' in Paid In",
        "line 5: no receipt number ('')",
        "line 6: unreadable time 'yesterday'",
    ]


def test_a_file_without_the_header_says_what_it_looked_for(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("name,amount\nx,1\n")
    with pytest.raises(UnreadableStatement, match="Receipt No."):
        statement_rows(path)


def test_money_both_in_and_out_on_one_row_is_refused():
    columns = {"receipt": 0, "completed": 1, "paid_in": 2, "withdrawn": 3, "reason": 4}
    with pytest.raises(BadRow, match="both in and out"):
        read_row(7, ["TK6BOTH001", "15-01-2025 10:00", "10", "5", "Pay Bill"], columns)
