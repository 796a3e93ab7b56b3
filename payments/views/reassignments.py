"""Approvals (/payments/reassignments/, admins): officers' reassignments waiting under
maker-checker. Approving or rejecting answers with the updated list and
payments-changed (a form posted without JavaScript is redirected back)."""

from __future__ import annotations

from flask import Blueprint, abort, url_for
from flask_login import current_user
from sqlalchemy import select

from lenders.extensions import db
from lenders.forms import ActionForm
from lenders.web import action_done, render_page, roles
from payments import backoffice
from payments.models import ReassignmentRequest
from payments.views.payment import PAYMENTS_CHANGED

bp = Blueprint("reassignments", __name__, url_prefix="/payments/reassignments")
PAGE = "payments/reassignments/index.html"


def _page(block: str, **shown):
    """The page or its ``approvals`` block; ``shown`` holds a ``message`` or ``error``."""
    waiting = db.session.scalars(
        select(ReassignmentRequest)
        .where(ReassignmentRequest.status == "pending")
        .order_by(ReassignmentRequest.requested_at)
    ).all()
    return render_page(
        PAGE,
        block,
        waiting=waiting,
        action=ActionForm(),
        maker_checker=backoffice.maker_checker_on(db.session),
        message=shown.get("message", ""),
        error=shown.get("error", ""),
    )


@bp.get("/")
@roles("admin")
def index():
    """Officers' reassignments waiting for approval (maker-checker)."""
    return _page("content")


@bp.post("/<int:request_id>/<any(approve, reject):decision>")
@roles("admin")
def decide(request_id: int, decision: str):
    """Approve (money moves now) or reject a waiting reassignment; one already decided,
    or whose payment moved since, is refused with the reason (422)."""
    if not ActionForm().validate():
        abort(400)
    try:
        backoffice.decide_reassignment(
            db.session, request_id, approve=decision == "approve", actor=current_user
        )
    except backoffice.BackofficeError as exc:
        db.session.rollback()
        return _page("approvals", error=str(exc)), 422
    db.session.commit()
    return action_done(
        f"Reassignment {'approved' if decision == 'approve' else 'rejected'}.",
        fragment=lambda text: _page("approvals", message=text),
        back_to=url_for("reassignments.index"),
        event=PAYMENTS_CHANGED,
    )
