"""Alerts (/payments/alerts/, and the dashboard's top for admins): what an admin should
hear about before a borrower calls: failed, stale or conflicting payments, failing SMS,
and a paybill gone quiet."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from payments.models import C2BPayment, CallbackLog, PaymentStatus, Shortcode, SmsMessage


@dataclass
class Alert:
    level: str  # danger | warning
    title: str
    detail: str
    link: PaymentStatus | None = None  # the transactions page filtered on this status


def alerts(session: Session, now: datetime) -> list[Alert]:
    """What an admin should hear about before a borrower calls."""
    found = []
    failed = session.scalar(select(func.count()).where(C2BPayment.status == PaymentStatus.FAILED))
    if failed:
        found.append(
            Alert(
                "danger",
                f"{failed} failed payment(s)",
                "Processing failed; reprocess them once the cause is fixed.",
                PaymentStatus.FAILED,
            )
        )
    stale = session.scalar(
        select(func.count()).where(
            C2BPayment.status == PaymentStatus.UNMATCHED,
            C2BPayment.received_at < now - timedelta(hours=24),
        )
    )
    if stale:
        found.append(
            Alert(
                "warning",
                f"{stale} payment(s) unmatched for over 24 hours",
                "Borrowers' money is waiting; assign it.",
                PaymentStatus.UNMATCHED,
            )
        )
    review = session.scalar(select(func.count()).where(C2BPayment.status == PaymentStatus.REVIEW))
    if review:
        found.append(
            Alert(
                "danger",
                f"{review} payment(s) need review",
                "The same M-Pesa receipt arrived with another amount or account.",
                PaymentStatus.REVIEW,
            )
        )
    failed_sms = session.scalar(
        select(func.count()).where(
            SmsMessage.status == "failed", SmsMessage.created_at >= now - timedelta(hours=24)
        )
    )
    if failed_sms and failed_sms >= 3:
        found.append(
            Alert(
                "warning",
                f"{failed_sms} SMS failed in the last 24 hours",
                "Check the SMS provider's settings and balance.",
                None,
            )
        )
    for shortcode in session.scalars(select(Shortcode).order_by(Shortcode.number)):
        recent = list(
            session.scalars(
                select(CallbackLog.received_at)
                .where(CallbackLog.shortcode_id == shortcode.id, CallbackLog.kind == "confirmation")
                .order_by(CallbackLog.received_at.desc())
                .limit(50)
            )
        )
        if len(recent) < 10:
            continue
        gaps = [(a - b).total_seconds() for a, b in zip(recent, recent[1:], strict=False)]
        usual = statistics.median(gaps)
        silent = (now - recent[0]).total_seconds()
        if silent > max(10 * usual, 3600):
            found.append(
                Alert(
                    "warning",
                    f"No payments on {shortcode.number} for {int(silent // 3600)} h",
                    f"It usually hears from Safaricom every {int(usual // 60) or 1} min. Check the "
                    "callback URLs and reconcile against the M-Pesa statement.",
                    None,
                )
            )
    return found
