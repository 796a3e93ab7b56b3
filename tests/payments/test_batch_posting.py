"""The payments drain's batches (payments/batch_posting.py) leave exactly the rows one-by-one
posting leaves: the same decisions, repayments, allocations, balances, credit, receipts,
officers' notices and audit events, payment for payment, including several payments of one
borrower in one batch, spills, credit, opted-out and phoneless borrowers and every MSISDN
form. And a backlog drained by two workers at once posts each payment once."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import select

import payments.jobs
from lenders.book import loan_is_balanced
from lenders.extensions import db
from lenders.models import (
    Allocation,
    AuditEvent,
    Borrower,
    Installment,
    Loan,
    Repayment,
)
from payments.batch_posting import post_batch
from payments.jobs import post_received_payments
from payments.models import C2BPayment, OfficerNotice, SmsMessage, payment_repayment
from payments.processing import post_claimed_payment
from tests.payments.conftest import c2b_body, record_unprocessed

pytestmark = pytest.mark.both_databases
D = Decimal


@pytest.fixture
def backlog(shortcode, make_staff, make_borrower, make_loan):
    """A book of every kind of borrower and forty payments waiting in ``received``."""
    officer, other = make_staff(), make_staff()
    jane = make_borrower("Jane Wanjiku", phones=("0712345678",))
    peter = make_borrower("Peter Otieno Kamau", phones=("0722000111", "0733000222"))
    quiet = make_borrower("Quiet Borrower", phones=("0744000333",))
    nophone = make_borrower("No Phone", phones=())
    swahili = make_borrower("Amina Hassan", phones=("0755000444",))
    quiet.sms_opt_out, swahili.sms_language = True, "sw"
    db.session.commit()
    loans = {
        "jane1": make_loan(borrower=jane, number="LOAN-000101", principal="1000.00",
                           interest="0", fees="0", installments=2, officer=officer),
        "jane2": make_loan(borrower=jane, number="LOAN-000102", principal="3000.00",
                           interest="0", fees="0", installments=3, officer=other,
                           disbursed_on=date(2025, 3, 1)),
        "peter": make_loan(borrower=peter, number="LOAN-000201", officer=officer),
        "quiet": make_loan(borrower=quiet, number="LOAN-000301", officer=officer),
        "nophone": make_loan(borrower=nophone, number="LOAN-000401"),
        "amina": make_loan(borrower=swahili, number="LOAN-000501", principal="500.00",
                           interest="0", fees="0", installments=1, officer=other),
    }  # fmt: skip
    hashed = hashlib.sha256(b"254733000222").hexdigest()
    bodies = [
        c2b_body(TransAmount="400.00", BillRefNumber="LOAN-000101"),
        c2b_body(TransAmount="700.00", BillRefNumber="loan 101"),  # closes it and spills
        c2b_body(TransAmount="2500.00", BillRefNumber="", MSISDN="254712345678"),  # amount
        c2b_body(TransAmount="5000.00", BillRefNumber="LOAN-000102"),  # leaves credit
        c2b_body(TransAmount="100.00", BillRefNumber="", MSISDN="254712345678"),  # credit only
        c2b_body(TransAmount="1000.00", BillRefNumber="", MSISDN="254722000111"),
        c2b_body(TransAmount="1000.00", BillRefNumber="", MSISDN=hashed),
        c2b_body(
            TransAmount="300.00", BillRefNumber="", MSISDN="2547 ***** 222", FirstName="PETER"
        ),
        c2b_body(TransAmount="300.00", BillRefNumber="", MSISDN="2547 ***** 222", FirstName="X"),
        c2b_body(TransAmount="250.00", BillRefNumber="LOAN-000301"),  # opted out
        c2b_body(TransAmount="250.00", BillRefNumber="LOAN-000401"),  # no phone
        c2b_body(TransAmount="600.00", BillRefNumber="LOAN-000501"),  # Swahili, spills to credit
        c2b_body(TransAmount="50.00", BillRefNumber="LOAN-000501"),  # its loan is closed now
        c2b_body(TransAmount="80.00", BillRefNumber="nobody", MSISDN="254799999999"),
        c2b_body(TransAmount="90.00", BillRefNumber="", MSISDN=""),
    ]
    bodies += [c2b_body(TransAmount=f"{10 + n}.00", BillRefNumber="LOAN-000201") for n in range(25)]
    ids = [record_unprocessed(shortcode, body).payment_id for body in bodies]
    db.session.commit()
    return ids, loans


def snapshot() -> dict:
    """Every row posting writes, without ids and times (a repayment by its receipt and loan)."""
    s = db.session
    s.flush()
    fresh = {"populate_existing": True}
    repayment_key = {
        r.id: (r.reference, r.loan_id, str(r.amount))
        for r in s.scalars(select(Repayment).order_by(Repayment.id))
    }
    payments = {
        p.trans_id: (p.status, p.rule, p.reason, p.borrower_id, str(p.credit), p.error)
        for p in s.scalars(select(C2BPayment).execution_options(populate_existing=True))
    }
    links = sorted(
        (s.get(C2BPayment, pid).trans_id, repayment_key[rid])
        for pid, rid in s.execute(select(payment_repayment))
    )

    def normal(value):
        if isinstance(value, dict):
            out = {k: normal(v) for k, v in value.items()}
            if "repayment_id" in out:
                out["repayment_id"] = repayment_key.get(out["repayment_id"])
            if "repayments" in out:
                out["repayments"] = [repayment_key[r] for r in out["repayments"]]
            return out
        return value

    audits = [
        (
            a.action,
            a.entity_type,
            a.entity_id
            if a.entity_type != "c2b_payment"
            else s.get(C2BPayment, int(a.entity_id)).trans_id,
            normal(a.before),
            normal(a.after),
            a.reason,
        )
        for a in s.scalars(select(AuditEvent).order_by(AuditEvent.id))
        if a.action.startswith(("repayment.", "payment."))
    ]
    return {
        "payments": payments,
        "repayments": [
            (r.reference, r.loan_id, str(r.amount), str(r.to_credit), r.source, r.received_at)
            for r in s.scalars(select(Repayment).order_by(Repayment.id))
        ],
        "allocations": sorted(
            (repayment_key[a.repayment_id], a.installment_id, str(a.amount))
            for a in s.scalars(select(Allocation))
        ),
        "links": links,
        "installments": [
            (i.id, str(i.amount_paid))
            for i in s.scalars(
                select(Installment).order_by(Installment.id).execution_options(**fresh)
            )
        ],
        "loans": [
            (loan.number, str(loan.paid), loan.status)
            for loan in s.scalars(select(Loan).order_by(Loan.id).execution_options(**fresh))
        ],
        "credit": [
            (b.id, str(b.credit))
            for b in s.scalars(select(Borrower).order_by(Borrower.id).execution_options(**fresh))
        ],
        "messages": sorted(
            (s.get(C2BPayment, m.payment_id).trans_id, m.kind, m.to_phone, m.body, m.status,
             m.error, m.language, m.borrower_id)  # fmt: skip
            for m in s.scalars(select(SmsMessage))
        ),
        "notices": sorted(
            (n.staff_id, s.get(C2BPayment, n.payment_id).trans_id, n.kind, n.text)
            for n in s.scalars(select(OfficerNotice))
        ),
        "audits": audits,
    }  # fmt: skip


def test_a_batch_writes_what_one_by_one_posting_writes(backlog):
    ids, _ = backlog
    for payment_id in ids:
        post_claimed_payment(db.session, payment_id)
    one_by_one = snapshot()
    db.session.rollback()

    done, left = post_batch(db.session, ids)
    batched = snapshot()
    db.session.rollback()

    assert (sorted(done), left) == (sorted(ids), [])
    assert {s for s, *_ in one_by_one["payments"].values()} == {"posted", "unmatched"}
    for table in one_by_one:
        assert batched[table] == one_by_one[table], table


def test_the_drain_posts_a_backlog_in_batches_and_every_loan_balances(backlog):
    ids, loans = backlog
    assert post_received_payments(100) == len(ids)
    db.session.expire_all()
    statuses = {p.status for p in db.session.scalars(select(C2BPayment))}
    assert statuses == {"posted", "unmatched"}
    for loan in loans.values():
        assert loan_is_balanced(db.session.get(Loan, loan.id))
    assert db.session.get(Loan, loans["jane1"].id).status == "closed"
    receipts = db.session.scalars(select(SmsMessage).where(SmsMessage.kind == "receipt")).all()
    assert len(receipts) == len({r.payment_id for r in receipts})


def test_a_batch_that_fails_is_posted_one_by_one(backlog, monkeypatch):
    ids, _ = backlog

    def broken(session, claimed):
        session.execute(select(1))
        raise RuntimeError("the batch broke")

    monkeypatch.setattr(payments.jobs, "post_batch", broken)
    assert post_received_payments(100) == len(ids)
    db.session.expire_all()
    assert {p.status for p in db.session.scalars(select(C2BPayment))} == {"posted", "unmatched"}


def test_two_workers_draining_one_backlog_post_each_payment_once(
    app, shortcode, make_borrower, make_loan
):
    borrowers = [make_borrower(f"Borrower {n}", phones=(f"07120000{n:02d}",)) for n in range(8)]
    loans = [make_loan(borrower=b, principal="5000.00", interest="0", fees="0") for b in borrowers]
    for n in range(240):
        loan = loans[n % len(loans)]
        record_unprocessed(shortcode, c2b_body(TransAmount="30.00", BillRefNumber=loan.number))
    db.session.commit()
    start = threading.Barrier(2)

    def worker() -> int:
        with app.app_context():
            start.wait()
            try:
                done = 0
                while claimed := post_received_payments(40):
                    done += claimed
                return done
            finally:
                db.session.remove()

    with ThreadPoolExecutor(2) as pool:
        assert sum(pool.map(lambda _: worker(), range(2))) == 240
    db.session.expire_all()
    assert {p.status for p in db.session.scalars(select(C2BPayment))} == {"posted"}
    assert len(db.session.scalars(select(Repayment)).all()) == 240
    for loan in loans:
        fresh = db.session.get(Loan, loan.id)
        assert fresh.paid == D("900.00") and loan_is_balanced(fresh)
