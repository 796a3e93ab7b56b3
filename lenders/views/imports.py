"""The loan-book upload (/lenders/import, admins): the ``import`` blueprint."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, url_for
from flask_login import current_user

from lenders.extensions import db
from lenders.forms import ImportForm
from lenders.importer import import_loans
from lenders.loanbook import utf8_lines
from lenders.text import plain_text
from lenders.web import render_page, roles

bp = Blueprint("import", __name__, url_prefix="/lenders/import")
TEMPLATE = "lenders/import/index.html"


@bp.get("")
@roles("admin")
def form():
    """The loan-book upload form."""
    return render_page(TEMPLATE, "content", form=ImportForm(), errors=[])


@bp.post("")
@roles("admin")
def upload():
    """Import a loan-book CSV: all rows or none, every bad row listed with its line."""
    form = ImportForm()
    if not form.validate():
        return render_page(TEMPLATE, "content", form=form, errors=[]), 422
    upload = form.file.data
    result = import_loans(
        db.session,
        utf8_lines(upload.stream),
        actor=current_user,
        source_name=plain_text(upload.filename or "")[:100] or "upload",
    )
    if not result.ok:
        db.session.rollback()
        return render_page(TEMPLATE, "content", form=form, errors=result.errors), 422
    db.session.commit()
    flash(
        f"Imported {result.loans} loans ({result.borrowers_created} new borrowers, "
        f"{result.officers_created} new officers)."
    )
    return redirect(url_for("borrowers.index"), code=303)
