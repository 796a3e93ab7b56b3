"""The statements a batch of postings reads and writes (payments/posting.py): the rows it
takes and locks, and its writes, one statement per table."""

from __future__ import annotations

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from lenders.models import (
    Allocation,
    AuditEvent,
    Borrower,
    BorrowerPhone,
    Installment,
    Loan,
    Repayment,
)
from payments.models import (
    C2BPayment,
    OfficerNotice,
    PaymentStatus,
    Shortcode,
    SmsMessage,
    payment_repayment,
)

_payment = C2BPayment.__table__
_loan = Loan.__table__
_installment = Installment.__table__
_borrower = Borrower.__table__

TAKE = (
    update(_payment)
    .where(
        _payment.c.id.in_(bindparam("ids", expanding=True)),
        _payment.c.status == PaymentStatus.RECEIVED,
    )
    .values(claimed_until=None)
    .returning(
        _payment.c.id,
        _payment.c.shortcode_id,
        _payment.c.trans_id,
        _payment.c.trans_time,
        _payment.c.amount,
        _payment.c.bill_ref,
        _payment.c.msisdn,
        _payment.c.msisdn_form,
        _payment.c.first_name,
    )
)
LOANS = (
    select(
        _loan.c.id,
        _loan.c.number,
        _loan.c.borrower_id,
        _loan.c.officer_id,
        _loan.c.status,
        _loan.c.principal + _loan.c.interest + _loan.c.fees,
        _loan.c.paid,
    )
    .where(_loan.c.borrower_id.in_(bindparam("borrowers", expanding=True)))
    .order_by(_loan.c.id)
    .with_for_update()
)
INSTALLMENTS = (
    select(
        _installment.c.id,
        _installment.c.loan_id,
        _installment.c.due_on,
        _installment.c.amount_due,
        _installment.c.amount_paid,
    )
    .where(_installment.c.loan_id.in_(bindparam("loans", expanding=True)))
    .order_by(_installment.c.loan_id, _installment.c.seq)
)
_FIRST_PHONE = (
    select(BorrowerPhone.number)
    .where(BorrowerPhone.borrower_id == _borrower.c.id)
    .order_by(BorrowerPhone.id)
    .limit(1)
    .scalar_subquery()
)
BORROWERS = select(
    _borrower.c.id,
    _borrower.c.name,
    _borrower.c.credit,
    _borrower.c.sms_language,
    _borrower.c.sms_opt_out,
    _FIRST_PHONE,
).where(_borrower.c.id.in_(bindparam("borrowers", expanding=True)))
TOLERANCES = select(Shortcode.id, Shortcode.amount_tolerance).where(
    Shortcode.id.in_(bindparam("shortcodes", expanding=True))
)


def _insert_ignoring(table, dialect_insert, columns):
    return dialect_insert(table).on_conflict_do_nothing(index_elements=columns)


_SET_PAID = (
    update(_installment)
    .where(_installment.c.id == bindparam("b_id"))
    .values(amount_paid=bindparam("b_paid"))
)
_SET_LOAN = (
    update(_loan)
    .where(_loan.c.id == bindparam("b_id"))
    .values(paid=bindparam("b_paid"), status=bindparam("b_status"))
)
_SET_CREDIT = (
    update(_borrower)
    .where(_borrower.c.id == bindparam("b_id"))
    .values(credit=bindparam("b_credit"))
)
_SET_PAYMENT = (
    update(_payment)
    .where(_payment.c.id == bindparam("b_id"))
    .values(
        status=bindparam("status"),
        rule=bindparam("rule"),
        credit=bindparam("credit"),
        reason=bindparam("reason"),
        borrower_id=bindparam("borrower_id"),
        processed_at=bindparam("processed_at"),
        error=None,
    )
)
_NEW_MESSAGE = {
    name: _insert_ignoring(SmsMessage.__table__, dialect.insert, ["payment_id", "kind"])
    for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))
}
_NEW_NOTICE = {
    name: _insert_ignoring(
        OfficerNotice.__table__, dialect.insert, ["staff_id", "payment_id", "kind"]
    )
    for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))
}


def write_batch(session: Session, w) -> bool:
    """Write what a batch did (payments.posting.Writes), set-based, in the session's
    transaction: one statement per table (INSERTs in one round trip each, UPDATEs as one
    executemany). True when it queued messages."""
    run = session.connection().execute
    dialect = session.get_bind().dialect.name
    ids = []
    if w.repayments:
        ids = list(
            run(
                Repayment.__table__.insert().returning(
                    Repayment.__table__.c.id, sort_by_parameter_order=True
                ),
                w.repayments,
            ).scalars()
        )
    if w.allocations:
        run(Allocation.__table__.insert(), [
            {"repayment_id": ids[a["repayment"]], "installment_id": a["installment_id"],
             "amount": a["amount"]} for a in w.allocations])  # fmt: skip
    if w.installments:
        run(_SET_PAID, [{"b_id": i.id, "b_paid": i.amount_paid}
                        for i in w.installments.values()])  # fmt: skip
    if w.loans:
        run(_SET_LOAN, [{"b_id": loan.id, "b_paid": loan.paid, "b_status": loan.status}
                        for loan in w.loans.values()])  # fmt: skip
    if w.borrowers:
        run(_SET_CREDIT, [{"b_id": b.id, "b_credit": b.credit}
                          for b in w.borrowers.values()])  # fmt: skip
    if w.payments:
        run(_SET_PAYMENT, w.payments)
    if w.links:
        run(payment_repayment.insert(), [
            {"payment_id": link["payment_id"], "repayment_id": ids[link["repayment"]]}
            for link in w.links])  # fmt: skip
    if w.audits:
        for audit in w.audits:  # the temporary repayment keys become their ids
            after = audit["after"]
            if "repayment_id" in after:
                audit["after"] = after | {"repayment_id": ids[after["repayment_id"]]}
            if "repayments" in after:
                audit["after"] = after | {"repayments": [ids[k] for k in after["repayments"]]}
        run(AuditEvent.__table__.insert(), w.audits)
    if w.notices:
        run(_NEW_NOTICE[dialect], w.notices)
    if w.messages:
        run(_NEW_MESSAGE[dialect], w.messages)
    return bool(w.messages)
