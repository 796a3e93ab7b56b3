"""Read-side queries for the payments back-office: what officers see, scoped to them."""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import Select, and_, case, exists, func, literal, or_, select
from sqlalchemy.orm import Session, selectinload

from lenders.database import bind_converter, result_converter
from lenders.models import Borrower, BorrowerPhone, Installment, Loan, Repayment, StaffUser
from lenders.phones import InvalidPhone, canonical_phone, phone_sha256
from lenders.references import reference_key
from lenders.text import like_escaped
from payments.models import C2BPayment, CallbackLog, Shortcode, payment_repayment

NAIROBI = ZoneInfo("Africa/Nairobi")
PAGE_SIZE = 50
RECEIPT = re.compile(r"(?=[0-9A-Z]*[0-9])[A-Z][0-9A-Z]{9}")  # TK60708BHZ: ten, with a digit
OPEN_STATUSES = ("received", "unmatched", "failed")  # nobody's portfolio yet
ZERO = Decimal("0.00")


def nairobi_midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=NAIROBI).astimezone(UTC)


def nairobi_day(session: Session, column):
    """The Nairobi calendar date of a stored UTC time, in SQL (Nairobi has no DST)."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date(func.timezone("Africa/Nairobi", column))
    return func.date(column, "+3 hours")


def in_portfolio(viewer: StaffUser):
    """Payments that sit on the viewer's loans now (officers), or every payment (admins).
    A reversed posting does not count: a payment moved to another officer's loan is theirs."""
    if viewer.is_admin:
        return literal(True)
    return exists().where(
        payment_repayment.c.payment_id == C2BPayment.id,
        Repayment.id == payment_repayment.c.repayment_id,
        Repayment.reversed_at.is_(None),
        Loan.id == Repayment.loan_id,
        Loan.officer_id == viewer.id,
    )


def visible_payments(viewer: StaffUser) -> Select:
    """An officer sees payments in their portfolio and those nobody has placed yet."""
    query = select(C2BPayment)
    if not viewer.is_admin:
        query = query.where(or_(C2BPayment.status.in_(OPEN_STATUSES), in_portfolio(viewer)))
    return query


def get_payment(session: Session, viewer: StaffUser, payment_id: int) -> C2BPayment | None:
    return session.scalar(
        visible_payments(viewer)
        .where(C2BPayment.id == payment_id)
        .options(
            selectinload(C2BPayment.repayments).selectinload(Repayment.allocations),
            selectinload(C2BPayment.shortcode),
        )
    )


# --- transactions -----------------------------------------------------------------------


@dataclass
class TransactionFilter:
    """The transactions page's filters, all optional, as they sit in the URL."""

    phone: str = ""
    amount_min: Decimal | None = None
    amount_max: Decimal | None = None
    date_from: date | None = None
    date_to: date | None = None
    status: str = ""
    rule: str = ""
    shortcode: str = ""
    loan: str = ""
    q: str = ""

    def apply(self, query: Select) -> Select:
        conditions = []
        if self.phone:
            conditions.append(_phone_condition(self.phone))
        if self.amount_min is not None:
            conditions.append(C2BPayment.amount >= self.amount_min)
        if self.amount_max is not None:
            conditions.append(C2BPayment.amount <= self.amount_max)
        if self.date_from:
            conditions.append(C2BPayment.received_at >= nairobi_midnight(self.date_from))
        if self.date_to:
            conditions.append(
                C2BPayment.received_at < nairobi_midnight(self.date_to + timedelta(days=1))
            )
        if self.status:
            conditions.append(C2BPayment.status == self.status)
        if self.rule:
            conditions.append(C2BPayment.rule == self.rule)
        if self.shortcode:
            conditions.append(C2BPayment.shortcode.has(Shortcode.number == self.shortcode))
        if self.loan:  # from the loan to its payments, by index (not EXISTS per payment)
            conditions.append(
                C2BPayment.id.in_(
                    select(payment_repayment.c.payment_id)
                    .join(Repayment, Repayment.id == payment_repayment.c.repayment_id)
                    .join(Loan, Loan.id == Repayment.loan_id)
                    .where(Loan.reference_key == reference_key(self.loan))
                )
            )
        if self.q and RECEIPT.fullmatch(self.q.strip().upper()):
            # a receipt number: found by its index, not by scanning names and accounts
            conditions.append(C2BPayment.trans_id == self.q.strip().upper())
        elif self.q:
            like = "%" + re.sub(r"([\\%_])", r"\\\1", self.q) + "%"
            conditions.append(
                or_(
                    C2BPayment.bill_ref.ilike(like, escape="\\"),
                    C2BPayment.first_name.ilike(like, escape="\\"),
                    C2BPayment.last_name.ilike(like, escape="\\"),
                    C2BPayment.trans_id == self.q.upper(),
                )
            )
        return query.where(and_(*conditions)) if conditions else query


