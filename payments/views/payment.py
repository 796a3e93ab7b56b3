"""One payment (/payments/<id>) and what officers do to payments: assign, reassign, match
again (one, or a selection from the unmatched queue), and the maker-checker rule. The
``payments`` blueprint; its page is templates/payments/payment.html.

A successful action answers with the updated panel and ``payments-changed``, which the
page's other regions listen to (a form posted without JavaScript is redirected back)."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, request, url_for
from flask_login import current_user
from sqlalchemy import select

from lenders.extensions import db
from lenders.forms import ActionForm
from lenders.models import AuditEvent, Loan
from lenders.queries import get_borrower
from lenders.references import reference_key
from lenders.web import action_done, parse_id, render_fragment, render_page, roles
from payments import backoffice
from payments.forms import ReasonForm
from payments.models import C2BPayment, CallbackLog, PaymentStatus, ReassignmentRequest
from payments.suggestions import suggestions_for
from payments.visibility import get_payment

bp = Blueprint("payments", __name__, url_prefix="/payments")
PAGE = "payments/payment.html"
PAYMENTS_CHANGED = "payments-changed"
# The page's regions that refresh themselves on payments-changed, by their element ids.
REGIONS = {"payment-summary": "summary", "payment-panel": "panel", "payment-record": "record"}


def _payment_or_404(payment_id: int) -> C2BPayment:
    payment = get_payment(db.session, current_user, payment_id)
    if payment is None:
        abort(404)
    return payment


def _visible_loan(number: str) -> Loan | None:
    """A loan the viewer may act on, found however its number was typed."""
    query = select(Loan).where(Loan.reference_key == reference_key(number))
    if not current_user.is_admin:
        query = query.where(Loan.officer_id == current_user.id)
    found = db.session.scalars(query.limit(2)).all()
    return found[0] if len(found) == 1 else None


def _payment_context(found: C2BPayment, form: ReasonForm | None = None, **shown) -> dict:
    """What the payment page shows; ``shown`` holds the panel's ``error`` or ``message``."""
    events = db.session.scalars(
        select(AuditEvent)
        .where(AuditEvent.entity_type == "c2b_payment", AuditEvent.entity_id == str(found.id))
        .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
    ).all()
    logs = db.session.scalars(
        select(CallbackLog).where(CallbackLog.payment_id == found.id).order_by(CallbackLog.id)
    ).all()
    assignable = found.status in PaymentStatus.ASSIGNABLE
    pending = db.session.scalars(
        select(ReassignmentRequest).where(
            ReassignmentRequest.payment_id == found.id, ReassignmentRequest.status == "pending"
        )
    ).all()
    return {
        "p": found,
        "events": events,
        "logs": logs if current_user.is_admin else [],
        "suggestions": suggestions_for(db.session, current_user, found) if assignable else [],
        "form": form or ReasonForm(formdata=None),
        "pending": pending,
        "action": ActionForm(),
        "error": shown.get("error", ""),
        "message": shown.get("message", ""),
    }


def _panel(payment_id: int, form: ReasonForm | None = None, **shown):
    """The action panel alone (the whole page when the request is not HTMX's)."""
    return render_page(
        PAGE, "panel", **_payment_context(_payment_or_404(payment_id), form, **shown)
    )


def _done(payment_id: int, message: str):
    """A successful action: its panel, or back to the payment's page without JavaScript."""
    return action_done(
        message,
        fragment=lambda text: _panel(payment_id, message=text),
        back_to=url_for("payments.payment", payment_id=payment_id),
        event=PAYMENTS_CHANGED,
    )


@bp.get("/<int:payment_id>")
@roles("admin", "officer")
def payment(payment_id: int):
    """One payment: parsing, the decision and its reason, allocations, audit, callbacks.
    A region of the page that refreshes itself (``HX-Target``) gets its block alone."""
    block = REGIONS.get(request.headers.get("HX-Target", ""), "content")
    return render_page(PAGE, block, **_payment_context(_payment_or_404(payment_id)))


def _act(payment_id: int, work):
    """Run one action on a payment in one transaction. Refused (a form error, or the
    service's reason): the panel again with the officer's input, 422."""
    found = _payment_or_404(payment_id)
    form = ReasonForm()
    if not form.validate():
        return _panel(payment_id, form), 422
    try:
        message = work(found, form)
    except backoffice.BackofficeError as exc:
        db.session.rollback()
        return _panel(payment_id, form, error=str(exc)), 422
    db.session.commit()  # the receipt and officers' notices were queued in the same transaction
    return _done(payment_id, message)


