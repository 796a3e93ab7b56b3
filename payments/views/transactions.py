"""Transactions (/payments/transactions/): every payment the viewer may see, filtered,
newest first in keyset pages, and the same set as CSV."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Response, request, stream_with_context
from flask_login import current_user
from sqlalchemy import select

from lenders.csvfile import csv_lines
from lenders.extensions import db
from lenders.web import parse_id, render_page, roles
from payments import transactions
from payments.exports import transaction_rows
from payments.forms import TransactionFilterForm
from payments.models import Shortcode

bp = Blueprint("transactions", __name__, url_prefix="/payments/transactions")
# Which block answers an HTMX request, by the region asking: the next page of rows, or
# the results of changed filters.
BLOCKS = {"more-payments": "rows", "results": "results"}


def _filter_form(shortcodes=()) -> TransactionFilterForm:
    return TransactionFilterForm(formdata=request.args, meta={"csrf": False}, shortcodes=shortcodes)


@bp.get("/")
@roles("admin", "officer")
def index():
    """Every payment the viewer may see, filtered, newest first, keyset pages."""
    numbers = db.session.scalars(select(Shortcode.number).order_by(Shortcode.number)).all()
    form = _filter_form(numbers)
    before = parse_id(request.args.get("before"))
    rows, cursor = transactions.find_payments(db.session, current_user, form.to_filter(), before)
    return render_page(
        "payments/transactions/index.html",
        BLOCKS.get(request.headers.get("HX-Target", ""), "content"),
        rows=rows,
        cursor=cursor,
        args={k: v for k, v in request.args.items() if k != "before" and v},
        form=form,
    )


@bp.get("/export.csv")
@roles("admin", "officer")
def export():
    """The filtered set as CSV, the same columns as ``flask payments export-transactions``."""
    query = transactions.filtered_query(current_user, _filter_form().to_filter())
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M")
    return Response(
        stream_with_context(csv_lines(transaction_rows(db.session, query))),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="transactions-{stamp}.csv"'},
    )
