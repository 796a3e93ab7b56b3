"""The unmatched queue (/payments/unmatched/): payments the matcher could not place,
oldest first, each with its best suggestions. Matching a selection again is
``payments.reprocess``; the queue refreshes itself on payments-changed."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, request
from flask_login import current_user

from lenders.extensions import db
from lenders.forms import ActionForm
from lenders.web import render_page, roles
from payments.suggestions import suggestions_for
from payments.unmatched import unmatched_queue

bp = Blueprint("unmatched", __name__, url_prefix="/payments/unmatched")


@bp.get("/")
@roles("admin", "officer")
def index():
    """Unmatched and failed payments, oldest first, with the best suggestion for each;
    the ``queue`` region alone when it refreshes itself."""
    queue = unmatched_queue(db.session)
    best = {p.id: suggestions_for(db.session, current_user, p)[:3] for p in queue}
    block = "queue" if request.headers.get("HX-Target") == "unmatched-queue" else "content"
    return render_page(
        "payments/unmatched/index.html",
        block,
        queue=queue,
        best=best,
        action=ActionForm(),
        now=datetime.now(UTC),
    )
