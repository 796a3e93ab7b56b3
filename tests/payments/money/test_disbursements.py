"""Paying a loan out by B2C against the emulator over HTTP: maker-checker, the amount, the
balance refused before anything is sent, Safaricom's result and failure in words, and the
ambiguous cases (no answer, a slow answer, a queue timeout) that only Transaction Status
settles: a loan is never paid out twice."""

from __future__ import annotations

import csv
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, update

from lenders.book import activate_disbursed_loans
from lenders.disbursements import (
    Disbursement,
    DisbursementError,
    approve_disbursement,
    request_disbursement,
    retry_disbursement,
    set_fees_upfront,
)
from lenders.extensions import db
from lenders.models import Installment, Loan
from payments import daraja_queries
from payments.disbursing import send_claimed
from payments.models import Shortcode
from payments.money_jobs import ask_about_late_payouts, send_disbursements
from tests.payments.money.conftest import (
    active_loan,
    all_at_once,
    audit_count,
    eventually,
    logged,
    post_json,
)

pytestmark = [pytest.mark.usefixtures("live"), pytest.mark.both_databases]
NAIROBI = ZoneInfo("Africa/Nairobi")
B2C = "/mpesa/b2c/v3/paymentrequest"


@pytest.fixture
def officer(make_staff):
    return make_staff("officer")


@pytest.fixture
def admins(make_staff):
    return make_staff("admin"), make_staff("admin")


def pending_loan(officer=None, **kw) -> Loan:
    """A loan booked but not paid out: 10,000.00 over four months (unless told)."""
    loan = active_loan(officer, disbursed_on=date(2030, 1, 1), **kw)
    loan.status = "pending"
    db.session.commit()
    return loan


def requested(loan, by) -> Disbursement:
    made = request_disbursement(db.session, loan, actor=by)
    db.session.commit()
    return made


def approved(payout, by, **kw) -> None:
    """Approve and commit: the commit wakes the drain, which sends it here and now."""
    approve_disbursement(db.session, payout.id, actor=by, **kw)
    db.session.commit()


def now_payout(payout_id: int) -> Disbursement:
    db.session.expire_all()
    return db.session.get(Disbursement, payout_id)


def finished(payout_id: int, *states: str) -> Disbursement:
    return eventually(
        lambda: (d := now_payout(payout_id)).status in (states or ("completed",)) and d
    )


def test_a_payout_is_requested_approved_paid_and_the_loan_runs_from_then(
    app, paybill, emulator, officer, admins, runner, tmp_path
):
    first, second = admins
    loan = pending_loan(officer)
    payout = requested(loan, officer)
    assert (payout.status, payout.amount) == ("requested", Decimal("10000.00"))
    assert emulator.calls(B2C) == []
    with pytest.raises(DisbursementError, match="only an admin"):
        approve_disbursement(db.session, payout.id, actor=officer)
    approved(payout, first)

    done = finished(payout.id)
    assert done.receipt and len(done.receipt) == 10 and done.receiver_name == "JOHN DOE"
    assert done.approved_by_id == first.id and done.originator_conversation_id.startswith("MJ")
    assert len(emulator.calls(B2C)) == 1
    loan = db.session.get(Loan, loan.id)
    today = datetime.now(NAIROBI).date()
    assert (loan.status, loan.disbursed_on) == ("active", today)
    assert loan.installments[0].due_on > today and len(loan.installments) == 4
    assert sum(i.amount_due for i in loan.installments) == loan.total_due

    target = tmp_path / "loans.csv"
    assert runner.invoke(args=["lenders", "export-loans", str(target)]).exit_code == 0
    with target.open(encoding="utf-8-sig") as stream:
        [row] = [r for r in csv.DictReader(stream) if r["loan_number"] == loan.number]
    assert (row["disbursement_status"], row["disbursement_receipt"]) == ("completed", done.receipt)
    assert second  # unused: the first admin was enough, being another than the officer


