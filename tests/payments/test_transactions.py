"""The transactions page: plain rows with the loans each payment is posted to, keyset pages
newest first, and for an officer exactly the payments they may see, the same set the CSV
export gives."""

import csv
import io
from datetime import date

import pytest
from sqlalchemy import select

from lenders.extensions import db
from payments import reports
from payments.models import C2BPayment
from tests.payments.conftest import c2b_body

pytestmark = pytest.mark.both_databases


def loan_of(make_loan, make_borrower, officer, number, name):
    return make_loan(
        borrower=make_borrower(name, phones=()),
        number=number,
        officer=officer,
        principal="10000.00",
        interest="0",
        fees="0",
        installments=4,
        disbursed_on=date(2025, 1, 1),
    )


@pytest.fixture
def book(auth, make_staff, make_loan, make_borrower, confirm):
    """An officer's loan, a colleague's loan, and payments to each and to nobody, mixed."""
    officer = auth.login("officer")
    mine = loan_of(make_loan, make_borrower, officer, "LOAN-000901", "Grace Mine")
    theirs = loan_of(make_loan, make_borrower, make_staff("officer"), "LOAN-000902", "Ann Theirs")
    sent = []
    for n in range(7):
        for bill_ref, tag in ((mine.number, "M"), ("no idea", "U"), (theirs.number, "T")):
            trans_id = f"TK6{tag}{n:06d}"
            confirm(c2b_body(BillRefNumber=bill_ref, TransID=trans_id, MSISDN="2547 ***** 999"))
            sent.append(trans_id)
    db.session.expire_all()
    return officer, mine, theirs


def every_page(viewer, filters, size):
    """The ids the page shows, following its cursor to the end."""
    seen, cursor = [], None
    while True:
        rows, cursor = reports.find_payments(db.session, viewer, filters, cursor, limit=size)
        seen += [row.id for row in rows]
        if cursor is None:
            return seen


@pytest.mark.parametrize("size", [1, 2, 5, 50])
@pytest.mark.parametrize("status", ["", "posted", "unmatched", "failed"])
def test_an_officers_pages_hold_exactly_what_the_export_holds_newest_first(book, size, status):
    officer, _, _ = book
    filters = reports.TransactionFilter(status=status)
    shown = every_page(officer, filters, size)
    exported = db.session.scalars(reports.filtered_query(officer, filters)).all()
    assert shown == sorted((p.id for p in exported), reverse=True)
    assert len(shown) == len(set(shown))


def test_an_officer_never_sees_a_colleagues_placed_payment(book):
    officer, _, theirs = book
    rows = every_page(officer, reports.TransactionFilter(), 4)
    placed = db.session.scalars(
        select(C2BPayment.id).where(C2BPayment.bill_ref == theirs.number)
    ).all()
    assert placed and not set(placed) & set(rows)
    assert every_page(officer, reports.TransactionFilter(loan=theirs.number), 4) == []


def test_a_row_carries_what_the_list_shows_and_its_live_loans_only(client, book):
    officer, mine, _ = book
    payment = db.session.scalars(
        select(C2BPayment).where(C2BPayment.trans_id == "TK6M000003")
    ).one()
    rows, _ = reports.find_payments(db.session, officer, reports.TransactionFilter(q="TK6M000003"))
    assert len(rows) == 1
    row = rows[0]
    assert (row.id, row.trans_id, row.amount, row.status, row.rule) == (
        payment.id,
        payment.trans_id,
        payment.amount,
        payment.status,
        payment.rule,
    )
    assert row.received_at == payment.received_at and row.received_at.tzinfo is not None
    assert (row.msisdn, row.msisdn_form, row.first_name, row.bill_ref) == (
        payment.msisdn,
        payment.msisdn_form,
        payment.first_name,
        payment.bill_ref,
    )
    assert row.loans == (mine.number,)


def test_a_reassigned_payment_shows_only_the_loan_it_is_on_now(
    client, auth, make_loan, make_borrower, confirm
):
    officer = auth.login("officer")
    wrong = loan_of(make_loan, make_borrower, officer, "LOAN-000911", "Ben Wrong")
    right = loan_of(make_loan, make_borrower, officer, "LOAN-000912", "Ben Right")
    confirm(c2b_body(BillRefNumber=wrong.number, TransID="TK6MOVED01", TransAmount="900"))
    db.session.expire_all()
    payment = db.session.scalars(
        select(C2BPayment).where(C2BPayment.trans_id == "TK6MOVED01")
    ).one()
    response = client.hx_post(
        f"/payments/{payment.id}/reassign",
        data={"loan_number": right.number, "reason": "typed her sister's loan number"},
        token_from=f"/payments/{payment.id}",
    )
    assert response.status_code == 200 and response.headers["HX-Trigger"] == "payments-changed"
    db.session.expire_all()

    rows, cursor = reports.find_payments(db.session, officer, reports.TransactionFilter())
    assert [(row.trans_id, row.loans) for row in rows] == [("TK6MOVED01", (right.number,))]
    assert cursor is None
    page = client.get("/payments/transactions/").get_data(as_text=True)
    assert f"<td>{right.number}</td>" in page
    assert page.count(wrong.number) == 1  # the account the payer typed, not a loan posted to


