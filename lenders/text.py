"""Text that came from outside (a payer's name and account reference from M-Pesa, a
borrower's name from an imported file): made safe to store, to show and to search for.

Hidden characters are what a spoofer uses: bidi overrides and isolates reorder what a page
shows ("Jane" + U+202E + "gnirts"), zero-width and other format characters hide a
difference between two names, line and paragraph separators break a line where none is
seen, and no database stores NUL (PostgreSQL refuses it outright)."""

from __future__ import annotations

import re
import unicodedata

# Unicode categories of what hides, moves or breaks text: controls (NUL, CR, LF, ESC...),
# format characters (bidi controls, zero-width characters, the BOM), lone surrogates, and
# the line and paragraph separators.
HIDDEN = frozenset(("Cc", "Cf", "Cs", "Zl", "Zp"))
_LIKE_SPECIAL = re.compile(r"([\\%_])")


def hidden_characters(text: str) -> list[str]:
    """The hidden characters of ``text``, named as ``U+202E``, each once, in order."""
    if text.isprintable():  # the usual case: nothing to look at character by character
        return []
    found = [ch for ch in text if unicodedata.category(ch) in HIDDEN]
    return list(dict.fromkeys(f"U+{ord(ch):04X}" for ch in found))


def plain_text(text: str) -> str:
    """``text`` without its hidden characters (spaces and letters of every script stay)."""
    if text.isprintable():
        return text
    return "".join(ch for ch in text if unicodedata.category(ch) not in HIDDEN)


def like_escaped(text: str) -> str:
    """``text`` inside a LIKE pattern (written with ``ESCAPE '\\'``): a ``%`` or ``_`` a
    person typed matches itself, not any text."""
    return _LIKE_SPECIAL.sub(r"\\\1", text)
