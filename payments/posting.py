"""Posting a batch of received payments in one transaction: the payments drain's way.

Posting a payment through the ORM (``processing.apply_decision`` and ``lenders.book``) takes
some thirty statements, and their overhead, not the work, is what a posting costs. The drain
therefore posts its claimed batch in one transaction of about a dozen statements in all:

1. it takes the batch (``UPDATE … RETURNING`` the rows still in ``received``: on SQLite that
   is the database's write lock, so what follows reads the book as it is);
2. it identifies each payment's parties (the bill reference, the MSISDN): matching's reads;
3. it locks every loan of every borrower named, in id order (two batches never deadlock, a
   borrower's loans belong to one batch at a time), and reads their installments, and the
   borrowers' credit and first phone;
4. it decides and posts each payment in turn on that state, in memory, with matching's pure
   rules and the book's allocation (oldest installment first), so that a payment sees what
   the batch's earlier payments did;
5. it writes the result set-based: repayments, allocations, installments, loans, borrowers'
   credit, payments, their links, audit events, receipts and officer notices.

It writes what ``post_repayment`` and ``apply_decision`` write, row for row (a test holds the
two paths to the same books). Any error rolls the batch back and the drain posts its payments
one by one through the single-payment path, which isolates a payment that cannot be posted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from lenders.jobs import wake_on_commit
from lenders.models import (
    utcnow,
)
from lenders.schedule import allocate_oldest_first
from payments.matching import BorrowerFacts, Decision, LoanFacts, facts_for, identify, match_payment
from payments.models import (
    PaymentStatus,
    SmsTemplate,
)
from payments.posting_sql import (
    BORROWERS,
    INSTALLMENTS,
    LOANS,
    TAKE,
    TOLERANCES,
    write_batch,
)
from payments.sms import DEFAULT_TEMPLATES, ReceiptLine, compose_receipt, payment_notice_text

ZERO = Decimal("0.00")


class BatchConflict(RuntimeError):
    """The batch's state disagrees with itself (a loan not active where a decision needs
    one): the drain posts the batch one payment at a time instead."""


@dataclass
class InstallmentState:
    id: int
    due_on: date
    amount_due: Decimal
    amount_paid: Decimal

    @property
    def outstanding(self) -> Decimal:
        return self.amount_due - self.amount_paid


@dataclass
class LoanState:
    id: int
    number: str
    borrower_id: int
    officer_id: int | None
    status: str
    total_due: Decimal
    paid: Decimal
    installments: list[InstallmentState] = field(default_factory=list)

    @property
    def outstanding(self) -> Decimal:
        return self.total_due - self.paid

    def next_due(self) -> InstallmentState | None:
        return next((i for i in self.installments if i.outstanding > 0), None)

    def facts(self) -> LoanFacts:
        nxt = self.next_due()
        return LoanFacts(
            self.id, self.number, self.borrower_id, self.status, self.outstanding,
            nxt.due_on if nxt else None,
        )  # fmt: skip

    def snapshot(self) -> dict:  # as lenders.book.loan_snapshot
        return {"status": self.status, "paid": str(self.paid), "outstanding": str(self.outstanding)}


@dataclass
class BorrowerState:
    id: int
    name: str
    credit: Decimal
    sms_language: str
    sms_opt_out: bool
    phone: str | None
    loans: list[LoanState] = field(default_factory=list)

    def facts(self) -> BorrowerFacts:
        active = tuple(loan.facts() for loan in self.loans if loan.status == "active")
        return BorrowerFacts(self.id, self.name, active)


@dataclass
class Writes:
    """What the batch writes, gathered as it posts in memory."""

    repayments: list[dict] = field(default_factory=list)
    allocations: list[dict] = field(default_factory=list)
    links: list[dict] = field(default_factory=list)
    payments: list[dict] = field(default_factory=list)
    audits: list[dict] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)
    notices: list[dict] = field(default_factory=list)
    installments: dict[int, InstallmentState] = field(default_factory=dict)
    loans: dict[int, LoanState] = field(default_factory=dict)
    borrowers: dict[int, BorrowerState] = field(default_factory=dict)


class Batch:
    """The loans and borrowers a batch touches, read under lock, and the batch's postings."""

    def __init__(self, session: Session, lender: str) -> None:
        self.session = session
        self.lender = lender
        self.loans: dict[int, LoanState] = {}
        self.borrowers: dict[int, BorrowerState] = {}
        self.writes = Writes()
        self.now = utcnow()
        self._templates: dict | None = None

    def load(self, borrower_ids: set[int]) -> None:
        """Lock every loan of these borrowers (id order) and read what posting needs."""
        if not borrower_ids:
            return
        run = self.session.execute
        ids = sorted(borrower_ids)
        for id_, name, credit, language, opt_out, phone in run(BORROWERS, {"borrowers": ids}):
            self.borrowers[id_] = BorrowerState(id_, name, credit, language, opt_out, phone)
        for id_, number, borrower_id, officer_id, status, total, paid in run(
            LOANS, {"borrowers": ids}
        ):
            loan = LoanState(id_, number, borrower_id, officer_id, status, total, paid)
            self.loans[id_] = loan
            self.borrowers[borrower_id].loans.append(loan)
        if self.loans:
            for id_, loan_id, due_on, due, paid in run(INSTALLMENTS, {"loans": list(self.loans)}):
                self.loans[loan_id].installments.append(InstallmentState(id_, due_on, due, paid))

    def decide(self, payment, who, tolerance: Decimal) -> Decision:
        ref_loan = self.loans[who.ref_loan_id].facts() if who.ref_loan_id in self.loans else None
        facts = facts_for(
            who,
            amount=payment.amount,
            bill_ref=payment.bill_ref,
            tolerance=tolerance,
            ref_loan=ref_loan,
            borrower=lambda borrower_id: self.borrowers[borrower_id].facts(),
        )
        return match_payment(facts)

    def apply(self, payment, decision: Decision) -> str:
        """Post (or leave unmatched) one payment on the batch's state, as apply_decision and
        post_repayment would, and note what to write."""
        w = self.writes
        before = {"status": PaymentStatus.RECEIVED, "rule": None, "borrower_id": None}
        row = {
            "b_id": payment.id,
            "status": PaymentStatus.UNMATCHED,
            "rule": None,
            "credit": ZERO,
            "reason": decision.reason,
            "borrower_id": decision.borrower_id,
            "processed_at": self.now,
        }
        if not decision.matched:
            w.payments.append(row)
            after = before | {"status": PaymentStatus.UNMATCHED, "borrower_id": row["borrower_id"]}
            self._audit(
                "payment.unmatched", "c2b_payment", payment.id, before, after, decision.reason
            )
            return PaymentStatus.UNMATCHED
        keys, lines, credit = [], [], ZERO
        for loan_id, amount in decision.plan:
            key, line = self._post(payment, self.loans.get(loan_id), amount, decision.reason)
            keys.append(key)
            lines.append(line)
            credit += line.to_credit
        row |= {"status": PaymentStatus.POSTED, "rule": decision.rule, "credit": credit}
        w.payments.append(row)
        after = {
            "status": PaymentStatus.POSTED,
            "rule": decision.rule,
            "borrower_id": decision.borrower_id,
        }
        self._audit("payment.posted", "c2b_payment", payment.id, before,
                    after | {"repayments": keys}, decision.reason)  # fmt: skip
        self._receipt(payment, self.borrowers[decision.borrower_id], lines)
        self._notices(payment, [self.loans[loan_id] for loan_id, _ in decision.plan])
        return PaymentStatus.POSTED

    def _post(self, payment, loan: LoanState | None, amount: Decimal, reason: str):
        if loan is None or loan.status != "active":
            raise BatchConflict(f"payment {payment.trans_id}: its loan is not active")
        w = self.writes
        before = loan.snapshot()
        parts, excess = allocate_oldest_first(
            [(inst, inst.outstanding) for inst in loan.installments], amount
        )
        key = len(w.repayments)
        w.repayments.append({
            "loan_id": loan.id, "amount": amount - excess, "to_credit": excess,
            "source": "mpesa", "reference": payment.trans_id,
            "received_at": payment.trans_time, "posted_by_id": None,
        })  # fmt: skip
        for inst, part in parts:
            inst.amount_paid += part
            w.installments[inst.id] = inst
            w.allocations.append({"repayment": key, "installment_id": inst.id, "amount": part})
        loan.paid += amount - excess
        if excess:
            borrower = self.borrowers[loan.borrower_id]
            borrower.credit += excess
            w.borrowers[borrower.id] = borrower
        if loan.outstanding == 0:
            loan.status = "closed"
        w.loans[loan.id] = loan
        w.links.append({"payment_id": payment.id, "repayment": key})
        after = loan.snapshot() | {"repayment_id": key, "to_credit": str(excess)}
        self._audit("repayment.posted", "loan", loan.id, before, after, reason)
        nxt = loan.next_due()
        line = ReceiptLine(
            loan.number, amount - excess, excess, loan.outstanding,
            (nxt.outstanding, nxt.due_on) if nxt else None,
        )  # fmt: skip
        return key, line

    def _audit(self, action, entity_type, entity_id, before, after, reason) -> None:
        self.writes.audits.append({
            "at": self.now, "actor_id": None, "action": action, "entity_type": entity_type,
            "entity_id": str(entity_id), "before": before, "after": after, "reason": reason,
        })  # fmt: skip

    def _receipt(self, payment, borrower: BorrowerState, lines: list[ReceiptLine]) -> None:
        """The receipt row, as payments.sms.queue_receipt writes it."""
        message = {
            "kind": "receipt", "payment_id": payment.id, "borrower_id": borrower.id,
            "staff_id": None, "to_phone": "", "language": "en", "body": "",
            "status": "queued", "attempts": 0, "error": None, "created_at": self.now,
        }  # fmt: skip
        why = None
        if borrower.sms_opt_out:
            why = "the borrower opted out of SMS"
        elif not borrower.phone:
            why = "the borrower has no phone"
        elif not any(line.amount or line.to_credit for line in lines):
            why = "nothing was posted"
        if why:
            message |= {"status": "skipped", "error": why}
        else:
            language = borrower.sms_language if borrower.sms_language in ("en", "sw") else "en"
            _, body = compose_receipt(
                self._template, self.lender, language, payment.amount, payment.trans_id, lines
            )
            message |= {"to_phone": borrower.phone, "language": language, "body": body}
        self.writes.messages.append(message)

    def _template(self, key: str, language: str) -> str:
        if self._templates is None:
            rows = self.session.execute(
                select(SmsTemplate.key, SmsTemplate.language, SmsTemplate.body)
            )
            self._templates = {(k, lang): body for k, lang, body in rows}
        return self._templates.get((key, language)) or DEFAULT_TEMPLATES[(key, language)]

    def _notices(self, payment, loans: list[LoanState]) -> None:
        """One notice per officer whose portfolio the payment landed in (notify_officers)."""
        officers: dict[int, list[str]] = {}
        for loan in loans:
            if loan.officer_id:
                officers.setdefault(loan.officer_id, []).append(loan.number)
        for officer_id, numbers in officers.items():
            self.writes.notices.append(
                {"staff_id": officer_id, "payment_id": payment.id, "kind": "payment",
                 "text": payment_notice_text(payment, numbers), "created_at": self.now}
            )  # fmt: skip

    def flush(self) -> None:
        """Write everything the batch did, set-based, in the caller's transaction."""
        if write_batch(self.session, self.writes):
            wake_on_commit(self.session, "messages")


