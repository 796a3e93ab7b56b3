"""The loan-book file (CONTRACT §6): import all rows or none, every bad row reported with
its line, and the export that lenders hand to their accountants.

Expectations are worked out from the contract (schedules, allocation, totals), not read
back from the code."""

from __future__ import annotations

import calendar
import csv
import io
import re
from datetime import date, timedelta
from decimal import ROUND_DOWN, Decimal

import pytest
from sqlalchemy import func, select

from lenders.book import post_repayment, write_off_loan
from lenders.csvfile import write_csv
from lenders.exports import export_loans
from lenders.extensions import db
from lenders.importer import import_loans
from lenders.models import (
    Borrower,
    Loan,
    StaffUser,
)
from tests.lenders.conftest import COLUMNS, NAMES, book_counts, csv_text, loan_row

pytestmark = pytest.mark.both_databases

TODAY = date(2025, 6, 1)
REQUIRED = COLUMNS[:10]
EXPORT_HEADER = [
    "loan_number",
    "borrower_name",
    "national_id",
    "status",
    "total_due",
    "paid",
    "outstanding",
    "next_due_on",
    "disbursement_status",
    "disbursement_receipt",
]
CENT = Decimal("0.01")


# --- building files ------------------------------------------------------------------


def run_import(text: str, **kwargs):
    kwargs.setdefault("today", TODAY)
    return import_loans(db.session, io.StringIO(text, newline=""), **kwargs)


def import_ok(rows: list[dict[str, str]], columns=COLUMNS, **kwargs):
    result = run_import(csv_text(rows, columns), **kwargs)
    assert result.ok, result.errors
    db.session.commit()
    return result


def loan_by_number(number: str) -> Loan:
    return db.session.scalars(select(Loan).where(Loan.number == number)).one()


def error_lines(errors: list[str]) -> list[int]:
    """The line number of each error; every error must say 'line N: reason'."""
    lines = []
    for error in errors:
        match = re.match(r"^line (\d+): \S", error)
        assert match, f"error without its line number: {error!r}"
        lines.append(int(match.group(1)))
    return lines


def export_rows() -> list[dict[str, str]]:
    out = io.StringIO()
    write_csv(export_loans(db.session), out)
    reader = csv.DictReader(io.StringIO(out.getvalue()))
    assert reader.fieldnames == EXPORT_HEADER
    return list(reader)


# --- the contract's schedule, worked out independently ------------------------------


def spec_amounts(total: Decimal, count: int) -> list[Decimal]:
    base = (total / count).quantize(CENT, rounding=ROUND_DOWN)
    return [base] * (count - 1) + [total - base * (count - 1)]


def spec_dates(disbursed: date, count: int, frequency: str) -> list[date]:
    if frequency == "weekly":
        return [disbursed + timedelta(weeks=n) for n in range(1, count + 1)]
    dates = []
    for n in range(1, count + 1):
        year, month0 = divmod(disbursed.month - 1 + n, 12)
        year += disbursed.year
        last_day = calendar.monthrange(year, month0 + 1)[1]
        dates.append(date(year, month0 + 1, min(disbursed.day, last_day)))
    return dates


def spec_next_due(
    total: Decimal, disbursed: date, count: int, frequency: str, paid: Decimal
) -> str:
    running = Decimal(0)
    for amount, due in zip(
        spec_amounts(total, count), spec_dates(disbursed, count, frequency), strict=True
    ):
        running += amount
        if running > paid:
            return due.isoformat()
    return ""


# --- a good file ---------------------------------------------------------------------