def test_nobody_approves_their_own_request(app, paybill, emulator, officer, admins):
    first, second = admins
    payout = requested(pending_loan(officer), officer)
    with pytest.raises(DisbursementError, match="only an admin approves"):
        approve_disbursement(db.session, payout.id, actor=officer)
    own = requested(pending_loan(), first)
    with pytest.raises(DisbursementError, match="someone other than who asked"):
        approve_disbursement(db.session, own.id, actor=first)
    db.session.rollback()
    assert emulator.calls(B2C) == []
    approved(own, second)
    assert finished(own.id).approved_by_id == second.id


def test_requests_the_book_refuses(app, paybill, officer, make_staff):
    active = active_loan(officer)
    with pytest.raises(DisbursementError, match="only a pending loan is paid out"):
        request_disbursement(db.session, active, actor=officer)
    theirs = pending_loan(make_staff("officer"))
    with pytest.raises(DisbursementError, match="outside your portfolio"):
        request_disbursement(db.session, theirs, actor=officer)
    mine = pending_loan(officer)
    requested(mine, officer)
    with pytest.raises(DisbursementError, match="already has a disbursement"):
        request_disbursement(db.session, mine, actor=officer)


def test_the_payout_is_net_of_fees_where_the_lender_says_so(app, paybill, officer, admins):
    set_fees_upfront(db.session, True, actor=admins[0])
    db.session.commit()
    payout = requested(pending_loan(officer, fees="500.00"), officer)
    assert (payout.amount, payout.fees_deducted) == (Decimal("9500.00"), Decimal("500.00"))


def test_insufficient_funds_is_refused_before_anything_is_sent(app, paybill, emulator, admins):
    first, second = admins
    query = daraja_queries.new_query(db.session, "balance", paybill)
    db.session.commit()
    daraja_queries.send_query(db.session, query.id, app.config)
    db.session.commit()
    available = eventually(lambda: daraja_queries.utility_available(db.session, paybill.id))
    big = requested(pending_loan(principal="240000.00"), first)
    assert available < big.amount
    with pytest.raises(DisbursementError, match="insufficient funds: the utility account has"):
        approve_disbursement(db.session, big.id, actor=second, available=available)
    db.session.rollback()
    approved(big, second)  # as the CLI approves: the balance is checked again before sending
    stopped = now_payout(big.id)
    assert stopped.status == "failed" and "Insufficient funds" in stopped.reason
    assert "nothing was sent" in stopped.reason and emulator.calls(B2C) == []


def test_a_failure_is_said_in_words_and_a_retry_gets_a_new_id(app, paybill, emulator, admins):
    first, second = admins
    paybill.initiator_password = "not-the-password"
    db.session.commit()
    payout = requested(pending_loan(), first)
    approved(payout, second)
    failed = finished(payout.id, "failed")
    first_id = failed.originator_conversation_id
    assert (
        failed.reason == "The initiator's name or password is wrong."
        and failed.result_code == "2001"
    )
    assert db.session.get(Loan, payout.loan_id).status == "pending"

    db.session.get(Shortcode, paybill.id).initiator_password = emulator.initiator_password
    db.session.commit()
    with pytest.raises(DisbursementError, match="other than the requester"):
        retry_disbursement(db.session, payout.id, actor=first)
    retry_disbursement(db.session, payout.id, actor=second)
    db.session.commit()
    done = finished(payout.id)
    assert done.attempt == 2 and done.originator_conversation_id != first_id
    assert len(emulator.calls(B2C)) == 2 and db.session.get(Loan, payout.loan_id).status == "active"


def check_due(app) -> None:
    """Let the payout's status check come due, and run the check as a worker would."""
    db.session.execute(update(Disbursement).values(check_after=datetime.now(UTC) - timedelta(1)))
    db.session.commit()
    ask_about_late_payouts(10)


