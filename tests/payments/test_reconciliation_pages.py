"""The reconciliation screens through the test client: an admin uploads a statement and
reads its summary and the rows that need a person (each linked to its payment); bad
uploads get a clear answer; the daily close balances, lists differences, signs off, prints,
and a signed-off day that changes later is flagged on the dashboard. Officers get 403."""

from __future__ import annotations

import io
import re
from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from lenders.extensions import db
from lenders.web import nairobi_today
from payments.models import C2BPayment
from payments.reconciliation_models import ReconciliationSignOff, StatementImport
from payments.reversals import reverse_payment
from tests.payments.conftest import c2b_body, payment_by_receipt
from tests.payments.statement_files import payment, transfer_in, write_csv

D = Decimal


@pytest.fixture
def admin(auth):
    return auth.login("admin")


@pytest.fixture
def loan(make_borrower, make_loan):
    jane = make_borrower("Jane Wanjiku", phones=("0712345678",))
    return make_loan(borrower=jane, number="LOAN-000123", principal="10000.00", interest="0",
                     fees="0", installments=4, disbursed_on=date(2025, 1, 1))  # fmt: skip


def yesterday_at(hour: int, minute: int = 0) -> datetime:
    day = nairobi_today() - timedelta(days=1)
    return datetime(day.year, day.month, day.day, hour, minute)


def upload(client, shortcode, path, name=None):
    data = {
        "csrf_token": client.csrf_token("/payments/reconciliation/"),
        "shortcode": str(shortcode.id),
        "file": (io.BytesIO(path.read_bytes()), name or path.name),
    }
    return client.post("/payments/reconciliation/upload", data=data,
                       content_type="multipart/form-data")  # fmt: skip


@pytest.mark.both_databases
def test_an_admin_uploads_a_statement_and_reads_what_needs_a_person(
    client, admin, shortcode, loan, confirm, tmp_path
):
    confirm(c2b_body(TransID="TK6PAGE001", TransAmount="500.00", BillRefNumber="LOAN-000123"))
    lines = [
        payment("TK6PAGE001", yesterday_at(9), "5000.00", "LOAN-000123"),  # differs: review
        payment("TK6PAGE002", yesterday_at(10), "700.00", "LOAN-000123"),  # a gap, posted
        payment("TK6PAGE003", yesterday_at(11), "300.00", "nobody", party="254799000000 - X"),
        transfer_in("TK6PAGEORG", yesterday_at(12), "20000.00"),
    ]
    response = upload(client, shortcode, write_csv(tmp_path / "june.csv", lines))
    assert response.status_code == 303
    location = response.headers["Location"]
    page = client.get(location).get_data(as_text=True)
    record = db.session.scalars(select(StatementImport)).one()
    assert record.status == "done" and record.content is None and record.created_by_id == admin.id
    assert "Gaps filled" in page and "KES 1,000.00" in page  # the two gaps' money
    attention = page.split('id="attention"')[1]
    unmatched = payment_by_receipt("TK6PAGE003")
    assert unmatched.status == "unmatched"
    assert f'/payments/{unmatched.id}"' in attention and "TK6PAGE001" in attention
    assert "TK6PAGE002" not in attention and "TK6PAGEORG" not in attention
    assert "organisation transfer" in page.split('id="classes"')[1]
    listing = client.get("/payments/reconciliation/").get_data(as_text=True)
    assert "june.csv" in listing and location.split("/")[-1] in listing


@pytest.mark.parametrize(
    ("name", "content", "status", "said"),
    [
        ("statement.pdf", b"%PDF", 422, "CSV or XLSX"),
        ("statement.csv", b"", 422, "empty"),
        ("statement.xlsx", b"Receipt No.,x\n", 422, "not one"),
    ],
)
def test_a_bad_upload_gets_a_clear_answer_and_nothing_is_kept(
    client, admin, shortcode, tmp_path, name, content, status, said
):
    path = tmp_path / "upload"
    path.write_bytes(content)
    response = upload(client, shortcode, path, name=name)
    assert response.status_code == status and said in response.get_data(as_text=True)
    assert db.session.scalars(select(StatementImport)).all() == []


def test_an_upload_larger_than_the_cap_is_refused(app, client, admin, shortcode, tmp_path):
    token = client.csrf_token("/payments/reconciliation/")
    app.config["MAX_CONTENT_LENGTH"] = 100_000
    path = tmp_path / "big.csv"
    path.write_bytes(b"x" * 200_000)
    response = client.post(
        "/payments/reconciliation/upload",
        data={"csrf_token": token, "shortcode": str(shortcode.id),
              "file": (io.BytesIO(path.read_bytes()), "big.csv")},
        content_type="multipart/form-data",
    )  # fmt: skip
    assert response.status_code == 413 and "larger than" in response.get_data(as_text=True)
    assert db.session.scalars(select(StatementImport)).all() == []