def _phone_condition(text: str):
    """A phone in any form finds payments sent as plain, hashed or masked MSISDNs."""
    try:
        number = canonical_phone(text)
    except InvalidPhone:
        digits = re.sub(r"\D", "", text)
        return C2BPayment.msisdn.like(f"%{digits}%") if digits else literal(False)
    masked = f"{number[:4]} ***** {number[-3:]}"
    return or_(
        C2BPayment.msisdn == number,
        C2BPayment.msisdn == phone_sha256(number),
        C2BPayment.msisdn == masked,
        C2BPayment.msisdn == f"{number[:5]}****{number[-3:]}",
        C2BPayment.msisdn == f"{number[:4]}*****{number[-3:]}",
    )


class PaymentRow(NamedTuple):
    """One line of the transactions page: the payment as it came in, and the loans it is
    posted to now (reversed postings left out), oldest posting first."""

    id: int
    received_at: datetime
    trans_id: str
    first_name: str
    msisdn: str
    msisdn_form: str
    bill_ref: str
    amount: Decimal
    status: str
    rule: str | None
    loans: tuple[str, ...] = ()


class PageSql:
    """The transactions page as SQL text for the DB-API cursor, built from the same
    filters as ``TransactionFilter.apply`` (which the CSV export runs through SQLAlchemy;
    tests/payments/test_transactions.py holds the two to the same set).

    The page is asked on every keystroke at a million payments: its indexed lookups take
    SQLite a few hundredths of a millisecond, and SQLAlchemy's building, caching and row
    processing would cost ten times that around them."""

    LINES = (
        "SELECT p.id, p.received_at, p.trans_id, p.first_name, p.msisdn, p.msisdn_form, "
        "p.bill_ref, p.amount, p.status, p.rule, l.number FROM ({page}) p "
        "LEFT JOIN payment_repayment pr ON pr.payment_id = p.id "
        "LEFT JOIN repayment r ON r.id = pr.repayment_id AND r.reversed_at IS NULL "
        "LEFT JOIN loan l ON l.id = r.loan_id ORDER BY p.id DESC, r.id"
    )
    COLUMNS = (
        "id, received_at, trans_id, first_name, msisdn, msisdn_form, bill_ref, amount, status, rule"
    )
    OPEN = "status IN ('received', 'unmatched', 'failed')"
    PLACED = (
        "status NOT IN ('received', 'unmatched', 'failed') AND EXISTS (SELECT 1 FROM "
        "payment_repayment pr JOIN repayment r ON r.id = pr.repayment_id "
        "JOIN loan l ON l.id = r.loan_id WHERE pr.payment_id = c2b_payment.id "
        "AND r.reversed_at IS NULL AND l.officer_id = {officer})"
    )

    TIME, MONEY = C2BPayment.__table__.c.received_at.type, C2BPayment.__table__.c.amount.type
    _converters: dict = {}  # (dialect, kind, driver type) -> the column type's own converter

    def __init__(self, dialect):
        self.dialect = dialect
        self.pg = dialect.name == "postgresql"
        self.params: list = []

    def _converter(self, kind: str, driver_type=None):
        key = (self.dialect.name, kind, driver_type)
        if key not in self._converters:
            type_ = self.TIME if kind.endswith("time") else self.MONEY
            self._converters[key] = (
                bind_converter(type_, self.dialect)
                if kind.startswith("bind")
                else result_converter(type_, self.dialect, driver_type)
            )
        return self._converters[key]

    def bind(self, value) -> str:
        """A placeholder for ``value``, in the driver's own style; times and money as
        SQLAlchemy stores them, by their columns' own converters."""
        if isinstance(value, datetime):
            convert = self._converter("bind time")
        elif isinstance(value, Decimal):
            convert = self._converter("bind money")
        else:
            convert = None
        self.params.append(convert(value) if convert else value)
        return "%s" if self.pg else "?"

    def conditions(self, f: TransactionFilter) -> list[str]:
        """``TransactionFilter.apply``'s conditions, in SQL, in the same order."""
        out = []
        if f.phone:
            out.append(self.phone(f.phone))
        if f.amount_min is not None:
            out.append(f"amount >= {self.bind(f.amount_min)}")
        if f.amount_max is not None:
            out.append(f"amount <= {self.bind(f.amount_max)}")
        if f.date_from:
            out.append(f"received_at >= {self.bind(nairobi_midnight(f.date_from))}")
        if f.date_to:
            end = nairobi_midnight(f.date_to + timedelta(days=1))
            out.append(f"received_at < {self.bind(end)}")
        if f.status:
            out.append(f"status = {self.bind(f.status)}")
        if f.rule:
            out.append(f"rule = {self.bind(f.rule)}")
        if f.shortcode:
            out.append(
                "shortcode_id IN (SELECT id FROM shortcode "
                f"WHERE number = {self.bind(f.shortcode)})"
            )
        if f.loan:
            out.append(
                "id IN (SELECT pr.payment_id FROM payment_repayment pr "
                "JOIN repayment r ON r.id = pr.repayment_id JOIN loan l ON l.id = r.loan_id "
                f"WHERE l.reference_key = {self.bind(reference_key(f.loan))})"
            )
        if f.q and RECEIPT.fullmatch(f.q.strip().upper()):
            out.append(f"trans_id = {self.bind(f.q.strip().upper())}")
        elif f.q:
            like = "%" + re.sub(r"([\\%_])", r"\\\1", f.q) + "%"
            op = "ILIKE" if self.pg else "LIKE"  # SQLite's LIKE ignores ASCII case
            texts = " OR ".join(
                f"{column} {op} {self.bind(like)} ESCAPE '\\'"
                for column in ("bill_ref", "first_name", "last_name")
            )
            out.append(f"({texts} OR trans_id = {self.bind(f.q.upper())})")
        return out

    def phone(self, text: str) -> str:
        try:
            number = canonical_phone(text)
        except InvalidPhone:
            digits = re.sub(r"\D", "", text)
            return f"msisdn LIKE {self.bind(f'%{digits}%')}" if digits else "1 = 0"
        forms = (
            number,
            phone_sha256(number),
            f"{number[:4]} ***** {number[-3:]}",
            f"{number[:5]}****{number[-3:]}",
            f"{number[:4]}*****{number[-3:]}",
        )
        return f"msisdn IN ({', '.join(self.bind(form) for form in forms)})"

    def keyset(self, f: TransactionFilter, visible: str, before_id: int | None, size: int) -> str:
        where = [visible] if visible else []
        where += self.conditions(f)
        if before_id:
            where.append(f"id < {self.bind(int(before_id))}")
        sql = f"SELECT {self.COLUMNS} FROM c2b_payment"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return f"{sql} ORDER BY id DESC LIMIT {int(size)}"

    def page(self, viewer: StaffUser, f: TransactionFilter, before_id: int | None, size: int):
        """The page's payments, newest first. An officer's page is the newest of two
        disjoint keyset pages, each read by its own index: payments nobody has placed yet
        (by status) and payments placed on the officer's loans. One OR over both made
        PostgreSQL hash every payment of the portfolio before the first row."""
        if viewer.is_admin:
            page = self.keyset(f, "", before_id, size)
        else:
            placed = self.PLACED.format(officer=int(viewer.id))
            if f.status:  # one branch holds every payment of that status
                visible = self.OPEN if f.status in OPEN_STATUSES else placed
                page = self.keyset(f, visible, before_id, size)
            else:
                unplaced = self.keyset(f, self.OPEN, before_id, size)
                mine = self.keyset(f, placed, before_id, size)
                page = (
                    f"SELECT * FROM (SELECT * FROM ({unplaced}) a UNION ALL "
                    f"SELECT * FROM ({mine}) b) v ORDER BY id DESC LIMIT {int(size)}"
                )
        return self.LINES.format(page=page)

    def rows(self, lines, description) -> list[PaymentRow]:
        """One row per payment with its loans; times and money read back by their columns'
        own converters (SQLite hands back text and floats)."""
        as_time = self._converter("result time", description[1][1])
        as_money = self._converter("result money", description[7][1])
        rows: list[PaymentRow] = []
        for line in lines:
            number = line[10]
            if rows and rows[-1].id == line[0]:
                if number is not None:
                    rows[-1] = rows[-1]._replace(loans=(*rows[-1].loans, number))
                continue
            received_at, amount = line[1], line[7]
            if as_time:
                received_at = as_time(received_at)
            if as_money:
                amount = as_money(amount)
            rows.append(
                PaymentRow(
                    line[0],
                    received_at,
                    *line[2:7],
                    amount,
                    line[8],
                    line[9],
                    () if number is None else (number,),
                )
            )
        return rows


