"""Background jobs and the one way to start them.

``enqueue`` sends a job to RQ when REDIS_URL is set (``rq worker marejesho`` runs it) and
otherwise runs it in-process at once, after the caller's commit. Jobs take ids, reload
inside their own app context and commit their own unit of work."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import cache

from flask import current_app, has_app_context
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
    job(*args)


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
