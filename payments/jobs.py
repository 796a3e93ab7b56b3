"""The payments package's jobs, registered with the job runner (lenders/jobs.py).

Payments, messages and reversals are rows, and the rows are the jobs: the ``payments``
drain posts what waits in ``received``, the ``messages`` drain sends what waits in
``queued``, the ``reversals`` drain applies the reversals a statement or a pull showed
(statement lines in ``pending``). Nothing is lost with a job, a worker or Redis: whatever
process runs the drains next finds the rows. Also: an uploaded statement's import (a
one-off job), Pull Transactions on a schedule, and the periodic chores.
"""

from __future__ import annotations

import logging
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flask import current_app
from sqlalchemy import select, text

from lenders.book import activate_disbursed_loans
from lenders.extensions import db
from lenders.jobs import is_transient, runner
from lenders.web import nairobi_today
from payments.models import Shortcode
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
from payments.pull import PullError, pull_and_record
from payments.reconciliation_models import PullRegistration, StatementImport, StatementLine
from payments.reversals import settle_reversal_line
from payments.sms_providers import provider_for
from payments.statements import import_statement, wake_drains

PAYMENTS_BATCH = 250
log = logging.getLogger("marejesho.jobs")
MESSAGES_BATCH = 10
REVERSALS_BATCH = 50
PULL_EVERY_SECONDS = 30 * 60  # Safaricom keeps 48 h; config PULL_EVERY_SECONDS changes it


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


# --- reconciliation -----------------------------------------------------------------------


def run_statement_import(import_id: int) -> None:
    """Import an uploaded statement (a one-off job: RQ's worker, or the server process's
    job thread). Commits after each batch of rows, so the upload page's progress bar moves
    and callbacks are never kept waiting; a run again after a crash adds nothing twice."""
    record = db.session.get(StatementImport, import_id)
    if record is None or record.status == "done":
        return
    content = record.content
    record.status, record.started_at, record.error = "running", datetime.now(UTC), None
    db.session.commit()
    try:
        if content is None:
            raise ValueError("the uploaded file is gone; upload it again")
        suffix = Path(record.filename).suffix.lower() or ".csv"
        with tempfile.TemporaryDirectory(prefix="marejesho-statement-") as directory:
            path = Path(directory) / f"statement{suffix}"
            path.write_bytes(content)
            import_statement(
                db.session, path, record.shortcode, record=record, checkpoint=db.session.commit
            )
        db.session.commit()
    except Exception as exc:
        db.session.rollback()
        log.exception("statement import %s failed", import_id)
        record = db.session.get(StatementImport, import_id)
        record.status, record.error = "failed", f"{type(exc).__name__}: {exc}"[:500]
        record.finished_at = datetime.now(UTC)
        db.session.commit()
        return
    wake_drains()


@runner.drain("reversals", batch=REVERSALS_BATCH)
def settle_reversals(limit: int) -> int:
    """Reversals a statement or a pull showed, each in a transaction of its own."""
    ids = list(
        db.session.scalars(
            select(StatementLine.id)
            .where(StatementLine.outcome == "pending")
            .order_by(StatementLine.id)
            .limit(limit)
        )
    )
    db.session.rollback()
    for line_id in ids:
        try:
            settle_reversal_line(db.session, line_id)
            db.session.commit()
        except Exception as exc:
            db.session.rollback()
            if is_transient(exc):
                log.warning("reversal line %s: transient error, tried again later", line_id)
                return 0  # the next poll comes back to it
            log.exception("reversal line %s failed", line_id)
            _park(line_id, f"{type(exc).__name__}: {exc}")
    return len(ids)


def _park(line_id: int, error: str) -> None:
    line = db.session.get(StatementLine, line_id)
    if line is not None and line.outcome == "pending":
        line.outcome, line.note = "review", f"could not be applied: {error}"[:500]
        db.session.commit()


@runner.every(60, name="payments.pull_transactions")
def pull_registered_shortcodes() -> None:
    """Pull Transactions for each registered shortcode whose last try is older than
    PULL_EVERY_SECONDS (30 minutes by default), always inside Safaricom's 48 hours."""
    every = timedelta(seconds=current_app.config.get("PULL_EVERY_SECONDS", PULL_EVERY_SECONDS))
    due = datetime.now(UTC) - every
    found = db.session.execute(
        select(PullRegistration.shortcode_id, PullRegistration.last_attempt_at)
    ).all()
    db.session.rollback()
    for shortcode_id, last in found:
        if last is not None and last > due:
            continue
        shortcode = db.session.get(Shortcode, shortcode_id)
        if shortcode is None:
            continue
        try:
            pull_and_record(db.session, shortcode, current_app.config)
        except PullError:
            continue  # kept on the registration, shown on the shortcode's page