def test_the_page_and_its_csv_agree_for_an_officer(client, book):
    _, mine, _ = book
    page = client.get("/payments/transactions/").get_data(as_text=True)
    exported = client.get("/payments/transactions/export.csv").get_data(as_text=True)
    receipts = [line[0] for line in csv.reader(io.StringIO(exported))][1:]
    assert len(receipts) == 14  # seven to the officer's loan, seven to nobody
    for trans_id in receipts:
        assert trans_id in page
    assert "TK6T" not in page and mine.number in page
    more = client.get(
        "/payments/transactions/?before=999999999",
        headers={"HX-Request": "true", "HX-Target": "more-payments"},
    ).get_data(as_text=True)
    assert "TK6T" not in more and "<html" not in more


@pytest.fixture
def varied(auth, make_staff, make_loan, make_borrower, confirm, make_shortcode):
    """Payments that differ in every way the filters look: phone form, amount, day, name,
    reference, shortcode, status and rule."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from lenders.phones import phone_sha256

    officer = auth.login("officer")
    mine = loan_of(make_loan, make_borrower, officer, "LOAN-000951", "Kamau Mine")
    theirs = loan_of(make_loan, make_borrower, make_staff("officer"), "LOAN-000952", "Ann Theirs")
    other = make_shortcode("600985", name="Second paybill")
    forms = ("254712345678", phone_sha256("254712345678"), "2547 ***** 678", "254799000111")
    refs = (mine.number, "loan 951", "rent 50%", "X_Y", "", theirs.number, "952")
    names = ("KAMAU", "Wanjiru", "Otieno")
    for n in range(30):
        body = c2b_body(
            TransID=f"TK6V{n:06d}",
            MSISDN=forms[n % 4],
            TransAmount=f"{(100, 1000, 1500, 2000, 990)[n % 5]}.00",
            BillRefNumber=refs[n % 7],
            FirstName=names[n % 3],
        )
        if n % 7 == 3:
            body["BusinessShortCode"] = "600985"
            confirm(body, to=other)
        else:
            confirm(body)
    start = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)
    for n, payment_id in enumerate(db.session.scalars(select(C2BPayment.id).order_by("id"))):
        db.session.execute(
            update(C2BPayment)
            .where(C2BPayment.id == payment_id)
            .values(received_at=start + timedelta(days=n % 9, hours=n))
        )
    db.session.commit()
    return officer


FILTERS = [
    {},
    {"phone": "0712 345 678"},
    {"phone": "+254 712 345678"},
    {"phone": "799000"},
    {"phone": "no digits"},
    {"amount_min": "1000", "amount_max": "1500"},
    {"amount_min": "1999.99"},
    {"amount_max": "100"},
    {"date_from": date(2026, 11, 3), "date_to": date(2026, 11, 5)},
    {"date_to": date(2026, 11, 2)},
    {"status": "posted"},
    {"status": "unmatched"},
    {"rule": "bill_ref"},
    {"shortcode": "600985"},
    {"loan": "loan 951"},
    {"q": "kamau"},
    {"q": "50%"},
    {"q": "x_y"},
    {"q": "tk6v000007"},
    {"phone": "0712345678", "status": "posted", "amount_min": "1000", "q": "wanjiru"},
]


@pytest.mark.parametrize("viewer", ["admin", "officer"])
@pytest.mark.parametrize("given", FILTERS, ids=lambda f: ",".join(f) or "none")
def test_every_filter_pages_through_exactly_the_set_the_export_holds(
    varied, make_staff, viewer, given
):
    """The page's SQL and the export's SQLAlchemy query are two spellings of one filter."""
    from decimal import Decimal

    who = varied if viewer == "officer" else make_staff("admin")
    values = {k: Decimal(v) if k.startswith("amount") else v for k, v in given.items()}
    filters = reports.TransactionFilter(**values)
    exported = list(db.session.scalars(reports.filtered_query(who, filters)))

    shown = every_page(who, filters, 4)

    assert shown == [p.id for p in reversed(exported)]
    if not given:  # not empty, and the officer does not see the colleague's payments
        assert len(shown) == (30 if viewer == "admin" else 30 - 8)
