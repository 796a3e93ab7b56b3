"""Staff (/lenders/staff/, admins): who may log in, with which role; adding people,
deactivating them, ending their sessions."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, url_for
from flask_login import current_user
from sqlalchemy import select

from lenders.extensions import db
from lenders.forms import ActionForm, StaffForm
from lenders.models import StaffUser
from lenders.staff import StaffError, change_access, save_staff
from lenders.web import render_page, roles

bp = Blueprint("staff", __name__, url_prefix="/lenders/staff")


def _page(form: StaffForm):
    people = db.session.scalars(
        select(StaffUser).order_by(StaffUser.active.desc(), StaffUser.name)
    ).all()
    return render_page(
        "lenders/staff/index.html", "content", people=people, form=form, action=ActionForm()
    )


@bp.get("/")
@roles("admin")
def index():
    """Staff and their roles; admins add people, deactivate them, end their sessions."""
    return _page(StaffForm(formdata=None))


@bp.post("/")
@roles("admin")
def add():
    """Add a member of staff (or update the one with that e-mail)."""
    form = StaffForm()
    if not form.validate():
        return _page(form), 422
    user = save_staff(
        db.session,
        email=form.email.data,
        name=form.name.data,
        role=form.role.data,
        password=form.password.data,
        actor=current_user,
    )
    db.session.commit()
    flash(f"{user.name} can log in as {user.role}.")
    return redirect(url_for("staff.index"), code=303)


@bp.post("/<int:staff_id>/<any(deactivate, activate, end_sessions):action>")
@roles("admin")
def change(staff_id: int, action: str):
    """Deactivate (which ends every session), reactivate, or end a person's sessions."""
    user = db.session.get(StaffUser, staff_id)
    if user is None:
        abort(404)
    try:
        change_access(db.session, user, action, actor=current_user)
    except StaffError as exc:
        flash(str(exc))
        return redirect(url_for("staff.index"), code=303)
    db.session.commit()
    flash(f"{user.name}: {action.replace('_', ' ')} done.")
    return redirect(url_for("staff.index"), code=303)
