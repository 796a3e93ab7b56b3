"""The jobs of money out and back, registered with the job runner (lenders/jobs.py).

Rows waiting in a state are the jobs, as for payments and messages:
- ``disbursements``: approved payouts are marked ``sent``, committed, then sent once; payouts
  in flight whose result is late are asked about with Transaction Status;
- ``reversals``: the same for approved reversals;
- ``stk``: pending prompts with no callback are asked about with STK Query;
- every 15 s: prompts Daraja never answered expire with their lifetime, and prompts STK
  Query called paid are linked to the payment that carried their money.

A worker that dies between marking a row ``sent`` and recording Daraja's answer leaves it
``sent``: the status check settles it. Nothing here ever sends a request twice."""

from __future__ import annotations

import logging

from flask import current_app

from lenders.extensions import db
from lenders.jobs import runner
from payments import daraja_queries, disbursing, prompt_checks, reversing

log = logging.getLogger("marejesho.jobs")


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


@runner.drain("disbursements", batch=10)
def send_disbursements(limit: int) -> int:
    """Send approved payouts; ask Transaction Status about payouts whose result is late."""
    config = current_app.config
    ids = disbursing.claim_approved(db.session, limit, config=config)
    db.session.commit()
    _each(ids, lambda i: disbursing.send_claimed(db.session, i, config))
    due = disbursing.claim_due_checks(db.session, limit)
    db.session.commit()
    _each(due, lambda i: _ask(disbursing.start_status_check(db.session, i, config)))
    return max(len(ids), len(due))


@runner.drain("reversals", batch=10)
def send_reversals(limit: int) -> int:
    """Send approved reversals; ask Transaction Status about those whose result is late."""
    config = current_app.config
    ids = reversing.claim_approved(db.session, limit)
    db.session.commit()
    _each(ids, lambda i: reversing.send_claimed(db.session, i, config))
    due = reversing.claim_due_checks(db.session, limit)
    db.session.commit()
    _each(due, lambda i: _ask(reversing.start_status_check(db.session, i)))
    return max(len(ids), len(due))


@runner.drain("stk", batch=20)
def ask_about_prompts(limit: int) -> int:
    """STK Query for pending prompts whose callback has not come in time."""
    ids = prompt_checks.claim_due_prompts(db.session, limit)
    db.session.commit()
    _each(ids, lambda i: prompt_checks.ask_about_prompt(db.session, i, current_app.config))
    return len(ids)


@runner.every(15)
def close_and_link_prompts() -> None:
    """Prompts Daraja never answered expire; paid prompts without a receipt find theirs."""
    prompt_checks.expire_unanswered(db.session)
    prompt_checks.link_receiptless(db.session)
    db.session.commit()