def test_no_answer_then_a_status_query_saying_completed_pays_nothing_more(
    app, paybill, emulator, admins
):
    # the next query would be due 30 s after the first (0.3 s here otherwise: on a busy
    # machine the first one's result can take longer, and asking again is right then)
    app.config["B2C_STATUS_EVERY_SECONDS"] = 30
    emulator.faults(withhold_answer=1, drop_callback=True)  # paid; we hear nothing
    payout = requested(pending_loan(), admins[0])
    approved(payout, admins[1])
    unsure = now_payout(payout.id)
    assert unsure.status == "ambiguous" and "Nothing is sent again" in unsure.reason
    emulator.wait_for_delivery(unsure.originator_conversation_id, "b2c_result")
    emulator.reset_faults()
    send_disbursements(10)  # nothing is sent again
    ask_about_late_payouts(10)  # the check is not due yet: nothing happens
    assert len(emulator.calls(B2C)) == 1 and now_payout(payout.id).status == "ambiguous"

    check_due(app)
    done = finished(payout.id)
    assert len(emulator.calls(B2C)) == 1  # never sent again
    assert len(emulator.calls("/mpesa/transactionstatus/v1/query")) == 1
    assert done.receipt and audit_count("loan.disbursed") == 1
    assert len(db.session.get(Loan, payout.loan_id).installments) == 4
    check_due(app)  # a completed payout is never asked about again
    assert len(emulator.calls("/mpesa/transactionstatus/v1/query")) == 1


def test_a_slow_answer_is_ambiguous_and_the_result_settles_it(app, paybill, emulator, admins):
    emulator.faults(answer_delay_seconds=3.0)  # the client gives up after 2 s
    payout = requested(pending_loan(), admins[0])
    approved(payout, admins[1])
    assert now_payout(payout.id).status in ("ambiguous", "completed")
    done = finished(payout.id)
    assert len(emulator.calls(B2C)) == 1 and audit_count("loan.disbursed") == 1
    assert done.reason is None


def test_a_queue_timeout_is_not_a_failure(app, paybill, emulator, admins):
    emulator.faults(queue_timeout=1)  # Safaricom's queue times out; the payment is not made
    payout = requested(pending_loan(), admins[0])
    approved(payout, admins[1])
    unsure = finished(payout.id, "ambiguous")
    assert "queue timed out" in unsure.reason
    check_due(app)
    asked = eventually(
        lambda: (d := now_payout(payout.id)).reason and "asking again" in d.reason and d
    )
    assert asked.status == "ambiguous" and len(emulator.calls(B2C)) == 1
    assert db.session.get(Loan, payout.loan_id).status == "pending"


def test_a_resend_of_the_same_id_cannot_pay_twice(app, paybill, emulator, admins):
    payout = requested(pending_loan(), admins[0])
    approved(payout, admins[1])
    done = finished(payout.id)
    # as if a worker died and the payout were sent again with its own id
    db.session.execute(update(Disbursement).values(status="sent", conversation_id=None))
    db.session.commit()
    assert send_claimed(db.session, payout.id, app.config) == "ambiguous"
    db.session.commit()
    assert emulator.calls(B2C)[-1]["error_code"] == "500.002.1001"  # Duplicate id
    check_due(app)
    again = finished(payout.id)
    assert again.receipt == done.receipt and audit_count("loan.disbursed") == 1


