"""The payments back-office area. Dashboard and transactions are open to staff; the
configuration of paybills and Daraja credentials to admins only."""

from __future__ import annotations

from flask import Blueprint

from lenders.web import render_page, roles

bp = Blueprint("payments", __name__, url_prefix="/payments")


@bp.get("/dashboard/")
@roles("admin", "officer")
def dashboard():
    """The day's money. Empty until payment intake is configured."""
    return render_page("payments/dashboard.html", "content")


@bp.get("/transactions/")
@roles("admin", "officer")
def transactions():
    """Every M-Pesa payment received. Empty until payment intake is configured."""
    return render_page("payments/transactions.html", "content")


@bp.get("/configuration/")
@roles("admin")
def configuration():
    """Paybills, tills and Daraja credentials (admins only)."""
    return render_page("payments/configuration.html", "content")
