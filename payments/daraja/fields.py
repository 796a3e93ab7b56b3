"""The values Daraja requests carry, checked and put in the form Daraja wants before
anything is sent: phones, whole-shilling amounts, Nairobi times; and phones masked for logs."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation

from payments.daraja.credentials import NAIROBI
from payments.daraja.errors import RequestRefused


def mask_msisdn(value) -> str:
    """``2547****5678`` for logs; never the whole number."""
    digits = re.sub(r"\D", "", str(value or ""))
    return f"{digits[:4]}****{digits[-4:]}" if len(digits) >= 8 else "****"


def canonical_msisdn(value, field: str = "PhoneNumber") -> str:
    """``0712345678``, ``+254712345678``, ``712345678`` or ``254712345678`` as the 12 digits
    Daraja wants; RequestRefused for anything that is not a Kenyan mobile number."""
    digits = re.sub(r"[\s\-]", "", str(value or "")).removeprefix("+")
    if re.fullmatch(r"0[17]\d{8}", digits):
        digits = "254" + digits[1:]
    elif re.fullmatch(r"[17]\d{8}", digits):
        digits = "254" + digits
    if not re.fullmatch(r"254[17]\d{8}", digits):
        raise RequestRefused(f"{field} is not a Kenyan mobile number")
    return digits


def whole_shillings(amount, field: str = "Amount") -> int:
    """Daraja takes whole shillings only, at least 1."""
    try:
        value = Decimal(str(amount).strip())
    except (InvalidOperation, ValueError):
        raise RequestRefused(f"{field} is not a number") from None
    if isinstance(amount, bool) or not value.is_finite() or value != value.to_integral_value():
        raise RequestRefused(f"{field} must be whole shillings")
    if value < 1:
        raise RequestRefused(f"{field} must be at least KES 1")
    return int(value)


def nairobi_text(moment: datetime) -> str:
    """``2024-02-06 14:36:45`` in Nairobi time (aware datetimes are converted; naive ones
    are taken as Nairobi time)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(NAIROBI)
    return moment.strftime("%Y-%m-%d %H:%M:%S")
