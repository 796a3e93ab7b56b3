"""The unmatched queue (/payments/unmatched/): payments no rule could place and payments
processing gave up on, waiting for an officer; each shown with its best suggestions
(``payments.suggestions``)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from payments.models import C2BPayment, PaymentStatus

WAITING = (PaymentStatus.UNMATCHED, PaymentStatus.FAILED)


def unmatched_queue(session: Session, limit: int = 100) -> list[C2BPayment]:
    """Unmatched and failed payments, oldest first."""
    return list(
        session.scalars(
            select(C2BPayment)
            .where(C2BPayment.status.in_(WAITING))
            .options(selectinload(C2BPayment.shortcode))
            .order_by(C2BPayment.received_at, C2BPayment.id)
            .limit(limit)
        )
    )