def test_reconciliation_is_for_admins(client, auth, shortcode):
    auth.login("officer")
    for path in ("/payments/reconciliation/", "/payments/reconciliation/days/",
                 f"/payments/reconciliation/pull/{shortcode.id}"):  # fmt: skip
        assert client.get(path).status_code == 403


@pytest.mark.both_databases
def test_the_daily_close_balances_signs_off_and_prints(
    client, admin, shortcode, loan, confirm, tmp_path
):
    day = nairobi_today() - timedelta(days=1)
    stamp = lambda h: f"{day:%Y%m%d}{h:02d}0000"  # noqa: E731
    confirm(c2b_body(TransID="TK6DAY0001", TransAmount="1000.00", BillRefNumber="LOAN-000123",
                     TransTime=stamp(9), OrgAccountBalance="1000.00"))  # fmt: skip
    confirm(
        c2b_body(
            TransID="TK6DAY0002",
            TransAmount="200.00",
            BillRefNumber="nobody",
            MSISDN="254799000000",
            TransTime=stamp(10),
            OrgAccountBalance="1200.00",
        )
    )
    # a payment whose callback never came moved the balance between 10:00 and 11:00
    confirm(c2b_body(TransID="TK6DAY0004", TransAmount="100.00", BillRefNumber="LOAN-000123",
                     TransTime=stamp(12), OrgAccountBalance="1800.00"))  # fmt: skip
    page = client.get(f"/payments/reconciliation/days/?shortcode={shortcode.id}&date={day}")
    html = page.get_data(as_text=True)
    figures = html.split('id="close-figures"')[1].split("</table>")[0]
    assert "KES 1,300.00" in figures and "KES 1,100.00" in figures and "KES 200.00" in figures
    assert "balances" in html and "no statement or pull for this day yet" in html
    continuity = html.split('id="continuity"')[1].split("</table>")[0]
    assert "TK6DAY0002→TK6DAY0004" in continuity and "KES 500.00" in continuity

    lines = [
        payment("TK6DAY0001", datetime(day.year, day.month, day.day, 9), "1000", "LOAN-000123"),
        payment("TK6DAY0002", datetime(day.year, day.month, day.day, 10), "200", "nobody"),
        payment("TK6DAY0003", datetime(day.year, day.month, day.day, 11), "500", "LOAN-000123"),
        payment("TK6DAY0004", datetime(day.year, day.month, day.day, 12), "100", "LOAN-000123"),
    ]
    upload(client, shortcode, write_csv(tmp_path / "s.csv", lines))
    html = client.get(
        f"/payments/reconciliation/days/?shortcode={shortcode.id}&date={day}"
    ).get_data(as_text=True)
    statement = html.split('id="statement-figures"')[1].split("</table>")[0]
    assert "KES 1,800.00" in statement and "KES 0.00" in statement  # variance nil
    assert "Unbroken" in html  # the gap is filled, the balance explained

    token = client.csrf_token(f"/payments/reconciliation/days/?shortcode={shortcode.id}&date={day}")
    signed = client.post(f"/payments/reconciliation/days/{shortcode.id}/{day}/sign-off",
                         data={"csrf_token": token, "note": "checked"})  # fmt: skip
    assert signed.status_code == 303
    html = client.get(signed.headers["Location"]).get_data(as_text=True)
    assert f"Signed off by <strong>{admin.name}</strong>" in html and "checked" in html
    printed = client.get(f"/payments/reconciliation/days/{shortcode.id}/{day}/print")
    text = printed.get_data(as_text=True)
    assert printed.status_code == 200 and "print.css" in text and "<nav" not in text
    assert f"Signed off by {admin.name} ({admin.email})" in text
    assert client.get("/payments/reconciliation/changed").get_data(as_text=True).strip() == ""

    reverse_payment(db.session, payment_by_receipt("TK6DAY0001"), source="admin", reason="test")
    db.session.commit()
    flag = client.get("/payments/reconciliation/changed").get_data(as_text=True)
    assert f"{shortcode.number} on {day:%d %b %Y} changed after its sign-off" in flag
    assert 'id="reconciliation-flags"' in client.get("/payments/dashboard/").get_data(as_text=True)
    html = client.get(
        f"/payments/reconciliation/days/?shortcode={shortcode.id}&date={day}"
    ).get_data(as_text=True)
    assert "Changed since the sign-off" in html


def test_today_cannot_be_signed_off_and_bad_days_are_not_found(client, admin, shortcode):
    today = nairobi_today()
    token = client.csrf_token("/payments/reconciliation/days/")
    answer = client.post(f"/payments/reconciliation/days/{shortcode.id}/{today}/sign-off",
                         data={"csrf_token": token})  # fmt: skip
    assert answer.status_code == 303
    assert "once it is over" in client.get(answer.headers["Location"]).get_data(as_text=True)
    assert db.session.scalars(select(ReconciliationSignOff)).all() == []
    assert (
        client.get(f"/payments/reconciliation/days/{shortcode.id}/2025-13-01/print").status_code
        == 404
    )
    assert client.get("/payments/reconciliation/days/?date=junk").status_code == 200


