"""Loan-book files for the importer and the ``flask lenders`` commands: rows, CSV text and
the counts that show a file left the book alone."""

from __future__ import annotations

import csv
import io

from sqlalchemy import func, select

from lenders.extensions import db
from lenders.models import Borrower, BorrowerPhone, Installment, Loan, Repayment, StaffUser

COLUMNS = (
    "loan_number",
    "borrower_name",
    "national_id",
    "phone",
    "principal",
    "interest",
    "fees",
    "disbursed_on",
    "installments",
    "frequency",
    "amount_paid",
    "officer_email",
)
NAMES = [
    "Jane Wanjiku",
    "John Kamau",
    "Mary Achieng",
    "Peter Otieno",
    "Grace Chebet",
    "James Mwangi",
    "Faith Nyambura",
    "David Kiptoo",
    "Mercy Wambui",
    "Joseph Barasa",
]


def loan_row(n: int = 1, **changes: str) -> dict[str, str]:
    """A good row: KES 10,000.00 due over 4 months from 15 January 2025, nothing paid."""
    row = {
        "loan_number": f"LOAN-{n:06d}",
        "borrower_name": NAMES[n % len(NAMES)],
        "national_id": str(21_000_000 + n),  # make_borrower uses 30_000_000 + n
        "phone": f"07{22_000_000 + n:08d}",
        "principal": "9000.00",
        "interest": "900.00",
        "fees": "100.00",
        "disbursed_on": "2025-01-15",
        "installments": "4",
        "frequency": "monthly",
        "amount_paid": "",
        "officer_email": "",
    }
    row.update(changes)
    return row


def csv_text(rows: list[dict[str, str]], columns=COLUMNS) -> str:
    out = io.StringIO()
    writer = csv.writer(out)  # \r\n line ends, as spreadsheets write them
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row.get(c, "") for c in columns])
    return out.getvalue()


def book_counts() -> dict[str, int]:
    """Rows in each table of the book, as the database has them now."""
    return {
        model.__name__: db.session.scalar(select(func.count()).select_from(model))
        for model in (Loan, Borrower, BorrowerPhone, StaffUser, Installment, Repayment)
    }