def find_payments(
    session: Session,
    viewer: StaffUser,
    filters: TransactionFilter,
    before_id: int | None = None,
    limit: int = PAGE_SIZE,
) -> tuple[list[PaymentRow], int | None]:
    """Newest first, one keyset page before ``before_id``; returns the next cursor.

    One statement on the session's own connection: the page's payments (just the columns
    the list shows), each joined to the numbers of the loans it is posted to."""
    connection = session.connection()
    query = PageSql(connection.dialect)
    sql = query.page(viewer, filters, before_id, limit + 1)
    cursor = connection.connection.driver_connection.cursor()
    try:
        cursor.execute(sql, query.params)
        rows = query.rows(cursor.fetchall(), cursor.description)
    finally:
        cursor.close()
    next_cursor = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], next_cursor


def filtered_query(viewer: StaffUser, filters: TransactionFilter) -> Select:
    """The same set as the page, every row, oldest first (for the CSV export)."""
    return filters.apply(visible_payments(viewer)).order_by(C2BPayment.id)


# --- the unmatched queue --------------------------------------------------------------


@dataclass
class Suggestion:
    kind: str  # loan | borrower
    id: int
    label: str
    why: str
    score: int


def unmatched_queue(session: Session, limit: int = 100) -> list[C2BPayment]:
    """Unmatched and failed payments, oldest first."""
    return list(
        session.scalars(
            select(C2BPayment)
            .where(C2BPayment.status.in_(("unmatched", "failed")))
            .options(selectinload(C2BPayment.shortcode))
            .order_by(C2BPayment.received_at, C2BPayment.id)
            .limit(limit)
        )
    )


