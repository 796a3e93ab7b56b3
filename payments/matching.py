"""Which loan a payment belongs to, by the four rules of DESIGN.md, in order:

1. bill reference names a loan (or, by national ID or phone, a borrower: go on with 2–4);
2. the payer has exactly one active loan;
3. the amount is within the shortcode's tolerance of one active loan's balance (ties: the
   earliest due);
4. the payer's active loan with the earliest unpaid due date.

``match_payment`` is pure: facts in, a ``Decision`` out, with its rule and a sentence a
person can read. ``gather_facts`` is the only part that reads the database."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from lenders.models import Borrower, BorrowerPhone, Installment, Loan
from lenders.money import format_kes
from lenders.phones import InvalidPhone, canonical_phone, mask_phone
from lenders.references import reference_key
from payments.parsing import masked_parts

FAR_FUTURE = date(9999, 12, 31)


@dataclass(frozen=True)
class LoanFacts:
    id: int
    number: str
    borrower_id: int
    status: str
    outstanding: Decimal
    next_due_on: date | None


@dataclass(frozen=True)
class BorrowerFacts:
    id: int
    name: str
    active_loans: tuple[LoanFacts, ...]

    @property
    def short_name(self) -> str:
        parts = self.name.split()
        if len(parts) < 2:
            return self.name
        return f"{parts[0]} {parts[-1][0]}."


@dataclass(frozen=True)
class MatchFacts:
    """Everything matching needs to know about one payment."""

    amount: Decimal
    bill_ref: str
    tolerance: Decimal
    payer_label: str  # how the reason names the payer: masked phone and first name
    ref_loan: LoanFacts | None = None  # the loan the bill reference names
    ref_borrower: BorrowerFacts | None = None  # the borrower named by ref (loan, ID or phone)
    ref_names: str = ""  # what the reference named, for the reason: "national ID 2345…"
    payer: BorrowerFacts | None = None  # the borrower the MSISDN identifies
    payer_problem: str = ""  # why the MSISDN identified nobody


@dataclass(frozen=True)
class Decision:
    rule: str | None  # None: unmatched
    reason: str
    borrower_id: int | None = None
    # (loan id, amount) in posting order; the last loan also takes what remains as credit
    plan: tuple[tuple[int, Decimal], ...] = field(default_factory=tuple)

    @property
    def matched(self) -> bool:
        return self.rule is not None


def _by_due(loan: LoanFacts) -> tuple:
    return (loan.next_due_on or FAR_FUTURE, loan.number)


def spill_plan(first: LoanFacts, borrower: BorrowerFacts, amount: Decimal):
    """The chosen loan first, then the borrower's other active loans by earliest due date,
    each up to its balance; whatever remains rides on the last as borrower credit."""
    loans = [first] + sorted(
        (loan for loan in borrower.active_loans if loan.id != first.id), key=_by_due
    )
    plan, remaining = [], amount
    for n, loan in enumerate(loans):
        part = remaining if n == len(loans) - 1 else min(remaining, loan.outstanding)
        if part > 0:
            plan.append((loan.id, part))
            remaining -= part
    return tuple(plan)


def match_payment(facts: MatchFacts) -> Decision:
    """Decide where a payment goes. Deterministic: the same facts give the same decision."""
    ref = facts.bill_ref
    loan = facts.ref_loan
    if loan is not None and loan.status == "active" and facts.ref_borrower is not None:
        return Decision(
            "bill_ref",
            f"bill reference {ref!r} matched loan {loan.number} of {facts.ref_borrower.short_name}",
            facts.ref_borrower.id,
            spill_plan(loan, facts.ref_borrower, facts.amount),
        )

    borrower, via = facts.ref_borrower, f"bill reference {ref!r} named {facts.ref_names}"
    if borrower is None:
        borrower, via = facts.payer, f"payer {facts.payer_label}"
    if borrower is None:
        parts = []
        if ref:
            parts.append(f"bill reference {ref!r} names no loan or borrower")
        else:
            parts.append("no bill reference")
        parts.append(facts.payer_problem or f"payer {facts.payer_label} matches no borrower")
        return Decision(None, "; ".join(parts))

    who = (
        f"{via} ({borrower.short_name})"
        if borrower is not facts.payer
        else (f"{via} is {borrower.short_name}")
    )
    active = sorted(borrower.active_loans, key=_by_due)
    if not active:
        return Decision(None, f"{who}, who has no active loan", borrower.id)
    if len(active) == 1:
        only = active[0]
        return Decision(
            "single_loan",
            f"{who}, who has one active loan, {only.number}",
            borrower.id,
            spill_plan(only, borrower, facts.amount),
        )
    close = [loan for loan in active if abs(loan.outstanding - facts.amount) <= facts.tolerance]
    if close:
        chosen = close[0]  # active is in due order, so ties go to the earliest due
        return Decision(
            "amount",
            f"{who}, who has {len(active)} active loans; {format_kes(facts.amount)} is within "
            f"{format_kes(facts.tolerance)} of {chosen.number}'s balance "
            f"{format_kes(chosen.outstanding)}",
            borrower.id,
            spill_plan(chosen, borrower, facts.amount),
        )
    oldest = active[0]
    due = oldest.next_due_on.strftime("%d %b %Y") if oldest.next_due_on else "no date"
    return Decision(
        "oldest_due",
        f"{who}, who has {len(active)} active loans; {oldest.number} has the earliest unpaid "
        f"due date ({due})",
        borrower.id,
        spill_plan(oldest, borrower, facts.amount),
    )


# --- the database side ---------------------------------------------------------------


def _loan_facts(session: Session, loan_filter) -> list[LoanFacts]:
    next_due = (
        select(func.min(Installment.due_on))
        .where(Installment.loan_id == Loan.id, Installment.amount_paid < Installment.amount_due)
        .correlate(Loan)
        .scalar_subquery()
    )
    rows = session.execute(
        select(
            Loan.id,
            Loan.number,
            Loan.borrower_id,
            Loan.status,
            Loan.principal + Loan.interest + Loan.fees - Loan.paid,
            next_due,
        ).where(loan_filter)
    ).all()
    return [
        LoanFacts(
            id, number, borrower_id, status, Decimal(outstanding).quantize(Decimal("0.01")), due
        )
        for id, number, borrower_id, status, outstanding, due in rows
    ]


def borrower_facts(session: Session, borrower_id: int) -> BorrowerFacts:
    name = session.scalar(select(Borrower.name).where(Borrower.id == borrower_id))
    loans = _loan_facts(session, (Loan.borrower_id == borrower_id) & (Loan.status == "active"))
    return BorrowerFacts(borrower_id, name, tuple(loans))


def _one(ids: set[int]) -> int | None:
    return next(iter(ids)) if len(ids) == 1 else None


def find_payer(session: Session, msisdn: str, form: str, first_name: str) -> tuple[int | None, str]:
    """The borrower an MSISDN identifies, or None with the reason. Masked numbers are
    confirmed by first name; a phone shared by several borrowers identifies nobody."""
    label = payer_label(msisdn, form, first_name)
    if form == "plain":
        try:
            number = canonical_phone(msisdn)
        except InvalidPhone:
            return None, f"payer {label} is not a Kenyan mobile number"
        ids = set(
            session.scalars(select(BorrowerPhone.borrower_id).where(BorrowerPhone.number == number))
        )
    elif form == "hashed":
        ids = set(
            session.scalars(
                select(BorrowerPhone.borrower_id).where(
                    BorrowerPhone.sha256 == msisdn.replace(" ", "").lower()
                )
            )
        )
    elif form == "masked":
        parts = masked_parts(msisdn)
        if parts is None or len(parts[0]) < 4 or len(parts[1]) < 3:
            return None, f"payer {label}: too little of the number is shown"
        head, tail = parts
        key = head[:4] + tail[-3:]
        if not first_name:
            count = session.scalar(select(func.count()).where(BorrowerPhone.masked_key == key))
            if count:
                return None, f"payer {label} could be {count} borrower(s) but sent no name"
            return None, f"payer {label} matches no borrower"
        # There are only a thousand masked keys, so at a million phones each names about
        # a thousand: the database keeps those with the payer's first name, then the digits
        # and the name are checked exactly here.
        token = re.sub(r"([\\%_])", r"\\\1", first_name)
        named = or_(
            *(
                Borrower.name.ilike(p, escape="\\")
                for p in (token, f"{token} %", f"% {token}", f"% {token} %")
            )
        )
        candidates = session.execute(
            select(BorrowerPhone.number, Borrower.id, Borrower.name)
            .join(Borrower, Borrower.id == BorrowerPhone.borrower_id)
            .where(BorrowerPhone.masked_key == key, named)
        ).all()
        wanted = first_name.casefold()
        ids = {
            bid
            for n, bid, name in candidates
            if n.startswith(head)
            and n.endswith(tail)
            and wanted in (part.casefold() for part in name.split())
        }
        if not ids and session.scalar(select(func.count()).where(BorrowerPhone.masked_key == key)):
            return None, f"payer {label}: no borrower with those digits is called {first_name}"
    else:
        return None, "the payment carries no usable MSISDN"
    if len(ids) > 1:
        return None, f"payer {label} is a phone shared by {len(ids)} borrowers"
    if not ids:
        return None, f"payer {label} matches no borrower"
    return _one(ids), ""


def payer_label(msisdn: str, form: str, first_name: str) -> str:
    shown = {
        "plain": lambda: mask_phone(re.sub(r"\D", "", msisdn)),
        "hashed": lambda: "(hashed number)",
        "masked": lambda: msisdn,
    }.get(form, lambda: "(no number)")()
    return f"{shown} {first_name}".strip()


def find_reference(session: Session, bill_ref: str):
    """What the bill reference names: (loan facts, borrower id, description)."""
    key = reference_key(bill_ref)
    if not key:
        return None, None, ""
    loans = _loan_facts(session, Loan.reference_key == key)
    if len(loans) == 1:
        return loans[0], loans[0].borrower_id, f"loan {loans[0].number}"
    if len(loans) > 1:  # "123" can name LOAN-000123 and L-123: prefer the active one
        active = [loan for loan in loans if loan.status == "active"]
        if len(active) == 1:
            return active[0], active[0].borrower_id, f"loan {active[0].number}"
    compact = re.sub(r"\s", "", bill_ref)
    borrower_id = session.scalar(
        # As typed or in capitals, by the unique index (upper() on the column scanned
        # the whole borrower table: 60 ms a payment at 700,000 borrowers).
        select(Borrower.id).where(Borrower.national_id.in_({compact, compact.upper()}))
    )
    if borrower_id:
        return None, borrower_id, f"national ID {compact}"
    try:
        number = canonical_phone(bill_ref)
    except InvalidPhone:
        return None, None, ""
    ids = set(
        session.scalars(select(BorrowerPhone.borrower_id).where(BorrowerPhone.number == number))
    )
    if len(ids) == 1:
        return None, _one(ids), f"phone {mask_phone(number)}"
    return None, None, ""


def gather_facts(
    session: Session,
    *,
    amount: Decimal,
    bill_ref: str,
    msisdn: str,
    msisdn_form: str,
    first_name: str,
    tolerance: Decimal,
) -> MatchFacts:
    """Read what matching needs: a few indexed lookups, whatever the size of the book."""
    ref_loan, ref_borrower_id, ref_names = find_reference(session, bill_ref)
    payer_id, problem = find_payer(session, msisdn, msisdn_form, first_name)
    return MatchFacts(
        amount=amount,
        bill_ref=bill_ref,
        tolerance=tolerance,
        payer_label=payer_label(msisdn, msisdn_form, first_name),
        ref_loan=ref_loan,
        ref_borrower=borrower_facts(session, ref_borrower_id) if ref_borrower_id else None,
        ref_names=ref_names,
        payer=borrower_facts(session, payer_id) if payer_id else None,
        payer_problem=problem,
    )
