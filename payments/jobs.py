"""Background jobs and the one way to start them.

``enqueue`` sends a job to RQ when REDIS_URL is set (``rq worker marejesho`` runs it) and
otherwise runs it in-process, after the caller's commit: from a request, on the worker
process's own job thread once the request is answered (``BackgroundJobs``); from a
command or another job, at once. Jobs take ids, reload inside their own app context and
commit their own unit of work."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import cache

from flask import Flask, current_app, has_app_context, has_request_context
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError, OperationalError

from lenders.extensions import db

QUEUE = "marejesho"
RETRY_INTERVALS = [1, 2, 4, 8, 16]  # seconds, then the payment is parked as failed
log = logging.getLogger("marejesho.jobs")


@cache
def _worker_app():
    from app import create_app  # a worker process builds its app once, on its first job

    return create_app()


@contextmanager
def job_context() -> Iterator[None]:
    """A fresh app context (its own database session) for one job."""
    app = current_app._get_current_object() if has_app_context() else _worker_app()
    with app.app_context():
        try:
            yield
        finally:
            db.session.remove()


@cache
def _redis(url: str):
    from redis import Redis

    return Redis.from_url(url)


def redis_connection():
    """One connection pool per process and URL (a new one per enqueue cost half a request)."""
    return _redis(current_app.config["REDIS_URL"])


def enqueue(job: Callable, *args) -> None:
    """Run ``job(*args)`` on RQ with retries when Redis is configured, else right now.
    Call it after the commit that made the job's rows visible."""
    url = current_app.config.get("REDIS_URL")
    if url:
        from rq import Queue, Retry

        Queue(QUEUE, connection=redis_connection()).enqueue(
            job,
            *args,
            retry=Retry(max=len(RETRY_INTERVALS), interval=RETRY_INTERVALS),
            job_timeout=120,
        )
        return
    if has_request_context() and current_app.config.get("JOBS_IN_BACKGROUND", True):
        current_app.extensions["marejesho.jobs"].submit(job, *args)
        return
    job(*args)


class BackgroundJobs:
    """The embedded default's worker: one thread in each server process runs the jobs its
    requests enqueued, after they are answered, and only when no request has been in
    flight in the process for ``quiet`` seconds. Safaricom's callbacks come first: a burst
    is acknowledged at full speed and matching and posting catch up behind it, in order.

    Nothing depends on this thread's memory: a payment is committed in ``received`` before
    it is acknowledged, and the thread sweeps every ``sweep_every`` seconds (payments left
    in ``received`` by a restart, receipts still queued, loans due to become active), so
    the embedded default needs no cron."""

    def __init__(self, app: Flask, quiet: float = 0.05, sweep_every: float = 60.0):
        self.app = app
        self.quiet = quiet
        self.sweep_every = sweep_every
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._jobs: queue.Queue = queue.Queue()
        self._in_flight = 0
        self._last_request = 0.0
        self._thread: threading.Thread | None = None
        app.wsgi_app = self._counting(app.wsgi_app)

    def _counting(self, wsgi_app):
        def counted(environ, start_response):
            if self._pid != os.getpid():
                self._start()
            with self._lock:
                self._in_flight += 1
            try:
                return wsgi_app(environ, start_response)
            finally:
                with self._lock:
                    self._in_flight -= 1
                    self._last_request = time.monotonic()

        return counted

    def _start(self) -> None:
        """This process's job thread, on its first request (a forked server worker
        inherits no threads), unless jobs go to Redis or run inline."""
        config = self.app.config
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._jobs = queue.Queue()
            if config.get("REDIS_URL") or not config.get("JOBS_IN_BACKGROUND", True):
                return
            self._thread = threading.Thread(
                target=self._work, args=(self._jobs,), name="marejesho-jobs", daemon=True
            )
            self._thread.start()

    def submit(self, job: Callable, *args) -> None:
        """Queue ``job(*args)`` for this process's job thread."""
        if self._pid != os.getpid():
            self._start()
        self._jobs.put((job, args))

    def join(self, timeout: float = 30.0) -> bool:
        """Wait until every queued job has run (tests and the benchmark); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._jobs.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Let the thread finish its current job and end (tests; a server just exits)."""
        thread = self._thread
        if thread is not None and thread.is_alive() and self._pid == os.getpid():
            self._jobs.put((None, ()))
            thread.join(timeout)

    def _busy(self) -> bool:
        with self._lock:
            return bool(self._in_flight) or time.monotonic() - self._last_request < self.quiet

    def _work(self, jobs: queue.Queue) -> None:
        next_sweep = time.monotonic() + self.sweep_every
        while True:
            try:
                job, args = jobs.get(timeout=max(0.0, next_sweep - time.monotonic()))
            except queue.Empty:
                next_sweep = time.monotonic() + self.sweep_every
                self._run(_sweep, ())
                continue
            if job is None:
                jobs.task_done()
                return
            try:
                self._run(job, args)
            finally:
                jobs.task_done()

    def _run(self, job: Callable, args: tuple) -> None:
        while self._busy():
            time.sleep(self.quiet / 2)
        try:
            with self.app.app_context():
                job(*args)
        except Exception:  # noqa: BLE001 - jobs record their own failures; keep going
            log.exception("in-process job %s failed", getattr(job, "__name__", job))


def _sweep() -> None:
    """The embedded default's scheduled run (RQ cron runs the same under REDIS_URL)."""
    sweep_received_payments()
    sweep_queued_messages()


def init_app(app: Flask) -> None:
    """Give the app its in-process job runner (used when REDIS_URL is not set)."""
    app.extensions["marejesho.jobs"] = BackgroundJobs(app)


