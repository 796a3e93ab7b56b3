"""The daily close (DESIGN.md, "Reconciliation"): for one shortcode and one Nairobi day,
where every shilling received went, beside what Safaricom's record (statements and Pull
Transactions) shows, with every difference listed transaction by transaction, the
paybill's balance followed from one payment to the next to spot missing callbacks, and an
admin's sign-off. ``received = posted + unmatched + credit + refunded + reversed + review``
is checked, not assumed: posted money and credit are read from the repayments themselves."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from itertools import groupby

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lenders.days import nairobi_day, nairobi_midnight
from lenders.disbursements import Disbursement
from lenders.models import Repayment
from payments import refunds
from payments.models import C2BPayment, PaymentStatus, Shortcode, payment_repayment
from payments.reconciliation_models import ReconciliationSignOff, StatementImport, StatementLine

ZERO = Decimal("0.00")
BUCKETS = ("posted", "unmatched", "credit", "refunded", "reversed", "review")
_BUCKET_OF = {
    PaymentStatus.POSTED: "posted",
    PaymentStatus.UNMATCHED: "unmatched",
    PaymentStatus.REVERSED: "reversed",
}


@dataclass
class Difference:
    receipt: str
    what: str
    amount: Decimal
    payment_id: int | None = None

    def as_json(self) -> dict:
        return {
            "receipt": self.receipt,
            "what": self.what,
            "amount": f"{self.amount:.2f}",
            "payment_id": self.payment_id,
        }


@dataclass
class DayClose:
    day: date
    shortcode: Shortcode
    received: Decimal = ZERO
    posted: Decimal = ZERO
    unmatched: Decimal = ZERO
    credit: Decimal = ZERO
    refunded: Decimal = ZERO
    reversed: Decimal = ZERO
    review: Decimal = ZERO
    counts: dict[str, int] = field(default_factory=dict)
    statement_total: Decimal | None = None
    statement_reversed: Decimal = ZERO
    coverage: list[tuple[datetime, datetime]] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    continuity: list[Difference] = field(default_factory=list)
    sign_off: ReconciliationSignOff | None = None
    fingerprint: dict = field(default_factory=dict)

    @property
    def accounted(self) -> Decimal:
        return sum((getattr(self, b) for b in BUCKETS), ZERO)

    @property
    def balanced(self) -> bool:
        return self.received == self.accounted

    @property
    def variance(self) -> Decimal | None:
        return None if self.statement_total is None else self.statement_total - self.received

    @property
    def changed(self) -> bool:
        """Signed off, and the day's figures moved since."""
        return self.sign_off is not None and self.sign_off.figures.get("fingerprint") != (
            self.fingerprint
        )

    def as_json(self) -> dict:
        money = lambda v: None if v is None else f"{v:.2f}"  # noqa: E731
        signed = self.sign_off
        return {
            "date": self.day.isoformat(),
            "shortcode": self.shortcode.number,
            **{k: money(getattr(self, k)) for k in ("received", *BUCKETS)},
            "statement_total": money(self.statement_total),
            "variance": money(self.variance),
            "signed_off_by": signed.signed_off_by.email if signed else None,
            "signed_off_at": signed.signed_off_at.isoformat() if signed else None,
            "differences": [d.as_json() for d in self.differences],
            "balanced": self.balanced,
            "counts": self.counts,
            "statement_reversed": money(self.statement_reversed),
            "continuity": [d.as_json() for d in self.continuity],
            "coverage": [[a.isoformat(), b.isoformat()] for a, b in self.coverage],
            "changed_since_sign_off": self.changed,
        }


def refunds_for(session: Session, shortcode_id: int, day: date) -> dict[int, Decimal]:
    """{payment id: credit refunded by B2C (completed refunds)} for the day's payments
    (payments/refunds.py)."""
    return refunds.refunds_for(session, shortcode_id, day)


