"""One list of payment statuses (``payments.models.PaymentStatus``) decides what the
database accepts, which payments every officer sees (open), what assign and reassign
accept, and what the screens link to and label."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy.exc import IntegrityError

from lenders.extensions import db
from lenders.models import Loan
from payments.models import C2BPayment, PaymentStatus
from tests.conftest import new_staff
from tests.payments.conftest import c2b_body, loan_for, pay

pytestmark = pytest.mark.both_databases
D = Decimal


def test_the_database_takes_every_status_of_the_enum_and_no_other(app, shortcode):
    def row(status: str) -> C2BPayment:
        return C2BPayment(
            shortcode_id=shortcode.id,
            trans_id=f"TK6S{len(status):02d}{status[:4].upper()}",
            trans_time=datetime.now(UTC),
            amount=D("100.00"),
            status=status,
        )

    db.session.add_all(row(status) for status in PaymentStatus)
    db.session.commit()
    db.session.add(row("parked"))
    with pytest.raises(IntegrityError, match="(?i)check|ck_c2b_payment_status"):
        db.session.commit()
    db.session.rollback()
    stored = db.session.scalars(db.select(C2BPayment.status)).all()
    assert sorted(stored) == sorted(PaymentStatus)


def test_a_payment_in_review_stays_in_its_officers_portfolio_and_can_be_moved(
    client, auth, shortcode, confirm
):
    """Review is not open: the flagged payment stays on the loan it was posted to, so only
    that loan's officer (and admins) see it, and it is reassigned, not assigned."""
    colleague = new_staff("officer")
    officer = auth.login("officer")
    first = loan_for(officer, "LOAN-000123")
    second = loan_for(officer, "LOAN-000124", "Ann Wanjiru", phones=())
    body = c2b_body(BillRefNumber="LOAN-000123", TransAmount="1000.00")
    payment = pay(confirm, **body)
    assert payment.status == PaymentStatus.POSTED
    confirm(body | {"TransAmount": "999.00"})  # the same receipt with another amount
    db.session.expire_all()
    assert db.session.get(C2BPayment, payment.id).status == "review"

    page = client.get(f"/payments/{payment.id}").get_data(as_text=True)
    assert "Reassign to another loan" in page and "<h2>Assign</h2>" not in page
    moved = client.hx_post(
        f"/payments/{payment.id}/reassign",
        data={"loan_number": second.number, "reason": "the borrower's other loan"},
        token_from=f"/payments/{payment.id}",
    )
    assert moved.status_code == 200, moved.get_data(as_text=True)[:500]
    db.session.expire_all()
    assert db.session.get(C2BPayment, payment.id).status == "posted"
    assert (db.session.get(Loan, first.id).paid, db.session.get(Loan, second.id).paid) == (
        D("0.00"),
        D("1000.00"),
    )

    auth.logout()
    auth.login(user=colleague)
    assert client.get(f"/payments/{payment.id}").status_code == 404


def test_the_dashboard_links_and_labels_statuses_by_their_stored_names(
    client, auth, shortcode, confirm
):
    auth.login("admin")
    pay(confirm, BillRefNumber="no idea", MSISDN="2547 ***** 999", FirstName="STRANGER")
    page = client.get("/payments/dashboard/").get_data(as_text=True)
    assert 'href="/payments/transactions/?status=failed">0</a>' in page
    assert """data-labels='["posted", "unmatched", "failed", "review", "received"]'""" in page
    assert "0 posted, 1 unmatched, 0 failed, 0 review, 0 received." in page
