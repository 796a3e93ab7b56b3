"""Callbacks (/payments/callbacks/, admins): quarantined and conflicting callbacks, newest
first in keyset pages, each linked to its payment (payments/quarantine.py reads them)."""

from __future__ import annotations

from flask import Blueprint, request

from lenders.extensions import db
from lenders.web import parse_id, render_page, roles
from payments.models import ATTENTION_OUTCOMES
from payments.quarantine import find_callbacks

bp = Blueprint("callbacks", __name__, url_prefix="/payments/callbacks")


@bp.get("/")
@roles("admin")
def index():
    """Quarantined and conflicting callbacks, newest first, each linked to its payment."""
    outcome = request.args.get("outcome", "")
    outcome = outcome if outcome in ATTENTION_OUTCOMES else ""
    before = parse_id(request.args.get("before"))
    rows, cursor = find_callbacks(db.session, outcome or None, before)
    block = "rows" if request.headers.get("HX-Target") == "more-callbacks" else "content"
    return render_page(
        "payments/callbacks/index.html",
        block,
        rows=rows,
        cursor=cursor,
        outcome=outcome,
        outcomes=ATTENTION_OUTCOMES,
    )
