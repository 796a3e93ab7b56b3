"""Money moves exactly once (reliability anchors A1, A2, A8, B1).

Concurrent duplicates and concurrent repayments go through a real threaded HTTP server on
PostgreSQL, the production engine: SQLite serialises writers and would prove nothing. The
unique constraint, and two jobs racing on one payment, are checked on both databases. A
worker SIGKILLed between claiming a payment and committing its posting leaves nothing
behind, and the sweeper posts it once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

import payments.jobs
import payments.posting
import payments.processing
from lenders.extensions import db
from lenders.models import Installment, Loan, Repayment
from payments.jobs import post_received_payments
from payments.models import C2BPayment, CallbackLog
from tests.conftest import serving
from tests.payments.conftest import c2b_body, drain, receipt, record_unprocessed

D = Decimal
ACCEPTED = {"ResultCode": 0, "ResultDesc": "Accepted"}
ROOT = Path(__file__).resolve().parents[2]
CRASH_WORKER = Path(__file__).with_name("crash_worker.py")


def post_together(url: str, bodies: list[dict], *, threads: int, jitter: float = 0.0):
    """POST every body from ``threads`` threads released at once by a barrier; each thread
    sends its share, each request after a random pause of up to ``jitter`` seconds.
    Returns (status, JSON answer) per body."""
    barrier = threading.Barrier(threads)
    shares = [list(range(n, len(bodies), threads)) for n in range(threads)]

    def send(share: list[int]) -> list[tuple[int, tuple[int, dict]]]:
        answers = []
        with requests.Session() as http:
            barrier.wait(timeout=30)
            for index in share:
                if jitter:
                    threading.Event().wait(random.uniform(0, jitter))
                response = http.post(
                    url,
                    data=json.dumps(bodies[index]),
                    headers={"Content-Type": "application/json"},
                    timeout=60,
                )
                answers.append((index, (response.status_code, response.json())))
        return answers

    with ThreadPoolExecutor(threads) as pool:
        results = [item for share in pool.map(send, shares) for item in share]
    return [answer for _, answer in sorted(results)]


def fresh(model, ident):
    db.session.expire_all()
    return db.session.get(model, ident)


def repayments_for(trans_id: str) -> list[Repayment]:
    return list(db.session.scalars(select(Repayment).where(Repayment.reference == trans_id)))


def payments_for(trans_id: str) -> list[C2BPayment]:
    return list(db.session.scalars(select(C2BPayment).where(C2BPayment.trans_id == trans_id)))


def installments_paid(loan_id: int) -> Decimal:
    return db.session.scalar(
        select(func.coalesce(func.sum(Installment.amount_paid), 0)).where(
            Installment.loan_id == loan_id
        )
    )


@pytest.mark.postgresql_only
def test_fifty_identical_confirmations_from_sixteen_threads_post_once(app, shortcode, make_loan):
    loan = make_loan(principal="90000.00")
    loan_id, url = loan.id, f"/payments/c2b/{shortcode.callback_token}/confirmation"
    rng = random.Random(20251106)
    with serving(app) as base:
        for repetition in range(20):
            paid_before = fresh(Loan, loan_id).paid
            amount = D(rng.randrange(100, 10_000)) / 100  # KES 1.00 .. 99.99, with cents
            body = c2b_body(TransAmount=f"{amount:.2f}", BillRefNumber=loan.number)
            trans_id = body["TransID"]

            answers = post_together(base + url, [body] * 50, threads=16, jitter=0.005)

            assert answers == [(200, ACCEPTED)] * 50, f"repetition {repetition}"
            db.session.expire_all()
            [payment] = payments_for(trans_id)
            assert payment.status == "posted", (repetition, payment.status, payment.error)
            [repayment] = repayments_for(trans_id)
            assert repayment.amount == amount and repayment.loan_id == loan_id
            assert fresh(Loan, loan_id).paid == paid_before + amount, f"repetition {repetition}"
            outcomes = Counter(
                db.session.scalars(
                    select(CallbackLog.outcome).where(CallbackLog.payment_id == payment.id)
                )
            )
            assert outcomes == {"stored": 1, "duplicate": 49}, f"repetition {repetition}"
    loan = fresh(Loan, loan_id)
    assert loan.status == "active"
    assert installments_paid(loan_id) == loan.paid
    assert db.session.scalar(select(func.count()).select_from(C2BPayment)) == 20
    assert db.session.scalar(select(func.count()).select_from(Repayment)) == 20


@pytest.mark.postgresql_only
def test_ten_different_payments_on_one_loan_concurrently_keep_the_balance_exact(
    app, shortcode, make_loan
):
    # Amounts with odd cents that cross installment boundaries (4 installments of 2,500).
    amounts = [D(a) for a in ("999.99", "1234.56", "0.01", "2500.00", "87.65", "1.10",
                              "701.33", "450.45", "333.33", "1666.67")]  # fmt: skip
    rng = random.Random(8)
    with serving(app) as base:
        url = f"{base}/payments/c2b/{shortcode.callback_token}/confirmation"
        for round_ in range(3):
            loan = make_loan()  # KES 10,000 due: 9,000 + 900 interest + 100 fees
            loan_id, opening = loan.id, loan.outstanding
            rng.shuffle(amounts)
            bodies = [c2b_body(TransAmount=f"{a:.2f}", BillRefNumber=loan.number) for a in amounts]

            answers = post_together(url, bodies, threads=10)

            assert answers == [(200, ACCEPTED)] * 10, f"round {round_}"
            loan = fresh(Loan, loan_id)
            assert loan.paid == sum(amounts) == D("7975.09"), f"round {round_}"
            assert loan.outstanding == opening - sum(amounts)
            assert installments_paid(loan_id) == loan.paid
            repayments = list(
                db.session.scalars(select(Repayment).where(Repayment.loan_id == loan_id))
            )
            assert sorted(r.amount for r in repayments) == sorted(amounts)
            assert {r.reference for r in repayments} == {b["TransID"] for b in bodies}
            statuses = [payments_for(b["TransID"])[0].status for b in bodies]
            assert statuses == ["posted"] * 10


@pytest.mark.both_databases
def test_duplicates_are_stopped_by_the_database_not_by_a_check_in_code(
    app, shortcode, make_shortcode
):
    """No lookup before the insert: a second row with the same (shortcode, TransID) is
    refused by the unique constraint itself, so a race between two callbacks cannot win."""
    trans_id = receipt()

    def row(on=shortcode, **kw) -> C2BPayment:
        fields = dict(
            shortcode_id=on.id,
            trans_id=trans_id,
            trans_time=datetime.now(UTC),
            amount=D("100.00"),
            status="received",
        )
        return C2BPayment(**(fields | kw))

    db.session.add(row())
    db.session.commit()
    db.session.add(row(amount=D("100.00")))  # the same payment again, inserted blindly
    with pytest.raises(IntegrityError, match="(?i)unique|uq_c2b_payment_shortcode_trans_id"):
        db.session.commit()
    db.session.rollback()
    db.session.add(row(amount=D("5.00"), bill_ref="other"))  # same TransID, other content
    with pytest.raises(IntegrityError):
        db.session.commit()
    db.session.rollback()
    assert len(payments_for(trans_id)) == 1

    # The key is per shortcode: the same receipt number on another paybill is another payment.
    db.session.add(row(on=make_shortcode("600985")))
    db.session.commit()
    assert len(payments_for(trans_id)) == 2


@pytest.mark.both_databases
def test_two_jobs_racing_on_one_payment_post_it_once(
    request, app, database_url, shortcode, make_loan, monkeypatch
):
    """Two workers drain at once and both look for the same payment in ``received``. The
    claim decides: on PostgreSQL the second skips the row the first holds; on SQLite it
    waits for the first to commit and then finds the payment posted."""
    loan = make_loan()
    body = c2b_body(TransAmount="640.00", BillRefNumber=loan.number)
    stored = record_unprocessed(shortcode, body)
    db.session.commit()

    # Hold each drain just after its claim until the other has claimed too. Where the claim
    # is a real row lock the second cannot get there: the first goes on after 1 s.
    both_claimed = threading.Barrier(2, timeout=1)
    real_claim = payments.jobs.claim_received_payments

    def claim_and_wait(session, limit):
        claimed = real_claim(session, limit)
        with suppress(threading.BrokenBarrierError):
            both_claimed.wait()
        return claimed

    monkeypatch.setattr(payments.jobs, "claim_received_payments", claim_and_wait)

    def job() -> int:
        with app.app_context():
            try:
                return post_received_payments(10)
            finally:
                db.session.remove()

    with ThreadPoolExecutor(2) as pool:
        results = sorted(pool.map(lambda _: job(), range(2)))

    db.session.expire_all()
    repayments = repayments_for(body["TransID"])
    assert fresh(Loan, loan.id).paid == D("640.00"), [r.amount for r in repayments]
    assert len(repayments) == 1
    assert results == [0, 1]
    assert fresh(C2BPayment, stored.payment_id).status == "posted"


def two_payments_racing_for_one_loan(shortcode, make_borrower, make_loan):
    """A borrower with two loans; a payment that closes the first (its bill reference), and
    a payment with no reference that the oldest-due rule sends to the first as well."""
    borrower = make_borrower(phones=("0712345678",))
    first = make_loan(borrower=borrower, principal="400.00", interest="50.00", fees="50.00",
                      installments=1, disbursed_on=date(2025, 1, 15))  # fmt: skip
    second = make_loan(borrower=borrower, principal="900.00", interest="90.00", fees="10.00",
                       installments=1, disbursed_on=date(2025, 3, 1))  # fmt: skip
    closing = c2b_body(TransAmount="500.00", BillRefNumber=first.number)
    plain = c2b_body(TransAmount="300.00", BillRefNumber="", MSISDN="254712345678")
    stored = [record_unprocessed(shortcode, body).payment_id for body in (closing, plain)]
    db.session.commit()
    return first, second, closing, plain, stored


def meet_then_closing_first(real, calls: Counter, amount_of):
    """Wrap ``real``: the first two calls wait for each other, then the one for the plain
    payment waits half a second, so the closing payment takes the loans' locks first."""
    met = threading.Barrier(2, timeout=3)

    def wrapped(*args, **kwargs):
        answer = real(*args, **kwargs)
        calls["calls"] += 1
        if calls["calls"] <= 2:
            with suppress(threading.BrokenBarrierError):
                met.wait()
            if amount_of(args, kwargs) == D("300.00"):
                threading.Event().wait(0.5)
        return answer

    return wrapped


