"""Reading an M-Pesa statement file (org-portal CSV or XLSX, REFERENCE §10.2) into text
rows, as a stream with size caps, and reading its cells: amounts written every way
portals write them, and times in either date order or as Excel date cells."""

from __future__ import annotations

import csv
import re
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

# The org portal's statement has a few lines about the organisation above its header.
HEADER_WITHIN = 30
MAX_ROWS = 100_000  # a statement beyond this is imported in parts, one period at a time
MAX_COLUMNS = 40  # it has 13; a cell at column XFD must not widen every row to 16,384
MAX_UNPACKED_BYTES = 64 * 2**20  # a CSV file, or what an XLSX's zip unpacks to
NAIROBI_OFFSET = timedelta(hours=3)  # Africa/Nairobi: UTC+3 all year, no daylight saving

# Each column by the names portals and exports give it (lower case, stripped).
COLUMNS = {
    "receipt": ("receipt no.", "receipt no", "receipt", "receipt_number", "receipt number"),
    "completed": ("completion time", "completion date", "transaction date", "start_timestamp"),
    "initiated": ("initiation time",),
    "details": ("details", "description"),
    "status": ("transaction status", "status"),
    "paid_in": ("paid in", "credit_amount", "credit amount", "paid in (kes)"),
    "withdrawn": ("withdrawn", "debit_amount", "debit amount", "withdrawn (kes)"),
    "balance": ("balance", "balance (kes)"),
    "reason": ("reason type", "transaction type", "transaction_type"),
    "party": ("other party info", "transaction party details", "transaction_party_details"),
    "linked": ("linked transaction id", "linked_transaction_id"),
    "account": ("a/c no.", "a/c no", "account no.", "account number", "account"),
}
HEADER_MARKS = frozenset(COLUMNS["receipt"])


class UnreadableStatement(ValueError):
    """The file cannot be read as a statement, or is too large to; the message says why."""


def _cell_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return repr(value) if not value.is_integer() else str(int(value))
    return str(value)


def _xlsx_rows(path: Path) -> Iterator[list[str]]:
    """An XLSX's first sheet, row by row (openpyxl's read-only mode streams the sheet),
    after checking what its zip says it holds, so a small file cannot unpack into gigabytes."""
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnreadableStatement(
            "line 1: not an XLSX workbook; export the statement again"
        ) from exc
    if unpacked > MAX_UNPACKED_BYTES:
        raise UnreadableStatement(
            f"line 1: the workbook unpacks to {unpacked // 2**20} MB, more than "
            f"{MAX_UNPACKED_BYTES // 2**20} MB; export a shorter period"
        )
    from openpyxl import load_workbook

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many kinds for a bad file
        raise UnreadableStatement("line 1: not a readable XLSX workbook") from exc
    try:
        sheet = book.worksheets[0]
        for row in sheet.iter_rows(values_only=True, max_col=MAX_COLUMNS):
            yield [_cell_text(c) for c in row]
    finally:
        book.close()


def _csv_rows(path: Path) -> Iterator[list[str]]:
    """A CSV statement (UTF-8, a byte-order mark allowed), row by row."""
    if path.stat().st_size > MAX_UNPACKED_BYTES:
        raise UnreadableStatement(
            f"line 1: the file is more than {MAX_UNPACKED_BYTES // 2**20} MB; "
            "export a shorter period"
        )
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as stream:
        try:
            for row in csv.reader(stream):
                yield row[:MAX_COLUMNS]
        except csv.Error as exc:
            raise UnreadableStatement(f"the file is not readable CSV ({exc})") from exc


def read_rows(path: Path) -> Iterator[list[str]]:
    """Every row of the file as text cells, as a stream (XLSX through openpyxl, CSV as
    UTF-8). Raises UnreadableStatement for a file that cannot be read or is too large."""
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        return _xlsx_rows(path)
    return _csv_rows(path)


def is_xlsx(data: bytes) -> bool:
    return data[:4] == b"PK\x03\x04"