def test_good_file_books_every_loan_with_its_borrower_and_amounts(app):
    result = import_ok(
        [
            loan_row(1, principal="20000.00", interest="2400.00", fees="500.00"),
            loan_row(
                2,
                principal="5000",
                interest="600",
                fees="0",
                frequency="weekly",
                installments="8",
                disbursed_on="2025-03-03",
            ),
        ]
    )

    assert result.loans == 2
    assert result.borrowers_created == 2
    first, second = loan_by_number("LOAN-000001"), loan_by_number("LOAN-000002")
    assert (first.principal, first.interest, first.fees) == (
        Decimal("20000.00"),
        Decimal("2400.00"),
        Decimal("500.00"),
    )
    assert first.total_due == Decimal("22900.00")
    assert first.outstanding == Decimal("22900.00")
    assert first.paid == 0
    assert first.status == "active"
    assert first.borrower.name == NAMES[1]
    assert first.borrower.national_id == "21000001"
    assert second.total_due == Decimal("5600.00")
    assert second.frequency == "weekly"
    assert second.disbursed_on == date(2025, 3, 3)
    assert len(second.installments) == 8
    assert second.borrower.national_id == "21000002"


PHONE_FORMS = [
    ("0712345678", "254712345678"),
    ("+254712345678", "254712345678"),
    ("254712345678", "254712345678"),
    ("0712 345 678", "254712345678"),
    ("+254 712 345 678", "254712345678"),
    ("0110123456", "254110123456"),
    ("+254110123456", "254110123456"),
]


def test_phone_in_any_kenyan_form_is_stored_as_the_12_digit_number(app):
    import_ok([loan_row(n, phone=typed) for n, (typed, _) in enumerate(PHONE_FORMS, start=1)])

    for n, (typed, canonical) in enumerate(PHONE_FORMS, start=1):
        borrower = loan_by_number(f"LOAN-{n:06d}").borrower
        assert [p.number for p in borrower.phones] == [canonical], typed


def test_several_phones_separated_by_semicolons_all_belong_to_the_borrower(app):
    import_ok([loan_row(1, phone="0712345678; +254722000111;0110123456;254712345678")])

    borrower = loan_by_number("LOAN-000001").borrower
    assert sorted(p.number for p in borrower.phones) == [
        "254110123456",
        "254712345678",
        "254722000111",
    ]


SPLITS = [  # principal, interest, fees, installments, expected amounts
    ("1000.00", "0", "0", 3, ["333.33", "333.33", "333.34"]),
    ("900", "90", "10", 4, ["250.00"] * 4),
    ("1500.00", "180.00", "20.00", 6, ["283.33"] * 5 + ["283.35"]),
    ("9000", "900", "100", 12, ["833.33"] * 11 + ["833.37"]),
    ("777.77", "0", "0", 1, ["777.77"]),
]


def test_installments_are_equal_and_the_last_takes_the_rounding(app):
    import_ok(
        [
            loan_row(n, principal=principal, interest=interest, fees=fees, installments=str(count))
            for n, (principal, interest, fees, count, _) in enumerate(SPLITS, start=1)
        ]
    )

    for n, (principal, _, _, count, expected) in enumerate(SPLITS, start=1):
        loan = loan_by_number(f"LOAN-{n:06d}")
        amounts = [i.amount_due for i in loan.installments]
        assert amounts == [Decimal(a) for a in expected], (principal, count)
        assert sum(amounts) == loan.total_due
        assert loan.installment_count == count


SCHEDULES = [  # disbursed_on, frequency as typed, installments, expected due dates
    ("2025-02-24", "weekly", 4, ["2025-03-03", "2025-03-10", "2025-03-17", "2025-03-24"]),
    ("2024-12-28", "weekly", 2, ["2025-01-04", "2025-01-11"]),
    ("2025-01-31", "monthly", 3, ["2025-02-28", "2025-03-31", "2025-04-30"]),
    ("2024-01-31", "monthly", 2, ["2024-02-29", "2024-03-31"]),
    ("2024-11-30", "monthly", 3, ["2024-12-30", "2025-01-30", "2025-02-28"]),
    ("2025-01-15", "monthly", 12, [f"2025-{m:02d}-15" for m in range(2, 13)] + ["2026-01-15"]),
    ("2025-01-01", "Weekly", 2, ["2025-01-08", "2025-01-15"]),
    ("2025-03-31", "MONTHLY", 2, ["2025-04-30", "2025-05-31"]),
]