def post_batch(session: Session, payment_ids: list[int], *, lender: str) -> dict[int, str]:
    """Take the claimed payments still in ``received`` and post them in the caller's
    transaction, as the module says. Returns each taken payment's new status. Raises on
    any error: the caller rolls back and posts them one at a time."""
    payments = sorted(session.execute(TAKE, {"ids": list(payment_ids)}).all(), key=lambda p: p.id)
    if not payments:
        return {}
    shortcodes = sorted({p.shortcode_id for p in payments})
    tolerances = dict(session.execute(TOLERANCES, {"shortcodes": shortcodes}).all())
    who = {}
    named: set[int] = set()
    for p in payments:
        parties, ref_loan = identify(
            session, bill_ref=p.bill_ref, msisdn=p.msisdn, msisdn_form=p.msisdn_form,
            first_name=p.first_name,
        )  # fmt: skip
        who[p.id] = parties
        named.update(x for x in (parties.ref_borrower_id, parties.payer_id) if x)
        if ref_loan is not None:
            named.add(ref_loan.borrower_id)
    batch = Batch(session, lender)
    batch.load(named)
    outcome = {}
    for p in payments:
        tolerance = tolerances.get(p.shortcode_id)
        decision = batch.decide(p, who[p.id], Decimal("10.00") if tolerance is None else tolerance)
        outcome[p.id] = batch.apply(p, decision)
    batch.flush()
    return outcome
