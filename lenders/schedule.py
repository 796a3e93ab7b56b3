"""Repayment schedules (CONTRACT §6): equal installments, the last takes the rounding."""

import calendar
from datetime import date, timedelta
from decimal import ROUND_DOWN, Decimal

from lenders.money import CENT


def add_months(start: date, months: int) -> date:
    """The same day ``months`` later, clamped to the end of a shorter month."""
    month_index = start.month - 1 + months
    year, month = start.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


def due_dates(disbursed_on: date, count: int, frequency: str) -> list[date]:
    """First due one period after disbursement. Monthly dates count from the disbursement
    day, so a loan disbursed on 31 January is due 28/29 February, then 31 March."""
    if frequency == "weekly":
        return [disbursed_on + timedelta(days=7 * n) for n in range(1, count + 1)]
    if frequency == "monthly":
        return [add_months(disbursed_on, n) for n in range(1, count + 1)]
    raise ValueError(f"unknown frequency {frequency!r}")


def last_due_date(disbursed_on: date, count: int, frequency: str) -> date:
    """The last installment's due date, without building the schedule. Raises
    OverflowError or ValueError when it falls after 31 December 9999."""
    if frequency == "weekly":
        return disbursed_on + timedelta(days=7 * count)
    return add_months(disbursed_on, count)


def installment_amounts(total: Decimal, count: int) -> list[Decimal]:
    """``count`` equal amounts rounded down to the cent; the last takes the remainder."""
    if count < 1:
        raise ValueError("a schedule needs at least one installment")
    base = (total / count).quantize(CENT, rounding=ROUND_DOWN)
    return [base] * (count - 1) + [total - base * (count - 1)]


def build_schedule(
    total: Decimal, disbursed_on: date, count: int, frequency: str
) -> list[tuple[int, date, Decimal]]:
    """(seq, due_on, amount_due) for each installment."""
    dates = due_dates(disbursed_on, count, frequency)
    amounts = installment_amounts(total, count)
    return [(n, d, a) for n, (d, a) in enumerate(zip(dates, amounts, strict=True), start=1)]


def allocate_oldest_first(
    outstanding: list[tuple[int, Decimal]], amount: Decimal
) -> tuple[list[tuple[int, Decimal]], Decimal]:
    """Spread ``amount`` over (key, outstanding) pairs in the given order. Returns the
    (key, part) allocations and what was left over."""
    allocations = []
    remaining = amount
    for key, owed in outstanding:
        if remaining <= 0:
            break
        part = min(owed, remaining)
        if part > 0:
            allocations.append((key, part))
            remaining -= part
    return allocations, remaining
