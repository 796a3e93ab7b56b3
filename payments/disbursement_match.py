"""Which disbursement a B2C payout on the statement is, by its M-Pesa receipt.

Disbursements (money out, B2C) are built on another branch. Until their model is here,
this looks for a table named ``disbursement`` with a ``receipt`` column and, when there is
none, matches nothing: B2C rows are then listed, never posted. When the model lands, point
``disbursements_by_receipt`` at it (one query, the same answer) and drop the reflection."""

from __future__ import annotations

from sqlalchemy import MetaData, Table, inspect, select
from sqlalchemy.orm import Session

TABLE = "disbursement"
RECEIPT_COLUMN = "receipt"
_reflected: dict[str, Table | None] = {}


def _table(session: Session) -> Table | None:
    bind = session.get_bind()
    key = str(bind.url)
    if key not in _reflected:
        table = None
        if inspect(bind).has_table(TABLE):
            table = Table(TABLE, MetaData(), autoload_with=bind)
            if RECEIPT_COLUMN not in table.c or "id" not in table.c:
                table = None
        _reflected[key] = table
    return _reflected[key]


def disbursements_by_receipt(session: Session, receipts: list[str]) -> dict[str, int]:
    """{receipt: disbursement id} for the receipts that name a disbursement."""
    if not receipts:
        return {}
    table = _table(session)
    if table is None:
        return {}
    found = session.execute(
        select(table.c[RECEIPT_COLUMN], table.c.id).where(table.c[RECEIPT_COLUMN].in_(receipts))
    )
    return {receipt: id_ for receipt, id_ in found if receipt}
