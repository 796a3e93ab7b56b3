"""Officers' notices of payments into their portfolio (written by the SMS jobs): how
many are unread, and marking them read. Services: never commit."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from payments.models import OfficerNotice


def latest_notices(session: Session, staff_id: int, limit: int = 100) -> list[OfficerNotice]:
    return list(
        session.scalars(
            select(OfficerNotice)
            .where(OfficerNotice.staff_id == staff_id)
            .order_by(OfficerNotice.id.desc())
            .limit(limit)
        )
    )


def unread_count(session: Session, staff_id: int) -> int:
    return (
        session.scalar(
            select(func.count()).where(
                OfficerNotice.staff_id == staff_id, OfficerNotice.read_at.is_(None)
            )
        )
        or 0
    )


def mark_read(session: Session, staff_id: int) -> None:
    """Every unread notice of this member of staff, read now."""
    session.execute(
        update(OfficerNotice)
        .where(OfficerNotice.staff_id == staff_id, OfficerNotice.read_at.is_(None))
        .values(read_at=datetime.now(UTC))
    )
