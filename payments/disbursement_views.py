"""Paying a loan out, on the money area: the request (an officer or admin), the approval
(another admin, with the utility balance in view), retry, cancel, and asking Safaricom
what became of a payout. The rules are lenders/disbursements.py's; sending is the
``disbursements`` drain's, woken when the approval commits."""

from __future__ import annotations

from flask import abort, current_app, flash, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import SelectField

from lenders import disbursements as book
from lenders.extensions import db
from lenders.phones import mask_phone
from lenders.web import hx_redirect, render_page, roles
from payments import daraja_queries, disbursing, money_screens
from payments.money_views import _loan_or_404, bp
from payments.views import ActionForm


class RequestForm(FlaskForm):
    phone = SelectField("Pay to", choices=[], validate_choice=True)


class ApproveForm(FlaskForm):
    shortcode_id = SelectField("Pay from", choices=[], coerce=int, validate_choice=True)


def _request_form(loan, formdata=None) -> RequestForm:
    form = RequestForm(formdata=formdata)
    form.phone.choices = [(p.number, mask_phone(p.number)) for p in loan.borrower.phones]
    return form


def _approve_form(formdata=None) -> ApproveForm:
    form = ApproveForm(formdata=formdata)
    form.shortcode_id.choices = [
        (s.id, f"{s.number} {s.name}") for s in money_screens.paying_shortcodes(db.session)
    ]
    return form


def _payout_or_404(disbursement_id: int) -> book.Disbursement:
    found = money_screens.visible_disbursement(db.session, current_user, disbursement_id)
    if found is None:
        abort(404)
    return found


def _request_page(loan, form=None, error="", status=200):
    amount, fees = book.payout_amount(db.session, loan)
    return render_page(
        "money/disbursement_request.html",
        "content",
        loan=loan,
        form=form or _request_form(loan),
        amount=amount,
        fees=fees,
        error=error,
    ), status


def _payout_page(found, error="", status=200, form=None):
    shortcodes = money_screens.paying_shortcodes(db.session)
    paying = disbursing.paying_shortcode(db.session, found) if shortcodes else None
    return render_page(
        "money/disbursement.html",
        "status" if request.headers.get("HX-Target") == "payout-status" else "content",
        d=found,
        form=form or _approve_form(),
        paying=paying,
        balance_fresh=bool(paying)
        and daraja_queries.utility_available(db.session, paying.id) is not None,
        check=money_screens.disbursement_status_query(db.session, found.id),
        action=ActionForm(),
        error=error,
    ), status


@bp.get("/loans/<number>/disburse")
@roles("admin", "officer")
def disbursement_form(number: str):
    """The payout request: how much (net of upfront fees where the lender says so)."""
    return _request_page(_loan_or_404(number))


@bp.post("/loans/<number>/disburse")
@roles("admin", "officer")
def request_disbursement(number: str):
    """Ask for the loan to be paid out; it waits for another admin's approval."""
    loan = _loan_or_404(number)
    form = _request_form(loan, request.form)
    if not form.validate():
        return _request_page(loan, form, "Choose the phone to pay to.", 422)
    try:
        made = book.request_disbursement(
            db.session, loan, actor=current_user, phone=form.phone.data
        )
    except book.DisbursementError as exc:
        db.session.rollback()
        return _request_page(_loan_or_404(number), form, str(exc), 422)
    db.session.commit()
    flash(f"Payout of {loan.number} requested: it waits for another admin's approval.")
    return hx_redirect(url_for("money.disbursement", disbursement_id=made.id))


@bp.get("/disbursements/<int:disbursement_id>")
@roles("admin", "officer")
def disbursement(disbursement_id: int):
    """One payout: its state, the approval with the utility balance, Safaricom's word."""
    return _payout_page(_payout_or_404(disbursement_id))


@bp.post("/disbursements/<int:disbursement_id>/approve")
@roles("admin")
def approve_disbursement(disbursement_id: int):
    """Approve (not one's own request); refused when the known balance is short."""
    found = _payout_or_404(disbursement_id)
    form = _approve_form(request.form)
    if not form.validate():
        return _payout_page(found, "Choose the shortcode that pays.", 422, form)
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
        return _payout_page(_payout_or_404(disbursement_id), str(exc), 422, form)
    db.session.commit()  # the drain sends it now (woken by the commit)
    flash("Approved: the payout is on its way.")
    return hx_redirect(url_for("money.disbursement", disbursement_id=disbursement_id))


@bp.post("/disbursements/<int:disbursement_id>/<any(cancel, retry):step>")
@roles("admin", "officer")
def change_disbursement(disbursement_id: int, step: str):
    """Cancel (requester or admin) or retry (another admin) a payout."""
    found = _payout_or_404(disbursement_id)
    if not ActionForm().validate():
        abort(400)
    work = book.cancel_disbursement if step == "cancel" else book.retry_disbursement
    try:
        work(db.session, found.id, actor=current_user)
    except book.DisbursementError as exc:
        db.session.rollback()
        return _payout_page(_payout_or_404(disbursement_id), str(exc), 422)
    db.session.commit()
    flash("Payout cancelled." if step == "cancel" else "Payout approved again: on its way.")
    return hx_redirect(url_for("money.disbursement", disbursement_id=disbursement_id))


@bp.post("/disbursements/<int:disbursement_id>/check")
@roles("admin")
def check_disbursement(disbursement_id: int):
    """Ask Transaction Status now about a payout in flight."""
    found = _payout_or_404(disbursement_id)
    if not ActionForm().validate():
        abort(400)
    config = current_app.config
    query = disbursing.start_status_check(db.session, found.id, config, actor=current_user)
    db.session.commit()
    if query is not None:
        query = daraja_queries.send_query(db.session, query.id, config)
        db.session.commit()
    asked = "Asked Safaricom; its answer appears here."
    flash(query.error if query is not None and query.error else asked)
    return hx_redirect(url_for("money.disbursement", disbursement_id=disbursement_id))


@bp.post("/settings/fees-upfront")
@roles("admin")
def fees_upfront():
    """Keep a loan's fees back from its payout, or not."""
    if not ActionForm().validate():
        abort(400)
    on = request.form.get("on") == "1"
    book.set_fees_upfront(db.session, on, actor=current_user)
    db.session.commit()
    flash("Payouts are now " + ("net of the loan's fees." if on else "the full principal."))
    return hx_redirect(url_for("money.index"))
