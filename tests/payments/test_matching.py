"""The seed scenarios: every confirmation ends posted on the expected loan, with its rule
and reason, or unmatched. Driven through the real callback URL, on both databases."""

from datetime import date
from decimal import Decimal

import pytest

from lenders.extensions import db
from lenders.models import Borrower, Loan
from lenders.phones import phone_sha256
from payments.matching import BorrowerFacts, LoanFacts, MatchFacts, match_payment
from payments.models import C2BPayment
from tests.payments.conftest import pay

pytestmark = pytest.mark.both_databases
D = Decimal


def posted_to(payment: C2BPayment) -> list[tuple[str, Decimal]]:
    return [(r.loan.number, r.amount) for r in payment.repayments]


@pytest.mark.parametrize(
    "typed", ["LOAN-000123", "loan 123", "LOAN000123", "123", "Loan-123", " loan - 0123 "]
)
def test_exact_and_sloppy_bill_references_post_to_the_named_loan(
    confirm, shortcode, jane_loan, typed
):
    payment = pay(confirm, BillRefNumber=typed, MSISDN="254799000111", FirstName="SOMEONE")
    assert payment.status == "posted" and payment.rule == "bill_ref"
    assert posted_to(payment) == [("LOAN-000123", D("1000.00"))]
    assert "matched loan LOAN-000123 of Jane W." in payment.reason


def test_national_id_as_account_names_the_borrower(confirm, shortcode, jane_loan):
    payment = pay(confirm, BillRefNumber="23456789", MSISDN="254799000111")
    assert payment.rule == "single_loan" and posted_to(payment) == [("LOAN-000123", D("1000.00"))]
    assert "national ID 23456789" in payment.reason


def test_phone_typed_as_account_names_the_borrower(confirm, shortcode, jane_loan):
    payment = pay(confirm, BillRefNumber="0712 345 678", MSISDN="")
    assert payment.rule == "single_loan" and posted_to(payment) == [("LOAN-000123", D("1000.00"))]


@pytest.mark.parametrize(
    "msisdn, first_name",
    [
        ("254712345678", ""),  # plain (old)
        (phone_sha256("254712345678"), "JANE"),  # v1 hashed
        ("2547 ***** 678", "JANE"),  # v2 masked, confirmed by first name
        ("2547 ***** 678", "jane"),
    ],
)
def test_single_active_loan_of_the_payer_in_every_msisdn_form(
    confirm, shortcode, jane_loan, msisdn, first_name
):
    payment = pay(confirm, BillRefNumber="xyz", MSISDN=msisdn, FirstName=first_name)
    assert payment.status == "posted" and payment.rule == "single_loan"
    assert posted_to(payment) == [("LOAN-000123", D("1000.00"))]


def test_masked_msisdn_with_another_first_name_stays_unmatched(confirm, shortcode, jane_loan):
    payment = pay(confirm, BillRefNumber="xyz", MSISDN="2547 ***** 678", FirstName="PETER")
    assert payment.status == "unmatched" and payment.repayments == []
    assert "PETER" in payment.reason


def test_amount_within_tolerance_picks_that_loan_and_ties_go_to_the_earliest_due(
    confirm, shortcode, jane, make_loan
):
    oldest = make_loan(
        borrower=jane,
        number="LOAN-000201",
        principal="3000.00",
        interest="0",
        fees="0",
        installments=1,
        disbursed_on=date(2025, 1, 1),
    )
    make_loan(
        borrower=jane,
        number="LOAN-000204",
        principal="800.00",
        interest="0",
        fees="0",
        installments=1,
        disbursed_on=date(2024, 6, 1),
    )
    later = make_loan(
        borrower=jane,
        number="LOAN-000202",
        principal="1005.00",
        interest="0",
        fees="0",
        installments=1,
        disbursed_on=date(2025, 3, 1),
    )
    earlier = make_loan(
        borrower=jane,
        number="LOAN-000203",
        principal="995.00",
        interest="0",
        fees="0",
        installments=1,
        disbursed_on=date(2025, 2, 1),
    )
    payment = pay(confirm, BillRefNumber="", MSISDN="254712345678", TransAmount="1000")
    assert payment.rule == "amount"
    assert posted_to(payment)[0] == (earlier.number, D("995.00"))
    # the KES 5 over its balance spills to the loan with the earliest unpaid due date
    assert posted_to(payment)[1] == ("LOAN-000204", D("5.00"))
    assert oldest.number not in [number for number, _ in posted_to(payment)]
    assert later.number not in [number for number, _ in posted_to(payment)]


