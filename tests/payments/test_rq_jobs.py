"""The job runner in its production shape (REDIS_URL set): a confirmation is stored and
acknowledged in the request; ``flask jobs worker`` posts it, built once, in its own app;
Redis only wakes the worker, so a Redis outage delays nothing that polling cannot find;
one-off jobs run on RQ's non-forking worker with retries that RQ's scheduler (run by our
worker) brings back; periodic jobs run once per interval across processes."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
from conftest import REDIS_URL, need
from rq import Queue
from rq.job import JobStatus
from sqlalchemy import select, update

from lenders.extensions import db
from lenders.jobs import (
    QUEUE,
    RETRY_INTERVALS,
    WAKE_KEY,
    Loop,
    Periodic,
    ScheduledJob,
    enqueue,
    runner,
)
from lenders.models import Loan, Repayment
from lenders.worker import RedisWakeups, run_rq
from payments.models import C2BPayment, SmsMessage
from tests.payments.conftest import c2b_body
from tests.payments.one_off_jobs import RUNS_KEY, record_run

ACCEPTED = {"ResultCode": 0, "ResultDesc": "Accepted"}


@pytest.fixture
def redis_url():
    """The test Redis, with no RQ or wake-up keys left from an earlier run."""
    url = need("Redis (MAREJESHO_TEST_REDIS_URL)", REDIS_URL)
    connection = redis.Redis.from_url(url)
    connection.ping()

    def forget():
        keys = [*connection.scan_iter("rq:*"), *connection.scan_iter("marejesho:*")]
        if keys:
            connection.delete(*keys)

    forget()
    yield url
    forget()
    connection.close()


@pytest.fixture
def rq_connection(redis_url):
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


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


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_confirmation_is_answered_at_once_and_posted_by_the_worker(
    app_factory, shortcode, make_loan, redis_url, rq_connection
):
    loan = make_loan()
    body = c2b_body(TransAmount="750.00", BillRefNumber=loan.number)
    web = app_factory(REDIS_URL=redis_url)

    response = post_confirmation(web, shortcode, body)

    assert (response.status_code, response.get_json()) == (200, ACCEPTED)
    payment = payment_of(body["TransID"])
    assert payment.status == "received"  # stored and acknowledged, not processed in the web
    assert repayments_of(body["TransID"]) == []
    assert rq_connection.lrange(WAKE_KEY, 0, -1) == [b"1"]  # the worker is woken, no RQ job
    assert Queue(QUEUE, connection=rq_connection).count == 0

    worker = app_factory(REDIS_URL=redis_url)
    result = worker.test_cli_runner().invoke(args=["jobs", "worker", "--burst"])

    assert result.exit_code == 0, result.output
    payment = payment_of(body["TransID"])
    assert (payment.status, payment.rule, payment.attempts) == ("posted", "bill_ref", 1)
    [repayment] = repayments_of(body["TransID"])
    assert repayment.amount == payment.amount
    assert db.session.get(Loan, loan.id).paid == payment.amount
    # The receipt was written with the posting and sent by the same worker.
    receipt = db.session.scalar(select(SmsMessage).where(SmsMessage.payment_id == payment.id))
    assert (receipt.kind, receipt.status, receipt.attempts) == ("receipt", "sent", 1)


def test_redis_down_the_payment_is_stored_acknowledged_and_found_by_polling(
    app_factory, shortcode, make_loan, caplog
):
    loan = make_loan()
    loan_id, opening = loan.id, loan.paid
    bodies = [c2b_body(TransAmount="300.00", BillRefNumber=loan.number) for _ in range(3)]
    redis_down = app_factory(REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0")

    started = time.monotonic()
    answers = [post_confirmation(redis_down, shortcode, body) for body in bodies]
    took = time.monotonic() - started

    assert [(a.status_code, a.get_json()) for a in answers] == [(200, ACCEPTED)] * 3
    assert [payment_of(b["TransID"]).status for b in bodies] == ["received"] * 3
    assert caplog.text.count("Redis unreachable") == 1  # said once, not per callback
    assert took < 5  # after the first failure the others do not wait for Redis again

    # A worker without Redis (or one whose Redis is down) finds them by polling the database.
    worker = app_factory(REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0")
    result = worker.test_cli_runner().invoke(args=["jobs", "worker", "--burst"])

    assert result.exit_code == 0, result.output
    assert [payment_of(b["TransID"]).status for b in bodies] == ["posted"] * 3
    assert [len(repayments_of(b["TransID"])) for b in bodies] == [1, 1, 1]
    db.session.expire_all()
    assert db.session.get(Loan, loan_id).paid == opening + 900


def test_one_off_jobs_run_in_the_worker_app_and_failures_come_back_as_retries(
    app_factory, redis_url, rq_connection
):
    worker = app_factory(REDIS_URL=redis_url)
    with worker.app_context():
        enqueue(record_run, "first", 1)

    [job] = Queue(QUEUE, connection=rq_connection).get_jobs()
    assert (job.retries_left, job.retry_intervals) == (len(RETRY_INTERVALS), RETRY_INTERVALS)

    run_rq(worker, redis_url, stop=None, burst=True)

    # The first run failed: RQ holds the job in its scheduled registry for a retry in 1 s.
    assert rq_connection.lrange(RUNS_KEY, 0, -1) == [b"first"]
    assert job.get_status(refresh=True) == JobStatus.SCHEDULED
    time.sleep(1.2)
    RedisWakeups(redis_url).wait(0)  # the worker's drain thread promotes due retries
    run_rq(worker, redis_url, stop=None, burst=True)

    assert rq_connection.lrange(RUNS_KEY, 0, -1) == [b"first", b"first"]
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    assert job.return_value() == worker.config["SQLALCHEMY_DATABASE_URI"]


def test_without_redis_a_one_off_job_runs_at_once_outside_a_request(app, monkeypatch):
    ran = []
    monkeypatch.setattr("tests.payments.one_off_jobs.record_run", lambda marker: ran.append(marker))
    from tests.payments import one_off_jobs

    enqueue(one_off_jobs.record_run, "now")
    assert ran == ["now"]


def test_a_periodic_job_runs_once_per_interval_across_processes(app, app_factory, monkeypatch):
    runs = []
    job = Periodic("tests.count", lambda: runs.append(datetime.now(UTC)), 3600)
    monkeypatch.setitem(runner.periodic, job.name, job)
    other = app_factory()  # another process of the same deployment

    Loop(app).tick()
    Loop(other).tick()

    assert len(runs) == 1  # the second process found this interval's lease taken
    lease = db.session.get(ScheduledJob, job.name)
    assert lease.due_at > datetime.now(UTC) + timedelta(minutes=59)
    assert lease.finished_at is not None and lease.error is None

    db.session.execute(
        update(ScheduledJob)
        .where(ScheduledJob.name == job.name)
        .values(due_at=datetime.now(UTC) - timedelta(seconds=1))
    )
    db.session.commit()
    Loop(other).tick()
    Loop(app).tick()
    assert len(runs) == 2


def test_a_failing_periodic_job_is_recorded_and_does_not_stop_the_loop(app, monkeypatch):
    def broken():
        raise RuntimeError("the job broke")

    job = Periodic("tests.broken", broken, 3600)
    monkeypatch.setitem(runner.periodic, job.name, job)

    Loop(app).tick()

    lease = db.session.get(ScheduledJob, job.name)
    assert lease.error == "RuntimeError: the job broke"
