"""Portfolios (DESIGN.md, "Money out and back"): a payment belongs to the portfolio of the
loan it sits on now, reversed allocations left out. An officer reads and acts only inside
their portfolio and the unmatched queue; an action whose result would land outside it,
an overpayment's spill included, is refused and left to an admin."""

import csv
import io
from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import select

from lenders.extensions import db
from lenders.models import Borrower, BorrowerPhone, Loan
from lenders.phones import masked_key, phone_sha256
from payments import backoffice, transactions
from payments.dashboard import dashboard
from payments.models import C2BPayment, SmsMessage
from payments.suggestions import suggestions_for
from tests.payments.conftest import c2b_body

pytestmark = pytest.mark.both_databases
D = Decimal


def loan_of(make_loan, borrower, officer, number, principal="10000.00"):
    return make_loan(
        borrower=borrower,
        number=number,
        officer=officer,
        principal=principal,
        interest="0",
        fees="0",
        installments=4,
        disbursed_on=date(2025, 1, 1),
    )


def payment_by(trans_id: str) -> C2BPayment:
    db.session.expire_all()
    return db.session.scalars(select(C2BPayment).where(C2BPayment.trans_id == trans_id)).one()


def act(client, payment, action, **data):
    return client.hx_post(
        f"/payments/{payment.id}/{action}", data=data, token_from=f"/payments/{payment.id}"
    )


def paid(loan) -> Decimal:
    db.session.expire_all()
    return db.session.get(Loan, loan.id).paid


@pytest.fixture
def moved_away(client, auth, make_staff, make_loan, make_borrower, confirm):
    """Officer A's payment, which an admin then moved to officer B's loan."""
    officer_a = auth.login("officer")
    officer_b, admin = make_staff("officer"), make_staff("admin")
    mine = loan_of(make_loan, make_borrower("Mary Mine"), officer_a, "LOAN-000501")
    theirs = loan_of(make_loan, make_borrower("Tom Theirs"), officer_b, "LOAN-000502")
    confirm(c2b_body(BillRefNumber=mine.number, TransID="TK6AWAY001", TransAmount="700"))
    payment = payment_by("TK6AWAY001")
    assert payment.status == "posted"
    assert client.get(f"/payments/{payment.id}").status_code == 200  # A's, for now
    backoffice.reassign_payment(
        db.session, payment.id, theirs, actor=admin, reason="it was Tom's money"
    )
    db.session.commit()
    return officer_a, officer_b, mine, theirs, payment_by("TK6AWAY001")


def test_a_payment_moved_to_another_portfolio_is_gone_from_the_first_officer(client, moved_away):
    officer_a, _, mine, theirs, payment = moved_away
    assert client.get(f"/payments/{payment.id}").status_code == 404
    assert client.hx_get(f"/payments/sms/for/payment/{payment.id}").status_code == 404
    taken_back = act(client, payment, "reassign", loan_number=mine.number, reason="mine")
    assert taken_back.status_code == 404
    assert (paid(mine), paid(theirs)) == (D("0.00"), D("700.00"))

    assert "TK6AWAY001" not in client.get("/payments/transactions/").get_data(as_text=True)
    assert "TK6AWAY001" not in client.get("/payments/transactions/export.csv").get_data(True)
    rows, _ = transactions.find_payments(db.session, officer_a, transactions.TransactionFilter())
    assert rows == []
    figures = dashboard(db.session, officer_a, date(2025, 11, 7))
    assert figures.statuses["posted"] == 0
    assert sum(s.month_count for s in figures.shortcodes) == 0


def test_the_officer_it_moved_to_sees_and_acts_on_it(client, auth, moved_away):
    _, officer_b, _, theirs, payment = moved_away
    auth.logout()
    auth.login(user=officer_b)
    page = client.get(f"/payments/{payment.id}")
    assert page.status_code == 200 and theirs.number in page.get_data(as_text=True)
    rows, _ = transactions.find_payments(db.session, officer_b, transactions.TransactionFilter())
    assert [(row.trans_id, row.loans) for row in rows] == [("TK6AWAY001", (theirs.number,))]


