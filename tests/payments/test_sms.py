"""SMS receipts (issue #6): a posting texts the borrower once, after the money commits,
through the console provider or Africa's Talking's SDK (against a local stand-in that
speaks its API). A failing provider never touches the posting; delivery reports update
the message; officers get in-app notices. Driven through the real callback URL."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text, update

from lenders.extensions import db
from lenders.jobs import runner as job_runner
from lenders.models import Borrower, Loan
from payments.models import C2BPayment, OfficerNotice, SmsMessage, SmsSettings
from payments.sms import NAIROBI, in_quiet_hours, notify_officers, segments
from tests.payments.africastalking_standin import serve_standin
from tests.payments.conftest import drain, pay

pytestmark = pytest.mark.both_databases
D = Decimal
API_KEY = "atsk_standin_0123456789abcdef"
PHONE = "254712345678"
LENDER = "Mkopo Bora Microfinance"


# --- helpers and fixtures ---------------------------------------------------------------


def resend_due() -> int:
    """Let the time of every queued message's next attempt come, and run the messages drain
    as a worker's next pass would; how many messages it took."""
    db.session.execute(
        update(SmsMessage).where(SmsMessage.status == "queued").values(next_attempt_at=None)
    )
    db.session.commit()
    return drain("messages")


def messages_for(payment_id: int) -> list[SmsMessage]:
    db.session.expire_all()
    return list(db.session.scalars(select(SmsMessage).where(SmsMessage.payment_id == payment_id)))


def receipt_of(payment: C2BPayment) -> SmsMessage:
    (message,) = messages_for(payment.id)
    assert message.kind == "receipt"
    return message


def loan_of(make_loan, borrower, number, principal, *, installments=1, officer=None, month=1):
    return make_loan(
        borrower=borrower,
        number=number,
        principal=principal,
        interest="0",
        fees="0",
        installments=installments,
        disbursed_on=date(2025, month, 1),
        officer=officer,
    )


@pytest.fixture(autouse=True)
def lender_name(request):
    """Tests with an app get a realistic lender name (the pure ones need no database)."""
    if "app" in request.fixturenames:
        request.getfixturevalue("app").config["LENDER_NAME"] = LENDER


@pytest.fixture
def standin(app):
    with serve_standin(API_KEY) as running:
        app.config["AFRICASTALKING_URL"] = running.url
        yield running


@pytest.fixture
def africastalking(standin):
    """SmsSettings pointing at Africa's Talking (sandbox user), served by the stand-in."""
    db.session.add(
        SmsSettings(
            id=1,
            provider="africastalking",
            username="sandbox",
            api_key=API_KEY,
            sender_id="MKOPOBORA",
        )
    )
    db.session.commit()
    return standin


def post_as_htmx(client, path, *, token_from, **data):
    return client.hx_post(path, data=data, token_from=token_from)


# --- receipt content --------------------------------------------------------------------


def test_posted_payment_receipt_names_amount_loan_balance_next_due_receipt_and_lender(
    confirm, jane_loan, caplog
):
    caplog.set_level(logging.INFO, logger="marejesho.sms")
    payment = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="1500.00")
    assert payment.status == "posted"
    message = receipt_of(payment)
    assert message.status == "sent" and message.provider == "console"
    assert message.provider_message_id.startswith("console-")
    assert message.to_phone == PHONE and message.language == "en"
    assert message.borrower_id == payment.borrower_id and message.attempts == 1
    assert message.body == (
        f"{LENDER}: received KES 1,500.00 for LOAN-000123, M-Pesa {payment.trans_id}. "
        "Balance KES 3,500.00. Next KES 500.00 by 01 Mar."
    )
    # the console provider writes it to the log (with the phone masked)
    assert any(message.body in r.getMessage() for r in caplog.records)