def near_miss_keys(key: str) -> set[str]:
    """Loan keys one typo away (Damerau: one swap, drop, extra or wrong digit)."""
    if not key.isdigit() or len(key) > 12:
        return set()
    out = set()
    for i in range(len(key)):
        out.add(key[:i] + key[i + 1 :])
        for d in "0123456789":
            out.add(key[:i] + d + key[i + 1 :])
        if i + 1 < len(key):
            out.add(key[:i] + key[i + 1] + key[i] + key[i + 2 :])
    for i in range(len(key) + 1):
        for d in "0123456789":
            out.add(key[:i] + d + key[i:])
    return {str(int(k)) for k in out if k and k.isdigit() and k != key}


def suggestions_for(session: Session, viewer: StaffUser, payment: C2BPayment) -> list[Suggestion]:
    """Ranked places an unmatched payment may belong, best first."""
    found: dict[tuple[str, int], Suggestion] = {}

    def add(kind, id_, label, why, score):
        key = (kind, id_)
        if key not in found or found[key].score < score:
            found[key] = Suggestion(kind, id_, label, why, score)

    loans = select(Loan).options(selectinload(Loan.borrower)).where(Loan.status == "active")
    if not viewer.is_admin:
        loans = loans.where(Loan.officer_id == viewer.id)
    # 1. what this payer paid before, and where it went
    if payment.msisdn:
        for loan in session.scalars(
            loans.where(
                Loan.id.in_(
                    select(Repayment.loan_id)
                    .join(payment_repayment, payment_repayment.c.repayment_id == Repayment.id)
                    .join(C2BPayment, C2BPayment.id == payment_repayment.c.payment_id)
                    .where(
                        C2BPayment.msisdn == payment.msisdn,
                        C2BPayment.id != payment.id,
                        C2BPayment.status == "posted",
                        Repayment.reversed_at.is_(None),
                    )
                )
            ).limit(5)
        ):
            add(
                "loan",
                loan.id,
                f"{loan.number} · {loan.borrower.name}",
                "this payer's earlier payments went here",
                90,
            )
    # 2. loan numbers one typo away from what was typed
    typed = reference_key(payment.bill_ref)
    variants = near_miss_keys(typed)
    if variants:
        for loan in session.scalars(loans.where(Loan.reference_key.in_(variants)).limit(10)):
            add(
                "loan",
                loan.id,
                f"{loan.number} · {loan.borrower.name}",
                f"one typo from {payment.bill_ref!r}",
                70,
            )
    # 3. borrowers with the masked digits and the same first name
    if payment.msisdn_form == "masked" and payment.first_name:
        parts = re.match(r"^(\d{4,})\s*\*+\s*(\d{3,})$", payment.msisdn.strip())
        if parts:
            key = parts.group(1)[:4] + parts.group(2)[-3:]
            people = select(Borrower).join(BorrowerPhone).where(BorrowerPhone.masked_key == key)
            if not viewer.is_admin:
                people = people.where(
                    exists().where(Loan.borrower_id == Borrower.id, Loan.officer_id == viewer.id)
                )
            for person in session.scalars(people.limit(20)):
                same_name = payment.first_name.casefold() in (
                    p.casefold() for p in person.name.split()
                )
                add(
                    "borrower",
                    person.id,
                    person.name,
                    "same phone digits and first name" if same_name else "same phone digits",
                    60 if same_name else 30,
                )
    # 4. borrowers with the payer's first name
    if payment.first_name and len(found) < 8:
        like = like_escaped(payment.first_name) + "%"
        people = select(Borrower).where(Borrower.name.ilike(like, escape="\\"))
        if not viewer.is_admin:
            people = people.where(
                exists().where(Loan.borrower_id == Borrower.id, Loan.officer_id == viewer.id)
            )
        for person in session.scalars(people.order_by(Borrower.name).limit(5)):
            add("borrower", person.id, person.name, "same first name", 10)
    return sorted(found.values(), key=lambda s: (-s.score, s.label))[:8]


