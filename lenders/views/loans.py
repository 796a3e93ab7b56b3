"""Loans (/lenders/loans/): one loan with its schedule, repayments and audit trail."""

from __future__ import annotations

from flask import Blueprint, abort, request
from flask_login import current_user

from lenders import queries
from lenders.extensions import db
from lenders.web import nairobi_today, render_page, roles

bp = Blueprint("loans", __name__, url_prefix="/lenders/loans")
REGIONS = {"loan-summary": "summary", "loan-record": "record"}


@bp.get("/<number>")
@roles("admin", "officer")
def loan(number: str):
    """One loan: schedule with paid/due/overdue, repayments and their allocation, audit.
    A region of the page that refreshes itself (``HX-Target``) gets its block alone."""
    found = queries.get_loan(db.session, current_user, number)
    if found is None:
        abort(404)
    return render_page(
        "lenders/loans/loan.html",
        REGIONS.get(request.headers.get("HX-Target", ""), "content"),
        loan=found,
        repayments=queries.loan_repayments(db.session, [found.id]),
        events=queries.loan_audit_trail(db.session, found),
        today=nairobi_today(),
    )
