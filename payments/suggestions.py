"""Where an unmatched payment may belong, best first: for the payment page's Assign panel
and the unmatched queue. Each suggestion is a loan or a borrower the viewer may act on,
with the reason it is offered."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, selectinload

from lenders.models import Borrower, BorrowerPhone, Loan, Repayment, StaffUser
from lenders.references import reference_key
from lenders.text import like_escaped
from payments.models import C2BPayment, PaymentStatus, payment_repayment


@dataclass
class Suggestion:
    kind: str  # loan | borrower
    id: int
    label: str
    why: str
    score: int


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
                        C2BPayment.status == PaymentStatus.POSTED,
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