def close_day(session: Session, shortcode: Shortcode, day: date) -> DayClose:
    """The day's close for the shortcode (Nairobi day, from its payments' TransTime)."""
    close = DayClose(day=day, shortcode=shortcode)
    start, end = nairobi_midnight(day), nairobi_midnight(day + timedelta(days=1))
    payments = session.execute(
        select(
            C2BPayment.id,
            C2BPayment.trans_id,
            C2BPayment.amount,
            C2BPayment.status,
            C2BPayment.trans_time,
            C2BPayment.org_account_balance,
        )
        .where(
            C2BPayment.shortcode_id == shortcode.id,
            C2BPayment.trans_time >= start,
            C2BPayment.trans_time < end,
        )
        .order_by(C2BPayment.trans_time, C2BPayment.id)
    ).all()
    _book(session, close, payments)
    lines = session.scalars(
        select(StatementLine).where(
            StatementLine.shortcode_id == shortcode.id,
            StatementLine.completed_at >= start,
            StatementLine.completed_at < end,
        )
    ).all()
    _statement(session, close, payments, lines, start, end)
    _continuity(close, payments, lines)
    close.sign_off = session.scalar(
        select(ReconciliationSignOff).where(
            ReconciliationSignOff.shortcode_id == shortcode.id, ReconciliationSignOff.day == day
        )
    )
    close.fingerprint = fingerprints(session, [(shortcode.id, day)]).get((shortcode.id, day), {})
    return close


def _book(session: Session, close: DayClose, payments) -> None:
    """Each payment in one bucket; posted money and credit as the live repayments say."""
    ids = [p.id for p in payments]
    ledger: dict[int, tuple[Decimal, Decimal]] = {}
    for chunk in range(0, len(ids), 5000):
        ledger |= {
            pid: (Decimal(a or 0), Decimal(c or 0))
            for pid, a, c in session.execute(
                select(
                    payment_repayment.c.payment_id,
                    func.sum(Repayment.amount),
                    func.sum(Repayment.to_credit),
                )
                .join(Repayment, Repayment.id == payment_repayment.c.repayment_id)
                .where(
                    payment_repayment.c.payment_id.in_(ids[chunk : chunk + 5000]),
                    Repayment.reversed_at.is_(None),
                )
                .group_by(payment_repayment.c.payment_id)
            )
        }
    refunded = refunds_for(session, close.shortcode.id, close.day)
    counts = dict.fromkeys(("received", *BUCKETS), 0)
    for p in payments:
        amount = Decimal(p.amount)
        on_loans, credit = ledger.get(p.id, (ZERO, ZERO))
        close.received += amount
        counts["received"] += 1
        bucket = _BUCKET_OF.get(p.status, "review")  # failed or received: waiting too
        counts[bucket] += 1
        if bucket == "posted":
            back = min(refunded.get(p.id, ZERO), credit)
            close.posted, close.credit = close.posted + on_loans, close.credit + credit - back
            close.refunded += back
            if on_loans + credit != amount:
                close.differences.append(
                    Difference(
                        p.trans_id,
                        f"posted: {on_loans + credit:.2f} on loans and credit for a "
                        f"{amount:.2f} payment",
                        amount - on_loans - credit,
                        p.id,
                    )
                )
            continue
        setattr(close, bucket, getattr(close, bucket) + amount)
        if on_loans or credit:
            close.differences.append(
                Difference(
                    p.trans_id, f"{p.status}, yet {on_loans:.2f} is on loans", on_loans, p.id
                )
            )
    close.counts = counts


def _statement(session, close: DayClose, payments, lines, start, end) -> None:
    """Beside Safaricom's record: totals, coverage, and every receipt that disagrees."""
    windows = session.execute(
        select(StatementImport.period_from, StatementImport.period_to).where(
            StatementImport.shortcode_id == close.shortcode.id,
            StatementImport.status == "done",
            StatementImport.period_from < end,
            StatementImport.period_to >= start,
        )
    ).all()
    close.coverage = _merged(sorted((max(a, start), min(b, end)) for a, b in windows))
    if not close.coverage and not lines:
        return
    customer = {ln.receipt: ln for ln in lines if ln.kind == "customer_payment"}
    close.statement_total = sum((ln.paid_in for ln in customer.values()), ZERO)
    close.statement_reversed = sum((ln.withdrawn for ln in lines if ln.kind == "reversal"), ZERO)
    book = {p.trans_id: p for p in payments}
    elsewhere = _payments_by_receipt(session, close.shortcode.id, set(customer) - set(book))
    for receipt, line in sorted(customer.items()):
        found = book.get(receipt) or elsewhere.get(receipt)
        if found is None:
            close.differences.append(
                Difference(receipt, "on the statement, not in the book", line.paid_in)
            )
        elif Decimal(found.amount) != line.paid_in:
            close.differences.append(
                Difference(
                    receipt,
                    f"the statement shows {line.paid_in:.2f}, the book {Decimal(found.amount):.2f}",
                    line.paid_in - Decimal(found.amount),
                    found.id,
                )
            )
        elif receipt not in book:
            close.differences.append(
                Difference(receipt, "in the book on another day", line.paid_in, found.id)
            )
    covered = lambda t: any(a <= t <= b for a, b in close.coverage)  # noqa: E731
    listed = _receipts_on_record(session, close.shortcode.id, set(book) - set(customer))
    uncovered = [p for p in payments if p.trans_id not in customer and not covered(p.trans_time)]
    for p in payments:
        if p.trans_id not in customer and p.trans_id not in listed and covered(p.trans_time):
            close.differences.append(
                Difference(
                    p.trans_id, "in the book, not on the statement", -Decimal(p.amount), p.id
                )
            )
    if uncovered:
        close.differences.append(
            Difference(
                "",
                f"{len(uncovered)} payment(s) outside the statement's time: import a later "
                "statement or pull",
                -sum((Decimal(p.amount) for p in uncovered), ZERO),
            )
        )
    _reversals(session, close, payments)


