"""Drills, short form: the production shape (gunicorn + job workers, PostgreSQL, Redis) under
a stream of confirmations while job workers are killed, Redis and PostgreSQL go away and
come back, a gunicorn worker is killed and gunicorn is stopped. Then: nothing acknowledged
lost, nothing posted twice, nothing left waiting, books balanced to the cent, every receipt
sent once, the export agreeing. bench/drills.py runs the same at length."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from conftest import REDIS_URL, need

from lenders.book import create_loan
from lenders.extensions import db
from lenders.models import Borrower, BorrowerPhone, StaffUser
from lenders.phones import masked_key, phone_sha256
from payments.models import Shortcode
from tests.drills.harness import Stack, Timeline, run_drill

pytestmark = pytest.mark.postgresql_only


def lender(loans: int = 60) -> tuple[str, list[tuple[str, str]]]:
    """A shortcode and ``loans`` loans, each borrower with a phone and an officer."""
    officer = StaffUser(email="drill@example.test", name="Drill Officer", role="officer")
    officer.set_password("drill officer password")
    shortcode = Shortcode(number="600984", name="Drill paybill")
    db.session.add_all([officer, shortcode])
    made = []
    for n in range(loans):
        phone = f"2547{n:08d}"
        borrower = Borrower(name=f"Drill Borrower {n}", national_id=str(40_000_000 + n))
        borrower.phones.append(
            BorrowerPhone(number=phone, sha256=phone_sha256(phone), masked_key=masked_key(phone))
        )
        db.session.add(borrower)
        loan = create_loan(
            db.session,
            borrower,
            number=f"LOAN-{n + 1:06d}",
            principal=Decimal("20000.00"),
            interest=Decimal("2000.00"),
            fees=Decimal("0.00"),
            disbursed_on=date(2026, 1, 5),
            installments=4,
            frequency="monthly",
            officer=officer,
        )
        made.append((loan.number, phone))
    db.session.commit()
    return shortcode.callback_token, made


def test_nothing_acknowledged_is_lost_or_doubled_under_every_fault(app, database_url, tmp_path):
    redis_url = need("Redis (MAREJESHO_TEST_REDIS_URL)", REDIS_URL)
    token, loans = lender()
    db.session.remove()
    stack = Stack(database_url, redis_url, tmp_path).start()
    try:
        figures = run_drill(stack, loans, token, Timeline())
    finally:
        stack.stop()
    print(figures)
    assert figures["problems"] == []
    assert figures["acknowledged"] > 200  # the stream went on through the faults
    assert figures["statuses"].get("received", 0) == 0
    assert figures["seconds_from_postgres_back_to_settled"] < 60
    assert figures["job_worker_restarts_by_harness"] == 0  # the parent replaced its workers