@pytest.mark.both_databases
def test_fifty_duplicate_results_at_once_change_the_loan_once(app, paybill, emulator, admins, live):
    emulator.faults(drop_callback=True)
    payout = requested(pending_loan(), admins[0])
    approved(payout, admins[1])
    sent = now_payout(payout.id)
    assert sent.status == "sent"
    result = {
        "Result": {
            "ResultType": 0,
            "ResultCode": 0,
            "ResultDesc": "The service request is processed successfully.",
            "OriginatorConversationID": sent.originator_conversation_id,
            "ConversationID": sent.conversation_id,
            "TransactionID": "TL3AB12CDE",
            "ResultParameters": {
                "ResultParameter": [
                    {"Key": "TransactionAmount", "Value": 10000},
                    {"Key": "TransactionReceipt", "Value": "TL3AB12CDE"},
                    {"Key": "ReceiverPartyPublicName", "Value": "254712345678 - GRACE NJERI"},
                    {"Key": "TransactionCompletedDateTime", "Value": "03.12.2026 10:15:00"},
                    {"Key": "B2CUtilityAccountAvailableFunds", "Value": 218037.0},
                ]
            },
        }
    }
    url = f"{live}/payments/c2b/{sent.callback_token}/b2c/result"
    answers = all_at_once(50, lambda i: post_json(url, result).status_code)
    assert answers == [200] * 50
    done = now_payout(payout.id)
    assert (done.status, done.receipt, done.receiver_name) == (
        "completed",
        "TL3AB12CDE",
        "GRACE NJERI",
    )
    assert audit_count("loan.disbursed") == 1 and audit_count("disbursement.completed") == 1
    loan = db.session.get(Loan, payout.loan_id)
    assert (loan.status, loan.disbursed_on) == ("active", date(2026, 12, 3))
    installments = db.session.scalar(
        select(func.count(Installment.id)).where(Installment.loan_id == loan.id)
    )
    assert installments == 4
    outcomes = [entry.outcome for entry in logged("b2c_result")]
    assert outcomes.count("applied") == 1 and outcomes.count("duplicate") == 49


def test_results_for_unknown_tokens_or_other_attempts(app, paybill, emulator, admins, live):
    before = len(logged("b2c_result"))
    body = {"Result": {"ResultCode": 0, "OriginatorConversationID": "x"}}
    for token in ("f" * 40, "nope"):
        assert post_json(f"{live}/payments/c2b/{token}/b2c/result", body).status_code == 404
    assert len(logged("b2c_result")) == before
    emulator.faults(drop_callback=True)
    payout = requested(pending_loan(), admins[0])
    approved(payout, admins[1])
    token = now_payout(payout.id).callback_token
    stale = {"Result": {"ResultCode": 2001, "OriginatorConversationID": "MJ000001-1-old"}}
    assert post_json(f"{live}/payments/c2b/{token}/b2c/result", stale).status_code == 200
    assert now_payout(payout.id).status == "sent" and logged("b2c_result")[-1].outcome == "stale"


def test_a_loan_being_paid_out_waits_for_safaricom_not_for_its_date(app, paybill, admins):
    loan = pending_loan()
    requested(loan, admins[0])
    other = pending_loan()
    assert activate_disbursed_loans(db.session, date(2031, 1, 1)) == 1
    db.session.commit()
    assert (db.session.get(Loan, loan.id).status, db.session.get(Loan, other.id).status) == (
        "pending",
        "active",
    )


def test_the_commands_request_and_approve(app, paybill, emulator, runner, officer, admins):
    loan = pending_loan(officer)
    asked = runner.invoke(
        args=["lenders", "request-disbursement", loan.number, "--by", officer.email]
    )
    assert asked.exit_code == 0, asked.output
    shown = json.loads(asked.stdout)
    assert (shown["status"], shown["amount"], shown["loan_number"]) == (
        "requested",
        "10000.00",
        loan.number,
    )
    assert "****" in shown["phone"]
    refused = runner.invoke(
        args=["lenders", "approve-disbursement", loan.number, "--by", officer.email]
    )
    assert refused.exit_code == 1 and "only an admin approves" in refused.output
    sent = runner.invoke(
        args=["lenders", "approve-disbursement", loan.number, "--by", admins[0].email]
    )
    assert sent.exit_code == 0, sent.output
    assert json.loads(sent.stdout)["status"] in ("sent", "completed")
    assert finished(shown["id"]).approved_by_id == admins[0].id