def test_oldest_due_when_no_amount_fits(confirm, shortcode, jane, make_loan):
    make_loan(
        borrower=jane,
        number="LOAN-000301",
        principal="8000.00",
        interest="0",
        fees="0",
        installments=4,
        disbursed_on=date(2025, 3, 1),
    )
    old = make_loan(
        borrower=jane,
        number="LOAN-000302",
        principal="9000.00",
        interest="0",
        fees="0",
        installments=3,
        disbursed_on=date(2025, 1, 10),
    )
    payment = pay(confirm, MSISDN="254712345678", TransAmount="700")
    assert payment.rule == "oldest_due" and posted_to(payment) == [(old.number, D("700.00"))]
    assert "earliest unpaid due date (10 Feb 2025)" in payment.reason


def test_unknown_payer_and_reference_is_unmatched_and_waits(confirm, shortcode, jane_loan):
    payment = pay(confirm, BillRefNumber="HELLO", MSISDN="254799999999", FirstName="X")
    assert payment.status == "unmatched" and payment.rule is None and payment.repayments == []
    assert "names no loan or borrower" in payment.reason
    assert db.session.get(Loan, jane_loan.id).paid == 0


def test_overpayment_spills_to_the_next_loan_then_becomes_credit(
    confirm, shortcode, jane, make_loan
):
    first = make_loan(
        borrower=jane,
        number="LOAN-000401",
        principal="500.00",
        interest="0",
        fees="0",
        installments=1,
        disbursed_on=date(2025, 1, 1),
    )
    second = make_loan(
        borrower=jane,
        number="LOAN-000402",
        principal="300.00",
        interest="0",
        fees="0",
        installments=1,
        disbursed_on=date(2025, 2, 1),
    )
    payment = pay(confirm, BillRefNumber="LOAN-000401", TransAmount="1000.00")
    assert posted_to(payment) == [(first.number, D("500.00")), (second.number, D("300.00"))]
    assert payment.credit == D("200.00")
    db.session.expire_all()
    assert db.session.get(Borrower, jane.id).credit == D("200.00")
    assert {db.session.get(Loan, first.id).status, db.session.get(Loan, second.id).status} == {
        "closed"
    }


def test_export_lists_allocations_credit_and_masked_msisdn(
    confirm, shortcode, jane, make_loan, runner, tmp_path
):
    make_loan(
        borrower=jane,
        number="LOAN-000501",
        principal="500.00",
        interest="0",
        fees="0",
        installments=1,
    )
    pay(
        confirm,
        TransID="TK6EXPORT1",
        BillRefNumber="loan 501",
        TransAmount="600.00",
        MSISDN="254712345678",
        TransTime="20250115143012",
    )
    out = tmp_path / "tx.csv"
    assert runner.invoke(args=["payments", "export-transactions", str(out)]).exit_code == 0
    lines = out.read_text().splitlines()
    assert lines[0] == (
        "trans_id,shortcode,trans_time,amount,msisdn,bill_ref,status,rule,allocations,credit,note"
    )
    row = lines[1].split(",")
    assert row[:10] == [
        "TK6EXPORT1",
        "600984",
        "2025-01-15T14:30:12+03:00",
        "600.00",
        "2547****5678",
        "loan 501",
        "posted",
        "bill_ref",
        "LOAN-000501:500.00",
        "100.00",
    ]
    assert "254712345678" not in out.read_text()


# --- the pure rules, without a database ----------------------------------------------


def loan(id, outstanding, due, number=None):
    return LoanFacts(id, number or f"LOAN-{id:06d}", 1, "active", D(outstanding), due)


def test_match_is_deterministic_and_explains_itself():
    borrower = BorrowerFacts(
        1,
        "Jane Wanjiku",
        (
            loan(2, "1000", date(2025, 3, 1)),
            loan(1, "1000", date(2025, 3, 1)),
        ),
    )
    facts = MatchFacts(
        amount=D("995"), bill_ref="", tolerance=D("10"), payer_label="x", payer=borrower
    )
    decisions = {match_payment(facts) for _ in range(5)}
    assert len(decisions) == 1
    decision = decisions.pop()
    assert decision.rule == "amount" and decision.plan[0] == (1, D("995"))  # same due: by number
    assert "within KES 10.00 of LOAN-000001" in decision.reason


def test_tolerance_is_per_shortcode():
    borrower = BorrowerFacts(
        1,
        "Jane Wanjiku",
        (
            loan(1, "5000", date(2025, 1, 1)),
            loan(2, "1020", date(2025, 6, 1)),
        ),
    )
    tight = MatchFacts(
        amount=D("1000"), bill_ref="", tolerance=D("10"), payer_label="x", payer=borrower
    )
    loose = MatchFacts(
        amount=D("1000"), bill_ref="", tolerance=D("50"), payer_label="x", payer=borrower
    )
    assert match_payment(tight).rule == "oldest_due"
    assert match_payment(loose).rule == "amount" and match_payment(loose).plan[0][0] == 2
