"""Paying a loan out (/money/loans/<number>/disburse, /money/disbursements/<id>): the
request (an officer or admin), the approval (another admin, with the utility balance in
view), retry, cancel, asking Safaricom what became of a payout, and the lender's
fees-upfront switch. The ``disbursements`` blueprint, templates/payments/disbursements/.

The rules are lenders/disbursements.py's; sending is the ``money`` drain's, woken
when the approval commits. An action on a payout answers with the page's ``payout``
region showing what it did (a form posted without JavaScript is redirected back)."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, request, url_for
from flask_login import current_user

from lenders import disbursements as book
from lenders.extensions import db
from lenders.forms import ActionForm
from lenders.phones import mask_phone
from lenders.web import action_done, render_page, roles
from payments import daraja_queries, disbursing
from payments import money as screens
from payments.forms import PayoutApprovalForm, PayoutRequestForm
from payments.views.money import loan_or_404

bp = Blueprint("disbursements", __name__, url_prefix="/money")
REQUEST = "payments/disbursements/request.html"
PAGE = "payments/disbursements/disbursement.html"


def _request_form(loan, formdata=None) -> PayoutRequestForm:
    form = PayoutRequestForm(formdata=formdata)
    form.phone.choices = [(p.number, mask_phone(p.number)) for p in loan.borrower.phones]
    return form


def _approval_form(formdata=None) -> PayoutApprovalForm:
    form = PayoutApprovalForm(formdata=formdata)
    form.shortcode_id.choices = [
        (s.id, f"{s.number} {s.name}") for s in screens.paying_shortcodes(db.session)
    ]
    return form


def _payout_or_404(disbursement_id: int) -> book.Disbursement:
    found = screens.visible_disbursement(db.session, current_user, disbursement_id)
    if found is None:
        abort(404)
    return found


def _request_page(loan, form=None, error="", status=200):
    amount, fees = book.payout_amount(db.session, loan)
    form = form or _request_form(loan)
    context = {"loan": loan, "form": form, "amount": amount, "fees": fees, "error": error}
    return render_page(REQUEST, "content", **context), status


def _payout(disbursement_id: int, block: str = "payout", form=None, status=200, **shown):
    """The payout's page, or one ``block`` of it for HTMX; ``shown`` holds an ``error`` or a
    ``message``."""
    found = _payout_or_404(disbursement_id)
    paying = None
    if screens.paying_shortcodes(db.session):
        paying = disbursing.paying_shortcode(db.session, found)
    known = paying and daraja_queries.utility_available(db.session, paying.id) is not None
    return render_page(
        PAGE,
        block,
        d=found,
        form=form or _approval_form(),
        paying=paying,
        balance_fresh=bool(known),
        check=screens.disbursement_status_query(db.session, found.id),
        error=shown.get("error", ""),
        message=shown.get("message", ""),
    ), status


def _done(disbursement_id: int, message: str):
    return action_done(
        message,
        fragment=lambda text: _payout(disbursement_id, message=text)[0],
        back_to=url_for("disbursements.disbursement", disbursement_id=disbursement_id),
    )


@bp.get("/loans/<number>/disburse")
@roles("admin", "officer")
def new(number: str):
    """The payout request: how much (net of upfront fees where the lender says so)."""
    return _request_page(loan_or_404(number))


@bp.post("/loans/<number>/disburse")
@roles("admin", "officer")
def create(number: str):
    """Ask for the loan to be paid out; it waits for another admin's approval. Opens the
    payout's page (HX-Redirect under HTMX)."""
    loan = loan_or_404(number)
    form = _request_form(loan, request.form)
    if not form.validate():
        return _request_page(loan, form, "Choose the phone to pay to.", 422)
    try:
        made = book.request_disbursement(
            db.session, loan, actor=current_user, phone=form.phone.data
        )
    except book.DisbursementError as exc:
        db.session.rollback()
        return _request_page(loan_or_404(number), form, str(exc), 422)
    db.session.commit()
    flash(f"Payout of {loan.number} requested: it waits for another admin's approval.")
    return redirect(url_for("disbursements.disbursement", disbursement_id=made.id), code=303)


@bp.get("/disbursements/<int:disbursement_id>")
@roles("admin", "officer")
def disbursement(disbursement_id: int):
    """One payout: its state, the approval with the utility balance, Safaricom's word. Its
    ``payout`` region polls itself while the payout is in flight."""
    block = "payout" if request.headers.get("HX-Target") == "payout" else "content"
    return _payout(disbursement_id, block)


@bp.post("/disbursements/<int:disbursement_id>/approve")
@roles("admin")
def approve(disbursement_id: int):
    """Approve (not one's own request); refused when the known balance is short."""
    found = _payout_or_404(disbursement_id)
    form = _approval_form(request.form)
    if not form.validate():
        return _payout(found.id, form=form, status=422, error="Choose the shortcode that pays.")
    available = daraja_queries.utility_available(db.session, form.shortcode_id.data)
    try:
        book.approve_disbursement(
            db.session,
            found.id,
            actor=current_user,
            shortcode_id=form.shortcode_id.data,
            available=available,
        )
    except book.DisbursementError as exc:
        db.session.rollback()
        return _payout(disbursement_id, form=form, status=422, error=str(exc))
    db.session.commit()  # the drain sends it now (woken by the commit)
    return _done(disbursement_id, "Approved: the payout is on its way.")


@bp.post("/disbursements/<int:disbursement_id>/<any(cancel, retry):step>")
@roles("admin", "officer")
def change(disbursement_id: int, step: str):
    """Cancel (requester or admin) or retry (another admin) a payout."""
    found = _payout_or_404(disbursement_id)
    if not ActionForm().validate():
        abort(400)
    work = book.cancel_disbursement if step == "cancel" else book.retry_disbursement
    try:
        work(db.session, found.id, actor=current_user)
    except book.DisbursementError as exc:
        db.session.rollback()
        return _payout(disbursement_id, status=422, error=str(exc))
    db.session.commit()
    done = "Payout cancelled." if step == "cancel" else "Payout approved again: on its way."
    return _done(disbursement_id, done)


@bp.post("/disbursements/<int:disbursement_id>/check")
@roles("admin")
def check(disbursement_id: int):
    """Ask Transaction Status now about a payout in flight."""
    found = _payout_or_404(disbursement_id)
    if not ActionForm().validate():
        abort(400)
    config = current_app.config
    query = disbursing.start_status_check(db.session, found.id, config, actor=current_user)
    db.session.commit()  # the row and its token exist before Safaricom can answer
    if query is not None:
        query = daraja_queries.send_query(db.session, query.id, config)
        db.session.commit()
    asked = "Asked Safaricom; its answer appears here."
    return _done(disbursement_id, query.error if query is not None and query.error else asked)


@bp.post("/settings/fees-upfront")
@roles("admin")
def fees_upfront():
    """Keep a loan's fees back from its payout, or not (lender-wide)."""
    if not ActionForm().validate():
        abort(400)
    on = request.form.get("on") == "1"
    book.set_fees_upfront(db.session, on, actor=current_user)
    db.session.commit()
    flash("Payouts are now " + ("net of the loan's fees." if on else "the full principal."))
    return redirect(url_for("money.index"), code=303)
