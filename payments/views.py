"""The payments back-office: dashboard, transactions, a payment, the unmatched queue, and
the actions officers take on payments. Views parse, call a service, render."""

from __future__ import annotations

from datetime import UTC, date, datetime

from flask import Blueprint, Response, abort, flash, request, stream_with_context, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import HiddenField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from lenders.csvfile import csv_lines
from lenders.extensions import db
from lenders.models import Loan
from lenders.money import InvalidAmount, parse_amount
from lenders.references import reference_key
from lenders.web import (
    hx_redirect,
    nairobi_today,
    parse_id,
    render_fragment,
    render_page,
    roles,
    wants_fragment,
)
from payments import backoffice, reports
from payments.exports import transaction_rows
from payments.models import C2BPayment, CallbackLog, ReassignmentRequest, Shortcode

bp = Blueprint("payments", __name__, url_prefix="/payments")
STATUSES = ("received", "posted", "unmatched", "failed", "reversed", "review")
RULES = ("bill_ref", "single_loan", "amount", "oldest_due", "manual")


class ReasonForm(FlaskForm):
    """An action on a payment: where to, and why (always required)."""

    loan_number = StringField("Loan number", validators=[Optional(), Length(max=40)])
    borrower_id = HiddenField()
    reason = TextAreaField("Reason", validators=[DataRequired("Say why."), Length(max=500)])


class ActionForm(FlaskForm):
    """Button-only actions: carries the CSRF token."""


FIRST_DAY, LAST_DAY = date(1900, 1, 1), date(2999, 12, 31)


def _filters() -> reports.TransactionFilter:
    """The filters in the URL; a value that is not an amount or a day is left out."""
    args = request.args

    def money(name):
        try:
            return parse_amount(args.get(name, ""))
        except InvalidAmount:
            return None

    def day(name):
        try:
            found = datetime.strptime(args.get(name, ""), "%Y-%m-%d").date()
        except ValueError:
            return None
        return found if FIRST_DAY <= found <= LAST_DAY else None

    status = args.get("status", "")
    rule = args.get("rule", "")
    return reports.TransactionFilter(
        phone=args.get("phone", "").strip()[:40],
        amount_min=money("amount_min"),
        amount_max=money("amount_max"),
        date_from=day("date_from"),
        date_to=day("date_to"),
        status=status if status in STATUSES else "",
        rule=rule if rule in RULES else "",
        shortcode=args.get("shortcode", "").strip()[:12],
        loan=args.get("loan", "").strip()[:40],
        q=args.get("q", "").strip()[:60],
    )


def _payment_or_404(payment_id: int) -> C2BPayment:
    payment = reports.get_payment(db.session, current_user, payment_id)
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


@bp.get("/dashboard/")
@roles("admin", "officer")
def dashboard():
    """The day's money, what waits for a person, portfolio at risk; refreshes itself."""
    figures = reports.dashboard(db.session, current_user, nairobi_today())
    found = reports.alerts(db.session, datetime.now(UTC)) if current_user.is_admin else []
    block = "figures" if request.headers.get("HX-Target") == "figures" else "content"
    return render_page(
        "payments/dashboard.html", block, d=figures, alerts=found, now=datetime.now(UTC)
    )


@bp.get("/transactions/")
@roles("admin", "officer")
def transactions():
    """Every payment the viewer may see, filtered, newest first, keyset pages."""
    filters = _filters()
    before = parse_id(request.args.get("before"))
    rows, cursor = reports.find_payments(db.session, current_user, filters, before)
    shortcodes = db.session.scalars(select(Shortcode.number).order_by(Shortcode.number)).all()
    target = request.headers.get("HX-Target")
    block = {"more-payments": "rows", "results": "results"}.get(target, "content")
    args = {k: v for k, v in request.args.items() if k != "before" and v}
    return render_page(
        "payments/transactions.html",
        block,
        rows=rows,
        cursor=cursor,
        args=args,
        f=filters,
        statuses=STATUSES,
        rules=RULES,
        shortcodes=shortcodes,
    )