def _payments_by_receipt(session, shortcode_id: int, receipts: set[str]) -> dict:
    if not receipts:
        return {}
    found = session.execute(
        select(C2BPayment.trans_id, C2BPayment.id, C2BPayment.amount).where(
            C2BPayment.shortcode_id == shortcode_id, C2BPayment.trans_id.in_(sorted(receipts))
        )
    ).all()
    return {row.trans_id: row for row in found}


def _receipts_on_record(session, shortcode_id: int, receipts: set[str]) -> set[str]:
    """Receipts the record shows as customer payments on another day."""
    if not receipts:
        return set()
    return set(
        session.scalars(
            select(StatementLine.receipt).where(
                StatementLine.shortcode_id == shortcode_id,
                StatementLine.kind == "customer_payment",
                StatementLine.receipt.in_(sorted(receipts)),
            )
        )
    )


def _reversals(session, close: DayClose, payments) -> None:
    """The record's reversals of the day's payments against the book's, both ways."""
    receipts = [p.trans_id for p in payments]
    shown = (
        {
            linked: receipt
            for linked, receipt in session.execute(
                select(StatementLine.linked_receipt, StatementLine.receipt).where(
                    StatementLine.shortcode_id == close.shortcode.id,
                    StatementLine.kind == "reversal",
                    StatementLine.withdrawn > 0,
                    StatementLine.linked_receipt.in_(receipts),
                )
            )
        }
        if receipts
        else {}
    )
    for p in payments:
        if p.trans_id in shown and p.status != PaymentStatus.REVERSED:
            close.differences.append(
                Difference(
                    p.trans_id,
                    f"reversed on M-Pesa ({shown[p.trans_id]}), {p.status} in the book",
                    Decimal(p.amount),
                    p.id,
                )
            )


