"""The money area (``/money``): the overview of payouts, prompts and reversals; a loan's
collect-by-STK panel with its live status; a shortcode's balances. Payouts are in
payments/disbursement_views.py and a payment's dealings with Safaricom (status check,
reversal) in payments/reversal_views.py, on this same blueprint. Views parse, call a
service, render; a refusal re-renders its fragment with 422."""

from __future__ import annotations

from decimal import Decimal

from flask import Blueprint, abort, current_app, request
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import IntegerField, SelectField
from wtforms.validators import NumberRange, Optional

from lenders.extensions import db
from lenders.phones import mask_phone
from lenders.queries import get_loan
from lenders.web import nairobi_today, render_fragment, render_page, roles
from payments import daraja_queries, money_screens, prompts
from payments.models import Shortcode
from payments.money_models import StkRequest
from payments.views import ActionForm

bp = Blueprint("money", __name__, url_prefix="/money", template_folder=None)


class PromptForm(FlaskForm):
    """The STK button: how much, to which of the borrower's phones."""

    amount = IntegerField("Amount (KES)", validators=[Optional(), NumberRange(1, 250000)])
    phone = SelectField("Phone", choices=[], validate_choice=True)


def _loan_or_404(number: str):
    loan = get_loan(db.session, current_user, number)
    if loan is None:
        abort(404)
    return loan


def _prompt_form(loan, formdata=None) -> PromptForm:
    form = PromptForm(formdata=formdata)
    form.phone.choices = [(p.number, mask_phone(p.number)) for p in loan.borrower.phones]
    if formdata is None:
        form.amount.data = int(prompts.due_now(loan, nairobi_today())) or None
    return form


def _panel(loan, form=None, error="", status=200):
    return render_fragment(
        "money/collect.html",
        "panel",
        status=status,
        loan=loan,
        form=form or _prompt_form(loan),
        error=error,
        prompts=money_screens.loan_prompts(db.session, loan.id),
        disbursements=money_screens.loan_disbursements(db.session, loan.id),
    )


@bp.get("/")
@roles("admin", "officer")
def index():
    """Payouts waiting for approval and in flight, recent prompts, reversals."""
    found = money_screens.overview(db.session, current_user)
    return render_page("money/index.html", "content", o=found, action=ActionForm())


@bp.get("/loans/<number>/panel")
@roles("admin", "officer")
def loan_panel(number: str):
    """The loan page's money panel: the STK button and prompts, or the payout."""
    return _panel(_loan_or_404(number))


@bp.post("/loans/<number>/prompt")
@roles("admin", "officer")
def prompt(number: str):
    """Prompt the borrower's phone; the panel comes back with the prompt's live status."""
    loan = _loan_or_404(number)
    form = _prompt_form(loan, request.form)
    if not form.validate():
        return _panel(loan, form, "Check the amount and the phone.", 422)
    amount = None if form.amount.data is None else Decimal(form.amount.data)
    config = current_app.config
    try:
        made = prompts.prompt_borrower(
            db.session,
            loan,
            actor=current_user,
            config=config,
            amount=amount,
            phone=form.phone.data,
        )
    except prompts.PromptRefused as exc:
        db.session.rollback()
        return _panel(_loan_or_404(number), form, str(exc), 422)
    db.session.commit()  # the row and its token exist before Safaricom can answer
    made = prompts.send_prompt(db.session, made.id, config)
    db.session.commit()
    return _panel(loan, error=made.result_desc if made.status == "failed" else "")


@bp.get("/prompts/<int:request_id>")
@roles("admin", "officer")
def prompt_status(request_id: int):
    """One prompt's status; it polls itself until the prompt is settled."""
    found = db.session.get(StkRequest, request_id)
    if found is None or get_loan(db.session, current_user, found.loan.number) is None:
        abort(404)
    return render_fragment("money/collect.html", "prompt", p=found)


@bp.get("/shortcodes/<int:shortcode_id>/balance")
@roles("admin")
def shortcode_balance(shortcode_id: int):
    """The latest balances Safaricom reported; polls while a query waits for its result."""
    shortcode = db.session.get(Shortcode, shortcode_id)
    if shortcode is None:
        abort(404)
    query = daraja_queries.latest_balance(db.session, shortcode.id)
    return render_fragment("money/balance.html", "balance", s=shortcode, q=query)


@bp.post("/shortcodes/<int:shortcode_id>/balance")
@roles("admin")
def ask_balance(shortcode_id: int):
    """Ask Safaricom for the shortcode's balances now (before approving a payout)."""
    shortcode = db.session.get(Shortcode, shortcode_id)
    if shortcode is None or not ActionForm().validate():
        abort(404 if shortcode is None else 400)
    query = daraja_queries.new_query(db.session, "balance", shortcode, actor=current_user)
    db.session.commit()
    query = daraja_queries.send_query(db.session, query.id, current_app.config)
    db.session.commit()
    return render_fragment("money/balance.html", "balance", s=shortcode, q=query)


def init_app(app) -> None:
    """Register the money area with its payouts and reversals views."""
    from payments import disbursement_views, reversal_views  # noqa: F401 (their routes)

    app.register_blueprint(bp)
