"""Borrowers (/lenders/borrowers/): the searchable list, one borrower, their SMS settings."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, request, url_for
from flask_login import current_user

from lenders import queries
from lenders.extensions import db
from lenders.forms import BorrowerSmsForm
from lenders.models import Borrower
from lenders.staff import set_sms_preferences
from lenders.web import nairobi_today, parse_id, render_page, roles

bp = Blueprint("borrowers", __name__, url_prefix="/lenders/borrowers")


def _borrower_or_404(borrower_id: int) -> Borrower:
    person = queries.get_borrower(db.session, current_user, borrower_id)
    if person is None:
        abort(404)
    return person


@bp.get("/")
@roles("admin", "officer")
def index():
    """Borrowers the viewer may see, searched by name, ID, loan number or phone in any
    form; keyset pages via ``after``. HTMX asks for the rows block only."""
    q = request.args.get("q", "")[:100]
    after = parse_id(request.args.get("after"))
    page, next_after = queries.find_borrowers(db.session, current_user, q, after)
    block = "rows" if request.headers.get("HX-Target") == "more-row" else "results"
    return render_page(
        "lenders/borrowers/index.html",
        block,
        borrowers=page,
        q=q,
        next_after=next_after,
        after=after,
    )


@bp.get("/<int:borrower_id>")
@roles("admin", "officer")
def borrower(borrower_id: int):
    """One borrower: phones, credit, loans and payments (404 outside the viewer's reach)."""
    person = _borrower_or_404(borrower_id)
    loans = queries.borrower_loans(db.session, current_user, person)
    return render_page(
        "lenders/borrowers/borrower.html",
        "content",
        borrower=person,
        loans=loans,
        repayments=queries.loan_repayments(db.session, [loan.id for loan in loans]),
        form=BorrowerSmsForm(obj=person, formdata=None),
        today=nairobi_today(),
    )


@bp.post("/<int:borrower_id>/sms")
@roles("admin", "officer")
def sms(borrower_id: int):
    """The borrower's SMS language and opt-out (audited)."""
    person = _borrower_or_404(borrower_id)
    form = BorrowerSmsForm()
    form.validate()  # the language falls back to English; the checkbox is on or off
    set_sms_preferences(
        db.session,
        person,
        language=form.sms_language.data,
        opt_out=form.sms_opt_out.data,
        actor=current_user,
    )
    db.session.commit()
    flash("SMS preferences saved.")
    return redirect(url_for("borrowers.borrower", borrower_id=borrower_id), code=303)