def test_due_dates_start_one_period_after_disbursement_and_keep_the_day(app):
    import_ok(
        [
            loan_row(n, disbursed_on=disbursed, frequency=frequency, installments=str(count))
            for n, (disbursed, frequency, count, _) in enumerate(SCHEDULES, start=1)
        ]
    )

    for n, (disbursed, frequency, _, expected) in enumerate(SCHEDULES, start=1):
        loan = loan_by_number(f"LOAN-{n:06d}")
        assert loan.frequency == frequency.lower()
        assert [i.due_on.isoformat() for i in loan.installments] == expected, disbursed


def test_amount_already_paid_goes_to_the_oldest_installments(app):
    import_ok(
        [
            loan_row(
                1,
                principal="1000.00",
                interest="0",
                fees="0",
                installments="3",
                disbursed_on="2025-01-31",
                amount_paid="400.00",
            )
        ]
    )

    loan = loan_by_number("LOAN-000001")
    assert [i.amount_paid for i in loan.installments] == [
        Decimal("333.33"),
        Decimal("66.67"),
        Decimal("0.00"),
    ]
    assert loan.paid == Decimal("400.00")
    assert loan.outstanding == Decimal("600.00")
    assert loan.status == "active"
    assert loan.next_due.due_on == date(2025, 3, 31)


def test_amount_paid_covering_whole_installments_moves_next_due_to_the_following_one(app):
    import_ok(
        [
            loan_row(
                1,
                principal="1000.00",
                interest="0",
                fees="0",
                installments="4",
                frequency="weekly",
                disbursed_on="2025-01-01",
                amount_paid="500.00",
            )
        ]
    )

    loan = loan_by_number("LOAN-000001")
    assert [i.amount_paid for i in loan.installments] == [
        Decimal("250.00"),
        Decimal("250.00"),
        Decimal("0.00"),
        Decimal("0.00"),
    ]
    (row,) = export_rows()
    assert row["next_due_on"] == "2025-01-22"
    assert (row["paid"], row["outstanding"]) == ("500.00", "500.00")


def test_fully_paid_loan_is_closed_with_nothing_outstanding(app):
    import_ok(
        [
            loan_row(
                1,
                principal="5000",
                interest="600",
                fees="200",
                installments="3",
                amount_paid="5800.00",
            )
        ]
    )

    loan = loan_by_number("LOAN-000001")
    assert loan.status == "closed"
    assert loan.outstanding == 0
    assert all(i.amount_paid == i.amount_due for i in loan.installments)
    (row,) = export_rows()
    assert (row["status"], row["outstanding"], row["next_due_on"]) == ("closed", "0.00", "")


def test_optional_columns_may_be_left_out(app):
    result = import_ok([loan_row(1)], columns=REQUIRED)

    loan = loan_by_number("LOAN-000001")
    assert result.loans == 1
    assert loan.paid == 0
    assert loan.officer is None


def test_new_officer_email_becomes_an_officer_account_used_by_every_row(app):
    before = db.session.scalar(select(func.count()).select_from(StaffUser))
    result = import_ok(
        [
            loan_row(1, officer_email="wanjiru@lender.test"),
            loan_row(2, officer_email="wanjiru@lender.test"),
        ]
    )

    officers = db.session.scalars(
        select(StaffUser).where(func.lower(StaffUser.email) == "wanjiru@lender.test")
    ).all()
    assert len(officers) == 1
    assert officers[0].role == "officer"
    assert result.officers_created == 1
    assert db.session.scalar(select(func.count()).select_from(StaffUser)) == before + 1
    assert loan_by_number("LOAN-000001").officer_id == officers[0].id
    assert loan_by_number("LOAN-000002").officer_id == officers[0].id