def is_transient(exc: BaseException) -> bool:
    """Errors worth a retry: the database was locked, busy or unreachable."""
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def _retries_left() -> int | None:
    try:
        from rq import get_current_job

        job = get_current_job()
    except Exception:  # noqa: BLE001 - no RQ job: in-process
        return None
    return job.retries_left if job is not None else None


def process_payment_job(payment_id: int) -> str | None:
    """Match and post one payment. Transient database errors are retried with backoff
    (by RQ, or here in-process); anything else, or the last failure, parks the payment
    as ``failed`` with the error. Running it twice posts once."""
    from payments.processing import mark_failed, process_payment

    attempt = 0
    while True:
        with job_context():
            try:
                status = process_payment(db.session, payment_id)
                db.session.commit()
                if status == "posted":
                    after_posting(payment_id)
                return status
            except Exception as exc:  # noqa: BLE001 - every failure is recorded
                db.session.rollback()
                transient = is_transient(exc)
                retries_left = _retries_left()
                if transient and retries_left:
                    log.warning("payment %s: transient error, RQ retries: %s", payment_id, exc)
                    raise
                if transient and retries_left is None and attempt < 3:
                    attempt += 1
                    time.sleep(0.2 * 2**attempt)
                    continue
                log.exception("payment %s failed", payment_id)
                mark_failed(db.session, payment_id, f"{type(exc).__name__}: {exc}")
                db.session.commit()
                return "failed"


def sweep_received_payments(older_than: timedelta = timedelta(seconds=60)) -> int:
    """Re-enqueue payments left in ``received`` (Redis was down, a worker died) for longer
    than RQ's own retries take (31 s), after
    activating loans whose disbursement day has come so payments can find them."""
    from lenders.book import activate_disbursed_loans
    from lenders.web import nairobi_today
    from payments.models import C2BPayment

    with job_context():
        activate_disbursed_loans(db.session, nairobi_today())
        db.session.commit()
        cutoff = datetime.now(UTC) - older_than
        ids = list(
            db.session.scalars(
                select(C2BPayment.id)
                .where(C2BPayment.status == "received", C2BPayment.received_at <= cutoff)
                .order_by(C2BPayment.id)
            )
        )
        db.session.rollback()  # no transaction held open while the jobs run
        for payment_id in ids:
            enqueue(process_payment_job, payment_id)
    return len(ids)


SMS_ATTEMPTS = 5


def send_receipt_job(payment_id: int) -> str | None:
    """Text the borrower a receipt for a posted payment, once. A provider failure leaves
    the message queued for a retry (RQ's backoff, or the sweep in-process) and, after the
    last attempt, failed; the posting is never touched."""
    from payments.models import SmsMessage
    from payments.sms import (
        SmsFailed,
        claim_message,
        provider_for,
        queue_receipt,
        record_failure,
        record_sent,
    )

    with job_context():
        lender = current_app.config["LENDER_NAME"]
        message = queue_receipt(db.session, payment_id, lender)
        db.session.commit()
        if message is None or message.status not in ("queued", "failed"):
            return message.status if message else None
        message_id = message.id
        if not claim_message(db.session, message_id):
            db.session.rollback()
            return None
        db.session.commit()  # the claim is visible before the provider is called
        message = db.session.get(SmsMessage, message_id)
        provider = provider_for(db.session, current_app.config)
        try:
            provider_id = provider.send(message.to_phone, message.body)
        except (SmsFailed, Exception) as exc:  # noqa: BLE001 - any provider failure is kept
            final = message.attempts >= SMS_ATTEMPTS
            record_failure(db.session, message_id, str(exc) or type(exc).__name__, final=final)
            db.session.commit()
            log.warning(
                "receipt for payment %s not sent (attempt %s): %s",
                payment_id,
                message.attempts,
                type(exc).__name__,
            )
            if _retries_left():
                raise
            return "failed" if final else "queued"
        record_sent(db.session, message_id, provider.name, provider_id)
        db.session.commit()
        return "sent"


def notify_officers_job(payment_id: int) -> int:
    """In-app notices for the officers whose portfolio a payment landed in."""
    from payments.sms import notify_officers

    with job_context():
        made = notify_officers(db.session, payment_id)
        db.session.commit()
        return made


def after_posting(payment_id: int) -> None:
    """What follows a posting, outside its transaction: the receipt and the notices."""
    for job in (send_receipt_job, notify_officers_job):
        try:
            enqueue(job, payment_id)
        except Exception:  # noqa: BLE001 - the money is posted; the sweep sends later
            log.exception("could not enqueue %s for payment %s", job.__name__, payment_id)


def sweep_queued_messages(older_than: timedelta = timedelta(seconds=60)) -> int:
    """Receipts still queued (a provider failed in-process, Redis was down) go again."""
    from payments.models import SmsMessage

    with job_context():
        # A job that died between claiming and recording leaves "sending": say so, do
        # not guess whether the provider took it.
        db.session.execute(
            update(SmsMessage)
            .where(
                SmsMessage.status == "sending",
                SmsMessage.created_at <= datetime.now(UTC) - timedelta(minutes=10),
            )
            .values(
                status="failed",
                attempts=SMS_ATTEMPTS,
                error="interrupted while sending; check with the provider",
            )
        )
        db.session.commit()
        cutoff = datetime.now(UTC) - older_than
        ids = list(
            db.session.scalars(
                select(SmsMessage.payment_id).where(
                    SmsMessage.status == "queued",
                    SmsMessage.kind == "receipt",
                    SmsMessage.created_at <= cutoff,
                    SmsMessage.attempts < SMS_ATTEMPTS,
                    SmsMessage.payment_id.is_not(None),
                )
            )
        )
        db.session.rollback()
        for payment_id in ids:
            enqueue(send_receipt_job, payment_id)
    return len(ids)
