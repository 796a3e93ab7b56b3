"""Refunding a posted payment's borrower credit by B2C, against the emulator over HTTP:
requested by an officer (their portfolio) or an admin, approved by another admin, sent
once through the payouts' drain; the credit is held when asked, given back when the
refund fails or is cancelled, spent when it is paid; the daily close counts it as
refunded; the payment's page, the money overview and the commands."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from lenders.disbursements import (
    Disbursement,
    DisbursementError,
    approve_disbursement,
    cancel_disbursement,
    complete_disbursement,
    retry_disbursement,
)
from lenders.extensions import db
from lenders.models import AuditEvent, Borrower
from payments.daily_close import close_day
from payments.models import C2BPayment, Shortcode
from payments.money_jobs import ask_about_late_payouts
from payments.refunds import RefundRefused, refundable, request_refund
from payments.shortcodes import register_urls
from tests.payments.money.conftest import active_loan, all_at_once, audit_count, eventually, paid_in

pytestmark = [pytest.mark.usefixtures("live"), pytest.mark.both_databases]
NAIROBI = ZoneInfo("Africa/Nairobi")
B2C = "/mpesa/b2c/v3/paymentrequest"
D = Decimal


@pytest.fixture
def officer(make_staff):
    return make_staff("officer")


@pytest.fixture
def admins(make_staff):
    return make_staff("admin"), make_staff("admin")


@pytest.fixture
def registered(app, paybill):
    """The paybill's confirmation URL registered with the emulator (pointing at ``live``)."""
    register_urls(db.session, paybill, app.config, actor=None)
    db.session.commit()
    return paybill


def overpaid(app, paybill, officer=None, amount: int = 10_500) -> C2BPayment:
    """A borrower pays 10,500 on a 10,000 loan (through the emulator): 500 held as credit."""
    return paid_in(app, paybill, active_loan(officer), amount)


def credit_of(payment: C2BPayment) -> Decimal:
    db.session.expire_all()
    return db.session.get(Borrower, payment.repayments[0].loan.borrower_id).credit


def asked(payment, by, amount="300", reason="paid twice; the borrower asked") -> Disbursement:
    made = request_refund(db.session, payment.id, D(amount), actor=by, reason=reason)
    db.session.commit()
    return made


def approved(refund, by) -> None:
    """Approve and commit: the commit wakes the money drain, which sends it now."""
    approve_disbursement(db.session, refund.id, actor=by)
    db.session.commit()


def now_refund(refund_id: int) -> Disbursement:
    db.session.expire_all()
    return db.session.get(Disbursement, refund_id)


def finished(refund_id: int, *states: str) -> Disbursement:
    return eventually(
        lambda: (d := now_refund(refund_id)).status in (states or ("completed",)) and d
    )


def test_a_refund_is_asked_approved_paid_once_and_the_close_counts_it(
    app, registered, emulator, officer, admins, runner
):
    payment = overpaid(app, registered, officer)
    assert credit_of(payment) == D("500.00") and refundable(db.session, payment) == D("500.00")

    refund = asked(payment, officer)
    assert (refund.purpose, refund.status, refund.amount) == ("refund", "requested", D("300.00"))
    assert refund.phone == payment.repayments[0].loan.borrower.phones[0].number
    assert credit_of(payment) == D("200.00")  # held at once
    assert refundable(db.session, db.session.get(C2BPayment, payment.id)) == D("200.00")
    assert emulator.calls(B2C) == [] and audit_count("refund.requested") == 1
    with pytest.raises(DisbursementError, match="only an admin approves"):
        approve_disbursement(db.session, refund.id, actor=officer)
    db.session.rollback()

    approved(refund, admins[0])
    done = finished(refund.id)
    assert done.receipt and done.receiver_name == "JOHN DOE" and done.loan_id is None
    assert len(emulator.calls(B2C)) == 1
    assert credit_of(payment) == D("200.00")  # spent, not given back
    assert audit_count("refund.completed") == 1 and audit_count("loan.disbursed") == 0
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "refund.requested"))
    assert (event.entity_type, event.before, event.after["credit"]) == (
        "borrower",
        {"credit": "500.00"},
        "200.00",
    )

    day = payment.trans_time.astimezone(NAIROBI).date()
    close = close_day(db.session, db.session.get(Shortcode, registered.id), day)
    assert (close.refunded, close.credit, close.balanced) == (D("300.00"), D("200.00"), True)
    assert close.fingerprint["refunded"] == "300.00"  # a sign-off before it sees the change
    shown = runner.invoke(
        args=[
            "payments",
            "reconciliation",
            "--date",
            day.isoformat(),
            "--shortcode",
            registered.number,
            "--json",
        ]  # fmt: skip
    )
    assert shown.exit_code == 0, shown.output
    figures = json.loads(shown.stdout)
    assert (figures["refunded"], figures["credit"]) == ("300.00", "200.00")


