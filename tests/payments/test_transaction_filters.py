"""Every filter of the transactions page selects, page by page, exactly the set the CSV
export holds, for an admin and for an officer. The payments are built once per database
(``module_app``); the tests only read them."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, update

from lenders.extensions import db
from lenders.models import StaffUser
from lenders.phones import phone_sha256
from payments import transactions
from payments.models import C2BPayment
from tests.conftest import htmx_client, new_staff
from tests.payments.conftest import (
    c2b_body,
    every_page,
    loan_for,
    new_shortcode,
    post_callback,
)

pytestmark = pytest.mark.both_databases


@pytest.fixture(scope="module")
def built_payments(module_app):
    """Thirty payments that differ in every way the filters look: phone form, amount, day,
    name, reference, shortcode, status and rule; eight of them on a colleague's loan."""
    client = htmx_client(module_app)
    with module_app.app_context():
        officer, admin = new_staff("officer"), new_staff("admin")
        mine = loan_for(officer, "LOAN-000951", "Kamau Mine", phones=())
        theirs = loan_for(new_staff("officer"), "LOAN-000952", "Ann Theirs", phones=())
        main, other = new_shortcode(), new_shortcode("600985", name="Second paybill")
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
            post_callback(client, other if n % 7 == 3 else main, "confirmation", body)
        start = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)
        ids = db.session.scalars(select(C2BPayment.id).order_by(C2BPayment.id)).all()
        for n, payment_id in enumerate(ids):
            db.session.execute(
                update(C2BPayment)
                .where(C2BPayment.id == payment_id)
                .values(received_at=start + timedelta(days=n % 9, hours=n))
            )
        db.session.commit()
        return {"officer": officer.id, "admin": admin.id}


@pytest.fixture(params=["admin", "officer"])
def viewer(request, read_app, built_payments) -> StaffUser:
    return db.session.get(StaffUser, built_payments[request.param])


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


@pytest.mark.parametrize("given", FILTERS, ids=lambda f: ",".join(f) or "none")
def test_every_filter_pages_through_exactly_the_set_the_export_holds(viewer, given):
    """The page's SQL and the export's SQLAlchemy query are two spellings of one filter."""
    values = {k: Decimal(v) if k.startswith("amount") else v for k, v in given.items()}
    filters = transactions.TransactionFilter(**values)
    exported = list(db.session.scalars(transactions.filtered_query(viewer, filters)))

    shown = every_page(viewer, filters, 4)

    assert shown == [p.id for p in reversed(exported)]
    if not given:  # not empty, and the officer does not see the colleague's payments
        assert len(shown) == (30 if viewer.is_admin else 30 - 8)
    elif given == {"phone": "no digits"}:
        assert shown == []
    else:  # each filter keeps some payments and leaves some out
        assert 0 < len(shown) < len(every_page(viewer, transactions.TransactionFilter(), 50))