def test_default_english_receipt_fits_one_sms_with_a_realistic_lender_name(
    app, confirm, jane, make_loan
):
    app.config["LENDER_NAME"] = "Mkopo Bora Microfinance Ltd"
    loan_of(make_loan, jane, "LOAN-004567", "120000.00", installments=12)
    payment = pay(confirm, BillRefNumber="LOAN-004567", TransAmount="12500.00")
    body = receipt_of(payment).body
    assert "KES 107,500.00" in body and "Next KES 7,500.00 by 01 Mar." in body
    assert len(body) <= 160 and segments(body) == (1, "GSM-7"), (len(body), body)


def test_loan_paid_off_says_loan_fully_paid(confirm, jane_loan):
    payment = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="5000.00")
    body = receipt_of(payment).body
    assert "Balance KES 0.00." in body and body.endswith("Loan fully paid.")
    assert db.session.get(Loan, jane_loan.id).status == "closed"


def test_spilled_payment_names_both_loans_and_what_each_got(confirm, jane, make_loan):
    loan_of(make_loan, jane, "LOAN-000401", "500.00", month=1)
    loan_of(make_loan, jane, "LOAN-000402", "300.00", month=2)
    payment = pay(confirm, BillRefNumber="LOAN-000401", TransAmount="600.00")
    assert [r.amount for r in payment.repayments] == [D("500.00"), D("100.00")]
    body = receipt_of(payment).body
    assert body.startswith(f"{LENDER}: received KES 600.00, M-Pesa {payment.trans_id}, applied to ")
    assert "LOAN-000401 KES 500.00, LOAN-000402 KES 100.00." in body


def test_spilled_receipt_does_not_say_fully_paid_while_a_loan_still_owes(confirm, jane, make_loan):
    loan_of(make_loan, jane, "LOAN-000401", "500.00", month=1)
    loan_of(make_loan, jane, "LOAN-000402", "300.00", month=2)
    payment = pay(confirm, BillRefNumber="LOAN-000401", TransAmount="600.00")
    body = receipt_of(payment).body
    assert "Loan fully paid." not in body and "KES 200.00" in body


def test_payment_leaving_credit_says_the_credit_is_held(confirm, jane, make_loan):
    loan_of(make_loan, jane, "LOAN-000501", "500.00")
    payment = pay(confirm, BillRefNumber="LOAN-000501", TransAmount="700.00")
    assert payment.credit == D("200.00")
    assert receipt_of(payment).body == (
        f"{LENDER}: received KES 700.00, M-Pesa {payment.trans_id}. Paid LOAN-000501 "
        "KES 500.00. KES 200.00 is held for you as credit."
    )


def test_swahili_borrower_gets_the_swahili_template(confirm, jane, jane_loan):
    jane.sms_language = "sw"
    db.session.commit()
    payment = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="1500.00")
    message = receipt_of(payment)
    assert message.language == "sw"
    assert message.body == (
        f"{LENDER}: tumepokea KES 1,500.00 kwa LOAN-000123, M-Pesa {payment.trans_id}. "
        "Salio KES 3,500.00. Ijayo KES 500.00 kufikia 01 Mar."
    )


def test_swahili_receipt_of_a_paid_off_loan(confirm, jane, jane_loan):
    jane.sms_language = "sw"
    db.session.commit()
    payment = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="5000.00")
    assert receipt_of(payment).body.endswith("Mkopo umelipwa wote.")


def test_unmatched_payment_gets_no_receipt(confirm, jane_loan):
    payment = pay(confirm, BillRefNumber="nobody", MSISDN="2547 ***** 999", FirstName="X")
    assert payment.status == "unmatched" and messages_for(payment.id) == []


# --- templates: editing and preview ------------------------------------------------------


