"""The transactions filter form as the URL gives it: every value has a meaning, so a stale
or hand-edited bookmark still opens; what cannot be read is no filter, never an error.
(test_transaction_filters.py holds what each filter selects.)"""

import re
from datetime import date
from decimal import Decimal
from urllib.parse import urlencode

import pytest
from flask import request

from payments.forms import TransactionFilterForm
from payments.transactions import TransactionFilter

D = Decimal


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({}, TransactionFilter()),
        (
            {"q": "  Kamau ", "phone": " 0712 345 678 ", "loan": " loan 951 "},
            TransactionFilter(q="Kamau", phone="0712 345 678", loan="loan 951"),
        ),
        (
            {"amount_min": "1,500", "amount_max": " 2000.50 "},
            TransactionFilter(amount_min=D("1500"), amount_max=D("2000.50")),
        ),
        ({"amount_min": "abc", "amount_max": "NaN"}, TransactionFilter()),
        ({"amount_min": "Infinity", "amount_max": ""}, TransactionFilter()),
        # what parse_amount refuses: negative, more than two places, too large
        ({"amount_min": "-5", "amount_max": "1.005"}, TransactionFilter()),
        ({"amount_min": "1e12", "amount_max": "9" * 400}, TransactionFilter()),
        (
            {"date_from": "2026-11-03", "date_to": "2026-1-5"},
            TransactionFilter(date_from=date(2026, 11, 3), date_to=date(2026, 1, 5)),
        ),
        ({"date_from": "03/11/2026", "date_to": "2026-02-30"}, TransactionFilter()),
        # a day a database cannot hold or no one means (before 1900, after 2999)
        ({"date_from": "0001-01-01", "date_to": "9999-12-31"}, TransactionFilter()),
        (
            {"date_from": "1900-01-01", "date_to": "2999-12-31"},
            TransactionFilter(date_from=date(1900, 1, 1), date_to=date(2999, 12, 31)),
        ),
        (
            {"status": "posted", "rule": "bill_ref"},
            TransactionFilter(status="posted", rule="bill_ref"),
        ),
        ({"status": "Posted", "rule": "bill ref"}, TransactionFilter()),
        ({"shortcode": " 600985 "}, TransactionFilter(shortcode="600985")),
        ({"shortcode": "1234567890123456"}, TransactionFilter(shortcode="123456789012")),
        ({"q": "x" * 70, "phone": "7" * 50}, TransactionFilter(q="x" * 60, phone="7" * 40)),
        (
            [("status", "posted"), ("status", "failed"), ("date_from", "2026-11-03")]
            + [("date_from", "2026-11-04"), ("amount_min", "5"), ("amount_min", "x")],
            TransactionFilter(status="posted", date_from=date(2026, 11, 3), amount_min=D(5)),
        ),
        ({"before": "99", "page": "2", "csrf_token": "x"}, TransactionFilter()),
    ],
    ids=lambda value: None if isinstance(value, TransactionFilter) else urlencode(value)[:40],
)
def test_the_filter_form_reads_the_url_as_it_is_written(app, args, expected):
    with app.test_request_context(f"/payments/transactions/?{urlencode(args)}"):
        form = TransactionFilterForm(formdata=request.args, meta={"csrf": False})
        assert form.to_filter() == expected
        assert form.validate()  # nothing in a URL is an error to show


def test_unreadable_filters_are_ignored_and_the_readable_ones_kept_on_the_page(
    client, auth, shortcode, confirm
):
    from tests.payments.conftest import c2b_body

    auth.login("admin")
    confirm(c2b_body(TransID="TK6FILTER1", TransAmount="2500.00"))
    confirm(c2b_body(TransID="TK6FILTER2", TransAmount="500.00"))

    response = client.get(
        "/payments/transactions/?amount_min=1,000&amount_max=lots&status=bogus&date_to=soon"
    )

    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "TK6FILTER1" in page and "TK6FILTER2" not in page
    assert re.search(r'<input [^>]*name="amount_min"[^>]*value="1000.00">', page)
    assert re.search(r'<input [^>]*name="amount_max"[^>]*value="">', page)
    assert '<option selected value="">Any status</option>' in page
    for label in ("Name, account or receipt", "Phone", "Loan number", "Amount from"):
        assert f">{label}</label>" in page  # every filter has a visible label
