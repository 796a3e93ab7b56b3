"""The payments package's figures for /healthz, /metrics and the jobs screen
(lenders/monitoring.py), and its Prometheus counts (lenders/metrics.py).

Counted as they happen, in every process (multiprocess mode when PROMETHEUS_MULTIPROC_DIR
is set):

* ``marejesho_callbacks_total{shortcode, kind, outcome}``: each callback that reached a
  shortcode: confirmations ``stored``, ``duplicate``, ``conflict`` or ``quarantined``,
  validations ``accepted`` or ``rejected``. On a confirmation's path this is one increment
  of a counter found in a dict.
* ``marejesho_payment_posting_seconds{outcome}``: from a confirmation's arrival
  (``received_at``) to the payments drain's decision (``processed_at``), observed once the
  drain's transaction commits; ``outcome`` is ``posted``, ``unmatched`` or ``failed``.

Read at scrape time from the database: payments waiting in ``received``, messages in
``queued`` and reversals in ``pending`` (the drains' depths), the oldest payment waiting,
unmatched and failed payments, and the last callback of each shortcode."""

from __future__ import annotations

import logging
from datetime import datetime

from prometheus_client import Counter, Histogram
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, scoped_session

from lenders.monitoring import Figures, Sample, monitor
from payments.models import C2BPayment, CallbackLog, PaymentStatus, Shortcode, SmsMessage
from payments.reconciliation_models import StatementLine

log = logging.getLogger("marejesho.metrics")

CALLBACKS = Counter(
    "marejesho_callbacks",
    "Callbacks from Safaricom by shortcode, kind (confirmation, validation) and outcome",
    ["shortcode", "kind", "outcome"],
)
POSTING_SECONDS = Histogram(
    "marejesho_payment_posting_seconds",
    "From a confirmation's arrival to the payments drain's decision on it",
    ["outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600),
)
_counters: dict[tuple[str, str, str], object] = {}


def count_callback(shortcode: str, kind: str, outcome: str, n: int = 1) -> None:
    """A callback's outcome (``n`` of them). Never raises: a count is not worth a refused
    payment."""
    key = (shortcode, kind, outcome)
    try:
        counter = _counters.get(key)
        if counter is None:
            counter = _counters[key] = CALLBACKS.labels(*key)
        counter.inc(n)
    except Exception:  # noqa: BLE001 - e.g. the metrics directory went away
        log.exception("could not count a callback")


_POSTINGS, _LISTENING = "marejesho.postings", "marejesho.postings.listening"
DECIDED = (PaymentStatus.POSTED, PaymentStatus.UNMATCHED, PaymentStatus.FAILED)


def observe_postings(session: Session, payment_ids) -> None:
    """The payments drain decided these payments in ``session``'s transaction: observe each
    one's latency once it commits (a batch rolled back observes nothing). One query by
    primary key for the whole batch; a payment left in ``received`` is not observed."""
    if not payment_ids:
        return
    if isinstance(session, scoped_session):
        session = session()
    rows = session.execute(
        select(C2BPayment.status, C2BPayment.received_at, C2BPayment.processed_at).where(
            C2BPayment.id.in_(list(payment_ids)), C2BPayment.status.in_(DECIDED)
        )
    ).all()
    found = [
        (status, max((processed - received).total_seconds(), 0.0))
        for status, received, processed in rows
        if received is not None and processed is not None
    ]
    if not found:
        return
    session.info.setdefault(_POSTINGS, []).extend(found)
    if not session.info.get(_LISTENING):
        session.info[_LISTENING] = True
        event.listen(session, "after_commit", _observe_pending)
        event.listen(session, "after_rollback", _forget_pending)


def _observe_pending(session: Session) -> None:
    if session.in_nested_transaction():
        return
    for outcome, seconds in session.info.pop(_POSTINGS, ()):
        try:
            POSTING_SECONDS.labels(outcome).observe(seconds)
        except Exception:  # noqa: BLE001 - the postings are committed; a lost sample is not
            log.exception("could not observe a posting's latency")
            return


def _forget_pending(session: Session) -> None:
    if not session.in_nested_transaction():
        session.info.pop(_POSTINGS, None)


def _count(session: Session, model, *where) -> int:
    return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def _age(now: datetime, then: datetime | None) -> float | None:
    return round((now - then).total_seconds(), 1) if then is not None else None


@monitor.figures("payments")
def payment_figures(session: Session, now: datetime) -> Figures:
    """Depths of the payments and messages drains, what waits for staff, the oldest payment
    waiting, and each shortcode's last callback. Each is an index lookup, whatever the size
    of the tables (a shortcode's last callback reads its own index, not the whole log)."""
    received = _count(session, C2BPayment, C2BPayment.status == PaymentStatus.RECEIVED)
    oldest = session.scalar(
        select(func.min(C2BPayment.received_at)).where(C2BPayment.status == PaymentStatus.RECEIVED)
    )
    waiting = {
        status: _count(session, C2BPayment, C2BPayment.status == status)
        for status in (PaymentStatus.UNMATCHED, PaymentStatus.FAILED, PaymentStatus.REVIEW)
    }
    queued = _count(session, SmsMessage, SmsMessage.status == "queued")
    last_at = (
        select(func.max(CallbackLog.received_at))
        .where(CallbackLog.shortcode_id == Shortcode.id)
        .scalar_subquery()
    )
    last = session.execute(select(Shortcode.number, last_at).order_by(Shortcode.number)).all()

    gauges = [
        Sample(
            "marejesho_payments_unmatched",
            "Payments no loan was found for",
            waiting[PaymentStatus.UNMATCHED],
        ),
        Sample(
            "marejesho_payments_failed",
            "Payments parked as failed, for an officer",
            waiting[PaymentStatus.FAILED],
        ),
        Sample(
            "marejesho_payments_oldest_received_age_seconds",
            "Age of the oldest payment waiting to be posted (0 when none waits)",
            _age(now, oldest) or 0.0,
        ),
    ]
    for number, at in last:
        if at is not None:
            gauges.append(
                Sample(
                    "marejesho_last_callback_timestamp_seconds",
                    "When the shortcode's last callback arrived",
                    at.timestamp(),
                    (("shortcode", number),),
                )
            )
    details = {
        "oldest_received_age_seconds": _age(now, oldest),
        "waiting_for_staff": waiting,
        "last_callback": {
            number: {"at": at.isoformat(timespec="seconds"), "age_seconds": _age(now, at)}
            if at is not None
            else None
            for number, at in last
        },
    }
    return Figures(
        depths={"payments": received, "messages": queued}, details=details, gauges=gauges
    )


@monitor.figures("journal")
def journal_figures(session, now: datetime) -> Figures:
    """Confirmations acknowledged on this host and not yet shipped to the database (a
    quarter of a second's worth normally; an outage's worth while the database is down)."""
    from payments import journal

    return Figures(depths={"journal": journal.waiting()})


@monitor.figures("reconciliation")
def reconciliation_figures(session, now: datetime) -> Figures:
    """The reversals drain's depth (a partial index of pending lines), for /healthz,
    /metrics and the jobs screen."""
    pending = session.scalar(
        select(func.count()).select_from(StatementLine).where(StatementLine.outcome == "pending")
    )
    return Figures(depths={"reversals": pending or 0})