@bp.get("/transactions/export.csv")
@roles("admin", "officer")
def export_transactions():
    """The filtered set as CSV, the same columns as ``flask payments export-transactions``."""
    query = reports.filtered_query(current_user, _filters())

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M")
    return Response(
        stream_with_context(csv_lines(transaction_rows(db.session, query))),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="transactions-{stamp}.csv"'},
    )


@bp.get("/<int:payment_id>")
@roles("admin", "officer")
def payment(payment_id: int):
    """One payment: parsing, the decision and its reason, allocations, audit, callbacks."""
    found = _payment_or_404(payment_id)
    return render_page("payments/payment.html", "content", **_payment_context(found))


def _payment_context(found: C2BPayment, form: ReasonForm | None = None, error: str = ""):
    from lenders.models import AuditEvent

    events = db.session.scalars(
        select(AuditEvent)
        .where(AuditEvent.entity_type == "c2b_payment", AuditEvent.entity_id == str(found.id))
        .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
    ).all()
    logs = (
        db.session.scalars(
            select(CallbackLog).where(CallbackLog.payment_id == found.id).order_by(CallbackLog.id)
        ).all()
        if current_user.is_admin
        else []
    )
    suggestions = (
        reports.suggestions_for(db.session, current_user, found)
        if found.status in backoffice.ASSIGNABLE
        else []
    )
    pending = db.session.scalars(
        select(ReassignmentRequest).where(
            ReassignmentRequest.payment_id == found.id, ReassignmentRequest.status == "pending"
        )
    ).all()
    return {
        "p": found,
        "events": events,
        "logs": logs,
        "suggestions": suggestions,
        "form": form or ReasonForm(),
        "error": error,
        "pending": pending,
        "action": ActionForm(),
    }


def _act(payment_id: int, work):
    """Run one action on a payment in one transaction; re-render the payment panel, with
    the officer's form errors on 422."""
    found = _payment_or_404(payment_id)
    form = ReasonForm()
    if not form.validate():
        return render_page("payments/payment.html", "panel", **_payment_context(found, form)), 422
    try:
        message = work(found, form)
    except backoffice.BackofficeError as exc:
        db.session.rollback()
        found = _payment_or_404(payment_id)
        return render_page(
            "payments/payment.html", "panel", **_payment_context(found, form, str(exc))
        ), 422
    db.session.commit()
    flash(message)
    response = hx_redirect(url_for("payments.payment", payment_id=payment_id))
    response.headers["HX-Trigger"] = "payments-changed"
    return response


@bp.post("/<int:payment_id>/assign")
@roles("admin", "officer")
def assign(payment_id: int):
    """Place an unmatched payment on a loan, or on a borrower (matching picks the loan)."""

    def work(found, form):
        if form.loan_number.data:
            loan = _visible_loan(form.loan_number.data)
            if loan is None:
                raise backoffice.BackofficeError(f"no loan {form.loan_number.data} you can use")
            backoffice.assign_payment(
                db.session, found.id, actor=current_user, reason=form.reason.data, loan=loan
            )
            return f"Payment {found.trans_id} posted to {loan.number}."
        borrower_id = parse_id(form.borrower_id.data)
        if borrower_id is None or not _borrower_visible(borrower_id):
            raise backoffice.BackofficeError("choose a borrower or type a loan number")
        backoffice.assign_payment(
            db.session,
            found.id,
            actor=current_user,
            reason=form.reason.data,
            borrower_id=borrower_id,
        )
        return f"Payment {found.trans_id} assigned."

    return _act(payment_id, work)


def _borrower_visible(borrower_id: int) -> bool:
    from lenders.queries import get_borrower

    return get_borrower(db.session, current_user, borrower_id) is not None


@bp.post("/<int:payment_id>/reassign")
@roles("admin", "officer")
def reassign(payment_id: int):
    """Move a posted payment to another loan (or ask an admin, under maker-checker)."""

    def work(found, form):
        loan = _visible_loan(form.loan_number.data or "")
        if loan is None:
            raise backoffice.BackofficeError(f"no loan {form.loan_number.data!r} you can use")
        outcome = backoffice.reassign_payment(
            db.session, found.id, loan, actor=current_user, reason=form.reason.data
        )
        if isinstance(outcome, ReassignmentRequest):
            return f"Reassignment to {loan.number} is waiting for an admin's approval."
        return f"Payment {found.trans_id} moved to {loan.number}."

    return _act(payment_id, work)


