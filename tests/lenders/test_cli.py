"""``flask lenders …`` as a lender's cron job or administrator runs it (CONTRACT §3)."""

from __future__ import annotations

import csv
import io
import re
from datetime import date
from decimal import Decimal

import pytest
from freezegun import freeze_time
from sqlalchemy import func, select

from lenders.extensions import db
from lenders.models import Borrower, Loan, StaffUser
from tests.lenders.conftest import COLUMNS, NAMES, book_counts, csv_text, loan_row

pytestmark = pytest.mark.both_databases

EXPORT_HEADER = (
    "loan_number,borrower_name,national_id,status,total_due,paid,outstanding,next_due_on,"
    "disbursement_status,disbursement_receipt"
)


def write_book(path, rows, *, columns=COLUMNS, bom=False, encoding="utf-8"):
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + csv_text(rows, columns).encode(encoding))
    return path


def import_file(runner, path):
    return runner.invoke(args=["lenders", "import-loans", str(path)])


def create_user(runner, email, *, name="Grace Admin", role="admin", password="longpassword123"):
    return runner.invoke(
        args=["lenders", "create-user", email, "--name", name, "--role", role, "--password-stdin"],
        input=password + "\n",
    )


def login(client, email, password):
    token = client.csrf_token("/login")
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token})


# --- import-loans -----------------------------------------------------------------------


def test_import_loans_books_a_good_file_and_prints_a_summary(app, runner, tmp_path):
    path = write_book(
        tmp_path / "book.csv",
        [
            loan_row(1, phone="0712345678", officer_email="wanjiru@lender.test"),
            loan_row(2, amount_paid="2500.00"),
            loan_row(3, national_id="21000001", borrower_name=NAMES[1], phone="+254722000111"),
        ],
    )

    result = import_file(runner, path)

    assert result.exit_code == 0, result.output
    assert re.search(r"\b3 loans\b", result.output), result.output
    assert db.session.scalar(select(func.count()).select_from(Loan)) == 3
    assert db.session.scalar(select(func.count()).select_from(Borrower)) == 2
    second = db.session.scalars(select(Loan).where(Loan.number == "LOAN-000002")).one()
    assert (second.paid, second.outstanding) == (Decimal("2500.00"), Decimal("7500.00"))
    first = db.session.scalars(select(Loan).where(Loan.number == "LOAN-000001")).one()
    assert sorted(p.number for p in first.borrower.phones) == ["254712345678", "254722000111"]
    assert first.officer.email == "wanjiru@lender.test"
    assert first.officer.role == "officer"


def test_import_loans_reads_a_file_saved_with_a_byte_order_mark(app, runner, tmp_path):
    path = write_book(tmp_path / "excel.csv", [loan_row(1), loan_row(2)], bom=True)

    result = import_file(runner, path)

    assert result.exit_code == 0, result.output
    assert sorted(db.session.scalars(select(Loan.number))) == ["LOAN-000001", "LOAN-000002"]


def test_import_loans_with_bad_rows_prints_every_error_with_its_line_and_exits_1(
    app, runner, tmp_path
):
    path = write_book(
        tmp_path / "book.csv",
        [
            loan_row(1),
            loan_row(2, phone="0812345678"),
            loan_row(3),
            loan_row(4, disbursed_on="2025-13-01"),
            loan_row(5, frequency="daily"),
            loan_row(6, interest="-5"),
        ],
    )
    before = book_counts()

    result = import_file(runner, path)

    assert result.exit_code == 1
    printed = {int(n) for n in re.findall(r"^line (\d+): ", result.output, re.M)}
    assert printed == {3, 5, 6, 7}, result.output
    for value in ("0812345678", "2025-13-01", "daily", "interest"):
        assert value in result.output
    assert book_counts() == before


def test_import_loans_refuses_a_loan_number_already_in_the_book(app, runner, tmp_path, make_loan):
    make_loan(number="LOAN-000002")
    before = book_counts()
    path = write_book(tmp_path / "book.csv", [loan_row(1), loan_row(2), loan_row(3)])

    result = import_file(runner, path)

    assert result.exit_code == 1
    assert re.search(r"^line 3: .*LOAN-000002", result.output, re.M), result.output
    assert book_counts() == before


def test_import_loans_reports_a_missing_column_on_line_1(app, runner, tmp_path):
    columns = tuple(c for c in COLUMNS if c != "national_id")
    path = write_book(tmp_path / "book.csv", [loan_row(1)], columns=columns)

    result = import_file(runner, path)

    assert result.exit_code == 1
    assert re.search(r"^line 1: .*national_id", result.output, re.M), result.output
    assert book_counts()["Loan"] == 0


