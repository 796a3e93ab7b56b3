"""Pull Transactions against the emulator over real HTTP: an admin registers the paybill
from its page, payments whose callbacks never came are pulled in and posted (on demand with
``flask payments pull`` and on the schedule), the page shows the last pull and its figures,
and a pull never reaches further back than Safaricom's 48 hours."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from lenders.extensions import db
from lenders.models import AuditEvent, Loan
from payments import pull
from payments.jobs import pull_registered_shortcodes
from payments.models import C2BPayment
from payments.reconciliation_models import PullRegistration, StatementImport, StatementLine
from tests.conftest import PASSWORD
from tests.payments.conftest import new_shortcode

D = Decimal


@pytest.fixture
def emu(start_emulator):
    return start_emulator()  # a fresh one: its payments are this test's alone


@pytest.fixture
def pull_app(app_factory, emu):
    return app_factory(DARAJA_SANDBOX_URL=emu.url)


@pytest.fixture
def paybill(app, emu):
    return new_shortcode(emu.paybill, consumer_key=emu.key, consumer_secret=emu.secret)


def log_in_admin(client, make_staff):
    user = make_staff("admin")
    page = client.get("/login").get_data(as_text=True)
    token = page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    answer = client.post("/login", data={"email": user.email, "password": PASSWORD,
                                         "csrf_token": token})  # fmt: skip
    assert answer.status_code == 303
    page = client.get("/payments/reconciliation/").get_data(as_text=True)
    return user, page.split('"X-CSRFToken": "')[1].split('"')[0]


def pay_without_callback(client, emu, paybill, amount: int, bill_ref: str) -> None:
    """A customer pays; no URL is registered with the emulator, so no callback comes."""
    client.simulate_c2b(paybill.number, amount, "254712345678", bill_ref)


def wait_for_payments(daraja, paybill, count: int) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        now = datetime.now(UTC)
        if len(daraja.query_pull(paybill.number, now - timedelta(hours=1), now)) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"the emulator never recorded {count} payments")


def test_an_admin_registers_pulls_and_sees_the_last_pull(
    pull_app, emu, paybill, make_staff, make_borrower, make_loan, make_client
):
    loan = make_loan(borrower=make_borrower(phones=("0712345678",)), number="LOAN-000555")
    daraja = make_client(on=emu)
    daraja.register_pull(paybill.number, "0722000000", "https://example.test/x")  # not ours yet
    client = pull_app.test_client()
    user, token = log_in_admin(client, make_staff)
    panel = client.get(f"/payments/reconciliation/pull/{paybill.id}").get_data(as_text=True)
    assert "Register for Pull Transactions" in panel

    refused = client.post(f"/payments/reconciliation/pull/{paybill.id}/register",
                          data={"csrf_token": token, "nominated": "12345"})  # fmt: skip
    assert refused.status_code == 422 and "not a Kenyan mobile number" in refused.get_data(
        as_text=True
    )
    answer = client.post(f"/payments/reconciliation/pull/{paybill.id}/register",
                         data={"csrf_token": token, "nominated": "0722 000 000"})  # fmt: skip
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert "already Registered (1001)" in answer.get_data(as_text=True)
    assert db.session.get(PullRegistration, paybill.id).nominated_number == "254722000000"
    assert db.session.scalar(select(AuditEvent.action).where(
        AuditEvent.action == "shortcode.pull_registered"))  # fmt: skip

    for amount in (300, 450):
        pay_without_callback(daraja, emu, paybill, amount, "LOAN-000555")
    wait_for_payments(daraja, paybill, 2)
    pulled = client.post(f"/payments/reconciliation/pull/{paybill.id}/now",
                         data={"csrf_token": token})  # fmt: skip
    text = pulled.get_data(as_text=True)
    assert (
        pulled.status_code == 200 and "2 gap(s) filled" in text and "Last successful pull" in text
    )
    db.session.expire_all()
    assert db.session.get(Loan, loan.id).paid == D("750.00")
    assert {p.status for p in db.session.scalars(select(C2BPayment))} == {"posted"}
    assert "shortcode.html" and 'id="pull-panel"' in client.get(
        f"/payments/configuration/shortcodes/{paybill.id}").get_data(as_text=True)  # fmt: skip


def test_flask_payments_pull_fills_gaps_once(pull_app, emu, paybill, make_client, make_loan):
    make_loan(number="LOAN-000556")
    daraja = make_client(on=emu)
    cli = pull_app.test_cli_runner()

    class runner:  # the CLI on pull_app (with_appcontext takes the app context pushed)
        @staticmethod
        def invoke(args):
            with pull_app.app_context():
                try:
                    return cli.invoke(args=args)
                finally:
                    db.session.remove()

    missing = runner.invoke(args=["payments", "pull"])
    assert missing.exit_code == 1 and "no shortcode is registered" in missing.output
    db.session.add(PullRegistration(shortcode_id=paybill.id, nominated_number="254722000000"))
    db.session.commit()
    not_with_daraja = runner.invoke(args=["payments", "pull", "--shortcode", paybill.number])
    assert not_with_daraja.exit_code == 1 and "Invalid ShortCode" in not_with_daraja.output
    daraja.register_pull(paybill.number, "0722000000", "https://example.test/x")
    pay_without_callback(daraja, emu, paybill, 120, "LOAN-000556")
    wait_for_payments(daraja, paybill, 1)
    first = runner.invoke(args=["payments", "pull", "--since", "2020-01-01T00:00"])
    again = runner.invoke(args=["payments", "pull"])
    assert first.exit_code == again.exit_code == 0, first.output + again.output
    one, two = (json.loads(r.output.strip().splitlines()[-1]) for r in (first, again))
    assert (one["shortcode"], one["rows"], one["gaps_filled"]) == (paybill.number, 1, 1)
    assert (two["rows"], two["gaps_filled"], two["already_recorded"]) == (1, 0, 1)
    db.session.expire_all()
    assert len(db.session.scalars(select(C2BPayment)).all()) == 1
    assert len(db.session.scalars(select(StatementLine)).all()) == 1
    imports = db.session.scalars(select(StatementImport).order_by(StatementImport.id)).all()
    assert [i.source for i in imports] == ["pull", "pull"]
    assert imports[0].period_from > datetime.now(UTC) - timedelta(hours=48)  # --since clipped


def test_the_schedule_pulls_what_is_due(pull_app, emu, paybill, make_client, monkeypatch):
    daraja = make_client(on=emu)
    daraja.register_pull(paybill.number, "0722000000", "https://example.test/x")
    db.session.add(PullRegistration(shortcode_id=paybill.id, nominated_number="254722000000"))
    db.session.commit()
    with pull_app.app_context():
        pull_registered_shortcodes()
        db.session.remove()
    db.session.expire_all()
    first = db.session.get(PullRegistration, paybill.id)
    assert first.last_pull_at is not None and first.last_error is None
    with pull_app.app_context():
        pull_registered_shortcodes()  # not due again for 30 minutes
        db.session.remove()
    assert len(db.session.scalars(select(StatementImport)).all()) == 1
    emu.faults(fail_with_500=3)
    registration = db.session.get(PullRegistration, paybill.id)
    registration.last_attempt_at = datetime.now(UTC) - timedelta(hours=1)
    db.session.commit()
    with pull_app.app_context():
        pull_registered_shortcodes()  # a failure is kept for the page, not raised
        db.session.remove()
    db.session.expire_all()
    failed = db.session.get(PullRegistration, paybill.id)
    assert failed.last_error and failed.last_attempt_at > failed.last_pull_at


def test_the_window_stays_inside_48_hours():
    now = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)
    fresh = PullRegistration(shortcode_id=1, nominated_number="254722000000")
    start, end = pull.window(fresh, now)
    assert end == now and now - start < timedelta(hours=48) and now - start > timedelta(hours=47)
    fresh.last_pull_to = now - timedelta(minutes=30)
    assert pull.window(fresh, now)[0] == now - timedelta(minutes=90)
    assert pull.window(fresh, now, since=now - timedelta(days=9))[0] == start


def test_pull_rows_read_as_statement_rows():
    payment = pull.pull_row(1, {"transactionId": "yzlyrEsRG1", "trxDate": "2020-08-05T10:13:00Z",
                                "msisdn": 254722000000, "sender": "JOHN DOE",
                                "transactiontype": "c2b-pay-bill-debit", "billreference": "L-1",
                                "amount": "168.00"})  # fmt: skip
    assert (payment.kind, payment.receipt, payment.paid_in, payment.msisdn) == (
        "customer_payment", "YZLYRESRG1", D("168.00"), "254722000000")  # fmt: skip
    assert payment.completed_at == datetime(2020, 8, 5, 10, 13, tzinfo=UTC)
    undone = pull.pull_row(2, {"transactionId": "R1", "trxDate": "2020-08-05 13:13:00",
                               "transactiontype": "c2b-reversal", "amount": "168.00",
                               "originalTransactionId": "yzlyrEsRG1"})  # fmt: skip
    assert (undone.kind, undone.withdrawn, undone.linked_receipt) == (
        "reversal",
        D("168.00"),
        "YZLYRESRG1",
    )
    assert undone.completed_at == datetime(2020, 8, 5, 10, 13, tzinfo=UTC)  # Nairobi time
    with pytest.raises(ValueError, match="bad amount"):
        pull.pull_row(3, {"transactionId": "X1", "trxDate": "2020-08-05 13:13", "amount": "x"})