@bp.post("/<int:payment_id>/rematch")
@roles("admin", "officer")
def rematch(payment_id: int):
    """Run matching again on an unmatched or failed payment."""
    found = _payment_or_404(payment_id)
    if not ActionForm().validate():
        abort(400)
    try:
        backoffice.rematch_payment(db.session, found.id, actor=current_user)
    except backoffice.BackofficeError as exc:
        db.session.rollback()
        flash(str(exc))
        return hx_redirect(url_for("payments.payment", payment_id=payment_id))
    db.session.commit()
    found = _payment_or_404(payment_id)
    flash(f"Matched again: {found.status}.")
    return hx_redirect(url_for("payments.payment", payment_id=payment_id))


@bp.get("/unmatched/")
@roles("admin", "officer")
def unmatched():
    """Unmatched and failed payments, oldest first, with the best suggestion for each."""
    queue = reports.unmatched_queue(db.session)
    best = {p.id: reports.suggestions_for(db.session, current_user, p)[:3] for p in queue}
    return render_page(
        "payments/unmatched.html",
        "content",
        queue=queue,
        best=best,
        action=ActionForm(),
        now=datetime.now(UTC),
    )


@bp.post("/reprocess")
@roles("admin", "officer")
def reprocess():
    """Match again a selection of unmatched or failed payments; answers a progress list."""
    if not ActionForm().validate():
        abort(400)
    ids = [i for i in map(parse_id, request.form.getlist("payment_id")) if i is not None][:200]
    results = []
    for payment_id in ids:
        if reports.get_payment(db.session, current_user, payment_id) is None:
            continue
        try:
            found = backoffice.rematch_payment(db.session, payment_id, actor=current_user)
            db.session.commit()
            results.append((found.trans_id, found.status, found.reason))
        except backoffice.BackofficeError as exc:
            db.session.rollback()
            results.append((str(payment_id), "skipped", str(exc)))
    if not wants_fragment():
        posted = sum(1 for _, status, _ in results if status == "posted")
        flash(f"Matched {len(results)} payment(s) again: {posted} posted.")
        return hx_redirect(url_for("payments.unmatched"))
    response = render_fragment("payments/unmatched.html", "progress", results=results)
    response.headers["HX-Trigger"] = "payments-changed"
    return response


@bp.get("/reassignments/")
@roles("admin")
def reassignments():
    """Officers' reassignments waiting for approval (maker-checker)."""
    waiting = db.session.scalars(
        select(ReassignmentRequest)
        .where(ReassignmentRequest.status == "pending")
        .order_by(ReassignmentRequest.requested_at)
    ).all()
    return render_page(
        "payments/reassignments.html",
        "content",
        waiting=waiting,
        action=ActionForm(),
        maker_checker=backoffice.maker_checker_on(db.session),
    )


@bp.post("/reassignments/<int:request_id>/<any(approve, reject):decision>")
@roles("admin")
def decide(request_id: int, decision: str):
    """Approve (money moves now) or reject a waiting reassignment."""
    if not ActionForm().validate():
        abort(400)
    try:
        backoffice.decide_reassignment(
            db.session, request_id, approve=decision == "approve", actor=current_user
        )
        db.session.commit()
        flash(f"Reassignment {'approved' if decision == 'approve' else 'rejected'}.")
    except backoffice.BackofficeError as exc:
        db.session.rollback()
        flash(str(exc))
    return hx_redirect(url_for("payments.reassignments"))


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
    return hx_redirect(url_for("payments.reassignments"))


@bp.get("/alerts/")
@roles("admin")
def alerts():
    """What needs an admin's attention."""
    found = reports.alerts(db.session, datetime.now(UTC))
    return render_page("payments/alerts.html", "content", alerts=found)
