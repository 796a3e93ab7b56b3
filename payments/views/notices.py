"""Notices (/payments/notices/): payments into the viewer's portfolio, and the unread
count the navigation shows on every page."""

from __future__ import annotations

from flask import Blueprint, abort, redirect, url_for
from flask_login import current_user

from lenders.extensions import db
from lenders.forms import ActionForm
from lenders.web import render_page, roles
from payments import notices

bp = Blueprint("notices", __name__, url_prefix="/payments/notices")


@bp.app_context_processor
def unread_notices_in_templates():
    """``unread_notices()`` for the navigation: the viewer's unread count (0 logged out)."""

    def unread_notices() -> int:
        if not current_user.is_authenticated:
            return 0
        return notices.unread_count(db.session, current_user.id)

    return {"unread_notices": unread_notices}


@bp.get("/")
@roles("admin", "officer")
def index():
    """Payments into the viewer's portfolio, newest first."""
    items = notices.latest_notices(db.session, current_user.id)
    return render_page("payments/notices/index.html", "content", items=items, action=ActionForm())


@bp.post("/read")
@roles("admin", "officer")
def read():
    """Mark every notice of the viewer read."""
    if not ActionForm().validate():
        abort(400)
    notices.mark_read(db.session, current_user.id)
    db.session.commit()
    return redirect(url_for("notices.index"), code=303)