def assert_the_late_payment_went_to_the_open_loan(first, second, closing, plain):
    db.session.expire_all()
    assert payments_for(closing["TransID"])[0].status == "posted"
    late = payments_for(plain["TransID"])[0]
    assert (late.status, late.error) == ("posted", None)
    assert [r.loan_id for r in late.repayments] == [second.id]
    assert fresh(Loan, first.id).status == "closed"
    assert fresh(Loan, second.id).paid == D("300.00")


@pytest.mark.postgresql_only
def test_a_payment_that_loses_a_race_for_its_loan_is_decided_again_not_failed(
    app, shortcode, make_borrower, make_loan, monkeypatch
):
    """Posting one payment at a time (the drain's fallback, "match again"): two payments of
    one borrower are decided at the same moment. The first closes the loan the second had
    chosen (the oldest due); the second, finding the balances changed once it holds the
    loans' locks, decides again and posts to the other loan. Nothing is parked as failed."""
    first, second, closing, plain, stored = two_payments_racing_for_one_loan(
        shortcode, make_borrower, make_loan
    )
    calls = Counter()
    monkeypatch.setattr(
        payments.processing,
        "match_payment",
        meet_then_closing_first(
            payments.processing.match_payment, calls, lambda args, kw: args[0].amount
        ),  # fmt: skip
    )

    def worker(payment_id: int) -> None:
        with app.app_context():
            try:
                payments.jobs.post_one_by_one([payment_id])
            finally:
                db.session.remove()

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(worker, stored))

    assert_the_late_payment_went_to_the_open_loan(first, second, closing, plain)
    assert calls["calls"] == 3  # the loser decided again