def _merged(windows: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Overlapping periods (the same statement imported twice, a pull inside a statement)
    as one."""
    merged: list[tuple[datetime, datetime]] = []
    for a, b in windows:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _continuity(close: DayClose, payments, lines) -> None:
    """Follow the paybill's balance through the day: each payment carries it after itself
    (OrgAccountBalance), as does each line of a statement or pull (Balance). Where the
    balance moved by more, or less, than the money in between explains, a callback is
    missing or money went out that nothing here records.

    M-Pesa times are whole seconds and a busy paybill has several movements in one, whose
    callbacks and lines come in any order: within a second, the next movement is the one
    whose balance follows from the last, so a second's order is read from the balances."""
    chained = {p.trans_id for p in payments if p.org_account_balance is not None}
    moves = [
        _Move(p.trans_time, Decimal(p.amount), Decimal(p.org_account_balance), p.trans_id, p.id)
        for p in payments
        if p.org_account_balance is not None
    ] + [
        _Move(ln.completed_at, ln.paid_in - ln.withdrawn, ln.balance, ln.receipt, ln.payment_id)
        for ln in lines
        if ln.completed_at is not None and ln.receipt not in chained
    ]
    balance, since = None, None
    for move in _in_balance_order(moves):
        if move.balance is None:  # a line without its Balance: the money still moved
            balance = None if balance is None else balance + move.amount
            continue
        unexplained = None if balance is None else move.balance - balance - move.amount
        if unexplained:
            what = (
                "money in that no callback reported (a missing callback?)"
                if unexplained > 0
                else "money out that nothing here records"
            )
            close.continuity.append(
                Difference(f"{since}→{move.receipt}", what, unexplained, move.payment_id)
            )
        balance, since = move.balance, move.receipt


@dataclass(frozen=True)
class _Move:
    at: datetime
    amount: Decimal  # in, or negative for out
    balance: Decimal | None  # the paybill's balance after it, when the record says
    receipt: str
    payment_id: int | None


def _in_balance_order(moves: list[_Move]) -> list[_Move]:
    """By time; within one second, each next the move whose balance follows from the one
    before (then those without a balance, then the lowest balance)."""
    ordered: list[_Move] = []
    balance = None
    for _, group in groupby(sorted(moves, key=lambda m: m.at), key=lambda m: m.at):
        waiting = sorted(group, key=lambda m: (m.balance is not None, m.balance or 0, m.receipt))
        while waiting:
            move = (
                next(
                    (
                        m
                        for m in waiting
                        if balance is not None
                        and m.balance is not None
                        and m.balance == balance + m.amount
                    ),
                    None,
                )
                or waiting[0]
            )
            waiting.remove(move)
            ordered.append(move)
            if move.balance is not None:
                balance = move.balance
            elif balance is not None:
                balance += move.amount
    return ordered


def fingerprints(session: Session, keys: list[tuple[int, date]]) -> dict:
    """{(shortcode id, day): {status: [count, amount], "statement": amount}}, for many days
    in two grouped queries: what a sign-off records, and what tells that a day changed."""
    if not keys:
        return {}
    first, last = min(k[1] for k in keys), max(k[1] for k in keys)
    start, end = nairobi_midnight(first), nairobi_midnight(last + timedelta(days=1))
    shortcodes = sorted({k[0] for k in keys})
    wanted = set(keys)
    found: dict = {key: {} for key in keys}
    day = nairobi_day(session, C2BPayment.trans_time)
    for shortcode_id, on, status, count, amount in session.execute(
        select(
            C2BPayment.shortcode_id,
            day,
            C2BPayment.status,
            func.count(),
            func.sum(C2BPayment.amount),
        )
        .where(
            C2BPayment.shortcode_id.in_(shortcodes),
            C2BPayment.trans_time >= start,
            C2BPayment.trans_time < end,
        )
        .group_by(C2BPayment.shortcode_id, day, C2BPayment.status)
    ):
        key = (shortcode_id, _as_date(on))
        if key in wanted:
            found[key][status] = [count, f"{Decimal(amount):.2f}"]
    line_day = nairobi_day(session, StatementLine.completed_at)
    for shortcode_id, on, kind, amount in session.execute(
        select(
            StatementLine.shortcode_id,
            line_day,
            StatementLine.kind,
            func.sum(StatementLine.paid_in + StatementLine.withdrawn),
        )
        .where(
            StatementLine.shortcode_id.in_(shortcodes),
            StatementLine.completed_at >= start,
            StatementLine.completed_at < end,
            StatementLine.kind.in_(("customer_payment", "reversal")),
        )
        .group_by(StatementLine.shortcode_id, line_day, StatementLine.kind)
    ):
        key = (shortcode_id, _as_date(on))
        if key in wanted:
            found[key][f"statement_{kind}"] = f"{Decimal(amount):.2f}"
    # Credit refunded since a sign-off moves money from ``credit`` to ``refunded``: the day
    # changed. Only days with refunds carry the key, so older sign-offs still match.
    for shortcode_id, on, amount in session.execute(
        select(C2BPayment.shortcode_id, day, func.sum(Disbursement.amount))
        .join(Disbursement, Disbursement.payment_id == C2BPayment.id)
        .where(
            C2BPayment.shortcode_id.in_(shortcodes),
            C2BPayment.trans_time >= start,
            C2BPayment.trans_time < end,
            Disbursement.purpose == "refund",
            Disbursement.status == "completed",
        )
        .group_by(C2BPayment.shortcode_id, day)
    ):
        key = (shortcode_id, _as_date(on))
        if key in wanted:
            found[key]["refunded"] = f"{Decimal(amount):.2f}"
    return found


def _as_date(value) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))
