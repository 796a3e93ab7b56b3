"""Payments on RQ: store and acknowledge in the request, post in a worker; never lose a
payment when Redis is down; retry a transient database error with backoff.

The worker is rq's SimpleWorker in burst mode, in this process but in an empty context
(no app context), so the job builds its own app from the environment as ``rq worker``
does in production."""

from __future__ import annotations

import contextvars
import json
import signal
import socket
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
from conftest import REDIS_URL, need
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

import payments.jobs
import payments.processing
from lenders.extensions import db
from lenders.models import Loan, Repayment
from payments.jobs import QUEUE, RETRY_INTERVALS, enqueue, process_payment_job
from payments.models import C2BPayment, CallbackLog
from tests.payments.conftest import c2b_body

ACCEPTED = {"ResultCode": 0, "ResultDesc": "Accepted"}


@pytest.fixture
def redis_url():
    """The test Redis, with no RQ keys left from an earlier run (other keys untouched)."""
    url = need("Redis (MAREJESHO_TEST_REDIS_URL)", REDIS_URL)
    connection = redis.Redis.from_url(url)
    connection.ping()

    def forget_rq():
        keys = list(connection.scan_iter("rq:*"))
        if keys:
            connection.delete(*keys)

    forget_rq()
    yield url
    forget_rq()
    connection.close()


@pytest.fixture
def rq_connection(redis_url):
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


@pytest.fixture
def web(app_factory):
    """Another app on the test database (a gunicorn worker with other settings)."""
    built = []

    def build(**overrides):
        built.append(app_factory(**overrides))
        return built[-1]

    yield build
    for other in built:
        with other.app_context():
            db.engine.dispose()


@pytest.fixture
def worker_env(monkeypatch, database_url, redis_url):
    """The environment ``rq worker`` runs with: the test database and Redis."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("SECRET_KEY", "test-secret-key")
    payments.jobs._worker_app.cache_clear()
    yield
    if payments.jobs._worker_app.cache_info().currsize:
        with payments.jobs._worker_app().app_context():
            db.engine.dispose()
    payments.jobs._worker_app.cache_clear()


def run_worker(connection, *, with_scheduler: bool = False) -> bool:
    """Work the queue until it is empty, as ``rq worker --burst marejesho`` would."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    worker = SimpleWorker([Queue(QUEUE, connection=connection)], connection=connection)
    try:  # an empty context: no app context from the test leaks into the job
        return contextvars.Context().run(worker.work, burst=True, with_scheduler=with_scheduler)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def post_confirmation(flask_app, shortcode, body: dict):
    with flask_app.test_client() as client:
        return client.post(
            f"/payments/c2b/{shortcode.callback_token}/confirmation",
            data=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )


def payment_of(trans_id: str) -> C2BPayment:
    db.session.expire_all()
    return db.session.scalars(select(C2BPayment).where(C2BPayment.trans_id == trans_id)).one()


def repayments_of(trans_id: str) -> list[Repayment]:
    return list(db.session.scalars(select(Repayment).where(Repayment.reference == trans_id)))


