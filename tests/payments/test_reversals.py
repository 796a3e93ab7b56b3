"""The one reversal path every source shares (payments/reversals.py): a reversed payment's
repayments are undone through the audited book, its officers are told, and a second call
from any source changes nothing; a reversal the book cannot follow goes to a person once."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from lenders.book import loan_is_balanced
from lenders.extensions import db
from lenders.models import AuditEvent, Borrower, Loan
from payments.models import C2BPayment, OfficerNotice
from payments.reversals import reverse_payment, reverse_receipt
from tests.payments.conftest import c2b_body, drain, payment_by_receipt, record_unprocessed

pytestmark = pytest.mark.both_databases
D = Decimal


@pytest.fixture
def loan(make_staff, make_borrower, make_loan):
    officer = make_staff(name="Otieno Officer")
    return make_loan(borrower=make_borrower(phones=("0712345678",)), number="LOAN-000900",
                     principal="1000.00", interest="0", fees="0", installments=2,
                     disbursed_on=date(2025, 1, 1), officer=officer)  # fmt: skip


def posted(shortcode, amount: str, ref: str = "LOAN-000900") -> C2BPayment:
    body = c2b_body(TransAmount=amount, BillRefNumber=ref)
    record_unprocessed(shortcode, body)
    db.session.commit()
    drain("payments")
    return payment_by_receipt(body["TransID"])


def audits() -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(AuditEvent))


def test_a_second_reversal_from_any_source_changes_nothing(shortcode, loan):
    payment = posted(shortcode, "1300.00")  # 1,000 on the loan, 300 held as credit
    assert (payment.status, payment.credit) == ("posted", D("300.00"))
    first = reverse_payment(db.session, payment, source="statement", reason="on the statement",
                            receipt="TK6REV0009")  # fmt: skip
    db.session.commit()
    count = audits()
    again = [
        reverse_payment(db.session, payment_by_receipt(payment.trans_id), source=source, reason="x")
        for source in ("pull", "reversal_result", "admin")
    ]
    db.session.commit()
    assert (first, again) == ("reversed", ["already_reversed"] * 3)
    assert audits() == count
    fresh = payment_by_receipt(payment.trans_id)
    assert (fresh.status, fresh.credit) == ("reversed", D("0.00"))
    held = db.session.get(Loan, loan.id)
    assert held.paid == 0 and held.status == "active" and loan_is_balanced(held)
    assert db.session.get(Borrower, held.borrower_id).credit == 0
    notices = db.session.scalars(select(OfficerNotice).order_by(OfficerNotice.id)).all()
    assert [n.kind for n in notices] == ["payment", "reversal"]
    event = db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == "payment.reversed")
    ).one()
    assert event.after["source"] == "statement" and event.after["reversal_receipt"] == "TK6REV0009"


def test_a_reversal_whose_credit_was_spent_goes_to_a_person_once(shortcode, loan, make_loan):
    payment = posted(shortcode, "1300.00")
    borrower = db.session.get(Loan, loan.id).borrower
    second = make_loan(borrower=borrower, number="LOAN-000901", principal="500.00", interest="0",
                       fees="0", installments=1)  # fmt: skip
    borrower.credit = D("0.00")  # the credit went to the new loan (as a refund or a posting would)
    db.session.commit()
    assert reverse_payment(db.session, payment, source="statement", reason="r") == "review"
    db.session.commit()
    count = audits()
    assert reverse_payment(db.session, payment_by_receipt(payment.trans_id), source="pull",
                           reason="r") == "review"  # fmt: skip
    db.session.commit()
    assert audits() == count
    flagged = payment_by_receipt(payment.trans_id)
    assert flagged.status == "review" and "credit" in flagged.error
    assert db.session.get(Loan, loan.id).paid == D("1000.00")  # nothing half undone
    assert second.id


def test_a_payment_reversed_before_the_drain_reaches_it_is_never_posted(shortcode, loan):
    body = c2b_body(TransAmount="400.00", BillRefNumber="LOAN-000900")
    stored = record_unprocessed(shortcode, body)
    db.session.commit()
    payment = db.session.get(C2BPayment, stored.payment_id)
    assert reverse_payment(db.session, payment, source="pull", reason="r") == "reversed"
    db.session.commit()
    drain("payments")
    assert payment_by_receipt(body["TransID"]).status == "reversed"
    assert db.session.get(Loan, loan.id).paid == 0


def test_a_reversed_receipt_never_seen_is_recorded_reversed(shortcode, loan):
    values = {
        "shortcode_id": shortcode.id, "trans_id": "TK6NEVER01", "trans_type": "",
        "trans_time": datetime(2025, 1, 15, 9, tzinfo=UTC), "amount": D("250.00"),
        "bill_ref": "", "invoice_number": "", "third_party_trans_id": "",
        "org_account_balance": None, "msisdn": "", "msisdn_form": "", "first_name": "",
        "middle_name": "", "last_name": "", "status": "reversed", "error": None,
        "credit": D("0.00"), "attempts": 0, "received_at": datetime.now(UTC),
    }  # fmt: skip
    assert reverse_receipt(db.session, shortcode.id, "TK6NEVER02", source="reversal_result",
                           reason="r") == ("review", None)  # fmt: skip
    outcome, payment_id = reverse_receipt(
        db.session, shortcode.id, "TK6NEVER01", source="statement", reason="r", values=values
    )
    db.session.commit()
    assert outcome == "reversed"
    found = db.session.get(C2BPayment, payment_id)
    assert (found.status, found.amount, found.repayments) == ("reversed", D("250.00"), [])
    again = reverse_receipt(db.session, shortcode.id, "TK6NEVER01", source="pull", reason="r",
                            values=values)  # fmt: skip
    assert again == ("already_reversed", payment_id)