def test_a_failed_refund_gives_the_credit_back_and_is_not_retried(
    app, registered, emulator, admins
):
    payment = overpaid(app, registered)
    db.session.get(Shortcode, registered.id).initiator_password = "not-the-password"
    db.session.commit()
    refund = asked(payment, admins[0], "500")
    assert credit_of(payment) == D("0.00")
    approved(refund, admins[1])
    failed = finished(refund.id, "failed")
    assert failed.reason == "The initiator's name or password is wrong."
    assert credit_of(payment) == D("500.00") and audit_count("refund.failed") == 1
    with pytest.raises(DisbursementError, match="request a new refund"):
        retry_disbursement(db.session, refund.id, actor=admins[1])
    db.session.rollback()
    cancel_disbursement(db.session, refund.id, actor=admins[0])  # given back once, not twice
    db.session.commit()
    assert credit_of(payment) == D("500.00") and len(emulator.calls(B2C)) == 1


def test_a_cancelled_refund_gives_the_credit_back(app, registered, officer, admins):
    payment = overpaid(app, registered, officer)
    refund = asked(payment, officer, "200")
    assert credit_of(payment) == D("300.00")
    cancel_disbursement(db.session, refund.id, actor=officer, reason="borrower changed mind")
    db.session.commit()
    assert credit_of(payment) == D("500.00") and audit_count("refund.cancelled") == 1
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "refund.cancelled"))
    assert event.after["credit_given_back"] == "200.00" and event.actor_id == officer.id
    with pytest.raises(DisbursementError, match="cancelled, not waiting for approval"):
        approve_disbursement(db.session, refund.id, actor=admins[0])


def test_refusals(app, registered, officer, admins, make_staff):
    payment = overpaid(app, registered, officer)
    with pytest.raises(RefundRefused, match="outside your portfolio"):
        request_refund(db.session, payment.id, D("100"), actor=make_staff("officer"), reason="x")
    with pytest.raises(RefundRefused, match="at most KES 500.00"):
        request_refund(db.session, payment.id, D("600"), actor=officer, reason="x")
    with pytest.raises(RefundRefused, match="whole shillings"):
        request_refund(db.session, payment.id, D("100.50"), actor=officer, reason="x")
    with pytest.raises(RefundRefused, match="between KES 10"):
        request_refund(db.session, payment.id, D("5"), actor=officer, reason="x")
    with pytest.raises(RefundRefused, match="say why"):
        request_refund(db.session, payment.id, D("100"), actor=officer, reason="  ")
    db.session.rollback()
    asked(payment, officer, "400")
    with pytest.raises(RefundRefused, match="at most KES 100.00"):  # what is left of it
        request_refund(db.session, payment.id, D("200"), actor=admins[0], reason="x")
    db.session.rollback()
    own = asked(payment, admins[0], "100")
    with pytest.raises(DisbursementError, match="someone other than who asked"):
        approve_disbursement(db.session, own.id, actor=admins[0])
    db.session.rollback()
    assert credit_of(payment) == D("0.00")  # never below zero
    with pytest.raises(RefundRefused, match="at most KES 0.00"):
        request_refund(db.session, payment.id, D("10"), actor=admins[1], reason="x")


