"""The payments drain posts a batch set-based (payments/posting.py); the single-payment path
(payments.processing, the ORM) posts one at a time. Both must leave the same books: the same
decisions, repayments, allocations, balances, credit, audit trail, receipts and notices, on
SQLite and on PostgreSQL, for every MSISDN form and several payments of one borrower."""

from __future__ import annotations

import hashlib
import random
import shutil
from datetime import date, timedelta
from decimal import Decimal

import pytest
from conftest import test_config as config_for
from sqlalchemy import select

from app import create_app
from lenders.book import create_loan
from lenders.extensions import db
from lenders.models import (
    Allocation,
    AuditEvent,
    Borrower,
    BorrowerPhone,
    Installment,
    Loan,
    Repayment,
    StaffUser,
)
from lenders.phones import masked_key, phone_sha256
from payments.jobs import post_one_by_one
from payments.models import C2BPayment, OfficerNotice, PaymentStatus, SmsMessage
from payments.posting import post_batch
from payments.processing import post_claimed_payment
from tests.payments.conftest import c2b_body, record_unprocessed

D = Decimal


def build_book(rng: random.Random) -> list[tuple[str, str, str]]:
    """Borrowers with one to three loans (some closed, some with officers), a phone each (one
    opted out of SMS); returns (loan number, national ID, phone) to pay into."""
    officers = []
    for n in range(2):
        officer = StaffUser(email=f"posting{n}@example.test", name=f"Officer {n}", role="officer")
        officer.set_password("a long officer password")
        officers.append(officer)
    db.session.add_all(officers)
    targets = []
    for b in range(12):
        phone = f"2547{11_000_000 + b:08d}"
        borrower = Borrower(
            name=f"Jane{b} Wanjiku", national_id=str(50_000_000 + b), sms_opt_out=b == 3,
            sms_language="sw" if b % 4 == 1 else "en",
        )  # fmt: skip
        borrower.phones.append(
            BorrowerPhone(number=phone, sha256=phone_sha256(phone), masked_key=masked_key(phone))
        )
        db.session.add(borrower)
        for n in range(rng.randint(1, 3)):
            loan = create_loan(
                db.session,
                borrower,
                number=f"LOAN-{b * 10 + n + 1:06d}",
                principal=D(rng.randrange(5, 40) * 100),
                interest=D(rng.randrange(0, 10) * 50),
                fees=D("0.00"),
                disbursed_on=date(2025, 1, 1) + timedelta(days=rng.randrange(0, 200)),
                installments=rng.randint(1, 6),
                frequency=rng.choice(("weekly", "monthly")),
                officer=rng.choice([None, *officers]),
            )
            if rng.random() < 0.15:
                loan.status = "closed"
            targets.append((loan.number, borrower.national_id, phone))
    db.session.commit()
    return targets


def store_payments(shortcode, rng: random.Random, targets, count: int) -> list[int]:
    ids = []
    for _ in range(count):
        number, national_id, phone = rng.choice(targets)
        kind = rng.random()
        fields = {"TransAmount": f"{D(rng.randrange(50, 400_000)) / 100:.2f}"}
        if kind < 0.4:
            fields |= {"BillRefNumber": number}
        elif kind < 0.5:
            fields |= {"BillRefNumber": number.lower().replace("-", " ")}
        elif kind < 0.6:
            fields |= {"BillRefNumber": national_id}
        elif kind < 0.85:
            fields |= {"BillRefNumber": "", "MSISDN": phone, "FirstName": "JANE"}
        else:
            fields |= {"BillRefNumber": "NOBODY", "MSISDN": "254799999999"}
        ids.append(record_unprocessed(shortcode, c2b_body(**fields)).payment_id)
    db.session.commit()
    return ids


