"""A payment's dealings with Safaricom (/money/payments/<id>/…, admins): asking Transaction
Status about it, and reversing it (a reason always; another admin approves when
maker-checker is on). The ``reversals`` blueprint, templates/payments/reversals/; its panel
is loaded into the payment's page and polls itself while a query or a reversal waits.

An action answers with the updated panel and ``payments-changed`` (a form posted without
JavaScript is redirected back to the payment)."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, request, url_for
from flask_login import current_user

from lenders.extensions import db
from lenders.forms import ActionForm
from lenders.web import BACKGROUND_POLL, action_done, render_fragment, roles
from payments import daraja_queries, reversing
from payments import money as screens
from payments.backoffice import maker_checker_on
from payments.forms import ReversalForm
from payments.money_models import Reversal
from payments.views.payment import PAYMENTS_CHANGED
from payments.visibility import get_payment

bp = Blueprint("reversals", __name__, url_prefix="/money")
PANEL = "payments/reversals/panel.html"


def _payment_or_404(payment_id: int):
    found = get_payment(db.session, current_user, payment_id)
    if found is None:
        abort(404)
    return found


def _panel(payment_id: int, form=None, status=200, **shown):
    """The panel; ``shown`` holds an ``error`` or a ``message``. It polls itself while a
    status query or a reversal waits for Safaricom; the poll that finds it settled also
    tells the payment's page (``payments-changed``), whose status may have changed."""
    payment = _payment_or_404(payment_id)
    reversals, check = screens.payment_dealings(db.session, payment.id)
    live = next((r for r in reversals if r.status in reversing.LIVE), None)
    waiting = (check is not None and check.status in ("sending", "sent")) or (
        live is not None and live.status in ("approved", *reversing.IN_FLIGHT)
    )
    response = render_fragment(
        PANEL,
        "panel",
        status=status,
        p=payment,
        reversals=reversals,
        live=live,
        waiting=waiting,
        check=check,
        form=form or ReversalForm(formdata=None),
        maker_checker=maker_checker_on(db.session),
        error=shown.get("error", ""),
        message=shown.get("message", ""),
    )
    if request.headers.get(BACKGROUND_POLL) and not waiting:
        response.headers["HX-Trigger"] = PAYMENTS_CHANGED
    return response


def _done(payment_id: int, message: str, shown_as: str = "message"):
    return action_done(
        message,
        fragment=lambda text: _panel(payment_id, **{shown_as: text}),
        back_to=url_for("payments.payment", payment_id=payment_id),
        event=PAYMENTS_CHANGED,
    )


@bp.get("/payments/<int:payment_id>/safaricom")
@roles("admin")
def panel(payment_id: int):
    """The payment's status with Safaricom and its reversals."""
    return _panel(payment_id)


@bp.post("/payments/<int:payment_id>/status")
@roles("admin")
def check(payment_id: int):
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
    if query.error:
        return _done(payment_id, query.error, shown_as="error")
    return _done(payment_id, f"Asked Safaricom about {payment.trans_id}.")


@bp.post("/payments/<int:payment_id>/reverse")
@roles("admin")
def reverse(payment_id: int):
    """Ask Safaricom to give the money back to the payer (a reason is required)."""
    payment = _payment_or_404(payment_id)
    form = ReversalForm()
    if not form.validate():
        return _panel(payment_id, form, 422, error="A reversal needs a reason.")
    try:
        made = reversing.request_reversal(
            db.session, payment.id, actor=current_user, reason=form.reason.data
        )
    except reversing.ReversalRefused as exc:
        db.session.rollback()
        return _panel(payment_id, form, 422, error=str(exc))
    db.session.commit()  # sent now by the money drain, unless another admin must approve
    if made.status == "requested":
        return _done(payment_id, "Reversal requested: it waits for another admin's approval.")
    return _done(
        payment_id, "Reversal sent to Safaricom; the payment is reversed when it confirms."
    )


@bp.post("/reversals/<int:reversal_id>/<any(approve, reject):decision>")
@roles("admin")
def decide(reversal_id: int, decision: str):
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
        return _panel(found.payment_id, status=422, error=str(exc))
    db.session.commit()
    said = "approved: sent to Safaricom" if decision == "approve" else "rejected"
    return _done(found.payment_id, f"Reversal {said}.")