def test_admin_edited_template_is_used_for_the_next_receipt(client, auth, confirm, jane_loan):
    auth.login("admin")
    assert "{next_due}" in client.get("/payments/sms/").get_data(as_text=True)  # listed
    response = post_as_htmx(
        client,
        "/payments/sms/templates",
        token_from="/payments/sms/",
        key="receipt",
        language="en",
        body="Asante! {amount} for {loan} ({receipt}). Balance {balance}. {nope}",
    )
    refused = client.get("/payments/sms/").get_data(as_text=True)
    assert "Template not saved: unknown variable {nope}" in refused  # a typo never goes out
    response = post_as_htmx(
        client,
        "/payments/sms/templates",
        token_from="/payments/sms/",
        key="receipt",
        language="en",
        body="Asante! {amount} for {loan} ({receipt}). Balance {balance}. {next_due}",
    )
    assert response.status_code == 204 and response.headers["HX-Redirect"]
    page = client.get("/payments/sms/").get_data(as_text=True)
    assert "Asante! KES 1,500.00 for LOAN-000123 (TK60708BHZ)" in page  # the preview
    payment = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="1500.00")
    assert receipt_of(payment).body == (
        f"Asante! KES 1,500.00 for LOAN-000123 ({payment.trans_id}). Balance KES 3,500.00. "
        "Next KES 500.00 by 01 Mar."
    )


def test_template_form_needs_csrf_and_an_admin(client, auth):
    auth.login("admin")
    refused = client.post(
        "/payments/sms/templates", data={"key": "receipt", "language": "en", "body": "x"}
    )
    assert refused.status_code == 400
    auth.logout()
    auth.login("officer")
    response = post_as_htmx(
        client,
        "/payments/sms/templates",
        token_from="/lenders/borrowers/",
        key="receipt",
        language="en",
        body="hijacked {amount}",
    )
    assert response.status_code in (403, 404)


def test_preview_renders_the_sample_and_counts_sms(client, auth):
    auth.login("admin")

    def preview(body: str) -> str:
        response = post_as_htmx(
            client, "/payments/sms/preview", token_from="/payments/sms/", body=body
        )
        assert response.status_code == 200
        return response.get_data(as_text=True)

    short = preview("{lender}: received {amount} for {loan}.")
    assert "Mkopo Bora: received KES 1,500.00 for LOAN-000123." in short
    assert "1 SMS (GSM-7)" in short
    assert "170 characters, 2 SMS (GSM-7)" in preview("x" * 170)
    assert "1 SMS (UCS-2)" in preview("Asante sana \N{GRINNING FACE}")
    assert "2 SMS (UCS-2)" in preview("Asante \N{GRINNING FACE} " + "y" * 70)


def test_segments_count_gsm7_ucs2_and_extension_characters():
    assert segments("a" * 160) == (1, "GSM-7")
    assert segments("a" * 161) == (2, "GSM-7")
    assert segments("a" * 306) == (2, "GSM-7") and segments("a" * 307) == (3, "GSM-7")
    assert segments("€" * 80) == (1, "GSM-7") and segments("€" * 81) == (2, "GSM-7")
    assert segments("ş" * 70) == (1, "UCS-2") and segments("ş" * 71) == (2, "UCS-2")


def test_segments_count_an_emoji_as_two_ucs2_units():
    assert segments("a" * 69 + "\N{GRINNING FACE}") == (2, "UCS-2")


def test_preview_of_a_half_typed_placeholder_is_not_an_error(client, auth):
    auth.login("admin")
    response = post_as_htmx(
        client, "/payments/sms/preview", token_from="/payments/sms/", body="Hi {lender"
    )
    assert response.status_code == 200
    preview = response.get_data(as_text=True)
    assert "Hi {lender" in preview and "10 characters, 1 SMS (GSM-7)" in preview  # as typed


def test_a_malformed_template_is_refused_or_still_yields_a_receipt(
    client, auth, confirm, jane_loan
):
    auth.login("admin")
    response = post_as_htmx(
        client,
        "/payments/sms/templates",
        token_from="/payments/sms/",
        key="receipt",
        language="en",
        body="{lender}: Balance {balance",
    )
    payment = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="1500.00")
    assert payment.status == "posted"
    assert response.status_code >= 400 or len(messages_for(payment.id)) == 1


# --- Africa's Talking through its SDK, against the stand-in ------------------------------