@pytest.mark.both_databases
def test_the_cli_close_is_the_contract_json(runner, shortcode, loan, confirm):
    import json

    day = nairobi_today() - timedelta(days=1)
    confirm(c2b_body(TransID="TK6CLI0001", TransAmount="250.00", BillRefNumber="LOAN-000123",
                     TransTime=f"{day:%Y%m%d}083000"))  # fmt: skip
    result = runner.invoke(args=["payments", "reconciliation", "--date", str(day), "--json"])
    assert result.exit_code == 0, result.output
    close = json.loads(result.output)
    assert {k: close[k] for k in ("date", "shortcode", "received", "posted", "variance")} == {
        "date": str(day), "shortcode": "600984", "received": "250.00", "posted": "250.00",
        "variance": None,
    }  # fmt: skip
    assert set(close) >= {
        "unmatched",
        "credit",
        "refunded",
        "reversed",
        "review",
        "statement_total",
        "signed_off_by",
        "signed_off_at",
        "differences",
    }
    bad = runner.invoke(args=["payments", "reconciliation", "--date", "yesterday", "--json"])
    assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.output
    assert re.search(
        r"no shortcode 1",
        runner.invoke(
            args=["payments", "reconciliation", "--date", str(day), "--shortcode", "1"]
        ).output,
    )
    assert db.session.scalars(select(C2BPayment)).one().amount == D("250.00")


def test_payments_in_one_second_keep_the_balance_unbroken_whatever_order_they_came_in(
    confirm, shortcode, loan
):
    """M-Pesa times are whole seconds; callbacks of one second may arrive in any order."""
    from payments.daily_close import close_day

    day = nairobi_today() - timedelta(days=1)
    second = f"{day:%Y%m%d}093000"
    for receipt, amount, balance in (("TK6SEC0001", "1000.00", "1000.00"),
                                     ("TK6SEC0003", "300.00", "1500.00"),
                                     ("TK6SEC0002", "200.00", "1200.00")):  # fmt: skip
        confirm(c2b_body(TransID=receipt, TransAmount=amount, BillRefNumber="LOAN-000123",
                         TransTime=second, OrgAccountBalance=balance))  # fmt: skip
    close = close_day(db.session, shortcode, day)
    assert close.continuity == []
    assert close.received == Decimal("1500.00") and close.balanced


def test_a_payout_in_the_same_second_as_a_payment_is_not_a_break_in_the_balance(
    client, admin, confirm, shortcode, loan, tmp_path
):
    """The statement's B2C line comes in the second of a payment's callback but after it;
    its Balance says so, and the close follows the balances, not the arrival order."""
    from payments.daily_close import close_day
    from tests.payments.statement_files import Line

    day = nairobi_today() - timedelta(days=1)
    at = lambda s: datetime(day.year, day.month, day.day, 9, 30, s)  # noqa: E731
    for receipt, amount, balance, s in (("TK6PAY0001", "1000.00", "1000.00", 0),
                                        ("TK6PAY0002", "1000.00", "2000.00", 2),
                                        ("TK6PAY0003", "200.00", "1700.00", 4)):  # fmt: skip
        confirm(c2b_body(TransID=receipt, TransAmount=amount, BillRefNumber="LOAN-000123",
                         TransTime=f"{at(s):%Y%m%d%H%M%S}", OrgAccountBalance=balance))  # fmt: skip
    payout = Line("TK6B2C0001", at(2), reason="Business Payment to Customer via API",
                  withdrawn=Decimal("500.00"), balance=Decimal("1500.00"))  # fmt: skip
    upload(client, shortcode, write_csv(tmp_path / "s.csv", [payout]))
    close = close_day(db.session, shortcode, day)
    assert close.continuity == []

    # a payment whose callback never came, in the same second as one that did
    confirm(c2b_body(TransID="TK6PAY0004", TransAmount="100.00", BillRefNumber="LOAN-000123",
                     TransTime=f"{at(4):%Y%m%d%H%M%S}", OrgAccountBalance="1900.00"))  # fmt: skip
    [gap] = close_day(db.session, shortcode, day).continuity
    assert (gap.receipt, gap.amount) == ("TK6PAY0003→TK6PAY0004", Decimal("100.00"))
    assert gap.what.startswith("money in that no callback reported")


def test_a_statement_imported_twice_covers_its_period_once(client, admin, shortcode, tmp_path):
    from payments.daily_close import close_day

    day = nairobi_today() - timedelta(days=1)
    lines = [payment(f"TK6COV000{n}", datetime(day.year, day.month, day.day, 9 + n), "100")
             for n in range(3)]  # fmt: skip
    path = write_csv(tmp_path / "s.csv", lines)
    upload(client, shortcode, path)
    upload(client, shortcode, path)
    [(first, last)] = close_day(db.session, shortcode, day).coverage
    assert (last - first) == timedelta(hours=2)