@pytest.mark.postgresql_only
def test_two_batches_of_one_borrower_decide_on_locked_balances(
    app, shortcode, make_borrower, make_loan, monkeypatch
):
    """The drain's batches: both identify their payer before either locks; the batch that
    locks second waits, then decides on what the first left, so the plain payment goes to
    the loan still open. Nothing is parked as failed, nothing falls back."""
    first, second, closing, plain, stored = two_payments_racing_for_one_loan(
        shortcode, make_borrower, make_loan
    )
    calls = Counter()
    monkeypatch.setattr(
        payments.posting,
        "identify",
        meet_then_closing_first(payments.posting.identify, calls,
                                lambda args, kw: D("300.00") if not kw["bill_ref"] else None),
    )  # fmt: skip
    fallbacks = []
    monkeypatch.setattr(payments.jobs, "post_one_by_one", fallbacks.append)

    def worker() -> int:
        with app.app_context():
            try:
                return post_received_payments(1)
            finally:
                db.session.remove()

    with ThreadPoolExecutor(2) as pool:
        assert sorted(pool.map(lambda _: worker(), range(2))) == [1, 1]

    assert fallbacks == []
    assert_the_late_payment_went_to_the_open_loan(first, second, closing, plain)


def run_crash_worker(database_url: str, payment_id: int, point: str) -> subprocess.CompletedProcess:
    env = os.environ | {"DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
    env.pop("REDIS_URL", None)
    try:
        return subprocess.run(
            [sys.executable, str(CRASH_WORKER), database_url, str(payment_id), point],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired as exc:  # run() has killed it
        pytest.fail(f"crash worker hung at {point}: {exc.stdout!r} {exc.stderr!r}")


@pytest.mark.postgresql_only
@pytest.mark.parametrize(
    "kill_point", ["after_claim", "mid_post", "after_post", "before_commit", "after_commit"]
)
def test_worker_killed_between_claim_and_commit_posts_exactly_once(
    app, database_url, shortcode, make_loan, kill_point
):
    loan = make_loan()
    loan_id, opening_paid = loan.id, loan.paid
    body = c2b_body(TransAmount="1234.50", BillRefNumber=loan.number)
    stored = record_unprocessed(shortcode, body)
    db.session.commit()
    assert stored.outcome == "stored"

    worker = run_crash_worker(database_url, stored.payment_id, kill_point)

    assert worker.returncode == -signal.SIGKILL, (worker.returncode, worker.stdout, worker.stderr)
    assert f"killed at {kill_point}" in worker.stdout, worker.stderr
    payment = fresh(C2BPayment, stored.payment_id)
    if kill_point == "after_commit":  # the posting was committed before the worker died
        assert payment.status == "posted"
        assert fresh(Loan, loan_id).paid == opening_paid + D("1234.50")
    else:  # the dead worker's posting left nothing behind but its claim
        assert (payment.status, payment.attempts, payment.processed_at) == ("received", 1, None)
        assert payment.claimed_until > datetime.now(UTC)  # other workers wait for its lease
        assert repayments_for(body["TransID"]) == []
        assert fresh(Loan, loan_id).paid == opening_paid
        assert installments_paid(loan_id) == opening_paid
        assert drain("payments") == 0  # the lease still holds

    # Once the dead worker's lease runs out, the next pass finishes; another does nothing.
    db.session.execute(
        update(C2BPayment)
        .where(C2BPayment.id == stored.payment_id)
        .values(claimed_until=datetime.now(UTC) - timedelta(seconds=1))
    )
    db.session.commit()
    assert drain("payments") == (0 if kill_point == "after_commit" else 1)
    assert drain("payments") == 0

    payment = fresh(C2BPayment, stored.payment_id)
    assert payment.status == "posted"
    assert payment.attempts == (1 if kill_point == "after_commit" else 2)
    [repayment] = repayments_for(body["TransID"])
    assert repayment.amount == D("1234.50") and repayment.loan_id == loan_id
    assert [r.id for r in payment.repayments] == [repayment.id]
    loan = fresh(Loan, loan_id)
    assert loan.paid == opening_paid + D("1234.50")
    assert installments_paid(loan_id) == loan.paid