def statement_rows(path: Path) -> tuple[dict[str, int], list[tuple[int, list[str]]]]:
    """The header's columns (our name → index) and every non-empty row after it with its
    line number. The header is looked for in the first rows only; more than MAX_ROWS rows
    are refused. Raises UnreadableStatement."""
    columns: dict[str, int] | None = None
    rows: list[tuple[int, list[str]]] = []
    for number, row in enumerate(read_rows(path), start=1):
        if columns is None:
            names = [c.strip().lower() for c in row]
            if HEADER_MARKS.intersection(names):
                columns = {
                    ours: names.index(theirs)
                    for ours, aliases in COLUMNS.items()
                    for theirs in aliases
                    if theirs in names
                }
            elif number >= HEADER_WITHIN:
                break
            continue
        if not "".join(row).strip():  # every cell blank
            continue
        if len(rows) >= MAX_ROWS:
            raise UnreadableStatement(
                f"line {number}: the statement has more than {MAX_ROWS:,} rows; import it "
                "in parts (export one period at a time)"
            )
        rows.append((number, row))
    if columns is None:
        raise UnreadableStatement(
            f"line 1: no 'Receipt No.' header row in the first {HEADER_WITHIN} rows; "
            "is this an M-Pesa statement?"
        )
    return columns, rows


# --- cells -----------------------------------------------------------------------------

_NOT_DIGITS = re.compile(r"[,\s]|KES|KSH|Ksh|Kshs|kes|ksh")


def amount(text: str) -> Decimal | None:
    """A signed amount as portals write it: ``1,131,340.00``, ``-60.00``, ``(60.00)``,
    ``KES 1,500``, ``1500.0`` (an Excel number); None for an empty cell. Raises
    InvalidOperation for anything else."""
    if not text:  # most cells of a row: money moves one way, and Balance is often empty
        return None
    cleaned = _NOT_DIGITS.sub("", text)
    if not cleaned or cleaned in ("-", "--"):
        return None
    negative = cleaned.startswith("(") and cleaned.endswith(")")
    if negative:
        cleaned = cleaned[1:-1]
    value = Decimal(cleaned)
    if not value.is_finite() or abs(value) >= Decimal("1e12"):
        raise InvalidOperation(text)
    cents = value.quantize(Decimal("0.01"))  # an Excel number may carry float noise
    return -cents if negative else cents


_DAY_FIRST = re.compile(r"(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})[ T](\d{1,2}):(\d{2})(?::(\d{2}))?")
_YEAR_FIRST = re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})[ T](\d{1,2}):(\d{2})(?::(\d{2}))?")
_TWELVE_HOUR = ("%d-%m-%Y %I:%M:%S %p", "%d-%m-%Y %I:%M %p", "%d/%m/%Y %I:%M:%S %p")
_TWELVE_HOUR += ("%d/%m/%Y %I:%M %p", "%Y-%m-%d %I:%M:%S %p", "%Y-%m-%d %I:%M %p")
EXCEL_EPOCH = datetime(1899, 12, 30)


def nairobi_to_utc(local: datetime) -> datetime:
    return (local - NAIROBI_OFFSET).replace(tzinfo=UTC)


def _nairobi(y: str, mo: str, d: str, h: str, mi: str, s: str | None) -> datetime:
    """The regexes' groups as UTC (one step: the same as ``nairobi_to_utc``)."""
    local = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s or 0), tzinfo=UTC)
    return local - NAIROBI_OFFSET


def moment(text: str) -> datetime | None:
    """A statement time (Nairobi) as UTC: ``15-01-2025 14:30:12``, ``2025-01-15 14:30``,
    ``15/01/2025 2:30 PM``, or an Excel date cell's serial number (``45672.6041``). None
    for an empty cell; raises ValueError for anything else."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        return _moment(text)
    except (ValueError, OverflowError):
        raise ValueError(f"unreadable time {text[:40]!r}") from None


def _moment(text: str) -> datetime:
    found = _YEAR_FIRST.match(text)
    if found:
        y, mo, d, h, mi, s = found.groups()
        return _nairobi(y, mo, d, h, mi, s)
    found = _DAY_FIRST.match(text)
    if found and not text.upper().endswith(("AM", "PM")):
        d, mo, y, h, mi, s = found.groups()
        return _nairobi(y, mo, d, h, mi, s)
    for fmt in _TWELVE_HOUR:
        try:
            return nairobi_to_utc(datetime.strptime(text.upper(), fmt))
        except ValueError:
            continue
    try:
        serial = float(text)
    except ValueError:
        serial = None
    if serial is not None and 20_000 < serial < 80_000:  # 1954 to 2119
        local = EXCEL_EPOCH + timedelta(seconds=round(serial * 86400))
        return nairobi_to_utc(local)
    raise ValueError(text)
