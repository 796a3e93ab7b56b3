"""Alerts (/payments/alerts/, admins): failed, stale or conflicting payments, and
paybills not heard from."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint

from lenders.extensions import db
from lenders.web import render_page, roles
from payments.alerts import alerts

bp = Blueprint("alerts", __name__, url_prefix="/payments/alerts")


@bp.get("/")
@roles("admin")
def index():
    """What needs an admin's attention."""
    found = alerts(db.session, datetime.now(UTC))
    return render_page("payments/alerts/index.html", "content", alerts=found)
