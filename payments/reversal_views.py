"""A payment's dealings with Safaricom, on the money area (admins): asking Transaction
Status about it, and reversing it (a reason always; another admin approves when
maker-checker is on). The panel is loaded into the payment's page."""

from __future__ import annotations

from flask import abort, current_app, flash, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import TextAreaField
from wtforms.validators import DataRequired, Length

from lenders.extensions import db
from lenders.web import hx_redirect, render_fragment, roles
from payments import daraja_queries, money_screens, reversing
from payments.backoffice import maker_checker_on
from payments.money_models import Reversal
from payments.money_views import bp
from payments.reports import get_payment
from payments.views import ActionForm


class ReversalForm(FlaskForm):
    reason = TextAreaField(
        "Reason (required)", validators=[DataRequired("Say why."), Length(max=500)]
    )


def _payment_or_404(payment_id: int):
    found = get_payment(db.session, current_user, payment_id)
    if found is None:
        abort(404)
    return found


def _panel(payment, form=None, error="", status=200):
    reversals, check = money_screens.payment_dealings(db.session, payment.id)
    return render_fragment(
        "money/safaricom.html",
        "panel",
        status=status,
        p=payment,
        reversals=reversals,
        live=next((r for r in reversals if r.status in reversing.LIVE), None),
        check=check,
        form=form or ReversalForm(),
        action=ActionForm(),
        maker_checker=maker_checker_on(db.session),
        error=error,
    )


def _back(payment_id: int, message: str):
    flash(message)
    return hx_redirect(url_for("payments.payment", payment_id=payment_id))


@bp.get("/payments/<int:payment_id>/safaricom")
@roles("admin")
def payment_panel(payment_id: int):
    """The payment's status with Safaricom and its reversals; polls while one waits."""
    return _panel(_payment_or_404(payment_id))


@bp.post("/payments/<int:payment_id>/status")
@roles("admin")
def check_payment(payment_id: int):
    """Ask Transaction Status about the payment's receipt; the answer fills the panel."""
    payment = _payment_or_404(payment_id)
    if not ActionForm().validate():
        abort(400)
    query = daraja_queries.new_query(
        db.session,
        "status",
        payment.shortcode,
        actor=current_user,
        payment_id=payment.id,
        transaction_id=payment.trans_id,
    )
    db.session.commit()  # the row and its token exist before Safaricom can answer
    query = daraja_queries.send_query(db.session, query.id, current_app.config)
    db.session.commit()
    return _panel(payment, error=query.error or "")


@bp.post("/payments/<int:payment_id>/reverse")
@roles("admin")
def reverse(payment_id: int):
    """Ask Safaricom to give the money back to the payer (a reason is required)."""
    payment = _payment_or_404(payment_id)
    form = ReversalForm()
    if not form.validate():
        return _panel(payment, form, "A reversal needs a reason.", 422)
    try:
        made = reversing.request_reversal(
            db.session, payment.id, actor=current_user, reason=form.reason.data
        )
    except reversing.ReversalRefused as exc:
        db.session.rollback()
        return _panel(_payment_or_404(payment_id), form, str(exc), 422)
    db.session.commit()  # sent now by the reversals drain, unless another admin must approve
    if made.status == "requested":
        return _back(payment_id, "Reversal requested: it waits for another admin's approval.")
    return _back(
        payment_id, "Reversal sent to Safaricom; the payment is reversed when it confirms."
    )


@bp.post("/reversals/<int:reversal_id>/<any(approve, reject):decision>")
@roles("admin")
def decide_reversal(reversal_id: int, decision: str):
    """Another admin approves (it is sent) or rejects a reversal request."""
    found = db.session.get(Reversal, reversal_id)
    if found is None:
        abort(404)
    if not ActionForm().validate():
        abort(400)
    try:
        reversing.decide_reversal(
            db.session, found.id, approve=decision == "approve", actor=current_user
        )
    except reversing.ReversalRefused as exc:
        db.session.rollback()
        return _panel(_payment_or_404(found.payment_id), error=str(exc), status=422)
    db.session.commit()
    said = "approved: sent to Safaricom" if decision == "approve" else "rejected"
    return _back(found.payment_id, f"Reversal {said}.")