def test_import_loans_refuses_a_file_that_is_not_utf8(app, runner, tmp_path):
    path = write_book(
        tmp_path / "latin1.csv",
        [loan_row(1), loan_row(2, borrower_name="Zoé Wanjiku")],
        encoding="cp1252",
    )
    before = book_counts()

    result = import_file(runner, path)

    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # a message, not a traceback
    assert "utf-8" in result.output.lower(), result.output
    assert book_counts() == before


def test_import_loans_names_the_line_holding_a_non_utf8_character(app, runner, tmp_path):
    path = write_book(
        tmp_path / "latin1.csv",
        [loan_row(1), loan_row(2, borrower_name="Zoé Wanjiku"), loan_row(3)],
        encoding="cp1252",
    )

    result = import_file(runner, path)

    assert result.exit_code == 1
    assert re.findall(r"^line (\d+): ", result.output, re.M) == ["3"], result.output


def test_loan_disbursed_today_in_nairobi_is_active_just_after_midnight(app, runner, tmp_path):
    path = write_book(tmp_path / "book.csv", [loan_row(1, disbursed_on="2025-03-11")])

    with freeze_time("2025-03-10 21:30:00"):  # 00:30 on 11 March in Nairobi (UTC+3)
        result = import_file(runner, path)

    assert result.exit_code == 0, result.output
    loan = db.session.scalars(select(Loan)).one()
    assert loan.status == "active"


def test_import_loans_reports_a_total_too_large_for_the_book_with_its_line(app, runner, tmp_path):
    path = write_book(
        tmp_path / "book.csv",
        [
            loan_row(1),
            loan_row(
                2,
                principal="999999999999.00",
                interest="999999999999.00",
                fees="0",
                installments="1",
            ),
        ],
    )

    result = import_file(runner, path)

    assert result.exit_code == 1
    assert re.search(r"^line 3: ", result.output, re.M), result.output
    db.session.rollback()
    assert book_counts()["Loan"] == 0


# --- export-loans -----------------------------------------------------------------------


def test_export_loans_writes_the_loan_book_csv(app, runner, tmp_path):
    rows = [
        loan_row(
            1, principal="1500", interest="0", fees="0", installments="1", disbursed_on="2025-02-10"
        ),
        loan_row(
            2,
            principal="1000.00",
            interest="0",
            fees="0",
            installments="3",
            disbursed_on="2025-01-31",
            amount_paid="400",
        ),
        loan_row(
            3,
            principal="800",
            interest="150",
            fees="50",
            installments="2",
            frequency="weekly",
            amount_paid="1000.00",
        ),
    ]
    assert import_file(runner, write_book(tmp_path / "in.csv", rows)).exit_code == 0
    target = tmp_path / "out.csv"

    result = runner.invoke(args=["lenders", "export-loans", str(target)])

    assert result.exit_code == 0, result.output
    text = target.read_text(encoding="utf-8-sig")
    assert text.splitlines()[0] == EXPORT_HEADER
    exported = list(csv.DictReader(io.StringIO(text)))
    assert exported == [
        {
            "loan_number": "LOAN-000001",
            "borrower_name": NAMES[1],
            "national_id": "21000001",
            "status": "active",
            "total_due": "1500.00",
            "paid": "0.00",
            "outstanding": "1500.00",
            "next_due_on": "2025-03-10",
            "disbursement_status": "",
            "disbursement_receipt": "",
        },
        {
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
        },
        {
            "loan_number": "LOAN-000003",
            "borrower_name": NAMES[3],
            "national_id": "21000003",
            "status": "closed",
            "total_due": "1000.00",
            "paid": "1000.00",
            "outstanding": "0.00",
            "next_due_on": "",
            "disbursement_status": "",
            "disbursement_receipt": "",
        },
    ]
    total_in = sum(
        Decimal(r["principal"]) + Decimal(r["interest"]) + Decimal(r["fees"]) for r in rows
    )
    assert sum(Decimal(r["total_due"]) for r in exported) == total_in


# --- create-user ------------------------------------------------------------------------


def test_create_user_makes_an_admin_who_can_log_in(app, runner, client):
    result = create_user(runner, "boss@lender.test")

    assert result.exit_code == 0, result.output
    user = db.session.scalars(select(StaffUser).where(StaffUser.email == "boss@lender.test")).one()
    assert (user.name, user.role, user.active) == ("Grace Admin", "admin", True)
    response = login(client, "boss@lender.test", "longpassword123")
    assert response.status_code == 303
    assert client.get("/payments/configuration/").status_code == 200