def test_no_answer_is_ambiguous_until_transaction_status_says_paid(
    app, registered, emulator, admins
):
    app.config["B2C_STATUS_EVERY_SECONDS"] = 30
    payment = overpaid(app, registered)
    emulator.faults(withhold_answer=1, drop_callback=True)  # paid; we hear nothing
    refund = asked(payment, admins[0], "500")
    approved(refund, admins[1])
    unsure = now_refund(refund.id)
    assert unsure.status == "ambiguous" and credit_of(payment) == D("0.00")
    emulator.wait_for_delivery(unsure.originator_conversation_id, "b2c_result")
    emulator.reset_faults()
    db.session.execute(update(Disbursement).values(check_after=datetime.now(UTC) - timedelta(1)))
    db.session.commit()
    ask_about_late_payouts(10)
    done = finished(refund.id)
    assert done.receipt and len(emulator.calls(B2C)) == 1  # never sent twice
    assert credit_of(payment) == D("0.00") and audit_count("refund.completed") == 1


def test_the_commands_request_and_approve(app, registered, emulator, runner, officer, admins):
    payment = overpaid(app, registered, officer)
    base = ["lenders", "request-refund", payment.trans_id]
    too_much = runner.invoke(
        args=[*base, "--amount", "900", "--reason", "asked", "--by", officer.email]
    )
    assert too_much.exit_code == 1 and "at most KES 500.00" in too_much.output
    unknown = runner.invoke(
        args=[
            "lenders",
            "request-refund",
            "NOPE",
            "--amount",
            "1",
            "--reason",
            "r",
            "--by",
            officer.email,
        ]  # fmt: skip
    )
    assert unknown.exit_code == 1 and "no payment NOPE" in unknown.output
    made = runner.invoke(
        args=[*base, "--amount", "250", "--reason", "asked", "--by", officer.email]
    )
    assert made.exit_code == 0, made.output
    shown = json.loads(made.stdout)
    assert (shown["status"], shown["amount"], shown["credit_left"]) == (
        "requested",
        "250.00",
        "250.00",
    )
    assert "****" in shown["phone"]
    approve = ["lenders", "approve-refund", payment.trans_id, "--by"]
    refused = runner.invoke(args=[*approve, officer.email])
    assert refused.exit_code == 1 and "only an admin approves" in refused.output
    sent = runner.invoke(args=[*approve, admins[0].email])
    assert sent.exit_code == 0, sent.output
    assert json.loads(sent.stdout)["status"] in ("sent", "completed")
    assert finished(shown["id"]).approved_by_id == admins[0].id
    again = runner.invoke(args=[*approve, admins[1].email])
    assert again.exit_code == 1 and "no refund" in again.output


def test_the_payment_page_refunds_and_the_overview_lists_it(
    app, registered, client, auth, make_staff
):
    officer = auth.login("officer")
    payment = overpaid(app, registered, officer)
    page = client.get(f"/payments/{payment.id}").get_data(as_text=True)
    assert f'hx-get="/money/payments/{payment.id}/refund"' in page
    panel = client.hx_get(f"/money/payments/{payment.id}/refund").get_data(as_text=True)
    assert "Refund credit by M-Pesa" in panel and "KES 500.00" in panel
    phone = payment.repayments[0].loan.borrower.phones[0].number

    url = f"/money/payments/{payment.id}/refund"
    bad = client.hx_post(url, data={"amount": "<b>9000</b>", "phone": phone, "reason": "x"})
    assert bad.status_code == 422
    text = bad.get_data(as_text=True)
    assert "is not an amount" in text and "<b>9000</b>" not in text and "&lt;b&gt;" in text
    assert client.hx_post(url, data={"amount": "", "phone": phone}).status_code == 422
    too_much = client.hx_post(url, data={"amount": "600", "phone": phone, "reason": "x"})
    assert too_much.status_code == 422 and "at most KES 500.00" in too_much.get_data(as_text=True)

    done = client.hx_post(url, data={"amount": "200", "phone": phone, "reason": "<i>twice</i>"})
    assert done.status_code == 200 and done.headers["HX-Trigger"] == "payments-changed"
    text = done.get_data(as_text=True)
    assert "waits for another admin" in text and 'data-status="requested"' in text
    assert "&lt;i&gt;twice&lt;/i&gt;" in text and "<i>twice" not in text
    assert credit_of(payment) == D("300.00")

    outsider = make_staff("officer")
    auth.logout()
    auth.login(user=outsider)
    assert client.hx_get(url).status_code == 404
    assert (
        client.hx_post(url, data={"amount": "10", "phone": phone, "reason": "x"}).status_code == 404
    )
    auth.logout()
    auth.login("admin")
    overview = client.get("/money/").get_data(as_text=True)
    assert 'id="refunds-to-approve"' in overview and payment.trans_id in overview
    [refund] = db.session.scalars(select(Disbursement).where(Disbursement.purpose == "refund"))
    page = client.get(f"/money/disbursements/{refund.id}").get_data(as_text=True)
    assert "Refund of borrower credit" in page and 'id="approve-form"' in page


