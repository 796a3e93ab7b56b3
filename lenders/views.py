"""The lending book's screens: borrowers, a borrower, a loan, and the loan-book upload."""

from __future__ import annotations

from flask import Blueprint, abort, flash, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.file import FileAllowed, FileField, FileRequired
from sqlalchemy import func, select
from wtforms import PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Regexp

from lenders import queries
from lenders.book import record_audit
from lenders.extensions import db
from lenders.importer import import_loans
from lenders.loanbook import EMAIL, utf8_lines
from lenders.models import StaffUser
from lenders.text import plain_text
from lenders.web import hx_redirect, nairobi_today, parse_id, render_page, roles

bp = Blueprint("lenders", __name__, url_prefix="/lenders")


class ImportForm(FlaskForm):
    file = FileField(
        "Loan book (CSV)", validators=[FileRequired(), FileAllowed(["csv"], "A .csv file, please")]
    )


@bp.get("/borrowers/")
@roles("admin", "officer")
def borrowers():
    """Borrowers the viewer may see, searched by name, ID, loan number or phone in any
    form; keyset pages via ``after``. HTMX asks for the rows block only."""
    q = request.args.get("q", "")[:100]
    after = parse_id(request.args.get("after"))
    page, next_after = queries.find_borrowers(db.session, current_user, q, after)
    block = "rows" if request.headers.get("HX-Target") == "more-row" else "results"
    return render_page(
        "lenders/borrowers.html", block, borrowers=page, q=q, next_after=next_after, after=after
    )


@bp.get("/borrowers/<int:borrower_id>")
@roles("admin", "officer")
def borrower(borrower_id: int):
    """One borrower: phones, credit, loans and payments (404 outside the viewer's reach)."""
    person = queries.get_borrower(db.session, current_user, borrower_id)
    if person is None:
        abort(404)
    loans = queries.borrower_loans(db.session, current_user, person)
    repayments = queries.loan_repayments(db.session, [loan.id for loan in loans])
    return render_page(
        "lenders/borrower.html",
        "content",
        borrower=person,
        loans=loans,
        repayments=repayments,
        today=nairobi_today(),
    )


@bp.get("/loans/<number>")
@roles("admin", "officer")
def loan(number: str):
    """One loan: schedule with paid/due/overdue, repayments and their allocation, audit."""
    found = queries.get_loan(db.session, current_user, number)
    if found is None:
        abort(404)
    return render_page(
        "lenders/loan.html",
        "content",
        loan=found,
        repayments=queries.loan_repayments(db.session, [found.id]),
        events=queries.loan_audit_trail(db.session, found),
        today=nairobi_today(),
    )


@bp.get("/import")
@roles("admin")
def import_form():
    """The loan-book upload form."""
    return render_page("lenders/import.html", "content", form=ImportForm(), errors=[])


@bp.post("/import")
@roles("admin")
def import_upload():
    """Import a loan-book CSV: all rows or none, every bad row listed with its line."""
    form = ImportForm()
    if not form.validate():
        return render_page("lenders/import.html", "content", form=form, errors=[]), 422
    upload = form.file.data
    result = import_loans(
        db.session,
        utf8_lines(upload.stream),
        actor=current_user,
        source_name=plain_text(upload.filename or "")[:100] or "upload",
    )
    if not result.ok:
        db.session.rollback()
        return render_page("lenders/import.html", "content", form=form, errors=result.errors), 422
    db.session.commit()
    flash(
        f"Imported {result.loans} loans ({result.borrowers_created} new borrowers, "
        f"{result.officers_created} new officers)."
    )
    return hx_redirect(url_for("lenders.borrowers"))


@bp.post("/borrowers/<int:borrower_id>/sms")
@roles("admin", "officer")
def borrower_sms(borrower_id: int):
    """The borrower's SMS language and opt-out (audited)."""
    person = queries.get_borrower(db.session, current_user, borrower_id)
    if person is None:
        abort(404)
    before = {"sms_language": person.sms_language, "sms_opt_out": person.sms_opt_out}
    language = request.form.get("sms_language", "en")
    person.sms_language = language if language in ("en", "sw") else "en"
    person.sms_opt_out = request.form.get("sms_opt_out") == "1"
    record_audit(
        db.session,
        "borrower.sms",
        person,
        actor=current_user,
        before=before,
        after={"sms_language": person.sms_language, "sms_opt_out": person.sms_opt_out},
    )
    db.session.commit()
    flash("SMS preferences saved.")
    return hx_redirect(url_for("lenders.borrower", borrower_id=borrower_id))


class StaffForm(FlaskForm):
    email = StringField(
        "Email",
        validators=[
            DataRequired(),
            Regexp(EMAIL.pattern, message="Not an e-mail address."),
            Length(max=254),
        ],
    )
    name = StringField("Name", validators=[DataRequired(), Length(max=120)])
    role = SelectField(
        "Role", choices=[SelectChoice("officer", "Loan officer"), SelectChoice("admin", "Admin")]
    )
    password = PasswordField(
        "Password (at least 10 characters)", validators=[DataRequired(), Length(min=10, max=200)]
    )


@bp.get("/staff/")
@roles("admin")
def staff():
    """Staff and their roles; admins add people, deactivate them, end their sessions."""
    people = db.session.scalars(
        select(StaffUser).order_by(StaffUser.active.desc(), StaffUser.name)
    ).all()
    return render_page("lenders/staff.html", "content", people=people, form=StaffForm(), errors={})


@bp.post("/staff/")
@roles("admin")
def add_staff():
    """Add a member of staff (or update the one with that e-mail)."""
    form = StaffForm()
    people = db.session.scalars(select(StaffUser).order_by(StaffUser.name)).all()
    if not form.validate():
        errors = {name: field.errors[0] for name, field in form._fields.items() if field.errors}
        return render_page(
            "lenders/staff.html", "content", people=people, form=form, errors=errors
        ), 422
    email = form.email.data.strip().lower()
    user = db.session.scalar(select(StaffUser).where(func.lower(StaffUser.email) == email))
    created = user is None
    if created:
        user = StaffUser(email=email, name=form.name.data, role=form.role.data)
        db.session.add(user)
    user.name, user.role, user.active = form.name.data.strip(), form.role.data, True
    user.set_password(form.password.data)
    db.session.flush()
    record_audit(
        db.session,
        "staff.created" if created else "staff.updated",
        user,
        actor=current_user,
        after={"email": email, "role": user.role},
    )
    db.session.commit()
    flash(f"{user.name} can log in as {user.role}.")
    return hx_redirect(url_for("lenders.staff"))


@bp.post("/staff/<int:staff_id>/<any(deactivate, activate, end_sessions):action>")
@roles("admin")
def change_staff(staff_id: int, action: str):
    """Deactivate (which ends every session), reactivate, or end a person's sessions."""
    user = db.session.get(StaffUser, staff_id)
    if user is None:
        abort(404)
    if user.id == current_user.id and action != "end_sessions":
        flash("You cannot change your own access here.")
        return hx_redirect(url_for("lenders.staff"))
    before = {"active": user.active}
    if action == "deactivate":
        user.active = False
    elif action == "activate":
        user.active = True
    user.end_sessions()
    record_audit(
        db.session,
        f"staff.{action}",
        user,
        actor=current_user,
        before=before,
        after={"active": user.active},
    )
    db.session.commit()
    flash(f"{user.name}: {action.replace('_', ' ')} done.")
    return hx_redirect(url_for("lenders.staff"))
