"""Payment tests' shared helpers and fixtures: Daraja-shaped bodies, shortcodes, posting to the
callback URLs, finding a payment by its receipt, the loans payments go to, running the job
runner's drains; and the Daraja emulator and a callback receiver, each a real HTTP server on a
free loopback port in a thread (one pair per test module), with clients pointed at it."""

from __future__ import annotations

import contextlib
import json
from datetime import date
from itertools import count

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from lenders.extensions import db
from lenders.models import Loan
from payments import intake, transactions
from payments.daraja import DarajaClient, MemoryTokenCache, security_credential
from payments.emulator.server import background_server, create_emulator
from payments.models import C2BPayment, Shortcode
from tests.conftest import new_borrower, new_loan
from tests.payments.servers import (
    INITIATOR_PASSWORD,
    KEY,
    SECRET,
    Emulator,
    Receiver,
    emulator_config,
)

_receipts = count(1)
ACKNOWLEDGED = {"ResultCode": 0, "ResultDesc": "Accepted"}  # a confirmation's answer


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


def loan_for(officer, number: str, name: str = "Grace Njeri", *, phones=("0712345678",)) -> Loan:
    """A loan of 10,000.00 in the officer's portfolio, without interest or fees, in four
    monthly installments from 1 January 2025, to a new borrower of that name."""
    return new_loan(
        borrower=new_borrower(name, phones=phones),
        number=number,
        officer=officer,
        principal="10000.00",
        interest="0",
        fees="0",
        installments=4,
        disbursed_on=date(2025, 1, 1),
    )


def new_shortcode(number: str = "600984", **kw) -> Shortcode:
    shortcode = Shortcode(number=number, name=kw.pop("name", "Test paybill"), **kw)
    db.session.add(shortcode)
    db.session.commit()
    return shortcode


def post_callback(client, shortcode, kind: str, body, *, token: str | None = None, **kwargs):
    """POST ``body`` (dict or list → JSON, str/bytes as is) to a shortcode's callback URL
    (``kind`` is "validation" or "confirmation"), as JSON unless ``headers`` say otherwise."""
    data = json.dumps(body) if isinstance(body, dict | list) else body
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
    return client.post(
        f"/payments/c2b/{token or shortcode.callback_token}/{kind}",
        data=data,
        headers=headers,
        **kwargs,
    )


def payment_by_receipt(trans_id: str) -> C2BPayment:
    """The payment with this M-Pesa receipt number, read afresh from the database."""
    db.session.expire_all()
    return db.session.scalars(select(C2BPayment).where(C2BPayment.trans_id == trans_id)).one()


def every_page(viewer, filters, size):
    """The ids the transactions page shows to ``viewer``, following its cursor to the end."""
    seen, cursor = [], None
    while True:
        rows, cursor = transactions.find_payments(db.session, viewer, filters, cursor, limit=size)
        seen += [row.id for row in rows]
        if cursor is None:
            return seen


def pay(confirm, **fields) -> C2BPayment:
    """Confirm a payment (``c2b_body`` with these fields), check Safaricom hears "Accepted",
    and return the stored payment."""
    body = c2b_body(**fields)
    assert confirm(body).get_json() == ACKNOWLEDGED
    return payment_by_receipt(body["TransID"])


@pytest.fixture
def jane(make_borrower):
    return make_borrower("Jane Wanjiku", national_id="23456789", phones=("0712345678",))


@pytest.fixture
def jane_loan(make_loan, jane):
    """LOAN-000123: KES 5,000 in five installments of 1,000 due on the 1st of February to
    June 2025, no interest or fees."""
    return make_loan(
        borrower=jane,
        number="LOAN-000123",
        principal="5000.00",
        interest="0",
        fees="0",
        installments=5,
        disbursed_on=date(2025, 1, 1),
    )


@pytest.fixture
def make_shortcode(app):
    return new_shortcode


@pytest.fixture
def shortcode(make_shortcode):
    return make_shortcode()


@pytest.fixture
def confirm(client, shortcode):
    """POST a confirmation body (dict → JSON, str/bytes as is) to the shortcode's URL."""

    def post(body, *, to: Shortcode | None = None, kind: str = "confirmation", **headers):
        return post_callback(client, to or shortcode, kind, body, headers=headers)

    return post


# -- the Daraja emulator and a callback receiver, over real HTTP ----------------------------


@pytest.fixture(scope="session")
def emulator_key_pem() -> bytes:
    """One RSA key for every emulator in the run (generating one per module is wasted time)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def emulator_overrides() -> dict:
    """A test module may override this to configure its emulator differently."""
    return {}


@pytest.fixture
def start_emulator(emulator_key_pem):
    """Start another emulator with some settings changed, for one test."""
    with contextlib.ExitStack() as stack:

        def start(**overrides) -> Emulator:
            app = create_emulator(emulator_config(emulator_key_pem, **overrides))
            return Emulator(stack.enter_context(background_server(app)))

        yield start


@pytest.fixture(scope="module")
def emulator(emulator_key_pem, emulator_overrides):
    app = create_emulator(emulator_config(emulator_key_pem, **emulator_overrides))
    with background_server(app) as url:
        yield Emulator(url)


@pytest.fixture(scope="module")
def receiver():
    hooks = Receiver()
    with background_server(hooks.app) as url:
        hooks.url = url
        yield hooks


@pytest.fixture(autouse=True)
def clean_slate(request):
    """Faults off and no callbacks remembered, for modules that use the servers."""
    if "emulator" in request.fixturenames:
        request.getfixturevalue("emulator").reset_faults()
    if "receiver" in request.fixturenames:
        request.getfixturevalue("receiver").reset()
    yield


@pytest.fixture
def make_client(emulator):
    """Clients for an emulator (this module's unless given), each with its own token cache
    and fast retries; closed after the test."""
    made: list[DarajaClient] = []

    def make(key: str = KEY, secret: str = SECRET, *, on: Emulator | None = None, **kwargs):
        options = {
            "base_url": (on or emulator).url,
            "token_cache": MemoryTokenCache(),
            "backoff_base": 0.01,
            "backoff_max": 0.05,
            "timeout": (2, 5),
        }
        options.update(kwargs)
        made.append(DarajaClient(key, secret, **options))
        return made[-1]

    yield make
    for client in made:
        client.close()


@pytest.fixture
def daraja(make_client):
    """A client for the v2 app."""
    return make_client()


@pytest.fixture
def credential(emulator):
    """The testapi initiator's SecurityCredential under the emulator's certificate."""
    return security_credential(INITIATOR_PASSWORD, emulator.certificate())


def drain(*names: str) -> int:
    """Run the job runner's drains (all by default) here and now, as a worker's pass does;
    how many rows they claimed."""
    from flask import current_app

    from lenders.jobs import run_drains

    return run_drains(current_app._get_current_object(), names or None)
