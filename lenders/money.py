"""Money as Decimal, never float."""

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

CENT = Decimal("0.01")


class InvalidAmount(ValueError):
    """Not an amount of money."""


def parse_amount(text, *, allow_zero: bool = True) -> Decimal:
    """'1500', '1,500.00' or Decimal into a non-negative Decimal with two places.
    Raises InvalidAmount for negatives, more than two decimals, NaN or garbage."""
    if isinstance(text, float):
        raise InvalidAmount("amounts are never floats")
    try:
        value = Decimal(str(text).strip().replace(",", ""))
    except InvalidOperation as exc:
        raise InvalidAmount(f"{str(text)[:20]!r} is not an amount") from exc
    if not value.is_finite():
        raise InvalidAmount(f"{str(text)[:20]!r} is not an amount")
    if value < 0:
        raise InvalidAmount(f"{text!r} is negative")
    # Before quantize, which cannot hold 1e9999999 in two places (InvalidOperation).
    if value >= Decimal("1e12"):
        raise InvalidAmount(f"{str(text)[:20]!r} is too large")
    if value != value.quantize(CENT):
        raise InvalidAmount(f"{str(text)[:20]!r} has more than two decimal places")
    if not allow_zero and value == 0:
        raise InvalidAmount("the amount must be more than zero")
    return value.quantize(CENT) + 0  # + 0: no "-0.00"


def format_kes(value) -> str:
    """``KES 1,500.00``; negative amounts as ``-KES 1,500.00``."""
    if value is None:
        return ""
    amount = Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)
    sign = "-" if amount < 0 else ""
    return f"{sign}KES {abs(amount):,.2f}"
