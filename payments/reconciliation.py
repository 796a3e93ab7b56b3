"""What the reconciliation screens read (payments/views/reconciliation.py) and the upload
they start. Nothing here commits."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import PurePath

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from lenders.models import StaffUser
from lenders.text import plain_text
from lenders.web import nairobi_today
from payments.models import C2BPayment, PaymentStatus, Shortcode
from payments.reconciliation_models import (
    NEEDS_A_PERSON,
    PullRegistration,
    StatementImport,
    StatementLine,
)
from payments.statement_file import MAX_UNPACKED_BYTES, is_xlsx

EXTENSIONS = (".csv", ".xlsx", ".xlsm")
WAITING_STATUSES = (PaymentStatus.UNMATCHED, PaymentStatus.REVIEW, PaymentStatus.FAILED)


class UploadError(ValueError):
    """An upload refused; the message is for the admin."""


def queue_statement(
    session: Session, shortcode: Shortcode, filename: str, data: bytes, *, actor: StaffUser
) -> StatementImport:
    """Keep an uploaded statement for the import job (which a caller enqueues after the
    commit): its name, size and digest, and the bytes until it is imported."""
    name = plain_text(PurePath(filename or "").name)[:255] or "statement.csv"
    suffix = PurePath(name).suffix.lower()
    if suffix not in EXTENSIONS:
        raise UploadError("Upload the statement as CSV or XLSX, as the M-Pesa portal exports it.")
    if not data:
        raise UploadError("The file is empty.")
    if len(data) > MAX_UNPACKED_BYTES:
        raise UploadError("The file is larger than 64 MB: export a shorter period.")
    if (suffix != ".csv") != is_xlsx(data):
        raise UploadError(f"The file is named {suffix} but is not one: export it again.")
    record = StatementImport(
        shortcode_id=shortcode.id,
        source="statement",
        filename=name,
        sha256=hashlib.sha256(data).hexdigest(),
        status="queued",
        content=data,
        created_by_id=actor.id,
    )
    session.add(record)
    session.flush()
    return record


def recent_imports(session: Session, limit: int = 20) -> list[StatementImport]:
    return list(
        session.scalars(select(StatementImport).order_by(StatementImport.id.desc()).limit(limit))
    )


@dataclass(frozen=True)
class Attention:
    """A statement line a person must look at, with its payment when it has one."""

    line: StatementLine
    payment: C2BPayment | None

    @property
    def why(self) -> str:
        if self.line.outcome in NEEDS_A_PERSON:
            return self.line.note or self.line.outcome
        return f"the payment is {self.payment.status}: {self.payment.reason or self.payment.error}"


def needing_a_person(session: Session, import_id: int, limit: int = 200) -> list[Attention]:
    """The import's lines that need a person: amounts or accounts that differ, reversals
    the book could not follow or cannot place, and gaps the matcher left unmatched."""
    rows = session.execute(
        select(StatementLine, C2BPayment)
        .outerjoin(C2BPayment, C2BPayment.id == StatementLine.payment_id)
        .where(
            StatementLine.import_id == import_id,
            or_(
                StatementLine.outcome.in_(NEEDS_A_PERSON),
                (StatementLine.outcome == "gap") & C2BPayment.status.in_(WAITING_STATUSES),
            ),
        )
        .order_by(StatementLine.id)
        .limit(limit)
    ).all()
    return [Attention(line, payment) for line, payment in rows]


def import_outcomes(session: Session, import_id: int) -> dict[str, int]:
    """How the import's lines stand now: the drains post the gaps (``posting``: still
    waiting in received) and apply the reversals (``pending``) after the summary is out."""
    from sqlalchemy import func

    found = dict(
        session.execute(
            select(StatementLine.outcome, func.count())
            .where(StatementLine.import_id == import_id)
            .group_by(StatementLine.outcome)
        ).all()
    )
    found["posting"] = session.scalar(
        select(func.count())
        .select_from(StatementLine)
        .join(C2BPayment, C2BPayment.id == StatementLine.payment_id)
        .where(StatementLine.import_id == import_id, C2BPayment.status == PaymentStatus.RECEIVED)
    )
    return found


def parse_day(text: str | None, default: date | None = None) -> date | None:
    """A ``YYYY-MM-DD`` from a form or a URL, or ``default`` (yesterday in Nairobi)."""
    try:
        return date.fromisoformat((text or "").strip())
    except ValueError:
        return default if default is not None else nairobi_today() - timedelta(days=1)


def shortcodes(session: Session) -> list[Shortcode]:
    return list(session.scalars(select(Shortcode).order_by(Shortcode.number)))


def pull_panel(session: Session, shortcode: Shortcode) -> dict:
    """The shortcode page's Pull Transactions panel: registration and the last pull."""
    registration = session.get(PullRegistration, shortcode.id)
    last = registration.last_import if registration else None
    return {"s": shortcode, "registration": registration, "last": last}
