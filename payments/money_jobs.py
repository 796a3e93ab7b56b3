"""The jobs of money out and back, registered with the job runner (lenders/jobs.py).

Rows waiting in a state are the jobs, as for payments and messages:
- the ``money`` drain: approved payouts and approved reversals are marked ``sent``,
  committed, then sent once. Approving wakes it;
- every 5 s, what waits on the clock: payouts and reversals in flight whose result is late
  are asked about with Transaction Status, pending prompts with no callback with STK Query;
- every 15 s: prompts Daraja never answered expire with their lifetime, and prompts STK
  Query called paid are linked to the payment that carried their money.

Every drain runs on every pass of every worker, and a burst of confirmations wakes the
workers many times a second: so the drain looks at both tables in one statement and claims
only when something is approved, and what comes due with time is a periodic job's.

A worker that dies between marking a row ``sent`` and recording Daraja's answer leaves it
``sent``: the status check settles it. Nothing here ever sends a request twice."""

from __future__ import annotations

import logging

from flask import current_app
from sqlalchemy import exists, or_, select

from lenders.disbursements import Disbursement
from lenders.extensions import db
from lenders.jobs import runner
from payments import daraja_queries, disbursing, prompt_checks, reversing
from payments.money_models import Reversal

log = logging.getLogger("marejesho.jobs")
CHECKS_BATCH = 10
PROMPTS_BATCH = 20


def _each(ids, work) -> None:
    """``work(id)`` then commit, for each id; a failure is logged and rolled back (the
    row stays where the status checks find it)."""
    for row_id in ids:
        try:
            work(row_id)
            db.session.commit()
        except Exception:  # noqa: BLE001 - the row waits for the next pass or the check
            db.session.rollback()
            log.exception("money job failed for row %s", row_id)


def _ask(query) -> None:
    """Commit a new Transaction Status query's row, then send it."""
    db.session.commit()
    if query is not None:
        daraja_queries.send_query(db.session, query.id, current_app.config)


# Anything approved and not yet sent, payouts or reversals: one index lookup in each table.
_APPROVED = select(
    or_(
        exists().where(Disbursement.status == "approved"),
        exists().where(Reversal.status == "approved"),
    )
)


@runner.drain("money", batch=10)
def send_approved(limit: int) -> int:
    """Send approved payouts and reversals (of each, up to ``limit``)."""
    if not db.session.scalar(_APPROVED):
        return 0
    return max(send_disbursements(limit), send_reversals(limit))


def send_disbursements(limit: int) -> int:
    """Send approved payouts."""
    config = current_app.config
    ids = disbursing.claim_approved(db.session, limit, config=config)
    db.session.commit()
    _each(ids, lambda i: disbursing.send_claimed(db.session, i, config))
    return len(ids)


def send_reversals(limit: int) -> int:
    """Send approved reversals."""
    config = current_app.config
    ids = reversing.claim_approved(db.session, limit)
    db.session.commit()
    _each(ids, lambda i: reversing.send_claimed(db.session, i, config))
    return len(ids)


def ask_about_late_payouts(limit: int) -> int:
    """Transaction Status for payouts in flight whose result is late."""
    config = current_app.config
    due = disbursing.claim_due_checks(db.session, limit)
    db.session.commit()
    _each(due, lambda i: _ask(disbursing.start_status_check(db.session, i, config)))
    return len(due)


def ask_about_late_reversals(limit: int) -> int:
    """Transaction Status for reversals in flight whose result is late."""
    due = reversing.claim_due_checks(db.session, limit)
    db.session.commit()
    _each(due, lambda i: _ask(reversing.start_status_check(db.session, i)))
    return len(due)


def ask_about_prompts(limit: int) -> int:
    """STK Query for pending prompts whose callback has not come in time."""
    ids = prompt_checks.claim_due_prompts(db.session, limit)
    db.session.commit()
    _each(ids, lambda i: prompt_checks.ask_about_prompt(db.session, i, current_app.config))
    return len(ids)


@runner.every(5)
def ask_about_late_answers() -> None:
    """Ask Safaricom about whatever has waited too long for its answer, all of it."""
    for ask, batch in (
        (ask_about_late_payouts, CHECKS_BATCH),
        (ask_about_late_reversals, CHECKS_BATCH),
        (ask_about_prompts, PROMPTS_BATCH),
    ):
        while ask(batch) == batch:
            pass


@runner.every(15)
def close_and_link_prompts() -> None:
    """Prompts Daraja never answered expire; paid prompts without a receipt find theirs."""
    prompt_checks.expire_unanswered(db.session)
    prompt_checks.link_receiptless(db.session)
    db.session.commit()