def _assign(found: C2BPayment, form: ReasonForm) -> str:
    """Onto the loan typed, or else onto the borrower chosen (matching picks the loan)."""
    if form.loan_number.data:
        loan = _visible_loan(form.loan_number.data)
        if loan is None:
            raise backoffice.BackofficeError(f"no loan {form.loan_number.data} you can use")
        backoffice.assign_payment(
            db.session, found.id, actor=current_user, reason=form.reason.data, loan=loan
        )
        return f"Payment {found.trans_id} posted to {loan.number}."
    borrower_id = parse_id(form.borrower_id.data)
    if borrower_id is None or get_borrower(db.session, current_user, borrower_id) is None:
        raise backoffice.BackofficeError("choose a borrower or type a loan number")
    backoffice.assign_payment(
        db.session, found.id, actor=current_user, reason=form.reason.data, borrower_id=borrower_id
    )
    return f"Payment {found.trans_id} assigned."


def _reassign(found: C2BPayment, form: ReasonForm) -> str:
    """Onto another loan, or a request for an admin's approval under maker-checker."""
    loan = _visible_loan(form.loan_number.data or "")
    if loan is None:
        raise backoffice.BackofficeError(f"no loan {form.loan_number.data!r} you can use")
    outcome = backoffice.reassign_payment(
        db.session, found.id, loan, actor=current_user, reason=form.reason.data
    )
    if isinstance(outcome, ReassignmentRequest):
        return f"Reassignment to {loan.number} is waiting for an admin's approval."
    return f"Payment {found.trans_id} moved to {loan.number}."


@bp.post("/<int:payment_id>/assign")
@roles("admin", "officer")
def assign(payment_id: int):
    """Place an unmatched payment on a loan, or on a borrower (matching picks the loan)."""
    return _act(payment_id, _assign)


@bp.post("/<int:payment_id>/reassign")
@roles("admin", "officer")
def reassign(payment_id: int):
    """Move a posted payment to another loan (or ask an admin, under maker-checker)."""
    return _act(payment_id, _reassign)


@bp.post("/<int:payment_id>/rematch")
@roles("admin", "officer")
def rematch(payment_id: int):
    """Run matching again on an unmatched or failed payment; refused ones say why (422)."""
    found = _payment_or_404(payment_id)
    if not ActionForm().validate():
        abort(400)
    try:
        backoffice.rematch_payment(db.session, found.id, actor=current_user)
    except backoffice.BackofficeError as exc:
        db.session.rollback()
        return _panel(payment_id, error=str(exc)), 422
    db.session.commit()
    return _done(payment_id, f"Matched again: {_payment_or_404(payment_id).status}.")


def _rematch_each(ids: list[int]) -> list[tuple[str, str, str]]:
    """Match each payment again in its own transaction: (receipt, status, why) for each."""
    results = []
    for payment_id in ids:
        if get_payment(db.session, current_user, payment_id) is None:
            continue
        try:
            found = backoffice.rematch_payment(db.session, payment_id, actor=current_user)
            db.session.commit()
            results.append((found.trans_id, found.status, found.reason))
        except backoffice.BackofficeError as exc:
            db.session.rollback()
            results.append((str(payment_id), "skipped", str(exc)))
    return results


@bp.post("/reprocess")
@roles("admin", "officer")
def reprocess():
    """Match again a selection of unmatched or failed payments; answers the list of
    outcomes (the unmatched queue refreshes itself on ``payments-changed``)."""
    if not ActionForm().validate():
        abort(400)
    ids = [i for i in map(parse_id, request.form.getlist("payment_id")) if i is not None][:200]
    results = _rematch_each(ids)
    posted = sum(1 for _, status, _ in results if status == PaymentStatus.POSTED)
    return action_done(
        f"Matched {len(results)} payment(s) again: {posted} posted.",
        fragment=lambda _: render_fragment(
            "payments/unmatched/index.html", "progress", results=results
        ),
        back_to=url_for("unmatched.index"),
        event=PAYMENTS_CHANGED,
    )


@bp.post("/settings/maker-checker")
@roles("admin")
def maker_checker():
    """Turn maker-checker on reassignments on or off."""
    if not ActionForm().validate():
        abort(400)
    on = request.form.get("on") == "1"
    backoffice.set_maker_checker(db.session, on, actor=current_user)
    db.session.commit()
    flash("Officers' reassignments now " + ("wait for an admin." if on else "take effect at once."))
    return redirect(url_for("reassignments.index"), code=303)
