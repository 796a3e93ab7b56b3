"""Posting a batch of received payments in one transaction: the payments drain's way
through a backlog (a statement's gaps, a burst of callbacks). It decides each payment as
``processing.process_payment`` would (``bulk_matching`` reads the same facts, ``match_payment``
decides) and writes what ``apply_decision``, ``post_repayment``, ``queue_receipt`` and
``notify_officers`` write (repayments, allocations, balances, audit events, the receipt and
the officers' notices), a statement per table for the whole batch rather than a unit of
work per payment. tests/payments/test_batch_posting.py holds the two paths to the same rows.

A payment it cannot decide safely in a batch is left for the one-by-one path: one whose
borrower another payment of the batch also pays (the second must see the first's
balances), or, on PostgreSQL, one whose borrower's balances changed between reading the
facts and locking the loans."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from lenders.jobs import wake_on_commit
from lenders.models import (
    Allocation,
    AuditEvent,
    Borrower,
    BorrowerPhone,
    Installment,
    Loan,
    Repayment,
)
from lenders.schedule import allocate_oldest_first
from payments.bulk_matching import gather_many
from payments.bulk_sql import insert_rows, update_rows
from payments.matching import BorrowerFacts, LoanFacts, MatchFacts, match_payment
from payments.models import C2BPayment, OfficerNotice, Shortcode, SmsMessage, payment_repayment
from payments.sms import payment_notice_text, receipt_text, template_text

ZERO = Decimal("0.00")
BULK_FROM = 10  # a drain pass with fewer payments posts them one by one


@dataclass
class _Loan:
    id: int
    number: str
    borrower_id: int
    officer_id: int | None
    total: Decimal
    paid: Decimal
    status: str
    installments: list = field(default_factory=list)  # [id, seq, due_on, due, paid]

    @property
    def outstanding(self) -> Decimal:
        return self.total - self.paid

    @property
    def next_due(self):
        for _, _, due_on, due, paid in self.installments:
            if due - paid > 0:
                return SimpleNamespace(due_on=due_on, outstanding=due - paid)
        return None

    def snapshot(self) -> dict:
        return {"status": self.status, "paid": str(self.paid), "outstanding": str(self.outstanding)}


class _Writes:
    """Rows and updates collected for the batch, written table by table at the end."""

    def __init__(self) -> None:
        self.repayments: list[dict] = []
        self.allocations: list[list] = []  # per repayment: (installment id, amount)
        self.links: list[tuple[int, int]] = []  # (payment id, repayment index)
        self.audits: list[dict] = []  # "repayment_index" filled in once ids are known
        self.payments: list[dict] = []
        self.messages: list[dict] = []
        self.notices: list[dict] = []


def post_batch(session: Session, ids: list[int]) -> tuple[list[int], list[int]]:
    """Match and post the drain's claimed payments ``ids`` in the caller's transaction.
    Returns (those decided here, those left for the one-by-one path)."""
    claimed = set(
        session.scalars(
            update(C2BPayment)
            .where(C2BPayment.id.in_(ids), C2BPayment.status == "received")
            .values(claimed_until=None)
            .returning(C2BPayment.id)
            .execution_options(synchronize_session=False)
        )
    )
    payments = session.execute(
        select(
            C2BPayment.id,
            C2BPayment.trans_id,
            C2BPayment.amount,
            C2BPayment.bill_ref,
            C2BPayment.msisdn,
            C2BPayment.msisdn_form,
            C2BPayment.first_name,
            C2BPayment.shortcode_id,
            C2BPayment.trans_time,
            C2BPayment.rule,
            C2BPayment.borrower_id,
        )
        .where(C2BPayment.id.in_(sorted(claimed)))
        .order_by(C2BPayment.id)  # fmt: skip
    ).all()
    tolerances = dict(session.execute(select(Shortcode.id, Shortcode.amount_tolerance)).all())
    facts = gather_many(session, payments, tolerances)
    first = [match_payment(known) for known in facts]
    loans = _lock_loans(session, sorted({d.borrower_id for d in first if d.matched}))
    by_borrower: dict[int, list[_Loan]] = defaultdict(list)
    for loan in loans.values():
        by_borrower[loan.borrower_id].append(loan)
    writes, templates, now = _Writes(), {}, datetime.now(UTC)
    lender = current_app.config.get("LENDER_NAME", "Marejesho")
    people = _borrowers(session, set(by_borrower))
    done, left = [], []
    for payment, known in zip(payments, facts, strict=True):
        # Decided again on the locked loans as the batch's earlier payments left them, as
        # one-by-one posting would see them (processing.decide_current).
        decision = match_payment(_current(known, loans, by_borrower))
        if decision.matched and decision.borrower_id not in by_borrower:
            left.append(payment.id)  # its borrower's loans are not locked: one by one
            continue
        done.append(payment.id)
        _decide(writes, payment, decision, loans, people, now)
        if decision.matched:
            _receipt(session, writes, payment, decision, loans, people, lender, templates)
    _write(session, writes, loans, people)
    if writes.messages:
        wake_on_commit(session, "messages")
    return done, left


def _loan_facts(loan: _Loan) -> LoanFacts:
    unpaid = [inst[2] for inst in loan.installments if inst[3] - inst[4] > 0]
    due = min(unpaid) if unpaid else None
    return LoanFacts(loan.id, loan.number, loan.borrower_id, loan.status, loan.outstanding, due)


def _current(known: MatchFacts, loans: dict[int, _Loan], by_borrower) -> MatchFacts:
    """The payment's facts with the locked borrowers' loans as they stand now."""

    def borrower(facts: BorrowerFacts | None) -> BorrowerFacts | None:
        if facts is None or facts.id not in by_borrower:
            return facts
        active = tuple(_loan_facts(x) for x in by_borrower[facts.id] if x.status == "active")
        return BorrowerFacts(facts.id, facts.name, active)

    ref_loan = known.ref_loan
    if ref_loan is not None and ref_loan.id in loans:
        ref_loan = _loan_facts(loans[ref_loan.id])
    return replace(
        known,
        ref_loan=ref_loan,
        ref_borrower=borrower(known.ref_borrower),
        payer=borrower(known.payer),
    )


def _lock_loans(session: Session, borrower_ids: list[int]) -> dict[int, _Loan]:
    """Every loan of these borrowers, locked in id order (no two batches deadlock), with
    its installments."""
    loans: dict[int, _Loan] = {}
    for start in range(0, len(borrower_ids), 500):
        rows = session.execute(
            select(
                Loan.id,
                Loan.number,
                Loan.borrower_id,
                Loan.officer_id,
                Loan.principal + Loan.interest + Loan.fees,
                Loan.paid,
                Loan.status,
            )  # fmt: skip
            .where(Loan.borrower_id.in_(borrower_ids[start : start + 500]))
            .order_by(Loan.id)
            .with_for_update()
        )
        for lid, number, bid, officer, total, paid, status in rows:
            loans[lid] = _Loan(lid, number, bid, officer, Decimal(total), Decimal(paid), status)
    for start in range(0, len(loans), 500):
        chunk = sorted(loans)[start : start + 500]
        for iid, lid, seq, due_on, due, paid in session.execute(
            select(
                Installment.id,
                Installment.loan_id,
                Installment.seq,
                Installment.due_on,
                Installment.amount_due,
                Installment.amount_paid,
            )  # fmt: skip
            .where(Installment.loan_id.in_(chunk))
            .order_by(Installment.loan_id, Installment.seq)
        ):
            loans[lid].installments.append([iid, seq, due_on, Decimal(due), Decimal(paid)])
    return loans


def _borrowers(session: Session, ids: set[int]) -> dict[int, SimpleNamespace]:
    found: dict[int, SimpleNamespace] = {}
    for start in range(0, len(ids), 500):
        chunk = sorted(ids)[start : start + 500]
        for bid, credit, opt_out, language in session.execute(
            select(Borrower.id, Borrower.credit, Borrower.sms_opt_out, Borrower.sms_language)
            .where(Borrower.id.in_(chunk))
            .with_for_update()
        ):
            found[bid] = SimpleNamespace(
                credit=Decimal(credit), added=ZERO, opt_out=opt_out, language=language, phone=None
            )
        for bid, number in session.execute(
            select(BorrowerPhone.borrower_id, BorrowerPhone.number)
            .where(BorrowerPhone.borrower_id.in_(chunk))
            .order_by(BorrowerPhone.id)
        ):
            if found[bid].phone is None:
                found[bid].phone = number
    return found


def _decide(writes: _Writes, payment, decision, loans, people, now) -> None:
    """``apply_decision`` and ``post_repayment``, in memory."""
    before = {"status": "received", "rule": payment.rule, "borrower_id": payment.borrower_id}
    row = {
        "_id": payment.id, "status": "unmatched", "rule": None, "reason": decision.reason,
        "borrower_id": decision.borrower_id, "credit": ZERO, "processed_at": now, "error": None,
    }  # fmt: skip
    entity = ("c2b_payment", str(payment.id))
    if not decision.matched:
        writes.payments.append(row)
        after = {"status": "unmatched", "rule": None, "borrower_id": decision.borrower_id}
        writes.audits.append(_audit("payment.unmatched", entity, before, after, decision.reason))
        return
    first_repayment = len(writes.repayments)
    for loan_id, amount in decision.plan:
        loan = loans[loan_id]
        loan_before = loan.snapshot()
        owed = [(inst, inst[3] - inst[4]) for inst in loan.installments]
        parts, excess = allocate_oldest_first(owed, amount)
        for inst, part in parts:
            inst[4] += part
        loan.paid += amount - excess
        people[loan.borrower_id].added += excess
        if loan.outstanding == 0:
            loan.status = "closed"
        writes.repayments.append(
            {
                "loan_id": loan_id,
                "amount": amount - excess,
                "to_credit": excess,
                "source": "mpesa",
                "reference": payment.trans_id,
                "received_at": payment.trans_time,
                "posted_by_id": None,
            }  # fmt: skip
        )
        writes.allocations.append([(inst[0], part) for inst, part in parts])
        writes.links.append((payment.id, len(writes.repayments) - 1))
        after = loan.snapshot() | {"repayment_id": None, "to_credit": str(excess)}
        audit = _audit("repayment.posted", ("loan", str(loan_id)), loan_before, after, None)
        audit["reason"], audit["_repayment"] = decision.reason, len(writes.repayments) - 1
        writes.audits.append(audit)
        row["credit"] += excess
    row |= {"status": "posted", "rule": decision.rule}
    writes.payments.append(row)
    after = {"status": "posted", "rule": decision.rule, "borrower_id": decision.borrower_id}
    audit = _audit("payment.posted", entity, before, after, decision.reason)
    audit["_repayments"] = list(range(first_repayment, len(writes.repayments)))
    writes.audits.append(audit)


def _audit(action: str, entity: tuple[str, str], before, after, reason) -> dict:
    return {
        "action": action, "entity_type": entity[0], "entity_id": entity[1],
        "before": before, "after": after, "reason": reason, "actor_id": None,
    }  # fmt: skip


def _receipt(session, writes, payment, decision, loans, people, lender, templates) -> None:
    """``queue_receipt`` and ``notify_officers`` for a posted payment."""
    person = people[decision.borrower_id]
    live = [
        SimpleNamespace(loan_id=r["loan_id"], amount=r["amount"], to_credit=r["to_credit"])
        for r in writes.repayments[-len(decision.plan) :]
    ]
    message = {"kind": "receipt", "payment_id": payment.id, "borrower_id": decision.borrower_id}
    if person.opt_out:
        message |= {"status": "skipped", "error": "the borrower opted out of SMS"}
    elif person.phone is None:
        message |= {"status": "skipped", "error": "the borrower has no phone"}
    else:
        language = person.language if person.language in ("en", "sw") else "en"

        def template(key: str) -> str:
            if (key, language) not in templates:
                templates[key, language] = template_text(session, key, language)
            return templates[key, language]

        _, body = receipt_text(template, lender, payment, live, loans, language)
        message |= {"status": "queued", "to_phone": person.phone, "body": body}
        message["language"] = language
    writes.messages.append({"to_phone": "", "body": "", "language": "en", "error": None} | message)
    officers: dict[int, list[str]] = {}
    for r in live:
        loan = loans[r.loan_id]
        if loan.officer_id:
            officers.setdefault(loan.officer_id, []).append(loan.number)
    for officer_id, numbers in officers.items():
        text = payment_notice_text(payment, numbers)
        writes.notices.append({"staff_id": officer_id, "payment_id": payment.id, "text": text})


def _write(session: Session, writes: _Writes, loans, people) -> None:
    """Everything the batch decided, a statement per table."""
    ids: list[int] = []
    if writes.repayments:
        ids = list(
            session.scalars(
                Repayment.__table__.insert().returning(
                    Repayment.__table__.c.id, sort_by_parameter_order=True
                ),
                writes.repayments,
            )
        )
    allocations = [
        {"repayment_id": ids[n], "installment_id": iid, "amount": amount}
        for n, parts in enumerate(writes.allocations)
        for iid, amount in parts
    ]
    insert_rows(session, Allocation.__table__, allocations)
    links = [{"payment_id": p, "repayment_id": ids[n]} for p, n in writes.links]
    insert_rows(session, payment_repayment, links)
    posted_to = {r["loan_id"] for r in writes.repayments}
    changed = {iid for parts in writes.allocations for iid, _ in parts}
    installments = [
        {"id": inst[0], "amount_paid": inst[4]}
        for lid in posted_to
        for inst in loans[lid].installments
        if inst[0] in changed
    ]
    update_rows(session, Installment.__table__, "id", installments)
    balances = [
        {"id": lid, "paid": loans[lid].paid, "status": loans[lid].status} for lid in posted_to
    ]
    update_rows(session, Loan.__table__, "id", balances)
    credit = [{"id": bid, "credit": p.credit + p.added} for bid, p in people.items() if p.added]
    update_rows(session, Borrower.__table__, "id", credit)
    update_rows(
        session,
        C2BPayment.__table__,
        "id",
        [
            {**{k: v for k, v in row.items() if k != "_id"}, "id": row["_id"]}
            for row in writes.payments
        ],
    )
    for audit in writes.audits:
        if "_repayment" in audit:
            audit["after"] = audit["after"] | {"repayment_id": ids[audit.pop("_repayment")]}
        if "_repayments" in audit:
            audit["after"] = audit["after"] | {
                "repayments": [ids[n] for n in audit.pop("_repayments")]
            }
    now = datetime.now(UTC)
    insert_rows(session, AuditEvent.__table__, [a | {"at": now} for a in writes.audits])
    defaults = {"attempts": 0, "created_at": now, "provider": None}
    insert_rows(
        session,
        SmsMessage.__table__,
        [defaults | m for m in writes.messages],
        conflict=["payment_id", "kind"],
    )
    insert_rows(
        session,
        OfficerNotice.__table__,
        [{"kind": "payment", "created_at": now} | n for n in writes.notices],
        conflict=["staff_id", "payment_id", "kind"],
    )
