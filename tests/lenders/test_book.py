"""post_repayment and reverse_repayment: the only ways money moves on a loan."""

import threading
from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DatabaseError

from lenders.book import (
    BookError,
    activate_disbursed_loans,
    loan_is_balanced,
    post_repayment,
    reverse_repayment,
)
from lenders.extensions import db
from lenders.models import AuditEvent, Borrower, Installment, Loan, Repayment

pytestmark = pytest.mark.both_databases

D = Decimal


def amounts(loan):
    return [(i.amount_due, i.amount_paid) for i in loan.installments]


def test_repayment_pays_oldest_installment_first(make_loan):
    loan = make_loan(principal="900.00", interest="90.00", fees="10.00", installments=4)
    post_repayment(db.session, loan, D("300.00"), source="mpesa", reference="TK1")
    db.session.commit()
    db.session.refresh(loan)
    assert amounts(loan) == [
        (D("250.00"), D("250.00")),
        (D("250.00"), D("50.00")),
        (D("250.00"), D("0.00")),
        (D("250.00"), D("0.00")),
    ]
    assert loan.paid == D("300.00") and loan.outstanding == D("700.00")
    assert loan_is_balanced(loan)


def test_repayment_records_allocations_and_an_audit_event(make_loan, make_staff):
    officer = make_staff("officer")
    loan = make_loan(principal="1000.00", interest="0", fees="0", installments=2)
    repayment = post_repayment(
        db.session, loan, D("600.00"), source="manual", actor=officer, reason="cash at branch"
    )
    db.session.commit()
    assert [(a.installment.seq, a.amount) for a in repayment.allocations] == [
        (1, D("500.00")),
        (2, D("100.00")),
    ]
    event = db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == "repayment.posted")
    ).one()
    assert event.actor_id == officer.id and event.reason == "cash at branch"
    assert event.before["outstanding"] == "1000.00"
    assert event.after["outstanding"] == "400.00"
    assert event.after["repayment_id"] == repayment.id


def test_paying_a_loan_to_zero_closes_it_and_excess_becomes_borrower_credit(make_loan):
    loan = make_loan(principal="1000.00", interest="0", fees="0", installments=2)
    repayment = post_repayment(db.session, loan, D("1250.50"), source="mpesa")
    db.session.commit()
    db.session.refresh(loan)
    assert loan.status == "closed" and loan.outstanding == 0
    assert repayment.amount == D("1000.00") and repayment.to_credit == D("250.50")
    assert db.session.get(Borrower, loan.borrower_id).credit == D("250.50")


def test_reversal_restores_balance_credit_and_reopens_the_loan(make_loan, make_staff):
    admin = make_staff("admin")
    loan = make_loan(principal="1000.00", interest="0", fees="0", installments=2)
    repayment = post_repayment(db.session, loan, D("1100.00"), source="mpesa")
    db.session.commit()
    reverse_repayment(db.session, repayment, actor=admin, reason="paid to wrong loan")
    db.session.commit()
    db.session.refresh(loan)
    assert loan.status == "active" and loan.paid == 0 and loan.outstanding == D("1000.00")
    assert all(i.amount_paid == 0 for i in loan.installments)
    assert db.session.get(Borrower, loan.borrower_id).credit == 0
    assert repayment.reversed and repayment.reversal_reason == "paid to wrong loan"
    actions = db.session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)).all()
    assert actions[-2:] == ["repayment.posted", "repayment.reversed"]
    assert loan_is_balanced(loan)


def test_a_repayment_cannot_be_reversed_twice_or_without_reason(make_loan):
    loan = make_loan()
    repayment = post_repayment(db.session, loan, D("100.00"), source="mpesa")
    db.session.commit()
    with pytest.raises(BookError, match="reason"):
        reverse_repayment(db.session, repayment, actor=None, reason="  ")
    reverse_repayment(db.session, repayment, actor=None, reason="duplicate")
    db.session.commit()
    with pytest.raises(BookError, match="already reversed"):
        reverse_repayment(db.session, repayment, actor=None, reason="again")


