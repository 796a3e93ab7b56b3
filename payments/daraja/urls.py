"""Where Daraja lives, and Safaricom's rules for the callback URLs we give it."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

SANDBOX_URL = "https://sandbox.safaricom.co.ke"
PRODUCTION_URL = "https://api.safaricom.co.ke"
BASE_URLS = {"sandbox": SANDBOX_URL, "production": PRODUCTION_URL}
ENVIRONMENTS = tuple(BASE_URLS)

# Safaricom's FAQ: "Avoid using keywords such as M-PESA, M-Pesa, mpesa, Safaricom, exe, exec,
# cmd, sql, query, or any of their variants in either upper or lower cases" (REFERENCE §2.4).
# "m-pesa" also catches m_pesa, "m pesa" and m.pesa; "exe" is inside "exec" and "execute".
_FORBIDDEN = (
    ("mpesa", re.compile(r"mpesa")),
    ("m-pesa", re.compile(r"m[-_. ]pesa")),
    ("safaricom", re.compile(r"safaricom")),
    ("exe", re.compile(r"exe")),
    ("exec", re.compile(r"exec")),
    ("cmd", re.compile(r"cmd")),
    ("sql", re.compile(r"sql")),
    ("query", re.compile(r"query")),
)


def forbidden_url_words(url: str) -> list[str]:
    """The words of Safaricom's list that ``url`` contains, in any case and also when
    percent-encoded; an empty list when Safaricom would take it.

    >>> forbidden_url_words("https://pay.example.co.ke/M-PESA/Execute")
    ['m-pesa', 'exe', 'exec']
    """
    text = unquote(url or "").lower()
    return [word for word, pattern in _FORBIDDEN if pattern.search(text)]


def callback_url_problem(url: str, environment: str) -> str:
    """Why Safaricom would refuse ``url`` as a callback URL in ``environment``, or ``""``."""
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an http(s) URL"
    if environment == "production" and parts.scheme != "https":
        return "must be https in production"
    words = forbidden_url_words(url)
    if words:
        return "contains " + ", ".join(repr(w) for w in words)
    return ""