def test_posting_sends_the_receipt_through_africastalking(confirm, jane_loan, africastalking):
    payment = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="1500.00")
    message = receipt_of(payment)
    (sent,) = africastalking.accepted
    assert sent.api_key == API_KEY and sent.accept == "application/json"
    assert sent.form["username"] == "sandbox" and sent.form["from"] == "MKOPOBORA"
    assert sent.form["to"] == "+" + PHONE
    assert sent.form["message"] == message.body and "LOAN-000123" in message.body
    assert message.status == "sent" and message.provider == "africastalking"
    assert message.provider_message_id == "ATXid_00000001" and message.sent_at is not None
    assert message.error is None


def test_africastalking_api_key_is_stored_encrypted(africastalking):
    raw = db.session.execute(text("SELECT api_key FROM sms_settings WHERE id = 1")).scalar()
    assert API_KEY not in raw and raw.startswith("gAAAA")
    db.session.expire_all()
    assert db.session.get(SmsSettings, 1).api_key == API_KEY


def test_admin_saves_the_provider_and_an_empty_key_keeps_the_stored_one(client, auth):
    auth.login("admin")
    form = {
        "provider": "africastalking",
        "username": "sandbox",
        "api_key": API_KEY,
        "sender_id": "MKOPOBORA",
        "quiet_start": "21",
        "quiet_end": "7",
    }
    response = post_as_htmx(client, "/payments/sms/provider", token_from="/payments/sms/", **form)
    assert response.status_code < 400
    db.session.expire_all()
    row = db.session.get(SmsSettings, 1)
    assert (row.provider, row.username, row.api_key, row.sender_id) == (
        "africastalking",
        "sandbox",
        API_KEY,
        "MKOPOBORA",
    )
    page = client.get("/payments/sms/").get_data(as_text=True)
    assert API_KEY not in page and f"/payments/sms/{row.callback_token}/delivery" in page
    post_as_htmx(
        client, "/payments/sms/provider", token_from="/payments/sms/", **form | {"api_key": ""}
    )
    db.session.expire_all()
    assert db.session.get(SmsSettings, 1).api_key == API_KEY


def test_wrong_api_key_is_a_failure_not_a_send(confirm, jane_loan, africastalking):
    db.session.get(SmsSettings, 1).api_key = "wrong-key"
    db.session.commit()
    payment = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="1500.00")
    message = receipt_of(payment)
    assert message.status == "queued" and "authentication" in message.error
    assert len(africastalking.requests) == 1 and africastalking.accepted == []


# --- provider failure: the posting stands, the SMS retries --------------------------------


@pytest.mark.parametrize("mode", ["http500", "invalid_phone"])
def test_provider_failure_leaves_the_posting_intact_and_queues_the_sms(
    confirm, jane_loan, africastalking, mode
):
    africastalking.mode = mode
    payment = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="1500.00")
    assert payment.status == "posted" and payment.error is None
    assert db.session.get(Loan, jane_loan.id).paid == D("1500.00")
    message = receipt_of(payment)
    assert message.status == "queued" and message.attempts == 1
    assert message.error.startswith("Africa's Talking")
    assert message.provider_message_id is None and len(africastalking.requests) == 1

    africastalking.mode = "ok"  # it recovers; the sweep sends what waited
    assert resend_due() == 1
    message = receipt_of(payment)
    assert message.status == "sent" and message.attempts == 2 and message.error is None
    assert message.provider_message_id == "ATXid_00000001"
    assert len(africastalking.accepted) == 1
    assert resend_due() == 0


def test_unreachable_provider_is_a_failure_too(app, confirm, jane_loan, africastalking):
    app.config["AFRICASTALKING_URL"] = "http://127.0.0.1:9"  # nothing listens on discard
    payment = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="1500.00")
    assert payment.status == "posted"
    message = receipt_of(payment)
    assert message.status == "queued" and message.error == "Africa's Talking could not be reached"


