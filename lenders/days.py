"""The lender's calendar: Nairobi's days (East Africa Time, no daylight saving), as UTC
times for Python and as dates in SQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

from sqlalchemy import func
from sqlalchemy.orm import Session

NAIROBI = ZoneInfo("Africa/Nairobi")


def nairobi_midnight(day: date) -> datetime:
    """When ``day`` begins in Nairobi, in UTC (as times are stored)."""
    return datetime.combine(day, time.min, tzinfo=NAIROBI).astimezone(UTC)


def nairobi_day(session: Session, column):
    """The Nairobi calendar date of a stored UTC time, in SQL (Nairobi has no DST)."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date(func.timezone("Africa/Nairobi", column))
    return func.date(column, "+3 hours")
