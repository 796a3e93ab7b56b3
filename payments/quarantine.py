"""Callbacks that need an admin's eyes: bodies that were quarantined (not a C2B notice, or
another shortcode's) and conflicting repeats (a TransID that came again with another amount
or account), newest first, in keyset pages. Bodies are cut to BODY_SHOWN characters by the
database (and escaped by the template). Its screen: payments/views/callbacks.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from payments.models import ATTENTION_OUTCOMES, ATTENTION_SQL, C2BPayment, CallbackLog, Shortcode

PAGE = 25
BODY_SHOWN = 2000
ERROR_SHOWN = 500


@dataclass(frozen=True)
class CallbackRow:
    id: int
    received_at: datetime
    shortcode: str
    kind: str
    outcome: str
    source_ip: str | None
    error: str | None
    body: str
    body_length: int
    payment_id: int | None
    trans_id: str | None

    @property
    def cut(self) -> int:
        """How many characters of the body are not shown."""
        return max(self.body_length - len(self.body), 0)


def find_callbacks(
    session: Session, outcome: str | None = None, before: int | None = None, limit: int = PAGE
) -> tuple[list[CallbackRow], int | None]:
    """A page of quarantined and conflicting callbacks (or only ``outcome``), newest first,
    below ``before``; and the cursor of the next page (None on the last). Reads the partial
    index of these outcomes, however long the callback log."""
    query = (
        select(
            CallbackLog.id,
            CallbackLog.received_at,
            Shortcode.number,
            CallbackLog.kind,
            CallbackLog.outcome,
            CallbackLog.source_ip,
            func.substr(CallbackLog.error, 1, ERROR_SHOWN),
            func.substr(CallbackLog.body, 1, BODY_SHOWN),
            func.length(CallbackLog.body),
            CallbackLog.payment_id,
            C2BPayment.trans_id,
        )
        .join(Shortcode, Shortcode.id == CallbackLog.shortcode_id)
        .outerjoin(C2BPayment, C2BPayment.id == CallbackLog.payment_id)
        # The index's own predicate, written out, so SQLite sees the index applies.
        .where(text(f"callback_log.{ATTENTION_SQL}"))
        .order_by(CallbackLog.id.desc())
        .limit(limit + 1)
    )
    if outcome in ATTENTION_OUTCOMES:
        query = query.where(CallbackLog.outcome == outcome)
    if before is not None:
        query = query.where(CallbackLog.id < before)
    rows = [CallbackRow(*row) for row in session.execute(query)]
    cursor = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], cursor