def test_flask_payments_sweep_resends_a_queued_receipt(
    app, runner, confirm, jane_loan, africastalking
):
    africastalking.mode = "http500"
    payment = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="1500.00")
    africastalking.mode = "ok"
    result = runner.invoke(args=["payments", "sweep"])
    assert result.exit_code == 0, result.output
    assert receipt_of(payment).status == "queued"  # its next attempt is half a minute away
    assert receipt_of(payment).next_attempt_at > datetime.now(UTC)
    db.session.execute(
        update(SmsMessage).values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
    )
    db.session.commit()
    result = runner.invoke(args=["payments", "sweep"])
    assert result.exit_code == 0, result.output
    assert "sent 1 queued message(s)" in result.output
    assert receipt_of(payment).status == "sent" and len(africastalking.accepted) == 1


def test_after_five_failed_attempts_the_receipt_is_failed(confirm, jane_loan, africastalking):
    africastalking.mode = "http500"
    payment = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="1500.00")
    for attempt in range(2, 6):
        assert resend_due() == 1
        assert receipt_of(payment).attempts == attempt
    message = receipt_of(payment)
    assert message.status == "failed" and message.attempts == 5 and message.error
    assert resend_due() == 0
    assert len(africastalking.requests) == 5 and africastalking.accepted == []
    assert db.session.get(C2BPayment, payment.id).status == "posted"


def test_a_provider_that_raises_anything_never_undoes_the_posting(confirm, jane_loan, monkeypatch):
    def explode(self, to_phone, body):
        raise RuntimeError("boom")

    monkeypatch.setattr("payments.sms_providers.ConsoleProvider.send", explode)
    payment = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="1500.00")
    assert payment.status == "posted" and db.session.get(Loan, jane_loan.id).paid == D("1500")
    message = receipt_of(payment)
    assert message.status == "queued" and message.error == "boom"


def test_a_non_json_answer_is_reported_as_africastalkings_failure(
    confirm, jane_loan, africastalking
):
    africastalking.mode = "text"
    payment = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="1500.00")
    message = receipt_of(payment)
    assert message.status == "queued" and message.error.startswith("Africa's Talking")


# --- exactly one SMS per payment ---------------------------------------------------------


def test_messages_drain_run_twice_sends_one_sms(confirm, jane_loan, africastalking):
    payment = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="1500.00")
    assert receipt_of(payment).status == "sent"
    assert drain("messages") == 0
    assert drain("messages") == 0
    assert len(messages_for(payment.id)) == 1
    assert len(africastalking.requests) == 1


def test_the_receipt_is_written_with_the_posting_and_sent_by_the_drain(
    confirm, jane_loan, africastalking, monkeypatch
):
    """The receipt row is part of the posting's transaction: with no worker sending, it
    waits queued, and the next pass sends it once."""
    monkeypatch.delitem(job_runner.drains, "messages")
    payment = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="1500.00")
    assert receipt_of(payment).status == "queued" and africastalking.requests == []
    monkeypatch.undo()
    assert drain("messages") == 1
    assert drain("messages") == 0
    assert len(messages_for(payment.id)) == 1 and len(africastalking.requests) == 1
    assert receipt_of(payment).status == "sent"


@pytest.mark.postgresql_only
def test_two_workers_draining_at_once_send_one_sms(
    app, confirm, jane_loan, africastalking, monkeypatch
):
    monkeypatch.delitem(job_runner.drains, "messages")
    payment = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="1500.00")
    monkeypatch.undo()
    africastalking.delay = 0.3  # the first is still talking to the provider
    barrier = threading.Barrier(2)
    results, errors = [], []

    def run():
        try:
            with app.app_context():
                barrier.wait(timeout=10)
                results.append(drain("messages"))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert sorted(results) == [0, 1], results
    (message,) = messages_for(payment.id)
    assert message.status == "sent" and message.attempts == 1
    assert len(africastalking.requests) == 1


def test_a_rerun_after_a_failed_delivery_report_does_not_text_again(
    client, confirm, jane_loan, africastalking
):
    payment = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="1500.00")
    message = receipt_of(payment)
    token = db.session.get(SmsSettings, 1).callback_token
    client.post(
        f"/payments/sms/{token}/delivery",
        data={"id": message.provider_message_id, "status": "Failed", "failureReason": "X"},
    )
    assert receipt_of(payment).status == "failed"
    resend_due()
    assert len(africastalking.requests) == 1


