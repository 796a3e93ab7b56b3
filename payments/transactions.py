"""The transactions page (/payments/transactions/): every payment the viewer may see,
filtered, newest first in keyset pages (``find_payments``, plain SQL on the driver's
cursor), and the same set for the CSV export (``filtered_query``, through SQLAlchemy)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from sqlalchemy import Select, and_, literal, or_, select
from sqlalchemy.orm import Session

from lenders.database import bind_converter, result_converter
from lenders.days import nairobi_midnight
from lenders.models import Loan, Repayment, StaffUser
from lenders.phones import InvalidPhone, canonical_phone, phone_sha256
from lenders.references import reference_key
from payments.models import (
    C2BPayment,
    MatchRule,
    PaymentStatus,
    Shortcode,
    payment_repayment,
    sql_values,
)
from payments.visibility import visible_payments

PAGE_SIZE = 50
RECEIPT = re.compile(r"(?=[0-9A-Z]*[0-9])[A-Z][0-9A-Z]{9}")  # TK60708BHZ: ten, with a digit


@dataclass
class TransactionFilter:
    """The transactions page's filters, all optional, as they sit in the URL."""

    phone: str = ""
    amount_min: Decimal | None = None
    amount_max: Decimal | None = None
    date_from: date | None = None
    date_to: date | None = None
    status: PaymentStatus | str = ""  # "" for any
    rule: MatchRule | str = ""  # "" for any
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
    OPEN = f"status IN {sql_values(PaymentStatus.OPEN)}"
    PLACED = (
        f"status NOT IN {sql_values(PaymentStatus.OPEN)} AND EXISTS (SELECT 1 FROM "
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
                visible = self.OPEN if f.status in PaymentStatus.OPEN else placed
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
