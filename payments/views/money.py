"""Money out and back (/money/): the overview of payouts, prompts and reversals; a loan's
collect-by-STK panel (loaded into the loan's page) with each prompt's live status; a
shortcode's balances. The ``money`` blueprint, templates/payments/money/. Payouts are the
``disbursements`` blueprint and a payment's dealings with Safaricom the ``reversals`` one
(payments/views/disbursements.py, reversals.py), under /money/ too.

Views parse, call a service, commit and render; a refusal re-renders its fragment with
422. A request to Safaricom is a row committed before it is sent, so its result, however
fast, finds it."""

from __future__ import annotations

from decimal import Decimal

from flask import Blueprint, abort, current_app, request, url_for
from flask_login import current_user

from lenders.extensions import db
from lenders.forms import ActionForm
from lenders.phones import mask_phone
from lenders.queries import get_loan
from lenders.web import action_done, nairobi_today, parse_id, render_fragment, render_page, roles
from payments import daraja_queries, prompts
from payments import money as screens
from payments.forms import PromptForm
from payments.models import Shortcode
from payments.money_models import StkRequest

bp = Blueprint("money", __name__, url_prefix="/money")
INDEX = "payments/money/index.html"
LOAN = "payments/money/loan.html"
BALANCE = "payments/money/balance.html"


def loan_or_404(number: str):
    """The loan if the viewer may see it (an officer: their portfolio's), else 404."""
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


def _panel(loan, form=None, status=200, **shown):
    """The loan's money panel; ``shown`` holds an ``error`` or a ``message``."""
    return render_fragment(
        LOAN,
        "panel",
        status=status,
        loan=loan,
        form=form or _prompt_form(loan),
        error=shown.get("error", ""),
        message=shown.get("message", ""),
        prompts=screens.loan_prompts(db.session, loan.id),
        disbursements=screens.loan_disbursements(db.session, loan.id),
    )


def _shortcode_or_404(shortcode_id: int) -> Shortcode:
    shortcode = db.session.get(Shortcode, shortcode_id)
    if shortcode is None:
        abort(404)
    return shortcode


@bp.get("/")
@roles("admin", "officer")
def index():
    """Payouts waiting for approval and in flight, recent prompts, reversals."""
    found = screens.overview(db.session, current_user)
    return render_page(INDEX, "content", o=found, action=ActionForm())


@bp.get("/loans/<number>/panel")
@roles("admin", "officer")
def loan_panel(number: str):
    """The loan page's money panel: the STK button and prompts, or the payout."""
    return _panel(loan_or_404(number))


def _send(loan, form: PromptForm) -> StkRequest:
    """The prompt as a committed row (its token exists before Safaricom can answer), then
    sent. Raises ``prompts.PromptRefused`` with the reason before anything is written."""
    amount = None if form.amount.data is None else Decimal(form.amount.data)
    made = prompts.prompt_borrower(
        db.session,
        loan,
        actor=current_user,
        config=current_app.config,
        amount=amount,
        phone=form.phone.data,
    )
    db.session.commit()
    made = prompts.send_prompt(db.session, made.id, current_app.config)
    db.session.commit()
    return made


@bp.post("/loans/<number>/prompt")
@roles("admin", "officer")
def prompt(number: str):
    """Prompt the borrower's phone; the panel comes back with the prompt's live status."""
    loan = loan_or_404(number)
    form = _prompt_form(loan, request.form)
    if not form.validate():
        return _panel(loan, form, 422, error="Check the amount and the phone.")
    try:
        made = _send(loan, form)
    except prompts.PromptRefused as exc:
        db.session.rollback()
        return _panel(loan_or_404(number), form, 422, error=str(exc))
    failed = made.status == "failed"
    sent = f"Prompt sent to {mask_phone(made.phone)}."
    return action_done(
        (made.result_desc or "The prompt failed.") if failed else sent,
        fragment=lambda text: _panel(loan, **{"error" if failed else "message": text}),
        back_to=url_for("loans.loan", number=loan.number),
    )


@bp.get("/prompts/<int:request_id>")
@roles("admin", "officer")
def prompt_status(request_id: int):
    """One prompt's status; it polls itself until the prompt is settled and its payment is
    on the loan, and then tells the loan page to refresh its figures (``loan-changed``)."""
    found = db.session.get(StkRequest, request_id)
    if found is None or get_loan(db.session, current_user, found.loan.number) is None:
        abort(404)
    response = render_fragment(LOAN, "prompt", p=found)
    if found.status == "completed" and not found.posting:
        response.headers["HX-Trigger"] = "loan-changed"
    return response


@bp.get("/shortcodes/<int:shortcode_id>/balance")
@roles("admin")
def shortcode_balance(shortcode_id: int):
    """The latest balances Safaricom reported; polls while a query waits for its result."""
    shortcode = _shortcode_or_404(shortcode_id)
    query = daraja_queries.latest_balance(db.session, shortcode.id)
    return render_fragment(BALANCE, "balance", s=shortcode, q=query)


@bp.post("/shortcodes/<int:shortcode_id>/balance")
@roles("admin")
def ask_balance(shortcode_id: int):
    """Ask Safaricom for the shortcode's balances now (before approving a payout). Without
    JavaScript, back to the payout the form was on (or the shortcode's page)."""
    shortcode = _shortcode_or_404(shortcode_id)
    if not ActionForm().validate():
        abort(400)
    query = daraja_queries.new_query(db.session, "balance", shortcode, actor=current_user)
    db.session.commit()  # the row and its token exist before Safaricom can answer
    query = daraja_queries.send_query(db.session, query.id, current_app.config)
    db.session.commit()
    payout = parse_id(request.form.get("disbursement_id"))
    return action_done(
        query.error or "Asked Safaricom for the balances; they show when it answers.",
        fragment=lambda _: render_fragment(BALANCE, "balance", s=shortcode, q=query),
        back_to=url_for("disbursements.disbursement", disbursement_id=payout)
        if payout
        else url_for("configuration.shortcode", shortcode_id=shortcode.id),
    )