def test_assigning_to_a_borrower_never_posts_to_another_officers_loan(
    client, auth, make_staff, make_loan, make_borrower, confirm
):
    officer_a = auth.login("officer")
    jane = make_borrower("Jane Two Officers", phones=())
    mine = loan_of(make_loan, jane, officer_a, "LOAN-000511", principal="5000.00")
    # the colleague's loan is due first, so the matching order picks it
    theirs = make_loan(
        borrower=jane,
        number="LOAN-000512",
        officer=make_staff("officer"),
        principal="5000.00",
        interest="0",
        fees="0",
        installments=2,
        disbursed_on=date(2024, 6, 1),
    )
    confirm(c2b_body(TransID="TK6BORROW1", BillRefNumber="who knows", MSISDN="2547 ***** 999"))
    payment = payment_by("TK6BORROW1")
    assert payment.status == "unmatched"

    response = act(client, payment, "assign", borrower_id=str(jane.id), reason="she called")
    assert response.status_code == 422
    assert "outside your portfolio" in response.get_data(as_text=True)
    assert payment_by("TK6BORROW1").status == "unmatched"
    assert (paid(mine), paid(theirs)) == (D("0.00"), D("0.00"))


def test_an_overpayment_that_would_spill_into_another_portfolio_is_refused(
    client, auth, make_staff, make_loan, make_borrower, confirm
):
    officer_a = auth.login("officer")
    jane = make_borrower("Jane Spill", phones=())
    mine = loan_of(make_loan, jane, officer_a, "LOAN-000521", principal="1000.00")
    theirs = loan_of(make_loan, jane, make_staff("officer"), "LOAN-000522")
    confirm(c2b_body(TransID="TK6SPILL01", BillRefNumber="?", TransAmount="1500"))
    payment = payment_by("TK6SPILL01")

    response = act(client, payment, "assign", loan_number=mine.number, reason="she called")
    assert response.status_code == 422
    assert "outside your portfolio" in response.get_data(as_text=True)
    assert (paid(mine), paid(theirs)) == (D("0.00"), D("0.00"))

    # what exactly fits the officer's loan is theirs to assign
    confirm(c2b_body(TransID="TK6SPILL02", BillRefNumber="?", TransAmount="1000"))
    fits = payment_by("TK6SPILL02")
    done = act(client, fits, "assign", loan_number=mine.number, reason="ok")
    assert done.status_code == 200 and done.headers["HX-Trigger"] == "payments-changed"
    assert paid(mine) == D("1000.00")


def test_an_admin_may_post_across_portfolios_and_the_spill_follows_the_matching_order(
    make_staff, make_loan, make_borrower, shortcode, confirm
):
    admin = make_staff("admin")
    jane = make_borrower("Jane Admin", phones=())
    first = loan_of(make_loan, jane, make_staff("officer"), "LOAN-000531", principal="1000.00")
    second = loan_of(make_loan, jane, make_staff("officer"), "LOAN-000532")
    confirm(c2b_body(TransID="TK6ADMIN01", BillRefNumber="?", TransAmount="1500"))
    backoffice.assign_payment(
        db.session, payment_by("TK6ADMIN01").id, actor=admin, reason="called", loan=first
    )
    db.session.commit()
    assert (paid(first), paid(second)) == (D("1000.00"), D("500.00"))


def test_an_officer_cannot_reassign_so_that_money_spills_into_another_portfolio(
    client, auth, make_staff, make_loan, make_borrower, confirm
):
    officer_a = auth.login("officer")
    here = loan_of(make_loan, make_borrower("Ann Here"), officer_a, "LOAN-000541")
    jane = make_borrower("Jane Target", phones=())
    target = loan_of(make_loan, jane, officer_a, "LOAN-000542", principal="500.00")
    theirs = loan_of(make_loan, jane, make_staff("officer"), "LOAN-000543")
    confirm(c2b_body(TransID="TK6RESPILL", BillRefNumber=here.number, TransAmount="800"))
    payment = payment_by("TK6RESPILL")

    response = act(client, payment, "reassign", loan_number=target.number, reason="Jane's")
    assert response.status_code == 422
    assert "outside your portfolio" in response.get_data(as_text=True)
    assert (paid(here), paid(target), paid(theirs)) == (D("800.00"), D("0.00"), D("0.00"))


def test_an_officer_cannot_move_money_off_another_officers_loan(
    client, auth, make_staff, make_loan, make_borrower, confirm
):
    officer_a = auth.login("officer")
    jane = make_borrower("Jane Split", phones=())
    mine = loan_of(make_loan, jane, officer_a, "LOAN-000581", principal="500.00")
    theirs = loan_of(make_loan, jane, make_staff("officer"), "LOAN-000582")
    other = loan_of(make_loan, make_borrower("Ann Other", phones=()), officer_a, "LOAN-000583")
    # the matcher spilled the overpayment to the colleague's loan of the same borrower
    confirm(c2b_body(TransID="TK6SPLIT01", BillRefNumber=mine.number, TransAmount="800"))
    payment = payment_by("TK6SPLIT01")
    assert (paid(mine), paid(theirs)) == (D("500.00"), D("300.00"))
    assert client.get(f"/payments/{payment.id}").status_code == 200  # partly A's: A sees it

    response = act(client, payment, "reassign", loan_number=other.number, reason="Ann's")
    assert response.status_code == 422
    assert "outside your portfolio" in response.get_data(as_text=True)
    assert (paid(mine), paid(theirs), paid(other)) == (D("500.00"), D("300.00"), D("0.00"))