def test_create_user_prompts_for_the_password_twice_without_stdin_flag(app, runner, client):
    result = runner.invoke(
        args=[
            "lenders",
            "create-user",
            "otieno@lender.test",
            "--name",
            "Otieno",
            "--role",
            "officer",
        ],
        input="officerpass-2025\nofficerpass-2025\n",
    )

    assert result.exit_code == 0, result.output
    assert login(client, "otieno@lender.test", "officerpass-2025").status_code == 303


def test_create_user_again_updates_name_role_and_password(app, runner, client):
    assert create_user(runner, "boss@lender.test").exit_code == 0

    result = create_user(
        runner,
        "Boss@Lender.test",
        name="Grace Wambui",
        role="officer",
        password="anotherpassword456",
    )

    assert result.exit_code == 0, result.output
    users = db.session.scalars(
        select(StaffUser).where(func.lower(StaffUser.email) == "boss@lender.test")
    ).all()
    assert [(u.name, u.role) for u in users] == [("Grace Wambui", "officer")]
    assert login(client, "boss@lender.test", "longpassword123").status_code == 422
    assert login(client, "boss@lender.test", "anotherpassword456").status_code == 303
    assert client.get("/payments/configuration/").status_code == 403


@pytest.mark.parametrize("password", ["short", "", "123456789"])
def test_create_user_refuses_a_short_password(app, runner, client, password):
    assert create_user(runner, "boss@lender.test").exit_code == 0

    refused = create_user(runner, "boss@lender.test", password=password)
    new_user = create_user(runner, "new@lender.test", password=password)

    assert refused.exit_code != 0 and new_user.exit_code != 0
    assert "password" in refused.output.lower()
    assert db.session.scalar(select(StaffUser).where(StaffUser.email == "new@lender.test")) is None
    assert login(client, "boss@lender.test", "longpassword123").status_code == 303


@pytest.mark.parametrize(
    "email",
    [
        "not-an-email",
        "",
        "admin@",
        "@lender.test",
        "jane doe@lender.test",
    ],
)
def test_create_user_refuses_a_bad_email(app, runner, email):
    before = book_counts()["StaffUser"]

    result = create_user(runner, email)

    assert result.exit_code != 0
    assert book_counts()["StaffUser"] == before


# --- load-demo --------------------------------------------------------------------------


def test_load_demo_is_idempotent_and_prints_logins_that_work(app, runner, client):
    first = runner.invoke(args=["lenders", "load-demo"])
    assert first.exit_code == 0, first.output
    after_first = book_counts()

    second = runner.invoke(args=["lenders", "load-demo"])

    assert second.exit_code == 0, second.output
    assert "already present" in second.output
    assert "already present" not in first.output
    assert book_counts() == after_first
    assert after_first["Loan"] == 300
    assert 150 <= after_first["Borrower"] <= 250
    staff = db.session.scalars(select(StaffUser)).all()
    assert len(staff) == 3
    assert all(u.password_hash for u in staff)
    assert sorted(u.role for u in staff) == ["admin", "officer", "officer"]

    logins = dict(re.findall(r"^\s+(\S+@\S+)\s+(\S+)\s*$", second.output, re.M))
    assert sorted(logins) == sorted(u.email for u in staff)
    assert re.findall(r"^\s+(\S+@\S+)\s+(\S+)\s*$", first.output, re.M) == list(logins.items())
    for email, password in logins.items():
        assert login(client, email, password).status_code == 303
        client.post("/logout", data={"csrf_token": client.csrf_token("/lenders/borrowers/")})


def test_load_demo_is_refused_in_production(app, runner):
    app.config["ENV_NAME"] = "production"

    result = runner.invoke(args=["lenders", "load-demo"])

    assert result.exit_code != 0
    assert book_counts()["Loan"] == 0 and book_counts()["StaffUser"] == 0


def test_loaded_demo_book_exports_consistent_totals(app, runner, tmp_path):
    assert runner.invoke(args=["lenders", "load-demo"]).exit_code == 0
    target = tmp_path / "demo.csv"

    assert runner.invoke(args=["lenders", "export-loans", str(target)]).exit_code == 0

    exported = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8-sig"))))
    assert len(exported) == 300
    for row in exported:
        total, paid = Decimal(row["total_due"]), Decimal(row["paid"])
        assert Decimal(row["outstanding"]) == total - paid
        assert (row["next_due_on"] == "") == (paid == total), row
        assert (row["status"] == "closed") == (paid == total), row
        if row["next_due_on"]:
            date.fromisoformat(row["next_due_on"])
    statuses = {r["status"] for r in exported}
    assert statuses == {"pending", "active", "closed", "written_off"}