def test_known_officer_email_is_linked_without_a_new_account(app, make_staff):
    officer = make_staff("officer", email="otieno@lender.test")
    before = db.session.scalar(select(func.count()).select_from(StaffUser))

    result = import_ok([loan_row(1, officer_email="Otieno@Lender.test")])

    assert result.officers_created == 0
    assert db.session.scalar(select(func.count()).select_from(StaffUser)) == before
    assert loan_by_number("LOAN-000001").officer_id == officer.id


def test_same_national_id_on_two_rows_is_one_borrower_with_both_loans_and_all_phones(app):
    result = import_ok(
        [
            loan_row(1, national_id="23456789", borrower_name="Jane Wanjiku", phone="0712345678"),
            loan_row(2, national_id="87654321", borrower_name="John Kamau"),
            loan_row(
                3,
                national_id="23456789",
                borrower_name="Jane Wanjiku",
                phone="0722000111;+254712345678",
            ),
        ]
    )

    assert result.borrowers_created == 2
    jane = db.session.scalars(select(Borrower).where(Borrower.national_id == "23456789")).one()
    assert sorted(loan.number for loan in jane.loans) == ["LOAN-000001", "LOAN-000003"]
    assert sorted(p.number for p in jane.phones) == ["254712345678", "254722000111"]


def test_borrower_already_in_the_book_gets_the_loan_and_only_new_phones(app, make_borrower):
    jane = make_borrower("Jane Wanjiku", national_id="23456789", phones=("0712345678",))

    result = import_ok(
        [
            loan_row(
                1,
                national_id="23456789",
                borrower_name="Jane Wanjiku",
                phone="+254712345678;0733000222",
            )
        ]
    )

    assert result.borrowers_created == 0
    db.session.refresh(jane)
    assert [loan.number for loan in jane.loans] == ["LOAN-000001"]
    assert sorted(p.number for p in jane.phones) == ["254712345678", "254733000222"]
    assert db.session.scalar(select(func.count()).select_from(Borrower)) == 1


def test_columns_may_come_in_any_order(app):
    shuffled = (
        "frequency",
        "amount_paid",
        "phone",
        "loan_number",
        "fees",
        "installments",
        "national_id",
        "officer_email",
        "disbursed_on",
        "interest",
        "borrower_name",
        "principal",
    )
    assert sorted(shuffled) == sorted(COLUMNS)

    import_ok(
        [
            loan_row(
                1, principal="1200", interest="0", fees="0", installments="3", amount_paid="100"
            )
        ],
        columns=shuffled,
    )

    loan = loan_by_number("LOAN-000001")
    assert loan.total_due == Decimal("1200.00")
    assert loan.paid == Decimal("100.00")
    assert loan.borrower.national_id == "21000001"
    assert [i.amount_due for i in loan.installments] == [Decimal("400.00")] * 3


def test_a_loan_disbursed_after_today_is_pending(app):
    import_ok([loan_row(1, disbursed_on=(TODAY + timedelta(days=3)).isoformat())])

    assert loan_by_number("LOAN-000001").status == "pending"
    assert export_rows()[0]["status"] == "pending"


# --- all or nothing, every bad row reported ------------------------------------------