def add_phone(borrower: Borrower, number: str) -> None:
    borrower.phones.append(
        BorrowerPhone(number=number, sha256=phone_sha256(number), masked_key=masked_key(number))
    )
    db.session.commit()


def test_matching_again_does_not_let_an_officer_post_into_another_portfolio(
    client, auth, make_staff, make_loan, make_borrower, confirm
):
    auth.login("officer")
    tom = make_borrower("Tom Stranger", phones=())
    theirs = loan_of(make_loan, tom, make_staff("officer"), "LOAN-000551")
    confirm(c2b_body(TransID="TK6REMATCH", MSISDN="254700555999", FirstName="TOM"))
    payment = payment_by("TK6REMATCH")
    assert payment.status == "unmatched"
    add_phone(db.session.get(Borrower, tom.id), "254700555999")

    token = client.csrf_token(f"/payments/{payment.id}")
    response = client.post(f"/payments/{payment.id}/rematch", data={"csrf_token": token})
    assert response.status_code == 422  # without JavaScript: the payment's page, saying why
    page = response.get_data(as_text=True)
    assert "<html" in page and "outside your portfolio" in page
    assert payment_by("TK6REMATCH").status == "unmatched" and paid(theirs) == 0

    bulk = client.post(
        "/payments/reprocess",
        data={"csrf_token": token, "payment_id": [str(payment.id)]},
        headers={"HX-Request": "true"},
    ).get_data(as_text=True)
    assert "skipped" in bulk and theirs.number not in bulk
    assert payment_by("TK6REMATCH").status == "unmatched"


def test_suggestions_follow_where_the_payers_money_sits_now(
    client, auth, make_loan, make_borrower, confirm
):
    officer = auth.login("officer")
    wrong = loan_of(make_loan, make_borrower("Ben Wrong", phones=()), officer, "LOAN-000561")
    right = loan_of(make_loan, make_borrower("Ben Right", phones=()), officer, "LOAN-000562")
    confirm(c2b_body(TransID="TK6SUGGST1", BillRefNumber=wrong.number, MSISDN="2547 ***** 321"))
    first = payment_by("TK6SUGGST1")
    moved = act(client, first, "reassign", loan_number=right.number, reason="x")
    assert moved.status_code == 200 and moved.headers["HX-Trigger"] == "payments-changed"
    confirm(c2b_body(TransID="TK6SUGGST2", BillRefNumber="??", MSISDN="2547 ***** 321"))
    later = payment_by("TK6SUGGST2")

    labels = [s.label for s in suggestions_for(db.session, officer, later)]
    assert any(right.number in label for label in labels)
    assert not any(wrong.number in label for label in labels)


def test_a_borrowers_sms_list_shows_an_officer_only_their_portfolios_receipts(
    client, auth, make_staff, make_loan, make_borrower, shortcode, confirm
):
    officer_a = auth.login("officer")
    jane = make_borrower("Jane Shared", phones=("0711000222",))
    mine = loan_of(make_loan, jane, officer_a, "LOAN-000571")
    theirs = loan_of(make_loan, jane, make_staff("officer"), "LOAN-000572")
    confirm(c2b_body(TransID="TK6SMSMINE", BillRefNumber=mine.number))
    confirm(c2b_body(TransID="TK6SMSTHEM", BillRefNumber=theirs.number))
    db.session.expire_all()
    receipts = db.session.scalars(select(SmsMessage.body)).all()
    assert any("TK6SMSTHEM" in body for body in receipts)  # the borrower was texted both

    listing = client.hx_get(f"/payments/sms/for/borrower/{jane.id}").get_data(as_text=True)
    assert "TK6SMSMINE" in listing and "TK6SMSTHEM" not in listing


def test_the_csv_an_officer_exports_holds_only_payments_on_their_loans_now(
    client, moved_away, confirm
):
    _, _, mine, _, _ = moved_away
    confirm(c2b_body(TransID="TK6STAYS01", BillRefNumber=mine.number))
    exported = client.get("/payments/transactions/export.csv").get_data(as_text=True)
    receipts = [row[0] for row in csv.reader(io.StringIO(exported))][1:]
    assert receipts == ["TK6STAYS01"]