# --- delivery reports --------------------------------------------------------------------


def report(client, token, **form):
    return client.post(f"/payments/sms/{token}/delivery", data=form)


def test_delivery_report_marks_the_message_delivered(client, confirm, jane_loan, africastalking):
    payment = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="1500.00")
    message = receipt_of(payment)
    token = db.session.get(SmsSettings, 1).callback_token
    # no login, no CSRF token: Africa's Talking posts a plain form
    response = report(
        client,
        token,
        id=message.provider_message_id,
        status="Success",
        phoneNumber="+" + PHONE,
        networkCode="63902",
        retryCount="0",
    )
    assert response.status_code == 200 and response.get_data(as_text=True) == "OK"
    message = receipt_of(payment)
    assert message.status == "delivered" and message.delivered_at is not None
    # a late Failed for a delivered message changes nothing
    report(client, token, id=message.provider_message_id, status="Failed", failureReason="X")
    assert receipt_of(payment).status == "delivered"


def test_failed_delivery_report_keeps_the_reason(client, confirm, jane_loan, africastalking):
    payment = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="1500.00")
    message = receipt_of(payment)
    token = db.session.get(SmsSettings, 1).callback_token
    response = report(
        client,
        token,
        id=message.provider_message_id,
        status="Failed",
        failureReason="DeliveryFailure",
    )
    assert response.status_code == 200
    message = receipt_of(payment)
    assert message.status == "failed" and "DeliveryFailure" in message.error


def test_delivery_report_with_a_wrong_token_is_404_and_changes_nothing(
    client, confirm, jane_loan, africastalking
):
    payment = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="1500.00")
    message = receipt_of(payment)
    response = report(client, "0" * 40, id=message.provider_message_id, status="Success")
    assert response.status_code == 404
    assert receipt_of(payment).status == "sent"


def test_delivery_report_for_an_unknown_message_is_acknowledged(client, africastalking):
    token = db.session.get(SmsSettings, 1).callback_token
    response = report(client, token, id="ATXid_nope", status="Success")
    assert response.status_code == 200 and "unknown" in response.get_data(as_text=True)


def test_delivery_report_without_settings_is_404(client):
    assert report(client, "0" * 40, id="x", status="Success").status_code == 404


def test_delivery_report_with_a_non_ascii_token_is_404(client, africastalking):
    assert report(client, "\u00e9", id="x", status="Success").status_code == 404


def test_access_log_lines_hide_the_delivery_report_token(app, africastalking, caplog):
    caplog.set_level(logging.INFO)
    token = db.session.get(SmsSettings, 1).callback_token
    for name in ("werkzeug", "gunicorn.access"):
        logging.getLogger(name).info(
            '%s - - "%s" %s', "52.48.1.1", f"POST /payments/sms/{token}/delivery", 200
        )
    assert token not in caplog.text


# --- opt-out and preferences -------------------------------------------------------------


def test_opted_out_borrower_gets_no_sms(confirm, jane, jane_loan, africastalking):
    jane.sms_opt_out = True
    db.session.commit()
    payment = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="1500.00")
    assert payment.status == "posted"
    message = receipt_of(payment)
    assert message.status == "skipped" and "opted out" in message.error
    assert message.borrower_id == jane.id
    assert africastalking.requests == []


def test_officer_sets_language_and_opt_out_on_the_borrower_page(
    client, auth, make_loan, jane, confirm
):
    officer = auth.login("officer")
    loan_of(make_loan, jane, "LOAN-000123", "5000.00", installments=5, officer=officer)
    page = f"/lenders/borrowers/{jane.id}"
    assert 'name="sms_opt_out"' in client.get(page).get_data(as_text=True)

    response = post_as_htmx(
        client, f"{page}/sms", token_from=page, sms_language="sw", sms_opt_out="1"
    )
    assert response.status_code < 400
    db.session.expire_all()
    person = db.session.get(Borrower, jane.id)
    assert person.sms_opt_out is True and person.sms_language == "sw"
    skipped = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="1000.00")
    assert receipt_of(skipped).status == "skipped"

    post_as_htmx(client, f"{page}/sms", token_from=page, sms_language="sw")  # box unticked
    db.session.expire_all()
    assert db.session.get(Borrower, jane.id).sms_opt_out is False
    sent = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="1000.00")
    message = receipt_of(sent)
    assert message.status == "sent" and "tumepokea" in message.body


