"""Pure rules: phones in every form, money, schedules."""

import hashlib
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lenders.money import InvalidAmount, format_kes, parse_amount
from lenders.phones import InvalidPhone, canonical_phone, mask_phone, masked_key, phone_sha256
from lenders.references import reference_key
from lenders.schedule import add_months, build_schedule, due_dates, installment_amounts


@pytest.mark.parametrize(
    "typed, canonical",
    [
        ("0712345678", "254712345678"),
        ("0712 345 678", "254712345678"),
        ("+254 712-345-678", "254712345678"),
        ("254712345678", "254712345678"),
        ("712345678", "254712345678"),
        ("0110123456", "254110123456"),
        ("+254110123456", "254110123456"),
    ],
)
def test_every_kenyan_form_of_a_phone_becomes_canonical(typed, canonical):
    assert canonical_phone(typed) == canonical


@pytest.mark.parametrize(
    "typed", ["", "abc", "12345", "0812345678", "+255712345678", "07123456789", "0202345678"]
)
def test_non_kenyan_mobiles_are_refused(typed):
    with pytest.raises(InvalidPhone):
        canonical_phone(typed)


def test_phone_forms_safaricom_sends():
    # SHA-256 of the 12-digit number (C2B register v1) and masked "2547 ***** 678" (v2).
    assert phone_sha256("254708374149") == hashlib.sha256(b"254708374149").hexdigest()
    assert masked_key("254712345678") == "2547678"
    assert mask_phone("254712345678") == "2547****5678"


@pytest.mark.parametrize(
    "text, value",
    [("1500", "1500.00"), ("1,500.5", "1500.50"), (" 0.01 ", "0.01"), ("0", "0.00")],
)
def test_amounts_parse_to_two_places(text, value):
    assert parse_amount(text) == Decimal(value)


@pytest.mark.parametrize("text", ["-1", "abc", "1.005", "NaN", "Infinity", "1e15", ""])
def test_bad_amounts_are_refused(text):
    with pytest.raises(InvalidAmount):
        parse_amount(text)


def test_floats_are_never_money():
    with pytest.raises(InvalidAmount):
        parse_amount(0.1)


@pytest.mark.parametrize(
    "value, shown",
    [
        (Decimal("1500"), "KES 1,500.00"),
        (Decimal("1234567.5"), "KES 1,234,567.50"),
        (Decimal("-20"), "-KES 20.00"),
        (Decimal("0"), "KES 0.00"),
    ],
)
def test_money_is_shown_as_kes(value, shown):
    assert format_kes(value) == shown


def test_monthly_due_dates_clamp_to_month_end_without_drifting():
    assert due_dates(date(2025, 1, 31), 4, "monthly") == [
        date(2025, 2, 28),
        date(2025, 3, 31),
        date(2025, 4, 30),
        date(2025, 5, 31),
    ]
    assert add_months(date(2023, 11, 30), 3) == date(2024, 2, 29)


def test_weekly_due_dates_are_seven_days_apart_starting_one_week_after_disbursement():
    assert due_dates(date(2025, 1, 1), 3, "weekly") == [
        date(2025, 1, 8),
        date(2025, 1, 15),
        date(2025, 1, 22),
    ]


def test_last_installment_takes_the_rounding():
    assert installment_amounts(Decimal("1000.00"), 3) == [
        Decimal("333.33"),
        Decimal("333.33"),
        Decimal("333.34"),
    ]


@given(
    total=st.decimals(min_value=Decimal("1.00"), max_value=Decimal("10000000"), places=2),
    count=st.integers(min_value=1, max_value=52),
    frequency=st.sampled_from(["weekly", "monthly"]),
)
def test_schedule_adds_up_to_the_total_due(total, count, frequency):
    schedule = build_schedule(total, date(2025, 1, 31), count, frequency)
    amounts = [a for _, _, a in schedule]
    assert sum(amounts) == total
    assert all(a > 0 for a in amounts)
    assert len({a for a in amounts[:-1]}) <= 1
    dates = [d for _, d, _ in schedule]
    assert dates == sorted(dates) and len(set(dates)) == count


@pytest.mark.parametrize(
    "typed", ["LOAN-000123", "loan 123", "LOAN000123", "123", "Loan-123", " loan-0123 ", "ln123"]
)
def test_sloppy_loan_references_reduce_to_one_key(typed):
    assert reference_key(typed) == "123"


@pytest.mark.parametrize("typed, key", [("AB-12", "AB12"), ("", ""), ("23456789", "23456789")])
def test_other_references_keep_their_letters_and_digits(typed, key):
    assert reference_key(typed) == key