# --- dashboard ----------------------------------------------------------------------------


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
    statuses: dict[str, int] = field(default_factory=dict)
    oldest: dict[str, datetime | None] = field(default_factory=dict)
    average_seconds_to_post: float | None = None
    daily: list[tuple[str, Decimal, int]] = field(default_factory=list)
    par: list[dict] = field(default_factory=list)
    due_today: tuple[int, Decimal] = (0, ZERO)
    overdue: tuple[int, Decimal] = (0, ZERO)


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
    result.statuses = {
        s: counts.get(s, 0)
        for s in ("received", "posted", "unmatched", "failed", "review", "reversed")
    }
    oldest = dict(
        session.execute(
            select(visible.c.status, func.min(visible.c.received_at))
            .where(visible.c.status.in_(("unmatched", "failed", "received")))
            .group_by(visible.c.status)
        ).all()
    )
    result.oldest = {s: _aware(oldest.get(s)) for s in ("unmatched", "failed", "received")}
    month = session.execute(
        select(
            func.count().filter(
                visible.c.rule.in_(("bill_ref", "single_loan", "amount", "oldest_due"))
            ),
            func.count().filter(visible.c.status.in_(("posted", "unmatched", "review"))),
        ).where(visible.c.received_at >= month_start)
    ).one()
    result.auto_share = (month[0] / month[1]) if month[1] else None
    timings = [
        (done - got).total_seconds()
        for got, done in session.execute(
            select(C2BPayment.received_at, C2BPayment.processed_at)
            .where(
                C2BPayment.status == "posted",
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


def portfolio_at_risk(session: Session, viewer: StaffUser, today: date) -> list[dict]:
    """PAR1 and PAR30 by officer: the share of outstanding balance on loans with an
    installment unpaid for more than 1 / 30 days."""
    oldest_unpaid = (
        select(Installment.loan_id, func.min(Installment.due_on).label("due_on"))
        .where(Installment.amount_paid < Installment.amount_due)
        .group_by(Installment.loan_id)
        .subquery()
    )
    outstanding = Loan.principal + Loan.interest + Loan.fees - Loan.paid
    query = (
        select(
            StaffUser.name,
            func.sum(outstanding),
            func.sum(
                case((oldest_unpaid.c.due_on < today - timedelta(days=1), outstanding), else_=0)
            ),
            func.sum(
                case((oldest_unpaid.c.due_on < today - timedelta(days=30), outstanding), else_=0)
            ),
            func.count(Loan.id),
        )
        .select_from(Loan)
        .join(StaffUser, StaffUser.id == Loan.officer_id)
        .outerjoin(oldest_unpaid, oldest_unpaid.c.loan_id == Loan.id)
        .where(Loan.status == "active")
        .group_by(StaffUser.name)
        .order_by(StaffUser.name)
    )
    if not viewer.is_admin:
        query = query.where(Loan.officer_id == viewer.id)
    rows = []
    for name, total, par1, par30, count in session.execute(query):
        total = Decimal(total or 0)
        rows.append(
            {
                "officer": name,
                "loans": count,
                "outstanding": total.quantize(Decimal("0.01")),
                "par1": float(Decimal(par1 or 0) / total) if total else 0.0,
                "par30": float(Decimal(par30 or 0) / total) if total else 0.0,
            }
        )
    return rows


def installments_due(session: Session, viewer: StaffUser, today: date):
    """(count, amount) of installments due today, and of those overdue, on active loans."""
    left = Installment.amount_due - Installment.amount_paid
    base = (
        select(func.count(), func.coalesce(func.sum(left), 0))
        .join(Loan, Loan.id == Installment.loan_id)
        .where(Loan.status == "active", Installment.amount_paid < Installment.amount_due)
    )
    if not viewer.is_admin:
        base = base.where(Loan.officer_id == viewer.id)
    due = session.execute(base.where(Installment.due_on == today)).one()
    late = session.execute(base.where(Installment.due_on < today)).one()
    return (
        (due[0], Decimal(due[1]).quantize(Decimal("0.01"))),
        (late[0], Decimal(late[1]).quantize(Decimal("0.01"))),
    )


# --- alerts ---------------------------------------------------------------------------------


@dataclass
class Alert:
    level: str  # danger | warning
    title: str
    detail: str
    link: str | None = None


def alerts(session: Session, now: datetime) -> list[Alert]:
    """What an admin should hear about before a borrower calls."""
    found = []
    failed = session.scalar(select(func.count()).where(C2BPayment.status == "failed"))
    if failed:
        found.append(
            Alert(
                "danger",
                f"{failed} failed payment(s)",
                "Processing failed; reprocess them once the cause is fixed.",
                "failed",
            )
        )
    stale = session.scalar(
        select(func.count()).where(
            C2BPayment.status == "unmatched", C2BPayment.received_at < now - timedelta(hours=24)
        )
    )
    if stale:
        found.append(
            Alert(
                "warning",
                f"{stale} payment(s) unmatched for over 24 hours",
                "Borrowers' money is waiting; assign it.",
                "unmatched",
            )
        )
    review = session.scalar(select(func.count()).where(C2BPayment.status == "review"))
    if review:
        found.append(
            Alert(
                "danger",
                f"{review} payment(s) need review",
                "The same M-Pesa receipt arrived with another amount or account.",
                "review",
            )
        )
    from payments.models import SmsMessage

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
