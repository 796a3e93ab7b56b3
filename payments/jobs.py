"""The payments package's jobs, registered with the job runner (lenders/jobs.py).

Payments and messages are rows, and the rows are the jobs: the ``payments`` drain posts
what waits in ``received``, the ``messages`` drain sends what waits in ``queued``. Nothing
is lost with a job, a worker or Redis: whatever process runs the drains next finds the rows.
"""

from __future__ import annotations

import logging

from flask import current_app
from sqlalchemy import text

from lenders.book import activate_disbursed_loans
from lenders.extensions import db
from lenders.jobs import runner
from lenders.web import nairobi_today
from payments.monitoring import observe_postings
from payments.outbox import (
    claim_messages,
    give_up_interrupted,
    record_outcome,
    send_message,
    start_sending,
)
from payments.posting import post_batch
from payments.processing import after_failure, claim_received_payments, post_claimed_payment
from payments.sms_providers import provider_for

PAYMENTS_BATCH = 100
log = logging.getLogger("marejesho.jobs")
MESSAGES_BATCH = 10


@runner.drain("payments", batch=PAYMENTS_BATCH)
def post_received_payments(limit: int) -> int:
    """Claim up to ``limit`` payments waiting in ``received`` and post them as one batch
    (payments/posting.py); if the batch fails, post each in a transaction of its own, its
    receipt and notices written in the same transaction. Returns how many were claimed."""
    ids = claim_received_payments(db.session, limit)
    db.session.commit()
    if not ids:
        return 0
    try:
        post_batch(db.session, ids, lender=current_app.config.get("LENDER_NAME", "Marejesho"))
        db.session.commit()
    except Exception as exc:  # noqa: BLE001 - the payments go one by one instead
        db.session.rollback()
        if getattr(exc, "connection_invalidated", False):
            raise
        log.warning("batch of %s payments posted one by one: %s", len(ids), exc, exc_info=True)
        post_one_by_one(ids)
    observe_postings(db.session, ids)  # latency metrics of those decided, on the next commit
    db.session.commit()
    return len(ids)


def post_one_by_one(ids: list[int]) -> None:
    """Each payment in a transaction of its own: one that cannot be posted is retried or
    parked as failed without holding the others back."""
    for payment_id in ids:
        try:
            post_claimed_payment(db.session, payment_id)
            db.session.commit()
        except Exception as exc:  # noqa: BLE001 - retried or parked, never lost
            db.session.rollback()
            after_failure(db.session, payment_id, exc)
            db.session.commit()


@runner.drain("messages", batch=MESSAGES_BATCH)
def send_queued_messages(limit: int) -> int:
    """Claim up to ``limit`` queued messages, then for each: mark it ``sending`` (reading what
    to send in the same statement) and commit, call the provider, record its answer and
    commit. A worker killed before the mark leaves the message to be sent later; one killed
    during the provider's call leaves it ``sending`` (interrupted, for a person): never
    sent twice."""
    ids = claim_messages(db.session, limit)
    db.session.commit()
    if not ids:
        return 0
    provider = provider_for(db.session, current_app.config)
    for message_id in ids:
        message = start_sending(db.session, message_id)
        db.session.commit()  # the mark is on disk before the provider is called
        if message is not None:
            outcome = send_message(provider, message)
            lazy_commit(db.session)
            record_outcome(db.session, message, outcome)
            db.session.commit()  # at once: the window of doubt is the provider's call alone
    return len(ids)


def lazy_commit(session) -> None:
    """This transaction's commit need not wait for the disk (PostgreSQL): if the database
    crashed and lost it, the message would stay ``sending`` (in doubt, never sent again),
    so the record of what the provider said may be lost, never a message sent twice. The
    mark before the call keeps its synchronous commit."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL synchronous_commit TO OFF"))


@runner.every(60)
def activate_due_loans() -> None:
    """Loans whose disbursement day has come become active, so payments can find them."""
    activate_disbursed_loans(db.session, nairobi_today())
    db.session.commit()


@runner.every(60)
def give_up_interrupted_messages() -> None:
    """Messages a dead worker left ``sending`` are marked failed, never sent twice."""
    give_up_interrupted(db.session)
    db.session.commit()
