"""Matching facts for many payments at once (the payments drain's batches): the lookups of
``matching.gather_facts`` as a few queries for the whole batch (loans by reference key,
borrowers by national ID, phones by number or hash, borrowers with their active loans),
read by the same functions, so a batch decides exactly as one-by-one does. A masked MSISDN
is looked up per payment, as ``find_payer`` does (its name check is per payer)."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from decimal import Decimal

from sqlalchemy import literal_column, select
from sqlalchemy.orm import Session

from lenders.models import Borrower, BorrowerPhone, Loan
from lenders.phones import InvalidPhone, canonical_phone
from payments.matching import (
    _NEXT_DUE,
    _OUTSTANDING,
    BorrowerFacts,
    LoanFacts,
    MatchFacts,
    _outstanding,
    find_payer,
    payer_among,
    payer_label,
    read_reference,
    reference_inputs,
)

_loan, _borrower, _phone = Loan.__table__.c, Borrower.__table__.c, BorrowerPhone.__table__.c
CHUNK = 500  # values in one IN (...)


def _chunks(values):
    values = sorted(v for v in set(values) if v is not None)
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def _references(session: Session, inputs: list[tuple[str, str, str | None]]):
    """The rows ``_WHAT_A_REFERENCE_NAMES`` would give each reference, for all at once."""
    loans, national, phones = defaultdict(list), defaultdict(list), defaultdict(list)
    for keys in _chunks(key for key, _, _ in inputs if key):
        query = select(
            _loan.reference_key, _loan.id, _loan.number, _loan.borrower_id, _loan.status,
            _OUTSTANDING, _NEXT_DUE,
        ).where(_loan.reference_key.in_(keys))  # fmt: skip
        for key, *row in session.execute(query):
            loans[key].append(("loan", *row))
    typed = [c for key, c, _ in inputs if key] + [c.upper() for key, c, _ in inputs if key]
    for ids in _chunks(typed):
        query = select(_borrower.national_id, _borrower.id).where(_borrower.national_id.in_(ids))
        for national_id, borrower_id in session.execute(query):
            national[national_id].append(borrower_id)
    for numbers in _chunks(n for key, _, n in inputs if key):
        query = select(_phone.number, _phone.borrower_id).where(_phone.number.in_(numbers))
        for number, borrower_id in session.execute(query):
            phones[number].append(borrower_id)
    answers = []
    for key, compact, number in inputs:
        if not key:
            answers.append((None, None, ""))
            continue
        rows = list(loans.get(key, []))
        for found in dict.fromkeys((compact, compact.upper())):
            rows += [("national_id", b, None, None, None, None, None) for b in national[found]]
        rows += [("phone", b, None, None, None, None, None) for b in phones.get(number, [])]
        answers.append(read_reference(rows, compact, number))
    return answers


def _payers(session: Session, payments, need: list[bool]) -> list[tuple[int | None, str]]:
    """``find_payer`` for each payment that needs it: plain and hashed numbers in one
    query each, masked ones one by one."""
    plain: dict[int, str] = {}
    for n, p in enumerate(payments):
        if need[n] and p.msisdn_form == "plain":
            with contextlib.suppress(InvalidPhone):
                plain[n] = canonical_phone(p.msisdn)
    hashed = {
        n: p.msisdn.replace(" ", "").lower()
        for n, p in enumerate(payments)
        if need[n] and p.msisdn_form == "hashed"
    }
    by_number, by_hash = defaultdict(set), defaultdict(set)
    for numbers in _chunks(plain.values()):
        query = select(_phone.number, _phone.borrower_id).where(_phone.number.in_(numbers))
        for number, borrower_id in session.execute(query):
            by_number[number].add(borrower_id)
    for digests in _chunks(hashed.values()):
        query = select(_phone.sha256, _phone.borrower_id).where(_phone.sha256.in_(digests))
        for digest, borrower_id in session.execute(query):
            by_hash[digest].add(borrower_id)
    answers: list[tuple[int | None, str]] = []
    for n, p in enumerate(payments):
        label = payer_label(p.msisdn, p.msisdn_form, p.first_name)
        if not need[n]:
            answers.append((None, ""))
        elif n in plain:
            answers.append(payer_among(by_number[plain[n]], label))
        elif n in hashed:
            answers.append(payer_among(by_hash[hashed[n]], label))
        else:  # masked, unreadable or none: as find_payer says
            answers.append(find_payer(session, p.msisdn, p.msisdn_form, p.first_name))
    return answers


def borrowers_facts(session: Session, borrower_ids) -> dict[int, BorrowerFacts]:
    """``matching.borrower_facts`` for many borrowers: names and active loans."""
    names: dict[int, str] = {}
    loans: dict[int, list[LoanFacts]] = defaultdict(list)
    for ids in _chunks(borrower_ids):
        query = (
            select(
                _borrower.id,
                _borrower.name,
                _loan.id,
                _loan.number,
                _loan.status,
                _OUTSTANDING,
                _NEXT_DUE,
            )  # fmt: skip
            .select_from(
                Borrower.__table__.outerjoin(
                    Loan.__table__,
                    (_loan.borrower_id == _borrower.id)
                    & (_loan.status == literal_column("'active'")),
                )
            )
            .where(_borrower.id.in_(ids))
            .order_by(_borrower.id, _loan.id)
        )
        for bid, name, lid, number, status, outstanding, due in session.execute(query):
            names[bid] = name
            if lid is not None:
                loans[bid].append(
                    LoanFacts(lid, number, bid, status, _outstanding(outstanding), due)
                )
    return {bid: BorrowerFacts(bid, name, tuple(loans[bid])) for bid, name in names.items()}


def gather_many(session: Session, payments, tolerances: dict[int, Decimal]) -> list[MatchFacts]:
    """``gather_facts`` for each payment (``amount``, ``bill_ref``, ``msisdn``,
    ``msisdn_form``, ``first_name``, ``shortcode_id``), in order."""
    references = _references(session, [reference_inputs(p.bill_ref) for p in payments])
    payers = _payers(session, payments, [ref[1] is None for ref in references])
    wanted = [ref[1] for ref in references] + [payer[0] for payer in payers]
    borrowers = borrowers_facts(session, [b for b in wanted if b])
    facts = []
    for p, (ref_loan, ref_borrower, ref_names), (payer, problem) in zip(
        payments, references, payers, strict=True
    ):
        tolerance = tolerances.get(p.shortcode_id)
        facts.append(
            MatchFacts(
                amount=Decimal(p.amount),
                bill_ref=p.bill_ref,
                tolerance=tolerance if tolerance is not None else Decimal("10.00"),
                payer_label=payer_label(p.msisdn, p.msisdn_form, p.first_name),
                ref_loan=ref_loan,
                ref_borrower=borrowers.get(ref_borrower) if ref_borrower else None,
                ref_names=ref_names,
                payer=borrowers.get(payer) if payer else None,
                payer_problem=problem,
            )
        )
    return facts