BAD_ROWS = [
    pytest.param({"phone": "0812345678"}, ["phone", "0812345678"], id="phone-0812345678"),
    pytest.param({"phone": "12345"}, ["phone", "12345"], id="phone-12345"),
    pytest.param({"phone": "abc"}, ["phone", "abc"], id="phone-abc"),
    pytest.param(
        {"disbursed_on": "2025-13-01"}, ["disbursed_on", "2025-13-01"], id="date-month-13"
    ),
    pytest.param(
        {"disbursed_on": "15/01/2025"}, ["disbursed_on", "15/01/2025"], id="date-day-first"
    ),
    pytest.param({"disbursed_on": ""}, ["disbursed_on"], id="date-empty"),
    pytest.param({"frequency": "daily"}, ["frequency", "daily"], id="frequency-daily"),
    pytest.param({"interest": "-5"}, ["interest", "negative"], id="interest-negative"),
    pytest.param({"principal": "0"}, ["principal"], id="principal-zero"),
    pytest.param({"amount_paid": "10000.01"}, ["amount_paid"], id="paid-over-total"),
    pytest.param({"installments": "0"}, ["installments"], id="installments-0"),
    pytest.param({"installments": "x"}, ["installments"], id="installments-x"),
    # what an attacker's file tries next: each gets its line, none a 500
    pytest.param(
        {"disbursed_on": "9999-12-31", "installments": "520"},
        ["520 monthly", "9999"],
        id="schedule-past-9999",
    ),
    pytest.param(
        {"disbursed_on": "9999-06-01", "installments": "520", "frequency": "weekly"},
        ["520 weekly", "9999"],
        id="weekly-past-9999",
    ),
    pytest.param({"principal": "1e9999999"}, ["principal", "too large"], id="principal-1e9999999"),
    pytest.param({"fees": "1e-9999999"}, ["fees"], id="fees-1e-9999999"),
    pytest.param({"interest": "NaN"}, ["interest"], id="interest-nan"),
    pytest.param({"installments": "²"}, ["installments"], id="installments-superscript"),
    pytest.param({"borrower_name": "Jane\x00Doe"}, ["borrower_name", "U+0000"], id="name-nul"),
    pytest.param(
        {"borrower_name": "Jane \u202eikujnaW"}, ["borrower_name", "U+202E"], id="name-bidi"
    ),
    pytest.param(
        {"borrower_name": "Jane\u2028Wanjiku"}, ["borrower_name", "U+2028"], id="name-line-sep"
    ),
    pytest.param({"loan_number": "LOAN-\u200b1"}, ["loan_number", "U+200B"], id="number-zwsp"),
    pytest.param({"officer_email": "a\x00@b.ke"}, ["officer_email"], id="email-nul"),
]


@pytest.mark.parametrize(("bad", "words"), BAD_ROWS)
def test_bad_value_is_reported_with_its_line_and_nothing_is_imported(app, bad, words):
    before = book_counts()
    text = csv_text([loan_row(1), loan_row(2), loan_row(3, **bad), loan_row(4)])

    result = run_import(text)

    assert not result.ok
    assert error_lines(result.errors) == [4]
    for word in words:
        assert word.lower() in result.errors[0].lower(), result.errors
    assert result.loans == 0
    assert book_counts() == before


MORE_BAD_ROWS = [  # (changes to a good row, words its error must contain)
    ({"phone": "0712345678;0812345678"}, ["phone", "0812345678"]),
    ({"phone": ""}, ["phone"]),
    ({"disbursed_on": "2025-02-30"}, ["disbursed_on", "2025-02-30"]),
    ({"frequency": ""}, ["frequency"]),
    ({"fees": "-100.00"}, ["fees", "negative"]),
    ({"fees": "abc"}, ["fees"]),
    ({"principal": "1500.005"}, ["principal"]),
    ({"principal": "0.00"}, ["principal"]),
    ({"principal": ""}, ["principal"]),
    ({"amount_paid": "-1"}, ["amount_paid"]),
    ({"installments": "2.5"}, ["installments"]),
    ({"installments": "-3"}, ["installments"]),
    ({"installments": ""}, ["installments"]),
    ({"loan_number": ""}, ["loan_number"]),
    ({"borrower_name": ""}, ["borrower_name"]),
    ({"national_id": ""}, ["national_id"]),
    ({"officer_email": "wanjiru-at-lender"}, ["officer_email"]),
    ({"loan_number": "LOAN-000001"}, ["LOAN-000001"]),  # the first row's number again
]


def test_every_bad_row_in_a_file_is_reported_with_its_own_line_and_reason(app):
    rows, expected = [loan_row(1)], {}
    for n, (changes, words) in enumerate(MORE_BAD_ROWS, start=2):
        if n % 3 == 0:
            rows.append(loan_row(100 + n))  # good rows in between
        rows.append(loan_row(n, **changes))
        expected[len(rows) + 1] = words  # +1: the header is line 1
    rows.append(loan_row(999))

    result = run_import(csv_text(rows))

    lines = error_lines(result.errors)
    assert sorted(lines) == sorted(expected), result.errors
    for line, error in zip(lines, result.errors, strict=True):
        for word in expected[line]:
            assert word.lower() in error.lower(), error
    assert book_counts()["Loan"] == 0


