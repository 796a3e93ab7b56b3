"""What a borrower types as "account number", reduced to the key loan numbers are filed by."""

import re

_NOT_ALNUM = re.compile(r"[^0-9A-Z]")
_LOAN_PREFIX = re.compile(r"^(?:LOAN|LN)(?:NO|NUMBER)?")


def reference_key(text: str | None) -> str:
    """``LOAN-000123``, ``loan 123``, ``LOAN000123``, ``Loan-123`` and ``123`` all give
    ``"123"``: case, spaces, dashes, the LOAN prefix and zero padding do not count. Other
    references keep their letters and digits (``AB-12`` → ``AB12``); empty gives ``""``."""
    compact = _NOT_ALNUM.sub("", (text or "").upper())
    body = _LOAN_PREFIX.sub("", compact)
    if body.isdigit():
        return str(int(body))
    return compact