def books() -> dict:
    """Everything the two paths write, without database ids that may differ."""
    s = db.session
    s.expire_all()
    numbers = dict(s.execute(select(Loan.id, Loan.number)).all())
    receipts = {p.id: p.trans_id for p in s.scalars(select(C2BPayment))}
    repayment_loan = {r.id: numbers[r.loan_id] for r in s.scalars(select(Repayment))}

    def scrub(value):
        if isinstance(value, dict):
            ids = ("repayment_id", "repayments")
            return {k: scrub(v) for k, v in value.items() if k not in ids}
        return value

    return {
        "payments": sorted(
            (
                p.trans_id,
                p.status,
                p.rule,
                p.credit,
                p.reason,
                p.borrower_id,
                p.error,
                tuple((numbers[r.loan_id], r.amount, r.to_credit) for r in p.repayments),
            )
            for p in s.scalars(select(C2BPayment))
        ),  # fmt: skip
        "installments": sorted(
            (numbers[i.loan_id], i.seq, i.amount_paid) for i in s.scalars(select(Installment))
        ),
        "loans": sorted((loan.number, loan.paid, loan.status) for loan in s.scalars(select(Loan))),
        "credit": sorted((b.national_id, b.credit) for b in s.scalars(select(Borrower))),
        "allocations": sorted(
            (repayment_loan[a.repayment_id], a.installment_id, a.amount)
            for a in s.scalars(select(Allocation))
        ),
        "audit": sorted(
            (
                e.action,
                e.entity_type,
                receipts.get(int(e.entity_id), "")
                if e.entity_type == "c2b_payment"
                else numbers.get(int(e.entity_id), ""),
                repr(scrub(e.before)),
                repr(scrub(e.after)),
                e.reason,
            )
            for e in s.scalars(select(AuditEvent))
            if e.action.startswith(("payment.", "repayment."))
        ),  # fmt: skip
        "messages": sorted(
            (receipts[m.payment_id], m.kind, m.status, m.to_phone, m.language, m.body, m.error)
            for m in s.scalars(select(SmsMessage))
        ),
        "notices": sorted(
            (n.staff_id, receipts[n.payment_id], n.kind, n.text)
            for n in s.scalars(select(OfficerNotice))
        ),
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_batch_leaves_the_same_books_as_posting_one_by_one(
    app, database_url, shortcode, tmp_path, seed
):
    if not database_url.startswith("sqlite"):
        pytest.skip("the comparison copies the SQLite file")  # pragma: no cover
    rng = random.Random(seed)
    ids = store_payments(shortcode, rng, build_book(rng), 80)
    db.session.remove()
    path = database_url.removeprefix("sqlite:///")
    db.engine.dispose()
    twin = tmp_path / "twin.db"
    shutil.copy(path, twin)

    post_batch(db.session, ids, lender="Mkopo Bora")
    db.session.commit()
    batched = books()

    other = create_app(config_for(f"sqlite:///{twin}") | {"LENDER_NAME": "Mkopo Bora"})
    with other.app_context():
        post_one_by_one(ids)
        one_by_one = books()
        db.session.remove()
        db.engine.dispose()

    statuses = {row[1] for row in batched["payments"]}
    assert {"posted", "unmatched"} <= statuses and "received" not in statuses
    assert any(row[3] for row in batched["payments"])  # some overpayment held as credit
    assert any(len(row[7]) > 1 for row in batched["payments"])  # some spilled to a 2nd loan
    for part, rows in batched.items():
        assert rows == one_by_one[part], part


@pytest.fixture
def backlog(shortcode, make_staff, make_borrower, make_loan):
    """Borrowers of every kind and forty payments to them waiting in ``received``: several to
    one borrower (the second sees what the first did), spills and credit, a loan closed by an
    earlier payment of the batch, opted-out, phoneless and Swahili borrowers, and payers by
    plain, hashed and masked MSISDN (a masked one whose name does not fit)."""
    officer, other = make_staff(), make_staff()
    jane = make_borrower("Jane Wanjiku", phones=("0712345678",))
    peter = make_borrower("Peter Otieno Kamau", phones=("0722000111", "0733000222"))
    quiet = make_borrower("Quiet Borrower", phones=("0744000333",))
    nophone = make_borrower("No Phone", phones=())
    amina = make_borrower("Amina Hassan", phones=("0755000444",))
    quiet.sms_opt_out, amina.sms_language = True, "sw"
    db.session.commit()
    make_loan(borrower=jane, number="LOAN-000101", principal="1000.00", interest="0", fees="0",
              installments=2, officer=officer)  # fmt: skip
    make_loan(borrower=jane, number="LOAN-000102", principal="3000.00", interest="0", fees="0",
              installments=3, officer=other, disbursed_on=date(2025, 3, 1))  # fmt: skip
    make_loan(borrower=peter, number="LOAN-000201", officer=officer)
    make_loan(borrower=quiet, number="LOAN-000301", officer=officer)
    make_loan(borrower=nophone, number="LOAN-000401")
    make_loan(borrower=amina, number="LOAN-000501", principal="500.00", interest="0", fees="0",
              installments=1, officer=other)  # fmt: skip
    hashed = hashlib.sha256(b"254733000222").hexdigest()
    bodies = [
        c2b_body(TransAmount="400.00", BillRefNumber="LOAN-000101"),
        c2b_body(TransAmount="700.00", BillRefNumber="loan 101"),  # closes it and spills
        c2b_body(TransAmount="2500.00", BillRefNumber="", MSISDN="254712345678"),  # amount
        c2b_body(TransAmount="5000.00", BillRefNumber="LOAN-000102"),  # leaves credit
        c2b_body(TransAmount="100.00", BillRefNumber="", MSISDN="254712345678"),  # no loan
        c2b_body(TransAmount="1000.00", BillRefNumber="", MSISDN="254722000111"),
        c2b_body(TransAmount="1000.00", BillRefNumber="", MSISDN=hashed),
        c2b_body(
            TransAmount="300.00", BillRefNumber="", MSISDN="2547 ***** 222", FirstName="PETER"
        ),  # fmt: skip
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
    return ids


@pytest.mark.both_databases
def test_a_batch_posts_what_the_orm_path_posts_on_either_database(app, backlog):
    for payment_id in backlog:  # one by one, in one transaction that is then undone
        post_claimed_payment(db.session, payment_id)
    one_by_one = books()
    db.session.rollback()

    taken = post_batch(db.session, backlog, lender=app.config["LENDER_NAME"])
    batched = books()
    db.session.rollback()

    assert sorted(taken) == sorted(backlog)
    assert set(taken.values()) == {PaymentStatus.POSTED, PaymentStatus.UNMATCHED}
    assert any(row[6] for row in batched["messages"])  # some receipts skipped, and why
    assert {row[2] for row in batched["notices"]} == {"payment"}
    for part, rows in batched.items():
        assert rows == one_by_one[part], part