def test_another_officer_cannot_change_the_borrowers_sms(client, auth, make_staff, make_loan, jane):
    loan_of(make_loan, jane, "LOAN-000123", "5000.00", officer=make_staff("officer"))
    auth.login("officer")
    response = post_as_htmx(
        client,
        f"/lenders/borrowers/{jane.id}/sms",
        token_from="/lenders/borrowers/",
        sms_opt_out="1",
    )
    assert response.status_code == 404
    db.session.expire_all()
    assert db.session.get(Borrower, jane.id).sms_opt_out is False


# --- officer notices ---------------------------------------------------------------------


def test_posting_notifies_the_loans_officer_only(
    client, auth, make_staff, make_loan, jane, confirm
):
    officer, other = make_staff("officer"), make_staff("officer")
    loan_of(make_loan, jane, "LOAN-000123", "5000.00", installments=5, officer=officer)
    payment = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="1500.00", FirstName="JANE")
    notices = db.session.scalars(select(OfficerNotice)).all()
    assert [(n.staff_id, n.payment_id) for n in notices] == [(officer.id, payment.id)]
    assert notices[0].text == f"JANE paid KES 1,500.00 ({payment.trans_id}) to LOAN-000123"

    assert notify_officers(db.session, payment.id) == 0  # once per officer and payment
    db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(OfficerNotice)) == 1

    auth.login(user=officer)
    page = client.get("/payments/notices/").get_data(as_text=True)
    assert 'aria-label="1 unread"' in page and payment.trans_id in page
    response = post_as_htmx(client, "/payments/notices/read", token_from="/payments/notices/")
    assert response.status_code < 400
    page = client.get("/payments/notices/").get_data(as_text=True)
    assert 'aria-label="1 unread"' not in page

    auth.logout()
    auth.login(user=other)
    page = client.get("/payments/notices/").get_data(as_text=True)
    assert payment.trans_id not in page and "No payments into your portfolio yet." in page


def test_notices_survive_a_failing_sms_provider(
    make_staff, make_loan, jane, confirm, africastalking
):
    africastalking.mode = "http500"
    officer = make_staff("officer")
    loan_of(make_loan, jane, "LOAN-000123", "5000.00", installments=5, officer=officer)
    payment = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="1500.00")
    assert db.session.scalar(select(func.count()).where(OfficerNotice.staff_id == officer.id)) == 1
    assert receipt_of(payment).status == "queued"


# --- where messages are shown ------------------------------------------------------------


def test_messages_show_on_the_payment_and_borrower_pages_within_the_portfolio(
    client, auth, make_staff, make_loan, jane, confirm
):
    officer = make_staff("officer")
    loan_of(make_loan, jane, "LOAN-000123", "5000.00", installments=5, officer=officer)
    payment = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="1500.00")
    body = receipt_of(payment).body

    auth.login(user=officer)
    for path in (f"/payments/sms/for/payment/{payment.id}", f"/lenders/borrowers/{jane.id}"):
        assert client.get(path).status_code == 200
    for path in (
        f"/payments/sms/for/payment/{payment.id}",
        f"/payments/sms/for/borrower/{jane.id}",
    ):
        fragment = client.hx_get(path).get_data(as_text=True)
        assert body in fragment and "sent" in fragment
        assert "2547****5678" in fragment and PHONE not in fragment

    auth.logout()
    auth.login("officer")  # another portfolio
    assert client.hx_get(f"/payments/sms/for/payment/{payment.id}").status_code == 404
    assert client.hx_get(f"/payments/sms/for/borrower/{jane.id}").status_code == 404


