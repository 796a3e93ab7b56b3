"""Reconciliation against Safaricom's record of the paybill: the org-portal statement (CSV
or XLSX) or a Pull Transactions answer. Every row is classified (payments/statement_rows.py)
and kept as a ``StatementLine``; customer payments no callback delivered are stored as
``received`` for the payments drain to match and post, as a callback's would be; a receipt
the record shows reversed is stored reversed and never posted; reversals wait for the
reversals drain; everything else is listed, never posted. A recorded receipt whose amount or
account differs is flagged for review. Set-based: a few queries per batch of rows, not per
row. Importing the same record again adds nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from lenders.book import record_audit
from lenders.disbursements import Disbursement
from payments.bulk_sql import insert_rows, one_of
from payments.intake import flag_for_review, store_payments
from payments.models import C2BPayment, PaymentStatus, Shortcode
from payments.reconciliation_models import (
    LINE_KINDS,
    NOT_REPAYMENTS,
    StatementImport,
    StatementLine,
)
from payments.reversals import record_reversed_receipts
from payments.statement_file import (  # noqa: F401 (the caps, for callers and tests)
    MAX_COLUMNS,
    MAX_ROWS,
    MAX_UNPACKED_BYTES,
    UnreadableStatement,
    statement_rows,
)
from payments.statement_rows import BadRow, Row, read_row

ZERO = Decimal("0.00")
BATCH_ROWS = 2_000  # rows per transaction: callbacks are never kept waiting long


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


@dataclass
class StatementSummary:
    """What an import found (CONTRACT §3), with its counts and money per class."""

    rows: int = 0
    already_recorded: int = 0
    gaps_filled: int = 0
    gaps_amount: Decimal = ZERO
    reversals: int = 0
    reversed_amount: Decimal = ZERO
    review: int = 0
    paid_in: Decimal = ZERO
    withdrawn: Decimal = ZERO
    errors: list[str] = field(default_factory=list)
    classes: dict[str, dict] = field(
        default_factory=lambda: {
            k: {"rows": 0, "paid_in": ZERO, "withdrawn": ZERO} for k in LINE_KINDS
        }
    )
    new_lines: int = 0

    def count(self, row: Row) -> None:
        tally = self.classes[row.kind]
        tally["rows"] += 1
        tally["paid_in"] += row.paid_in
        tally["withdrawn"] += row.withdrawn
        self.paid_in += row.paid_in
        self.withdrawn += row.withdrawn
        if row.kind == "reversal":
            self.reversals += 1
            self.reversed_amount += row.amount

    def as_json(self) -> dict:
        return {
            "rows": self.rows,
            "already_recorded": self.already_recorded,
            "gaps_filled": self.gaps_filled,
            "gaps_amount": _money(self.gaps_amount),
            "reversals": self.reversals,
            "reversed_amount": _money(self.reversed_amount),
            "review": self.review,
            "not_repayments": {k: self.classes[k]["rows"] for k in NOT_REPAYMENTS},
            "paid_in": _money(self.paid_in),
            "withdrawn": _money(self.withdrawn),
            "errors": self.errors,
            "classes": {
                kind: {
                    "rows": tally["rows"],
                    "paid_in": _money(tally["paid_in"]),
                    "withdrawn": _money(tally["withdrawn"]),
                }
                for kind, tally in self.classes.items()
            },
            "new_lines": self.new_lines,
        }


def read_statement(path: Path) -> tuple[list[Row], list[str], int]:
    """The file's rows, read and classified; the errors of those that could not be; and
    how many rows there were. Raises UnreadableStatement."""
    columns, raw = statement_rows(path)
    rows, errors = [], []
    for line, cells in raw:
        try:
            rows.append(read_row(line, cells, columns))
        except BadRow as exc:
            errors.append(str(exc))
    return rows, errors, len(raw)


def import_statement(
    session: Session,
    path: Path,
    shortcode: Shortcode,
    *,
    record: StatementImport | None = None,
    checkpoint: Callable[[], None] | None = None,
) -> StatementSummary:
    """Reconcile the statement at ``path`` for ``shortcode``. ``record`` (made here when
    not given) carries the progress and the summary; ``checkpoint()`` is called after each
    batch of rows, for the caller to commit (services never commit)."""
    record = record or new_record(session, shortcode, "statement", path.name)
    try:
        rows, errors, total = read_statement(path)
    except UnreadableStatement as exc:
        summary = StatementSummary(errors=[str(exc)])
        finish(record, summary)
        return summary
    return reconcile_rows(session, shortcode, rows, record, errors, total, checkpoint)


def new_record(session: Session, shortcode: Shortcode, source: str, filename: str = ""):
    record = StatementImport(
        shortcode_id=shortcode.id, source=source, filename=filename[:255], status="running"
    )
    record.started_at = datetime.now(UTC)
    session.add(record)
    session.flush()
    return record


def finish(record: StatementImport, summary: StatementSummary) -> None:
    record.summary = summary.as_json()
    record.rows_done = record.rows_total
    record.status = "done"
    record.finished_at = datetime.now(UTC)
    record.content = None


def reconcile_rows(
    session: Session,
    shortcode: Shortcode,
    rows: list[Row],
    record: StatementImport,
    errors: list[str] | None = None,
    total: int | None = None,
    checkpoint: Callable[[], None] | None = None,
) -> StatementSummary:
    """Keep each row as a line, fill the gaps, and say what the record held; a batch of
    BATCH_ROWS rows at a time, ``checkpoint()`` after each. The caller wakes the
    ``payments`` and ``reversals`` drains once it has committed (``wake_drains``): waking
    them at each batch would, without Redis, post the gaps before the summary is out."""
    summary = StatementSummary(errors=list(errors or []), rows=total or len(rows))
    for row in rows:
        summary.count(row)
    times = [row.completed_at for row in rows if row.completed_at]
    record.rows_total = len(rows)
    if times:
        record.period_from = min(times + ([record.period_from] if record.period_from else []))
        record.period_to = max(times + ([record.period_to] if record.period_to else []))
    reversed_here = {
        row.linked_receipt: row for row in rows if row.kind == "reversal" and row.withdrawn
    }
    seen: set[str] = set()
    for start in range(0, len(rows), BATCH_ROWS):
        batch = _Batch(session, shortcode.id, record, summary, reversed_here, seen)
        batch.run(rows[start : start + BATCH_ROWS])
        record.rows_done = min(len(rows), start + BATCH_ROWS)
        if checkpoint is not None:
            checkpoint()
    record_audit(
        session,
        "statement.imported",
        record,
        actor=record.created_by,
        after={k: v for k, v in summary.as_json().items() if k not in ("errors", "classes")},
        reason=f"{record.source} {record.filename}".strip(),
    )
    finish(record, summary)
    return summary


_LINE_COLUMNS = StatementLine.__table__.c


class _Batch:
    """One batch of rows: what the book already has of them, in a query or two; the gaps
    stored at once; the lines written at once."""

    def __init__(self, session, shortcode_id, record, summary, reversed_here, seen):
        self.session, self.shortcode_id, self.record = session, shortcode_id, record
        self.summary, self.reversed_here, self.seen = summary, reversed_here, seen
        self.now = datetime.now(UTC)

    def run(self, rows: list[Row]) -> None:
        payments = [r for r in rows if r.kind == "customer_payment"]
        known = self._known([r.receipt for r in payments])
        line_of: dict[int, dict] = {}
        gaps = self._customer_payments(payments, known, line_of)
        self._store_gaps(gaps, line_of)
        b2c = self._disbursements([r.receipt for r in rows if r.kind == "b2c"])
        lines = [self._line(row, line_of.get(id(row), {}), b2c) for row in rows]
        self._write_lines(lines)

    def _disbursements(self, receipts: list[str]) -> dict[str, int]:
        """{receipt: disbursement id} for the B2C payouts that are our disbursements."""
        if not receipts:
            return {}
        found = self.session.execute(
            select(Disbursement.receipt, Disbursement.id).where(Disbursement.receipt.in_(receipts))
        )
        return {receipt: id_ for receipt, id_ in found}

    def _known(self, receipts: list[str]) -> dict[str, tuple]:
        if not receipts:
            return {}
        payment = C2BPayment.__table__.c  # the table's columns: plain rows, no ORM loading
        found = self.session.execute(
            select(
                payment.trans_id, payment.id, payment.amount, payment.bill_ref, payment.status
            ).where(
                payment.shortcode_id == self.shortcode_id,
                one_of(self.session, payment.trans_id, receipts),
            )
        )
        return {trans_id: rest for trans_id, *rest in found}

    def _customer_payments(self, payments: list[Row], known: dict, line_of: dict) -> list[Row]:
        """Recorded, differing or a gap, for each; the gaps come back."""
        gaps = []
        for row in payments:
            if row.receipt in self.seen:  # the same receipt twice in one record
                line_of[id(row)] = {"outcome": "recorded", "note": "repeated in the record"}
                continue
            self.seen.add(row.receipt)
            if row.receipt not in known:
                gaps.append(row)
                continue
            payment_id, amount, bill_ref, status = known[row.receipt]
            self.summary.already_recorded += 1
            line_of[id(row)] = {"payment_id": payment_id, "outcome": "recorded"}
            if Decimal(amount) != row.paid_in or _other_account(bill_ref, row.bill_ref):
                note = (
                    f"the statement shows {row.paid_in:.2f} to account {row.bill_ref!r}; the "
                    f"book has {Decimal(amount):.2f} to {bill_ref!r}"
                )
                line_of[id(row)] = {"payment_id": payment_id, "outcome": "differs", "note": note}
                self.summary.review += 1
                if status not in (PaymentStatus.REVIEW, PaymentStatus.REVERSED):
                    payment = self.session.get(C2BPayment, payment_id)
                    flag_for_review(self.session, payment, f"statement: {note}")
        return gaps

    def _reversed_before(self, receipts: list[str]) -> set[str]:
        """Receipts among ``receipts`` that a reversal line kept earlier names."""
        if not receipts:
            return set()
        # The kind is checked here, not in SQL: given it, PostgreSQL read every line of the
        # shortcode in the unique index instead of the few that link a receipt.
        found = self.session.execute(
            select(StatementLine.linked_receipt, StatementLine.kind).where(
                StatementLine.shortcode_id == self.shortcode_id,
                one_of(self.session, StatementLine.linked_receipt, receipts),
            )
        )
        return {receipt for receipt, kind in found if kind == "reversal"}

    def _store_gaps(self, gaps: list[Row], line_of: dict) -> None:
        if not gaps:
            return
        earlier = self._reversed_before([r.receipt for r in gaps])
        reversed_rows = [r for r in gaps if r.receipt in self.reversed_here or r.receipt in earlier]
        shown_reversed = {r.receipt for r in reversed_rows}
        live_rows = [r for r in gaps if r.receipt not in shown_reversed]
        source = self.record.source
        stored = store_payments(
            self.session,
            [
                r.payment_values(self.shortcode_id, PaymentStatus.RECEIVED, self.now)
                for r in live_rows
            ],
        )
        stored_reversed = record_reversed_receipts(
            self.session,
            [
                r.payment_values(self.shortcode_id, PaymentStatus.REVERSED, self.now)
                for r in reversed_rows
            ],
            source=source,
            reason=f"the {source} shows it reversed",
        )
        for row in live_rows + reversed_rows:
            payment_id = stored.get(row.receipt) or stored_reversed.get(row.receipt)
            if payment_id is None:  # a callback stored it meanwhile
                self.summary.already_recorded += 1
                line_of[id(row)] = {"outcome": "recorded"}
                continue
            self.summary.gaps_filled += 1
            self.summary.gaps_amount += row.paid_in
            outcome = "gap_reversed" if row.receipt in stored_reversed else "gap"
            line_of[id(row)] = {"payment_id": payment_id, "outcome": outcome}

    def _line(self, row: Row, decided: dict, b2c: dict[str, int]) -> dict:
        outcome, note, disbursement = "listed", row.note or None, None
        if row.kind == "customer_payment":
            outcome = decided.get("outcome", "recorded")
            note = decided.get("note") or note
        elif row.kind == "reversal" and row.paid_in:
            note = "money back into the paybill: not a reversal of a customer's payment"
        elif row.kind == "reversal" and row.linked_receipt is None:
            outcome, note = "review", "no Linked Transaction ID: which payment was reversed?"
            self.summary.review += 1
        elif row.kind == "reversal":
            outcome = "pending"
        elif row.kind == "b2c" and row.receipt in b2c:
            outcome, disbursement = "disbursement", b2c[row.receipt]
        return {
            "shortcode_id": self.shortcode_id,
            "import_id": self.record.id,
            "receipt": row.receipt,
            "kind": row.kind,
            "completed_at": row.completed_at,
            "paid_in": row.paid_in,
            "withdrawn": row.withdrawn,
            "balance": row.balance,
            "linked_receipt": row.linked_receipt,
            "bill_ref": row.bill_ref,
            "party": row.party,
            "reason_type": row.reason_type,
            "details": row.details,
            "payment_id": decided.get("payment_id"),
            "disbursement_id": disbursement,
            "outcome": outcome,
            "note": note,
        }

    def _write_lines(self, lines: list[dict]) -> None:
        written = insert_rows(
            self.session,
            StatementLine.__table__,
            lines,
            conflict=["shortcode_id", "receipt", "kind"],
        )
        self.summary.new_lines += max(written, 0)


def _other_account(book: str, statement: str) -> bool:
    """The statement's A/C No. names another account than the callback's BillRefNumber
    (compared without case and spaces; an empty one on either side says nothing)."""
    a, b = "".join((book or "").split()).upper(), "".join((statement or "").split()).upper()
    return bool(a and b and a != b)


def wake_drains() -> None:
    """After the import's last commit: the gaps wait in ``received``, the reversals in
    ``pending``."""
    from lenders.jobs import wake

    wake("payments", "reversals")