def test_one_bad_row_among_good_ones_imports_nothing(app, make_loan):
    make_loan(number="LOAN-900001")
    db.session.commit()
    before = book_counts()
    assert before["Loan"] == 1
    rows = [
        loan_row(n, officer_email="new.officer@lender.test", amount_paid="100") for n in range(1, 8)
    ]
    rows[4]["phone"] = "0812345678"

    result = run_import(csv_text(rows))

    assert error_lines(result.errors) == [6]
    db.session.rollback()
    assert book_counts() == before
    assert (
        db.session.scalar(select(StaffUser).where(StaffUser.email == "new.officer@lender.test"))
        is None
    )


def test_duplicate_loan_number_in_the_file_is_reported_on_its_second_line(app):
    result = run_import(csv_text([loan_row(1), loan_row(2), loan_row(1)]))

    assert error_lines(result.errors) == [4]
    assert "LOAN-000001" in result.errors[0]
    assert book_counts()["Loan"] == 0


def test_loan_numbers_differing_only_in_letter_case_are_duplicates_in_the_file(app):
    result = run_import(csv_text([loan_row(1), loan_row(2, loan_number="loan-000001")]))

    assert error_lines(result.errors) == [3]
    assert book_counts()["Loan"] == 0


def test_loan_number_already_in_the_book_is_reported_and_nothing_is_imported(app, make_loan):
    make_loan(number="LOAN-000002")
    before = book_counts()

    result = run_import(csv_text([loan_row(1), loan_row(2), loan_row(3)]))

    assert error_lines(result.errors) == [3]
    assert "LOAN-000002" in result.errors[0]
    assert book_counts() == before


def test_loan_number_in_the_book_in_other_letter_case_is_a_duplicate(app, make_loan):
    make_loan(number="LOAN-000002")
    before = book_counts()

    result = run_import(csv_text([loan_row(1), loan_row(2, loan_number="loan-000002")]))

    assert error_lines(result.errors) == [3]
    assert book_counts() == before


def test_same_national_id_with_another_name_in_the_file_is_reported(app):
    result = run_import(
        csv_text(
            [
                loan_row(1, national_id="23456789", borrower_name="Jane Wanjiku"),
                loan_row(2),
                loan_row(3, national_id="23456789", borrower_name="Peter Otieno"),
            ]
        )
    )

    assert error_lines(result.errors) == [4]
    assert "23456789" in result.errors[0]
    assert book_counts()["Borrower"] == 0


def test_national_id_of_a_borrower_in_the_book_with_another_name_is_reported(app, make_borrower):
    make_borrower("Jane Wanjiku", national_id="23456789")
    before = book_counts()

    result = run_import(
        csv_text(
            [
                loan_row(1),
                loan_row(2, national_id="23456789", borrower_name="Peter Otieno"),
            ]
        )
    )

    assert error_lines(result.errors) == [3]
    assert "23456789" in result.errors[0]
    assert book_counts() == before


def test_rows_clashing_with_the_book_are_reported_together_with_other_bad_rows(
    app, make_loan, make_borrower
):
    make_loan(number="LOAN-000002")
    make_borrower("Jane Wanjiku", national_id="23456789")

    result = run_import(
        csv_text(
            [
                loan_row(1),
                loan_row(2),  # already in the book
                loan_row(3, phone="abc"),
                loan_row(4, national_id="23456789", borrower_name="Peter Otieno"),
            ]
        )
    )

    assert sorted(error_lines(result.errors)) == [3, 4, 5]


