"""Read-side queries for the screens, scoped to what the viewer may see."""

from __future__ import annotations

import re

from sqlalchemy import Select, exists, or_, select, tuple_
from sqlalchemy.orm import Session, selectinload

from lenders.models import AuditEvent, Borrower, BorrowerPhone, Loan, Repayment, StaffUser
from lenders.phones import InvalidPhone, canonical_phone
from lenders.text import like_escaped

PAGE_SIZE = 25


def visible_loans(viewer: StaffUser) -> Select:
    """Loans the viewer may see: an admin all, an officer their portfolio."""
    query = select(Loan)
    if not viewer.is_admin:
        query = query.where(Loan.officer_id == viewer.id)
    return query


def _visible_borrowers(viewer: StaffUser) -> Select:
    query = select(Borrower)
    if not viewer.is_admin:
        query = query.where(
            exists().where(Loan.borrower_id == Borrower.id, Loan.officer_id == viewer.id)
        )
    return query


def _like(text: str) -> str:
    return "%" + like_escaped(text) + "%"


def find_borrowers(
    session: Session,
    viewer: StaffUser,
    q: str = "",
    after_id: int | None = None,
    limit: int = PAGE_SIZE,
) -> tuple[list[Borrower], int | None]:
    """Borrowers by name, national ID, loan number or phone in any form, in name order,
    one page after ``after_id`` (keyset). Returns the page and the cursor of the next."""
    query = _visible_borrowers(viewer)
    q = " ".join((q or "").split())
    if q:
        digits = re.sub(r"\D", "", q)
        conditions = [Borrower.name.ilike(_like(q), escape="\\"), Borrower.national_id == q]
        try:
            phone = canonical_phone(q)
        except InvalidPhone:
            phone = None
        if phone:
            conditions.append(
                exists().where(
                    BorrowerPhone.borrower_id == Borrower.id, BorrowerPhone.number == phone
                )
            )
        elif len(digits) >= 4 and len(digits) >= len(q.replace(" ", "")) - 1:
            conditions.append(Borrower.national_id.like(digits + "%"))
            conditions.append(
                exists().where(
                    BorrowerPhone.borrower_id == Borrower.id,
                    BorrowerPhone.number.like(_like(digits), escape="\\"),
                )
            )
        loan_match = exists().where(
            Loan.borrower_id == Borrower.id, Loan.number.ilike(like_escaped(q), escape="\\")
        )
        conditions.append(loan_match)
        query = query.where(or_(*conditions))
    if after_id is not None:
        anchor = session.get(Borrower, after_id)
        if anchor is not None:
            query = query.where(tuple_(Borrower.name, Borrower.id) > (anchor.name, anchor.id))
    rows = list(
        session.scalars(
            query.options(selectinload(Borrower.phones))
            .order_by(Borrower.name, Borrower.id)
            .limit(limit + 1)
        )
    )
    next_after = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], next_after


def get_borrower(session: Session, viewer: StaffUser, borrower_id: int) -> Borrower | None:
    return session.scalar(_visible_borrowers(viewer).where(Borrower.id == borrower_id))


def borrower_loans(session: Session, viewer: StaffUser, borrower: Borrower) -> list[Loan]:
    return list(
        session.scalars(
            visible_loans(viewer)
            .where(Loan.borrower_id == borrower.id)
            .options(selectinload(Loan.installments))
            .order_by(Loan.disbursed_on.desc(), Loan.id.desc())
        )
    )


def loan_repayments(session: Session, loan_ids: list[int]) -> list[Repayment]:
    if not loan_ids:
        return []
    return list(
        session.scalars(
            select(Repayment)
            .where(Repayment.loan_id.in_(loan_ids))
            .options(selectinload(Repayment.allocations), selectinload(Repayment.loan))
            .order_by(Repayment.received_at.desc(), Repayment.id.desc())
        )
    )


def get_loan(session: Session, viewer: StaffUser, number: str) -> Loan | None:
    """The loan with this number if the viewer may see it (None otherwise: 404, not 403,
    so that an officer learns nothing of another portfolio)."""
    return session.scalar(
        visible_loans(viewer)
        .where(Loan.number == number)
        .options(selectinload(Loan.installments), selectinload(Loan.borrower))
    )


def loan_audit_trail(session: Session, loan: Loan) -> list[AuditEvent]:
    return list(
        session.scalars(
            select(AuditEvent)
            .where(AuditEvent.entity_type == "loan", AuditEvent.entity_id == str(loan.id))
            .options(selectinload(AuditEvent.actor))
            .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
        )
    )
