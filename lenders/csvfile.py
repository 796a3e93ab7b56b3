"""The one way the product writes CSV (CONTRACT §6): UTF-8, one header row, and text that
came from outside made safe for spreadsheets.

A payer chooses their account reference and an import chooses borrowers' names: a cell
that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is written with a
leading ``'``, so that a spreadsheet shows it instead of running it as a formula. The
writer tells text from figures by type: amounts (``Decimal``, written with two places),
whole numbers, dates and times are written as they are."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from decimal import Decimal
from typing import TextIO

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value) -> str:
    """One cell as written: figures as they are, text that a spreadsheet would run as a
    formula with a leading ``'``."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_lines(rows: Iterable[Iterable]) -> Iterator[str]:
    """Each row as one line of CSV text, for a download streamed row by row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in rows:
        writer.writerow([cell(value) for value in row])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


def write_csv(rows: Iterable[Iterable], stream: TextIO) -> int:
    """Write the header and rows to a text stream; returns the number of data rows."""
    count = -1
    for line in csv_lines(rows):
        stream.write(line)
        count += 1
    return max(count, 0)