@pytest.mark.parametrize("amount", [D("0"), D("-5.00")])
def test_non_positive_repayment_is_refused(make_loan, amount):
    loan = make_loan()
    with pytest.raises(BookError):
        post_repayment(db.session, loan, amount, source="mpesa")


def test_repayment_to_a_closed_loan_is_refused(make_loan):
    loan = make_loan(principal="100.00", interest="0", fees="0", installments=1)
    post_repayment(db.session, loan, D("100.00"), source="mpesa")
    db.session.commit()
    with pytest.raises(BookError, match="closed"):
        post_repayment(db.session, loan, D("1.00"), source="mpesa")


def test_many_small_repayments_add_up_to_the_cent(make_loan):
    loan = make_loan(principal="1000.00", interest="0.03", fees="0", installments=3)
    for _ in range(7):
        post_repayment(db.session, loan, D("0.10"), source="mpesa")
    post_repayment(db.session, loan, D("333.34"), source="mpesa")
    db.session.commit()
    db.session.refresh(loan)
    assert loan.paid == D("334.04")
    assert [i.amount_paid for i in loan.installments] == [D("333.34"), D("0.70"), D("0.00")]
    assert loan_is_balanced(loan)


def test_database_refuses_overpaid_installment(make_loan):
    loan = make_loan(principal="100.00", interest="0", fees="0", installments=1)
    with pytest.raises(DatabaseError):
        db.session.execute(
            text("UPDATE installment SET amount_paid = 150 WHERE loan_id = :id"), {"id": loan.id}
        )
    db.session.rollback()


def test_audit_events_cannot_be_changed_or_deleted(make_loan):
    make_loan()
    for statement in ("UPDATE audit_event SET reason = 'x'", "DELETE FROM audit_event"):
        with pytest.raises(DatabaseError, match="append-only"):
            db.session.execute(text(statement))
        db.session.rollback()
    event = db.session.scalars(select(AuditEvent)).first()
    event.reason = "rewritten"
    with pytest.raises(PermissionError):
        db.session.flush()
    db.session.rollback()


@pytest.mark.postgresql_only  # row locks are the point; SQLite serialises every writer
def test_concurrent_repayments_on_one_loan_lose_nothing(app, make_loan):
    """Ten payments for one loan posted at once from ten threads: the balance is exact."""
    loan = make_loan(principal="10000.00", interest="0", fees="0", installments=10)
    loan_id = loan.id
    errors = []
    barrier = threading.Barrier(10)

    def pay(n: int):
        with app.app_context():
            try:
                barrier.wait()
                post_repayment(
                    db.session,
                    db.session.get(Loan, loan_id),
                    D("123.45"),
                    source="mpesa",
                    reference=f"TK{n}",
                )
                db.session.commit()
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=pay, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    db.session.expire_all()
    loan = db.session.get(Loan, loan_id)
    assert loan.paid == D("1234.50")
    assert db.session.scalar(
        select(func.sum(Installment.amount_paid)).where(Installment.loan_id == loan_id)
    ) == D("1234.50")
    assert db.session.scalar(select(func.count(Repayment.id))) == 10


def test_pending_loans_become_active_on_their_disbursement_day(make_loan):
    loan = make_loan(disbursed_on=date(2025, 3, 10))
    loan.status = "pending"
    db.session.commit()
    assert activate_disbursed_loans(db.session, date(2025, 3, 9)) == 0
    assert activate_disbursed_loans(db.session, date(2025, 3, 10)) == 1
    db.session.commit()
    assert db.session.get(Loan, loan.id).status == "active"
    assert (
        db.session.scalars(select(AuditEvent.action).order_by(AuditEvent.id.desc())).first()
        == "loan.activated"
    )
