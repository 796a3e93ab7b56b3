"""Refunding a payment's borrower credit by M-Pesa (/money/payments/<id>/refund): the
panel loaded into a posted payment's page, with what may still be refunded, the request
form (an officer for a payment in their portfolio, or an admin) and each refund's live
status. The ``refunds`` blueprint, templates/payments/refunds/. Approval, cancel and the
Transaction Status check are the payout page's (payments/views/disbursements.py): a
refund is a disbursement whose purpose is ``refund``.

A refusal re-renders the panel with the form's input and the reason, 422, never a 500."""

from __future__ import annotations

from flask import Blueprint, abort, request, url_for
from flask_login import current_user

from lenders.extensions import db
from lenders.money import format_kes
from lenders.phones import mask_phone
from lenders.web import BACKGROUND_POLL, action_done, render_fragment, roles
from payments import refunds
from payments.forms import RefundForm
from payments.models import C2BPayment, PaymentStatus
from payments.views.payment import PAYMENTS_CHANGED
from payments.visibility import get_payment

bp = Blueprint("refunds", __name__, url_prefix="/money")
PANEL = "payments/refunds/panel.html"
WAITING = ("approved", "sent", "ambiguous")


def _payment_or_404(payment_id: int) -> C2BPayment:
    found = get_payment(db.session, current_user, payment_id)
    if found is None:
        abort(404)
    return found


def _form(payment: C2BPayment, formdata=None) -> RefundForm:
    form = RefundForm(formdata=formdata)
    borrower = payment.borrower
    if payment.repayments:
        live = [r for r in payment.repayments if not r.reversed and r.to_credit]
        borrower = live[0].loan.borrower if live else borrower
    phones = borrower.phones if borrower is not None else []
    form.phone.choices = [(p.number, mask_phone(p.number)) for p in phones]
    return form


def _panel(payment_id: int, form=None, status=200, **shown):
    """The panel; ``shown`` holds an ``error`` or a ``message``. It polls itself while a
    refund is on its way; the poll that finds it settled tells the page to refresh."""
    payment = _payment_or_404(payment_id)
    found = refunds.payment_refunds(db.session, payment.id)
    waiting = any(r.status in WAITING for r in found)
    left = refunds.refundable(db.session, payment)
    response = render_fragment(
        PANEL,
        "panel",
        status=status,
        p=payment,
        refunds=found,
        left=left,
        waiting=waiting,
        form=form or _form(payment),
        error=shown.get("error", ""),
        errors=shown.get("errors") or {},
        message=shown.get("message", ""),
    )
    if request.headers.get(BACKGROUND_POLL) and not waiting:
        response.headers["HX-Trigger"] = PAYMENTS_CHANGED
    return response


@bp.get("/payments/<int:payment_id>/refund")
@roles("admin", "officer")
def panel(payment_id: int):
    """What of the payment's credit may be refunded, the form, and its refunds."""
    return _panel(payment_id)


@bp.post("/payments/<int:payment_id>/refund")
@roles("admin", "officer")
def create(payment_id: int):
    """Ask for a refund of the payment's credit; it waits for another admin's approval."""
    payment = _payment_or_404(payment_id)
    if payment.status != PaymentStatus.POSTED:
        return _panel(payment_id, status=422, error="Only a posted payment's credit is refunded.")
    form = _form(payment, request.form)
    if not form.validate():
        return _panel(payment_id, form, 422, error="Check the amount, the phone and the reason.")
    try:
        made = refunds.request_refund(
            db.session,
            payment.id,
            refunds.parse_amount(form.amount.data),
            actor=current_user,
            reason=form.reason.data,
            phone=form.phone.data,
        )
    except refunds.RefundRefused as exc:
        db.session.rollback()
        return _panel(payment_id, form, 422, error=str(exc), errors={exc.field: str(exc)})
    amount = format_kes(made.amount)
    db.session.commit()
    return action_done(
        f"Refund of {amount} requested: it waits for another admin's approval.",
        fragment=lambda text: _panel(payment_id, message=text),
        back_to=url_for("payments.payment", payment_id=payment_id),
        event=PAYMENTS_CHANGED,
    )
