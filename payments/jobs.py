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
from sqlalchemy import select
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


def redis_connection():
    from redis import Redis

    return Redis.from_url(current_app.config["REDIS_URL"])


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
