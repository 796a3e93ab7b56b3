"""Kenyan mobile numbers: parse any form a person types, store the canonical 12 digits."""

import hashlib
import re

import phonenumbers

_CANONICAL = re.compile(r"^254[17]\d{8}$")
_COMMON = re.compile(r"(?:\+?254|0)?([17]\d{8})")
_SEPARATORS = re.compile(r"[\s\-().]")


class InvalidPhone(ValueError):
    """Not a Kenyan mobile number."""


def canonical_phone(text: str) -> str:
    """``0712 345 678``, ``+254712345678``, ``254712345678``, ``712345678`` and ``0110…``
    all become ``254712345678`` / ``254110…``. Raises InvalidPhone for anything else."""
    raw = (text or "").strip()
    fast = _COMMON.fullmatch(_SEPARATORS.sub("", raw))
    if fast:  # the usual forms, without phonenumbers' full parse (10x faster on imports)
        return "254" + fast.group(1)
    digits = re.sub(r"\D", "", raw)
    # Bare 9-digit national numbers ("712345678") are how some spreadsheets drop the 0.
    if len(digits) == 9 and digits[0] in "17" and not raw.startswith("+"):
        raw = "0" + digits
    try:
        parsed = phonenumbers.parse(raw, "KE")
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone(f"{text!r} is not a phone number") from exc
    canonical = f"{parsed.country_code}{parsed.national_number}"
    if not _CANONICAL.match(canonical):
        raise InvalidPhone(f"{text!r} is not a Kenyan mobile number")
    return canonical


def phone_sha256(canonical: str) -> str:
    """What C2B register v1 sends as MSISDN: SHA-256 hex of the 12-digit number."""
    return hashlib.sha256(canonical.encode()).hexdigest()


def masked_key(canonical: str) -> str:
    """The visible parts of a v2 masked MSISDN (``2547 ***** 126`` → ``2547126``)."""
    return canonical[:4] + canonical[-3:]


def name_key(name: str) -> str:
    """A borrower's name as masked matching compares it, kept beside each of their phones:
    every word case-folded, each between single spaces (``Jane  WAMBUI Otieno`` →
    `` jane wambui otieno ``). A masked payment's FirstName ``Wambui`` is looked for as
    ``% wambui %`` among the phones sharing its masked key, without reading the borrowers."""
    return f" {' '.join(word.casefold() for word in name.split())} "


def mask_phone(canonical: str) -> str:
    """How a phone is shown in exports and logs: ``2547****5678``."""
    return f"{canonical[:4]}****{canonical[-4:]}" if len(canonical) >= 8 else "****"
