"""Migrations down and up again, on SQLite and PostgreSQL: 0015_refunds (a disbursement's
purpose, a refund's payment and borrower) goes away and comes back to the models' schema,
keeping the loan payouts."""

from datetime import date
from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, text

from lenders.disbursements import Disbursement
from lenders.extensions import db
from tests.conftest import new_borrower, new_loan, new_staff

pytestmark = pytest.mark.both_databases


def columns() -> dict:
    return {c["name"]: c for c in inspect(db.engine).get_columns("disbursement")}


def test_refunds_migration_goes_down_and_up(app):
    loan = new_loan(
        borrower=new_borrower("Grace Njeri", phones=("0712345678",)),
        principal="1000.00",
        installments=1,
        disbursed_on=date(2030, 1, 1),
    )
    db.session.add(
        Disbursement(
            loan_id=loan.id,
            amount=Decimal("1000.00"),
            phone="254712345678",
            requested_by_id=new_staff("admin").id,
            originator_conversation_id="MJ000001-1-test",
        )
    )
    db.session.commit()
    loan_id = loan.id
    db.session.remove()
    db.engine.dispose()

    downgrade(revision="0014_reconciliation")
    db.engine.dispose()
    before = columns()
    assert not {"purpose", "payment_id", "borrower_id", "note"} & set(before)
    assert before["loan_id"]["nullable"] is False

    upgrade()
    db.engine.dispose()
    after = columns()
    assert {"purpose", "payment_id", "borrower_id", "note"} <= set(after)
    assert after["loan_id"]["nullable"] is True
    with db.engine.connect() as connection:
        kept = connection.execute(text("SELECT purpose, loan_id FROM disbursement")).all()
        assert [tuple(row) for row in kept] == [("loan", loan_id)]
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, db.metadata) == []