def test_missing_required_column_is_reported_on_line_1_and_named(app):
    for column in REQUIRED:
        columns = tuple(c for c in COLUMNS if c != column)

        result = run_import(csv_text([loan_row(1), loan_row(2)], columns))

        assert error_lines(result.errors) == [1], column
        assert column in result.errors[0]
    result = run_import(csv_text([loan_row(1)], ("loan_number", "borrower_name", "fees")))
    assert error_lines(result.errors) == [1]
    for column in set(REQUIRED) - {"loan_number", "borrower_name", "fees"}:
        assert column in result.errors[0]
    assert book_counts()["Loan"] == 0


def test_empty_file_is_reported_on_line_1(app):
    for text in ("", "\r\n\r\n"):
        result = run_import(text)

        assert error_lines(result.errors) == [1], repr(text)
        assert result.loans == 0


def test_file_with_a_header_but_no_loans_is_an_error(app):
    for text in (",".join(COLUMNS) + "\r\n", ",".join(COLUMNS) + "\r\n\r\n,,,\r\n"):
        result = run_import(text)

        assert not result.ok, repr(text)
        assert len(error_lines(result.errors)) == 1
        assert result.loans == 0
    assert book_counts()["Loan"] == 0


def test_thousands_separator_without_quotes_shifts_the_row_and_is_reported(app):
    good = csv_text([loan_row(1)])
    bad_line = (
        "LOAN-000002,John Kamau,21000002,0722000002,9,000.00,900.00,100.00,"
        "2025-01-15,4,monthly,,\r\n"
    )

    result = run_import(good + bad_line)

    assert error_lines(result.errors) == [3]
    assert book_counts()["Loan"] == 0


def test_quoted_amount_with_thousands_separator_is_understood(app):
    import_ok([loan_row(1, principal="9,000.00")])

    assert loan_by_number("LOAN-000001").principal == Decimal("9000.00")


# --- export ----------------------------------------------------------------------------


def test_export_has_exactly_the_contract_header_even_for_an_empty_book(app):
    out = io.StringIO()
    write_csv(export_loans(db.session), out)

    assert out.getvalue().splitlines() == [",".join(EXPORT_HEADER)]


def test_export_lists_each_loan_with_status_balances_and_next_due_date(app, make_staff):
    admin = make_staff("admin")
    import_ok(
        [
            loan_row(
                1,
                principal="1500",
                interest="0",
                fees="0",
                installments="1",
                disbursed_on="2025-01-10",
            ),
            loan_row(
                2,
                principal="1000.00",
                interest="0",
                fees="0",
                installments="3",
                disbursed_on="2025-01-31",
                amount_paid="400.00",
            ),
            loan_row(
                3,
                principal="5000",
                interest="600",
                fees="200",
                installments="2",
                amount_paid="5800",
            ),
            loan_row(
                4,
                principal="2000",
                interest="200",
                fees="0",
                installments="2",
                frequency="weekly",
                disbursed_on="2025-05-01",
            ),
        ]
    )
    write_off_loan(db.session, loan_by_number("LOAN-000004"), actor=admin, reason="gone")
    db.session.commit()

    rows = {r["loan_number"]: r for r in export_rows()}

    assert rows["LOAN-000001"] == {
        "loan_number": "LOAN-000001",
        "borrower_name": NAMES[1],
        "national_id": "21000001",
        "status": "active",
        "total_due": "1500.00",
        "paid": "0.00",
        "outstanding": "1500.00",
        "next_due_on": "2025-02-10",
        "disbursement_status": "",
        "disbursement_receipt": "",
    }
    assert rows["LOAN-000002"] == {
        "loan_number": "LOAN-000002",
        "borrower_name": NAMES[2],
        "national_id": "21000002",
        "status": "active",
        "total_due": "1000.00",
        "paid": "400.00",
        "outstanding": "600.00",
        "next_due_on": "2025-03-31",
        "disbursement_status": "",
        "disbursement_receipt": "",
    }
    assert (
        rows["LOAN-000003"]["status"],
        rows["LOAN-000003"]["total_due"],
        rows["LOAN-000003"]["paid"],
        rows["LOAN-000003"]["outstanding"],
        rows["LOAN-000003"]["next_due_on"],
    ) == ("closed", "5800.00", "5800.00", "0.00", "")
    assert (
        rows["LOAN-000004"]["status"],
        rows["LOAN-000004"]["outstanding"],
        rows["LOAN-000004"]["next_due_on"],
    ) == ("written_off", "2200.00", "2025-05-08")


