"""The transactions page: plain rows with the loans each payment is posted to, keyset pages
newest first, and for an officer exactly the payments they may see, the same set the CSV
export gives. The book is built once per database (``module_app``); the tests only read it."""

import csv
import io

import pytest
from sqlalchemy import select

from lenders.extensions import db
from lenders.models import Loan, StaffUser
from payments import transactions
from payments.models import C2BPayment
from tests.conftest import AuthActions, htmx_client, new_staff
from tests.payments.conftest import (
    c2b_body,
    every_page,
    loan_for,
    new_shortcode,
    post_callback,
)

pytestmark = pytest.mark.both_databases


@pytest.fixture(scope="module")
def built_book(module_app):
    """An officer's loan, a colleague's loan, and seven payments to each and seven to
    nobody, mixed; and a client logged in as the officer."""
    client = htmx_client(module_app)
    with module_app.app_context():
        officer = AuthActions(client, new_staff).login("officer")
        mine = loan_for(officer, "LOAN-000901", "Grace Mine", phones=())
        theirs = loan_for(new_staff("officer"), "LOAN-000902", "Ann Theirs", phones=())
        shortcode = new_shortcode()
        for n in range(7):
            for bill_ref, tag in ((mine.number, "M"), ("no idea", "U"), (theirs.number, "T")):
                body = c2b_body(
                    BillRefNumber=bill_ref, TransID=f"TK6{tag}{n:06d}", MSISDN="2547 ***** 999"
                )
                post_callback(client, shortcode, "confirmation", body)
        return client, officer.id, mine.id, theirs.id


@pytest.fixture
def book(read_app, built_book):
    """(the officer, their loan, the colleague's loan) in this test's session."""
    _, officer_id, mine_id, theirs_id = built_book
    return (
        db.session.get(StaffUser, officer_id),
        db.session.get(Loan, mine_id),
        db.session.get(Loan, theirs_id),
    )


@pytest.fixture
def officer_client(built_book):
    return built_book[0]


@pytest.mark.parametrize("size", [1, 2, 5, 50])
@pytest.mark.parametrize("status", ["", "posted", "unmatched", "failed"])
def test_an_officers_pages_hold_exactly_what_the_export_holds_newest_first(book, size, status):
    officer, _, _ = book
    filters = transactions.TransactionFilter(status=status)
    shown = every_page(officer, filters, size)
    exported = db.session.scalars(transactions.filtered_query(officer, filters)).all()
    assert shown == sorted((p.id for p in exported), reverse=True)
    assert len(shown) == len(set(shown))
    # seven posted to the officer's loan, seven nobody's; none failed
    assert len(shown) == {"": 14, "posted": 7, "unmatched": 7, "failed": 0}[status]


def test_an_officer_never_sees_a_colleagues_placed_payment(book):
    officer, _, theirs = book
    rows = every_page(officer, transactions.TransactionFilter(), 4)
    placed = db.session.scalars(
        select(C2BPayment.id).where(C2BPayment.bill_ref == theirs.number)
    ).all()
    assert placed and not set(placed) & set(rows)
    assert every_page(officer, transactions.TransactionFilter(loan=theirs.number), 4) == []


def test_a_row_carries_what_the_list_shows_and_its_live_loans_only(book):
    officer, mine, _ = book
    payment = db.session.scalars(
        select(C2BPayment).where(C2BPayment.trans_id == "TK6M000003")
    ).one()
    rows, _ = transactions.find_payments(
        db.session, officer, transactions.TransactionFilter(q="TK6M000003")
    )
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


def test_the_page_and_its_csv_agree_for_an_officer(officer_client, book):
    _, mine, _ = book
    page = officer_client.get("/payments/transactions/").get_data(as_text=True)
    exported = officer_client.get("/payments/transactions/export.csv").get_data(as_text=True)
    receipts = [line[0] for line in csv.reader(io.StringIO(exported))][1:]
    assert len(receipts) == 14  # seven to the officer's loan, seven to nobody
    for trans_id in receipts:
        assert trans_id in page
    assert "TK6T" not in page and mine.number in page
    more = officer_client.get(
        "/payments/transactions/?before=999999999",
        headers={"HX-Request": "true", "HX-Target": "more-payments"},
    ).get_data(as_text=True)
    assert "TK6T" not in more and "<html" not in more