def test_confirmation_is_answered_at_once_and_posted_by_an_rq_worker(
    app, web, shortcode, make_loan, redis_url, rq_connection, worker_env, database_url
):
    loan = make_loan()
    body = c2b_body(TransAmount="750.00", BillRefNumber=loan.number)

    response = post_confirmation(web(REDIS_URL=redis_url), shortcode, body)

    assert (response.status_code, response.get_json()) == (200, ACCEPTED)
    payment = payment_of(body["TransID"])
    assert payment.status == "received"  # stored and acknowledged, not processed in-process
    assert repayments_of(body["TransID"]) == []
    queue = Queue(QUEUE, connection=rq_connection)
    assert queue.count == 1
    [job] = queue.get_jobs()
    assert job.func_name == "payments.jobs.process_payment_job"
    assert job.args == (payment.id,)

    assert run_worker(rq_connection) is True

    assert job.get_status(refresh=True) == JobStatus.FINISHED
    assert job.return_value() == "posted"
    # The job built its own app from the environment, as a separate `rq worker` would.
    assert payments.jobs._worker_app.cache_info().currsize == 1
    worker_app = payments.jobs._worker_app()
    assert worker_app is not app and worker_app.config["REDIS_URL"] == redis_url
    assert worker_app.config["SQLALCHEMY_DATABASE_URI"] == database_url
    payment = payment_of(body["TransID"])
    assert (payment.status, payment.rule, payment.attempts) == ("posted", "bill_ref", 1)
    [repayment] = repayments_of(body["TransID"])
    assert repayment.amount == payment.amount
    db.session.expire_all()
    assert db.session.get(Loan, loan.id).paid == payment.amount
    assert queue.count == 0


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_redis_down_the_payment_is_stored_acknowledged_and_swept_later(
    app, web, runner, shortcode, make_loan, caplog
):
    loan = make_loan()
    body = c2b_body(TransAmount="300.00", BillRefNumber=loan.number)
    redis_down = web(REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0")

    response = post_confirmation(redis_down, shortcode, body)

    assert (response.status_code, response.get_json()) == (200, ACCEPTED)  # never lost
    payment = payment_of(body["TransID"])
    assert payment.status == "received"
    assert repayments_of(body["TransID"]) == []
    assert db.session.scalars(
        select(CallbackLog.outcome).where(CallbackLog.payment_id == payment.id)
    ).all() == ["stored"]
    assert f"could not enqueue payment {payment.id}" in caplog.text

    # Redis is back (here: in-process jobs). A fresh payment is left to its worker a while...
    result = runner.invoke(args=["payments", "sweep"])
    assert result.exit_code == 0, result.output
    assert "re-enqueued 0 payment(s)" in result.output
    assert payment_of(body["TransID"]).status == "received"

    # ...and once it has waited longer than that, the sweeper processes it, once.
    db.session.execute(
        update(C2BPayment)
        .where(C2BPayment.id == payment.id)
        .values(received_at=datetime.now(UTC) - timedelta(minutes=5))
    )
    db.session.commit()
    result = runner.invoke(args=["payments", "sweep"])
    assert result.exit_code == 0, result.output
    assert "re-enqueued 1 payment(s)" in result.output
    payment = payment_of(body["TransID"])
    assert (payment.status, payment.attempts) == ("posted", 1)
    assert len(repayments_of(body["TransID"])) == 1
    assert runner.invoke(args=["payments", "sweep"]).output.strip() == "re-enqueued 0 payment(s)"


def stored_payment(app_, shortcode, loan) -> C2BPayment:
    """A confirmation stored through an app whose enqueue goes nowhere yet."""
    body = c2b_body(TransAmount="420.00", BillRefNumber=loan.number)
    response = post_confirmation(app_, shortcode, body)
    assert (response.status_code, response.get_json()) == (200, ACCEPTED)
    return payment_of(body["TransID"])


def test_jobs_are_enqueued_with_the_retry_schedule(
    app, web, shortcode, make_loan, redis_url, rq_connection
):
    payment = stored_payment(web(REDIS_URL=redis_url), shortcode, make_loan())

    [job] = Queue(QUEUE, connection=rq_connection).get_jobs()
    raw = rq_connection.hgetall(f"rq:job:{job.id}")
    assert int(raw[b"retries_left"]) == len(RETRY_INTERVALS) == 5
    assert json.loads(raw[b"retry_intervals"]) == RETRY_INTERVALS == [1, 2, 4, 8, 16]
    assert int(raw[b"timeout"]) == 120
    assert job.args == (payment.id,)

    # The same through enqueue directly, for any job.
    with web(REDIS_URL=redis_url).app_context():
        enqueue(process_payment_job, payment.id)
    jobs = Queue(QUEUE, connection=rq_connection).get_jobs()
    assert [(j.retries_left, j.retry_intervals) for j in jobs] == [(5, RETRY_INTERVALS)] * 2


def fail_transiently(monkeypatch, times: int) -> list[int]:
    """Make the first ``times`` runs of process_payment raise OperationalError."""
    real = payments.processing.process_payment
    calls = []

    def flaky(session, payment_id):
        calls.append(payment_id)
        if len(calls) <= times:
            raise OperationalError("SELECT … FOR UPDATE", {}, Exception("database is locked"))
        return real(session, payment_id)

    monkeypatch.setattr(payments.processing, "process_payment", flaky)
    return calls


def test_a_transient_database_error_is_retried_by_rq_and_posts_once(
    app, web, shortcode, make_loan, redis_url, rq_connection, worker_env, monkeypatch
):
    payment = stored_payment(web(REDIS_URL=redis_url), shortcode, make_loan())
    calls = fail_transiently(monkeypatch, times=1)
    [job] = Queue(QUEUE, connection=rq_connection).get_jobs()

    run_worker(rq_connection)

    # The first attempt failed: RQ holds the job for a retry in 1 s; the payment waits.
    assert calls == [payment.id]
    job.refresh()
    assert (job.get_status(), job.retries_left) == (JobStatus.SCHEDULED, 4)
    payment = payment_of(payment.trans_id)
    assert (payment.status, payment.attempts, payment.error) == ("received", 0, None)

    registry = ScheduledJobRegistry(QUEUE, connection=rq_connection)
    deadline = time.monotonic() + 10
    while not registry.get_jobs_to_schedule() and time.monotonic() < deadline:
        time.sleep(0.1)
    run_worker(rq_connection, with_scheduler=True)

    assert calls == [payment.id, payment.id]
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    payment = payment_of(payment.trans_id)
    assert (payment.status, payment.attempts) == ("posted", 1)
    assert len(repayments_of(payment.trans_id)) == 1


def test_the_last_rq_attempt_parks_the_payment_as_failed(
    app, web, shortcode, make_loan, redis_url, rq_connection, worker_env, monkeypatch
):
    payment = stored_payment(web(REDIS_URL=redis_url), shortcode, make_loan())
    fail_transiently(monkeypatch, times=99)
    [job] = Queue(QUEUE, connection=rq_connection).get_jobs()
    job.retries_left = 0  # as RQ leaves it after the five retries
    job.save()

    run_worker(rq_connection)

    assert Job.fetch(job.id, connection=rq_connection).return_value() == "failed"
    payment = payment_of(payment.trans_id)
    assert payment.status == "failed"
    assert "OperationalError" in payment.error and "database is locked" in payment.error
    assert repayments_of(payment.trans_id) == []
