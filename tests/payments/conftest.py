"""Fixtures for payment intake: shortcodes, Daraja-shaped bodies, posting them."""

from __future__ import annotations

import json
from itertools import count

import pytest

from lenders.extensions import db
from payments import intake
from payments.models import Shortcode

_receipts = count(1)


def receipt() -> str:
    """A fresh M-Pesa-like receipt number (10 characters)."""
    return f"TK6{next(_receipts):07d}"


def c2b_body(**fields) -> dict:
    """A confirmation as Daraja's v2 sends it in production (masked MSISDN, FirstName only),
    with any field replaced or, given None, left out."""
    body = {
        "TransactionType": "Pay Bill",
        "TransID": receipt(),
        "TransTime": "20251106230212",
        "TransAmount": "1000.00",
        "BusinessShortCode": "600984",
        "BillRefNumber": "",
        "InvoiceNumber": "",
        "OrgAccountBalance": "25000.00",
        "ThirdPartyTransID": "",
        "MSISDN": "2547 ***** 678",
        "FirstName": "JANE",
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def record_unprocessed(shortcode, body: dict) -> intake.Stored:
    """Store a confirmation as the callback does, in the test's session, and leave it in
    ``received`` (nothing enqueued, nothing committed)."""
    return intake.record_confirmation(
        db.session.connection(),
        shortcode,
        json.dumps(body).encode(),
        source_ip="127.0.0.1",
        headers={},
    )


@pytest.fixture
def make_shortcode(app):
    def make(number: str = "600984", **kw) -> Shortcode:
        shortcode = Shortcode(number=number, name=kw.pop("name", "Test paybill"), **kw)
        db.session.add(shortcode)
        db.session.commit()
        return shortcode

    return make


@pytest.fixture
def shortcode(make_shortcode):
    return make_shortcode()


@pytest.fixture
def confirm(client, shortcode):
    """POST a confirmation body (dict → JSON, str/bytes as is) to the shortcode's URL."""

    def post(body, *, to: Shortcode | None = None, kind: str = "confirmation", **headers):
        target = to or shortcode
        data = json.dumps(body) if isinstance(body, dict) else body
        return client.post(
            f"/payments/c2b/{target.callback_token}/{kind}",
            data=data,
            headers={"Content-Type": "application/json", **headers},
        )

    return post


def drain(*names: str) -> int:
    """Run the job runner's drains (all by default) here and now, as a worker's pass does;
    how many rows they claimed."""
    from flask import current_app

    from lenders.jobs import run_drains

    return run_drains(current_app._get_current_object(), names or None)
