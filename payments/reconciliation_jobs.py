"""Reconciliation's jobs, registered with the job runner (lenders/jobs.py): the one-off
import of an uploaded statement, the ``reversals`` drain (reversal lines waiting in
``pending`` are the jobs), and Pull Transactions on a schedule."""

from __future__ import annotations

import logging
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flask import current_app
from sqlalchemy import func, select

from lenders.extensions import db
from lenders.jobs import is_transient, runner
from lenders.monitoring import Figures, monitor
from payments import reconciliation_models  # noqa: F401 (its tables are the app's)
from payments.models import Shortcode
from payments.reconciliation_models import PullRegistration, StatementImport, StatementLine
from payments.reversals import settle_reversal_line

log = logging.getLogger("marejesho.reconciliation")
REVERSALS_BATCH = 50
PULL_EVERY_SECONDS = 30 * 60  # Safaricom keeps 48 h; config PULL_EVERY_SECONDS changes it


def run_statement_import(import_id: int) -> None:
    """Import an uploaded statement (a one-off job: RQ's worker, or the server process's
    job thread). Commits after each batch of rows, so the upload page's progress bar moves
    and callbacks are never kept waiting; a run again after a crash adds nothing twice."""
    from payments.statements import import_statement, wake_drains

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


@monitor.figures("reconciliation")
def reconciliation_figures(session, now: datetime) -> Figures:
    """The reversals drain's depth (a partial index of pending lines), for /healthz,
    /metrics and the jobs screen."""
    pending = session.scalar(
        select(func.count()).select_from(StatementLine).where(StatementLine.outcome == "pending")
    )
    return Figures(depths={"reversals": pending or 0})


@runner.every(60, name="payments.pull_transactions")
def pull_registered_shortcodes() -> None:
    """Pull Transactions for each registered shortcode whose last try is older than
    PULL_EVERY_SECONDS (30 minutes by default), always inside Safaricom's 48 hours."""
    from payments.pull import PullError, pull_and_record

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