def test_export_follows_repayments_posted_after_import(app):
    import_ok(
        [
            loan_row(
                1,
                principal="900",
                interest="0",
                fees="0",
                installments="3",
                frequency="weekly",
                disbursed_on="2025-05-01",
            )
        ]
    )
    loan = loan_by_number("LOAN-000001")

    post_repayment(db.session, loan, Decimal("450.00"), source="manual")
    db.session.commit()
    (row,) = export_rows()
    assert (row["paid"], row["outstanding"], row["next_due_on"]) == (
        "450.00",
        "450.00",
        "2025-05-15",
    )

    post_repayment(db.session, loan, Decimal("450.00"), source="manual")
    db.session.commit()
    (row,) = export_rows()
    assert (row["status"], row["paid"], row["outstanding"], row["next_due_on"]) == (
        "closed",
        "900.00",
        "0.00",
        "",
    )


def test_import_then_export_gives_back_every_loan_and_its_totals(app):
    rows = []
    for n in range(1, 31):
        principal = Decimal(1000 + 137 * n) + Decimal(n) / 100
        interest = (principal * Decimal("0.12")).quantize(CENT)
        fees = Decimal(50 * (n % 3))
        total = principal + interest + fees
        # 40% sits well between installment boundaries whichever way cents are rounded
        paid = [Decimal(0), (total * Decimal("0.4")).quantize(CENT), total, Decimal("1.00")][n % 4]
        count = [1, 3, 4, 6, 12][n % 5]
        frequency = "weekly" if n % 2 else "monthly"
        disbursed = date(2024, 1, 1) + timedelta(days=11 * n)
        person = n % 12  # several loans per borrower
        rows.append(
            loan_row(
                n,
                borrower_name=NAMES[person % len(NAMES)] + f" {person}",
                national_id=str(40_000_000 + person),
                phone=f"07{33_000_000 + person:08d}",
                principal=str(principal),
                interest=str(interest),
                fees=str(fees),
                amount_paid=str(paid),
                installments=str(count),
                frequency=frequency,
                disbursed_on=disbursed.isoformat(),
            )
        )
    import_ok(rows)

    exported = {r["loan_number"]: r for r in export_rows()}

    assert sorted(exported) == sorted(r["loan_number"] for r in rows)
    grand_total = grand_paid = Decimal(0)
    for row in rows:
        total = Decimal(row["principal"]) + Decimal(row["interest"]) + Decimal(row["fees"])
        paid = Decimal(row["amount_paid"])
        out = exported[row["loan_number"]]
        assert out["borrower_name"] == row["borrower_name"]
        assert out["national_id"] == row["national_id"]
        assert Decimal(out["total_due"]) == total
        assert Decimal(out["paid"]) == paid
        assert Decimal(out["outstanding"]) == total - paid
        assert out["status"] == ("closed" if paid == total else "active")
        assert out["next_due_on"] == spec_next_due(
            total,
            date.fromisoformat(row["disbursed_on"]),
            int(row["installments"]),
            row["frequency"],
            paid,
        )
        for money in ("total_due", "paid", "outstanding"):
            assert re.fullmatch(r"\d+\.\d{2}", out[money]), out[money]
        grand_total += total
        grand_paid += paid
    assert sum(Decimal(r["total_due"]) for r in exported.values()) == grand_total
    assert sum(Decimal(r["paid"]) for r in exported.values()) == grand_paid
    assert db.session.scalar(select(func.count()).select_from(Borrower)) == 12
