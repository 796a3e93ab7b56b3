"""Loan-book import (CONTRACT §3 and §6): writing checked rows into the book.

``import_loans`` reads the whole file first (``lenders.loanbook``) and writes nothing
unless every row is good and none clashes with the book: each bad row is reported with its
line number and reason. Writes use set-based inserts so that a 100,000-loan book imports in
seconds (see bench/import_loans.py)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from lenders.loanbook import LoanRow, read_loan_rows, same_name
from lenders.models import (
    ZERO,
    Allocation,
    AuditEvent,
    Borrower,
    BorrowerPhone,
    Installment,
    Loan,
    Repayment,
    StaffUser,
)
from lenders.phones import masked_key, name_key, phone_sha256
from lenders.references import reference_key
from lenders.schedule import allocate_oldest_first, build_schedule

_CHUNK = 2000
NAIROBI = ZoneInfo("Africa/Nairobi")


@dataclass
class ImportResult:
    """What an import did, or why it did nothing (``errors`` as 'line N: reason')."""

    errors: list[str] = field(default_factory=list)
    loans: int = 0
    borrowers_created: int = 0
    officers_created: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def _chunks(items: list, size: int = _CHUNK) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def import_loans(
    session: Session,
    lines: Iterable[str],
    *,
    actor: StaffUser | None = None,
    today: date | None = None,
    source_name: str = "upload",
) -> ImportResult:
    """Add every loan of the file to the book, or none. Borrowers are matched by national
    ID (a known ID with another name is an error), new phones are added to them, unknown
    officer e-mails become officer accounts without a password. Does not commit."""
    rows, errors = read_loan_rows(lines)
    errors = errors + _check_against_book(session, rows)
    result = ImportResult(errors=sorted(errors, key=_line_of))
    if result.errors:
        return result

    today = today or datetime.now(NAIROBI).date()
    now = datetime.now(UTC)
    borrower_ids, result.borrowers_created = _save_borrowers(session, rows, now)
    officer_ids, result.officers_created = _save_officers(session, rows)

    loan_rows = [
        {
            "number": r.loan_number,
            "reference_key": reference_key(r.loan_number),
            "borrower_id": borrower_ids[r.national_id],
            "officer_id": officer_ids.get(r.officer_email),
            "principal": r.principal,
            "interest": r.interest,
            "fees": r.fees,
            "paid": r.amount_paid,
            "disbursed_on": r.disbursed_on,
            "installment_count": r.installments,
            "frequency": r.frequency,
            "status": _initial_status(r, today),
            "created_at": now,
        }
        for r in rows
    ]
    _bulk_insert(session, Loan, loan_rows)
    loan_id_of = _ids_by(session, Loan.number, Loan.id, [r.loan_number for r in rows])
    loan_ids = [loan_id_of[r.loan_number] for r in rows]

    installment_rows, paid_parts = [], []
    for row, loan_id in zip(rows, loan_ids, strict=True):
        schedule = build_schedule(row.total_due, row.disbursed_on, row.installments, row.frequency)
        parts = dict(allocate_oldest_first([(s[0], s[2]) for s in schedule], row.amount_paid)[0])
        for seq, due_on, amount_due in schedule:
            installment_rows.append(
                {
                    "loan_id": loan_id,
                    "seq": seq,
                    "due_on": due_on,
                    "amount_due": amount_due,
                    "amount_paid": parts.get(seq, ZERO),
                }
            )
        paid_parts.append(parts)
    # Allocations name installment ids, so only loans paid before import need them back.
    _bulk_insert(session, Installment, installment_rows)
    _save_opening_repayments(session, rows, loan_ids, paid_parts, actor, now)

    audit_rows = [
        {
            "at": now,
            "actor_id": actor.id if actor else None,
            "action": "loan.imported",
            "entity_type": "loan",
            "entity_id": str(loan_id),
            "reason": f"imported from {source_name}",
            "before": None,
            "after": {"total_due": str(r.total_due), "paid": str(r.amount_paid), "line": r.line},
        }
        for r, loan_id in zip(rows, loan_ids, strict=True)
    ]
    _bulk_insert(session, AuditEvent, audit_rows)
    if session.get_bind().dialect.name == "postgresql":
        # Fresh statistics, or the planner guesses the new rows away (export took minutes).
        session.execute(
            text("ANALYZE borrower, borrower_phone, loan, installment, repayment, allocation")
        )
    result.loans = len(rows)
    return result


def _initial_status(row: LoanRow, today: date) -> str:
    if row.amount_paid == row.total_due:
        return "closed"
    return "pending" if row.disbursed_on > today else "active"


def _check_against_book(session: Session, rows: list[LoanRow]) -> list[str]:
    errors = []
    by_number = {r.loan_number.upper(): r for r in rows}
    for chunk in _chunks(list(by_number)):
        for number in session.scalars(
            select(Loan.number).where(func.upper(Loan.number).in_(chunk))
        ):
            row = by_number[number.upper()]
            errors.append(
                f"line {row.line}: duplicate loan number {row.loan_number} "
                f"(already in the book as {number})"
            )
    first_line = {}
    for r in rows:
        first_line.setdefault(r.national_id, r)
    for chunk in _chunks(list(first_line)):
        for national_id, name in session.execute(
            select(Borrower.national_id, Borrower.name).where(Borrower.national_id.in_(chunk))
        ):
            row = first_line[national_id]
            if not same_name(name, row.borrower_name):
                errors.append(
                    f"line {row.line}: national ID {national_id} is {name} in the book, "
                    f"not {row.borrower_name}"
                )
    return errors


def _line_of(error: str) -> int:
    return int(error.split()[1].rstrip(":"))


def _bulk_insert(session: Session, model, rows: list[dict]) -> None:
    """Many rows at once, in the session's transaction: COPY on PostgreSQL, Core
    executemany elsewhere. No RETURNING (on SQLite that means one statement per row):
    ids are read back by natural key with ``_ids_by``."""
    if not rows:
        return
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        _copy_rows(connection, model.__table__, rows)
        return
    for chunk in _chunks(rows, 5000):
        connection.execute(model.__table__.insert(), chunk)


def _copy_rows(connection, table, rows: list[dict]) -> None:
    from psycopg.types.json import Json

    columns = list(rows[0])
    names = ", ".join(f'"{c}"' for c in columns)
    cursor = connection.connection.driver_connection.cursor()
    with cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row([Json(v) if isinstance(v, dict) else v for v in map(row.get, columns)])


def _ids_by(session: Session, key_column, id_column, keys: list) -> dict:
    found: dict = {}
    for chunk in _chunks(keys):
        found.update(
            session.execute(select(key_column, id_column).where(key_column.in_(chunk))).all()
        )
    return found


def _save_borrowers(session: Session, rows: list[LoanRow], now: datetime):
    people: dict[str, LoanRow] = {}
    phones: dict[str, list[str]] = {}
    for r in rows:
        people.setdefault(r.national_id, r)
        for phone in r.phones:
            if phone not in phones.setdefault(r.national_id, []):
                phones[r.national_id].append(phone)
    ids: dict[str, int] = {}
    names: dict[str, str] = {}  # as the book spells them: phones carry their name key
    for chunk in _chunks(list(people)):
        for national_id, borrower_id, name in session.execute(
            select(Borrower.national_id, Borrower.id, Borrower.name).where(
                Borrower.national_id.in_(chunk)
            )
        ):
            ids[national_id], names[national_id] = borrower_id, name
    new = [nid for nid in people if nid not in ids]
    names.update((n, people[n].borrower_name) for n in new)
    existing_ids = list(ids.values())
    _bulk_insert(
        session,
        Borrower,
        [
            {
                "name": people[n].borrower_name,
                "national_id": n,
                "credit": ZERO,
                "sms_language": "en",
                "sms_opt_out": False,
                "created_at": now,
            }
            for n in new
        ],
    )
    ids.update(_ids_by(session, Borrower.national_id, Borrower.id, new))
    known: set[tuple[int, str]] = set()
    for chunk in _chunks(existing_ids):
        known.update(
            session.execute(
                select(BorrowerPhone.borrower_id, BorrowerPhone.number).where(
                    BorrowerPhone.borrower_id.in_(chunk)
                )
            ).all()
        )
    phone_rows = [
        {
            "borrower_id": ids[nid],
            "number": p,
            "sha256": phone_sha256(p),
            "masked_key": masked_key(p),
            "name_key": name_key(names[nid]),
        }
        for nid, numbers in phones.items()
        for p in numbers
        if (ids[nid], p) not in known
    ]
    if phone_rows:
        _bulk_insert(session, BorrowerPhone, phone_rows)
    return ids, len(new)


def _save_officers(session: Session, rows: list[LoanRow]) -> tuple[dict[str, int], int]:
    emails = sorted({r.officer_email for r in rows if r.officer_email})
    ids = (
        dict(
            session.execute(
                select(func.lower(StaffUser.email), StaffUser.id).where(
                    func.lower(StaffUser.email).in_(emails)
                )
            ).all()
        )
        if emails
        else {}
    )
    created = 0
    for email in emails:
        if email not in ids:
            officer = StaffUser(email=email, name=email.split("@")[0], role="officer")
            session.add(officer)
            session.flush()
            ids[email] = officer.id
            created += 1
    return ids, created


def _save_opening_repayments(session, rows, loan_ids, paid_parts, actor, now) -> None:
    """Money repaid before import: one repayment per loan, allocated oldest first."""
    paid = [
        (r, lid, parts)
        for r, lid, parts in zip(rows, loan_ids, paid_parts, strict=True)
        if r.amount_paid > 0
    ]
    if not paid:
        return
    _bulk_insert(
        session,
        Repayment,
        [
            {
                "loan_id": lid,
                "amount": r.amount_paid,
                "to_credit": ZERO,
                "source": "import",
                "reference": "opening balance",
                "received_at": now,
                "posted_by_id": actor.id if actor else None,
            }
            for r, lid, _ in paid
        ],
    )
    repayment_of = {}
    for chunk in _chunks([lid for _, lid, _ in paid]):
        repayment_of.update(
            session.execute(
                select(Repayment.loan_id, Repayment.id).where(
                    Repayment.loan_id.in_(chunk), Repayment.source == "import"
                )
            ).all()
        )
    repayment_ids = [repayment_of[lid] for _, lid, _ in paid]
    installment_ids: dict[tuple[int, int], int] = {}
    for chunk in _chunks([lid for _, lid, _ in paid]):
        installment_ids.update(
            ((loan_id, seq), iid)
            for iid, loan_id, seq in session.execute(
                select(Installment.id, Installment.loan_id, Installment.seq).where(
                    Installment.loan_id.in_(chunk), Installment.amount_paid > 0
                )
            )
        )
    _bulk_insert(
        session,
        Allocation,
        [
            {"repayment_id": rid, "installment_id": installment_ids[(lid, seq)], "amount": part}
            for (_, lid, parts), rid in zip(paid, repayment_ids, strict=True)
            for seq, part in parts.items()
        ],
    )
