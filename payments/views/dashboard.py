"""The dashboard (/payments/dashboard/): the day's money, what waits for a person,
portfolio at risk. Its figures refresh themselves (every 30 s, and on payments-changed)."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, request
from flask_login import current_user

from lenders.extensions import db
from lenders.web import nairobi_today, render_page, roles
from payments.alerts import alerts
from payments.dashboard import dashboard

bp = Blueprint("dashboard", __name__, url_prefix="/payments/dashboard")


@bp.get("/")
@roles("admin", "officer")
def index():
    """The dashboard; the ``figures`` region alone when it refreshes itself."""
    figures = dashboard(db.session, current_user, nairobi_today())
    found = alerts(db.session, datetime.now(UTC)) if current_user.is_admin else []
    block = "figures" if request.headers.get("HX-Target") == "figures" else "content"
    return render_page(
        "payments/dashboard/index.html", block, d=figures, alerts=found, now=datetime.now(UTC)
    )