def test_requests_at_once_never_hold_more_than_the_credit(app, registered, admins):
    payment = overpaid(app, registered)
    payment_id, admin_id = payment.id, admins[0].id

    def ask(_):
        with app.app_context():
            try:
                actor = db.session.get(type(admins[0]), admin_id)
                request_refund(db.session, payment_id, D("200"), actor=actor, reason="at once")
                db.session.commit()
                return "held"
            except RefundRefused:
                db.session.rollback()
                return "refused"

    results = all_at_once(6, ask)
    assert sorted(results) == ["held"] * 2 + ["refused"] * 4
    assert credit_of(payment) == D("100.00") and audit_count("refund.requested") == 2


def test_paid_after_a_cancellation_takes_the_credit_again_never_below_zero(
    app, registered, officer, admins
):
    payment = overpaid(app, registered, officer)
    refund = asked(payment, officer, "400")
    cancel_disbursement(db.session, refund.id, actor=admins[0])
    db.session.commit()
    later = asked(payment, officer, "300")  # the credit given back is asked for again
    assert credit_of(payment) == D("200.00")
    # Safaricom reports the cancelled one paid after all (as a Transaction Status might)
    complete_disbursement(
        db.session, refund.id, receipt="TK6LATE001", receiver_name="", completed_at=None, how="test"
    )
    db.session.commit()
    assert credit_of(payment) == D("0.00")  # took the 200 there was, not 400
    event = db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == "refund.completed")
    ).one()
    assert event.after["not_covered_by_credit"] == "200.00" and "cancelled" in event.reason
    assert now_refund(later.id).status == "requested"


def test_a_payment_whose_credit_a_refund_holds_is_not_moved_or_reversed_behind_its_back(
    app, registered, emulator, officer, admins
):
    """Undoing its postings would take that credit off the borrower a second time: staff
    are refused with the reason, and a reversal M-Pesa reports goes to a person."""
    from payments.backoffice import BackofficeError, reassign_payment
    from payments.reversals import reverse_payment
    from payments.reversing import ReversalRefused, request_reversal

    payment = overpaid(app, registered, officer)
    other = active_loan(officer)
    refund = asked(payment, officer, amount="200")

    with pytest.raises(BackofficeError, match="cannot be moved: KES 200.00 of its credit"):
        reassign_payment(db.session, payment.id, other, actor=admins[0], reason="wrong loan")
    db.session.rollback()
    with pytest.raises(ReversalRefused, match="cannot be reversed: KES 200.00"):
        request_reversal(db.session, payment.id, actor=admins[0], reason="paid by mistake")
    db.session.rollback()

    payment = db.session.get(C2BPayment, payment.id)
    outcome = reverse_payment(db.session, payment, source="statement", reason="on the statement")
    db.session.commit()
    assert outcome == "review"
    payment = db.session.get(C2BPayment, payment.id)
    assert payment.status == "review" and "refunded by M-Pesa" in payment.error
    assert credit_of(payment) == D("300.00")  # only the refund's 200 is held: nothing undone

    cancel_disbursement(db.session, refund.id, actor=admins[1], reason="not needed")
    db.session.commit()
    assert credit_of(payment) == D("500.00")
