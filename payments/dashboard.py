"""The dashboard (/payments/dashboard/): the day's and month's money by shortcode, what
waits for a person, how much matched by itself, the last 30 days, and the loan book's
portfolio figures (``lenders.portfolio``). Scoped to the viewer's portfolio."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from lenders.days import nairobi_day, nairobi_midnight
from lenders.models import StaffUser
from lenders.portfolio import installments_due, portfolio_at_risk
from payments.models import C2BPayment, MatchRule, PaymentStatus, Shortcode
from payments.visibility import in_portfolio, visible_payments

ZERO = Decimal("0.00")
# The outcomes chart's slices, in the order of its colours (static/js/dashboard.js).
OUTCOMES = (
    PaymentStatus.POSTED,
    PaymentStatus.UNMATCHED,
    PaymentStatus.FAILED,
    PaymentStatus.REVIEW,
    PaymentStatus.RECEIVED,
)
# Payments the matcher decided by itself: the share it placed is "matched automatically".
DECIDED = (PaymentStatus.POSTED, PaymentStatus.UNMATCHED, PaymentStatus.REVIEW)


@dataclass
class ShortcodeFigures:
    number: str
    name: str
    today_count: int = 0
    today_volume: Decimal = ZERO
    month_count: int = 0
    month_volume: Decimal = ZERO


@dataclass
class Dashboard:
    shortcodes: list[ShortcodeFigures] = field(default_factory=list)
    auto_share: float | None = None
    statuses: dict[PaymentStatus, int] = field(default_factory=dict)
    oldest: dict[PaymentStatus, datetime | None] = field(default_factory=dict)  # open ones
    average_seconds_to_post: float | None = None
    daily: list[tuple[str, Decimal, int]] = field(default_factory=list)
    par: list[dict] = field(default_factory=list)
    due_today: tuple[int, Decimal] = (0, ZERO)
    overdue: tuple[int, Decimal] = (0, ZERO)

    @property
    def outcomes(self) -> list[tuple[PaymentStatus, int]]:
        return [(status, self.statuses.get(status, 0)) for status in OUTCOMES]


def dashboard(session: Session, viewer: StaffUser, today: date) -> Dashboard:
    """The day's and month's money, what waits for a person, and portfolio at risk."""
    result = Dashboard()
    mine = in_portfolio(viewer)
    day_start = nairobi_midnight(today)
    month_start = nairobi_midnight(today.replace(day=1))
    rows = session.execute(
        select(
            Shortcode.number,
            Shortcode.name,
            func.count(C2BPayment.id).filter(C2BPayment.received_at >= day_start),
            func.coalesce(
                func.sum(C2BPayment.amount).filter(C2BPayment.received_at >= day_start), 0
            ),
            func.count(C2BPayment.id),
            func.coalesce(func.sum(C2BPayment.amount), 0),
        )
        .select_from(Shortcode)
        .outerjoin(
            C2BPayment,
            and_(
                C2BPayment.shortcode_id == Shortcode.id, C2BPayment.received_at >= month_start, mine
            ),
        )
        .group_by(Shortcode.number, Shortcode.name)
        .order_by(Shortcode.number)
    ).all()
    result.shortcodes = [
        ShortcodeFigures(
            n,
            name,
            tc,
            Decimal(tv).quantize(Decimal("0.01")),
            mc,
            Decimal(mv).quantize(Decimal("0.01")),
        )
        for n, name, tc, tv, mc, mv in rows
    ]
    visible = visible_payments(viewer).subquery()
    counts = dict(
        session.execute(select(visible.c.status, func.count()).group_by(visible.c.status)).all()
    )
    result.statuses = {status: counts.get(status, 0) for status in PaymentStatus}
    oldest = dict(
        session.execute(
            select(visible.c.status, func.min(visible.c.received_at))
            .where(visible.c.status.in_(PaymentStatus.OPEN))
            .group_by(visible.c.status)
        ).all()
    )
    result.oldest = {
        PaymentStatus(status): _aware(oldest.get(status)) for status in PaymentStatus.OPEN
    }
    month = session.execute(
        select(
            func.count().filter(visible.c.rule.in_(MatchRule.AUTOMATIC)),
            func.count().filter(visible.c.status.in_(DECIDED)),
        ).where(visible.c.received_at >= month_start)
    ).one()
    result.auto_share = (month[0] / month[1]) if month[1] else None
    timings = [
        (done - got).total_seconds()
        for got, done in session.execute(
            select(C2BPayment.received_at, C2BPayment.processed_at)
            .where(
                C2BPayment.status == PaymentStatus.POSTED,
                C2BPayment.received_at >= month_start,
                C2BPayment.processed_at.is_not(None),
                mine,
            )
            .order_by(C2BPayment.id.desc())
            .limit(2000)
        )
    ]
    result.average_seconds_to_post = statistics.fmean(timings) if timings else None
    day = nairobi_day(session, C2BPayment.received_at)
    start = nairobi_midnight(today - timedelta(days=29))
    daily = dict(
        (str(d), (Decimal(v).quantize(Decimal("0.01")), c))
        for d, v, c in session.execute(
            select(day, func.sum(C2BPayment.amount), func.count())
            .where(C2BPayment.received_at >= start, mine)
            .group_by(day)
        )
    )
    result.daily = [
        (d.isoformat(), *daily.get(d.isoformat(), (ZERO, 0)))
        for d in (today - timedelta(days=n) for n in range(29, -1, -1))
    ]
    result.par = portfolio_at_risk(session, viewer, today)
    result.due_today, result.overdue = installments_due(session, viewer, today)
    return result


def _aware(value: datetime | str | None) -> datetime | None:
    """min() over a subquery loses the column type on SQLite: parse and mark UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