def test_admin_sees_recent_messages_on_the_sms_page(client, auth, confirm, jane_loan):
    payment = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="1500.00")
    auth.login("admin")
    page = client.get("/payments/sms/").get_data(as_text=True)
    assert payment.trans_id in page and PHONE not in page


# --- phones masked in logs ---------------------------------------------------------------


@pytest.mark.parametrize("provider", ["console", "africastalking"])
def test_the_full_phone_never_reaches_the_logs(request, confirm, jane_loan, caplog, provider):
    if provider == "africastalking":
        request.getfixturevalue("africastalking")
    caplog.set_level(logging.DEBUG)
    payment = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="1500.00")
    assert receipt_of(payment).status == "sent"
    resend_due()
    assert caplog.records  # something was logged
    for record in caplog.records:
        logged = record.getMessage() + (record.exc_text or "")
        assert PHONE not in logged and "0712345678" not in logged, logged
    assert PHONE not in caplog.text


def test_a_failed_send_logs_no_phone(confirm, jane_loan, africastalking, caplog):
    africastalking.mode = "invalid_phone"
    caplog.set_level(logging.DEBUG)
    payment = pay(confirm, BillRefNumber="LOAN-000123", TransAmount="1500.00")
    assert receipt_of(payment).status == "queued"
    assert any("not sent" in r.getMessage() for r in caplog.records)
    assert PHONE not in caplog.text


# --- admin alert -------------------------------------------------------------------------


def add_failed_sms(count: int, *, age: timedelta = timedelta(0)) -> None:
    for _ in range(count):
        db.session.add(
            SmsMessage(
                kind="receipt",
                to_phone=PHONE,
                body="x",
                status="failed",
                error="Africa's Talking: InvalidPhoneNumber",
                created_at=datetime.now(UTC) - age,
            )
        )
    db.session.commit()


def test_repeated_sms_failures_show_on_the_alerts_page(client, auth):
    auth.login("admin")
    add_failed_sms(2)
    add_failed_sms(3, age=timedelta(hours=30))  # older than a day: not counted
    assert "SMS failed" not in client.get("/payments/alerts/").get_data(as_text=True)
    add_failed_sms(1)
    page = client.get("/payments/alerts/").get_data(as_text=True)
    assert "3 SMS failed in the last 24 hours" in page


def test_receipts_that_exhaust_their_attempts_raise_the_alert(
    client, auth, confirm, jane_loan, africastalking
):
    africastalking.mode = "http500"
    for amount in ("100.00", "200.00", "300.00"):
        pay(confirm, BillRefNumber="LOAN-000123", TransAmount=amount)
    for _ in range(4):
        assert resend_due() == 3
    auth.login("admin")
    page = client.get("/payments/alerts/").get_data(as_text=True)
    assert "3 SMS failed in the last 24 hours" in page


# --- quiet hours -------------------------------------------------------------------------


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2025, 3, 1, hour, minute, tzinfo=NAIROBI)


def test_quiet_hours_wrap_midnight_in_nairobi_time():
    night = SmsSettings(id=1, quiet_start=21, quiet_end=7)
    assert in_quiet_hours(night, at(22)) and in_quiet_hours(night, at(6, 59))
    assert in_quiet_hours(night, at(21)) and in_quiet_hours(night, at(0))
    assert not in_quiet_hours(night, at(12)) and not in_quiet_hours(night, at(7))
    assert not in_quiet_hours(night, at(20, 59))
    # 19:30 UTC is 22:30 in Nairobi; 09:00 UTC is noon
    assert in_quiet_hours(night, datetime(2025, 3, 1, 19, 30, tzinfo=UTC))
    assert not in_quiet_hours(night, datetime(2025, 3, 1, 9, 0, tzinfo=UTC))


def test_quiet_hours_within_one_day_and_without_settings():
    lunch = SmsSettings(id=1, quiet_start=13, quiet_end=14)
    assert in_quiet_hours(lunch, at(13, 30)) and not in_quiet_hours(lunch, at(14))
    assert not in_quiet_hours(lunch, at(12, 59))
    assert not in_quiet_hours(None, at(23))
