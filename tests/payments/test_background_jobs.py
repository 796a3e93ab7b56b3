"""The embedded default's job thread: without REDIS_URL a confirmation is stored and
answered first, then matched and posted on the server process's own thread once the
process is idle; the same thread sweeps what a restart left behind."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from sqlalchemy import select, update

from lenders.extensions import db
from lenders.models import Loan
from payments import journal
from payments.models import C2BPayment
from tests.payments.conftest import c2b_body, record_unprocessed

ACCEPTED = {"ResultCode": 0, "ResultDesc": "Accepted"}


def status_of(trans_id: str) -> str:
    db.session.rollback()  # a fresh read, not the test session's snapshot
    return db.session.scalar(select(C2BPayment.status).where(C2BPayment.trans_id == trans_id))


def paid(loan_id: int) -> D:
    db.session.rollback()
    return db.session.scalar(select(Loan.paid).where(Loan.id == loan_id))


def wait_for(condition, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.mark.both_databases
def test_a_burst_is_answered_first_and_posted_once_the_server_is_idle(
    app_factory, shortcode, make_loan
):
    loan = make_loan()
    loan_id, opening = loan.id, loan.paid
    served = app_factory(JOBS_IN_BACKGROUND=True)
    jobs = served.extensions["marejesho.jobs"]
    jobs.quiet = 1.0  # jobs wait until the process has had no request for a second
    client = served.test_client()
    bodies = [c2b_body(TransAmount="250.00", BillRefNumber=loan.number) for _ in range(4)]

    for body in bodies:
        response = client.post(f"/payments/c2b/{shortcode.callback_token}/confirmation", json=body)
        assert response.get_json() == ACCEPTED

    # Answered, stored, and not yet processed: Safaricom did not wait for the posting.
    assert journal.shipped(served)
    assert [status_of(b["TransID"]) for b in bodies] == ["received"] * 4
    assert paid(loan_id) == opening

    assert jobs.join(timeout=60)
    assert [status_of(b["TransID"]) for b in bodies] == ["posted"] * 4
    assert paid(loan_id) == opening + D("1000.00")


def test_a_repeated_confirmation_waiting_on_the_thread_is_posted_once(
    app_factory, shortcode, make_loan
):
    loan = make_loan()
    loan_id, opening = loan.id, loan.paid
    served = app_factory(JOBS_IN_BACKGROUND=True)
    jobs = served.extensions["marejesho.jobs"]
    jobs.quiet = 0.5
    client = served.test_client()
    body = c2b_body(TransAmount="300.00", BillRefNumber=loan.number)
    url = f"/payments/c2b/{shortcode.callback_token}/confirmation"

    answers = [client.post(url, json=body).get_json() for _ in range(3)]

    assert answers == [ACCEPTED] * 3
    assert journal.shipped(served)
    assert jobs.join(timeout=60)
    assert status_of(body["TransID"]) == "posted"
    assert paid(loan_id) == opening + D("300.00")


@pytest.mark.both_databases
def test_the_job_thread_sweeps_payments_a_restart_left_in_received(
    app_factory, shortcode, make_loan
):
    """A server killed after acknowledging but before processing leaves the payment in
    ``received``; the next server's job thread finds it without cron or Redis."""
    loan = make_loan()
    loan_id, opening = loan.id, loan.paid
    body = c2b_body(TransAmount="420.00", BillRefNumber=loan.number)
    stored = record_unprocessed(shortcode, body)
    db.session.execute(
        update(C2BPayment)
        .where(C2BPayment.id == stored.payment_id)
        .values(received_at=datetime.now(UTC) - timedelta(minutes=5))
    )
    db.session.commit()

    served = app_factory(JOBS_IN_BACKGROUND=True)
    jobs = served.extensions["marejesho.jobs"]
    jobs.quiet, jobs.poll = 0.05, 0.2
    served.test_client().get("/login")  # the process's first request starts its thread

    assert wait_for(lambda: status_of(body["TransID"]) == "posted")
    assert paid(loan_id) == opening + D("420.00")


def test_without_the_job_thread_the_request_processes_inline(confirm, make_loan):
    """The tests' setting (and what commands do): the job runs before the answer."""
    loan = make_loan()
    body = c2b_body(TransAmount="150.00", BillRefNumber=loan.number)

    assert confirm(body).get_json() == ACCEPTED
    assert status_of(body["TransID"]) == "posted"
