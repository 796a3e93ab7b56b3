"""The payments back-office: one blueprint per area, each named like its URL and its
template folder (``transactions`` answers at /payments/transactions/ from
templates/payments/transactions/). The ``payments`` blueprint itself is one payment, at
/payments/<id>, and the actions officers take on payments. Money out and back (``money``,
``disbursements``, ``reversals``) answers under /money/. Templates name payment statuses
and rules through the ``PaymentStatus`` and ``MatchRule`` globals, never as text."""

from __future__ import annotations

from flask import Flask

from payments.models import MatchRule, PaymentStatus
from payments.views import (
    alerts,
    callbacks,
    configuration,
    dashboard,
    disbursements,
    money,
    notices,
    payment,
    reassignments,
    reconciliation,
    refunds,
    reversals,
    sms,
    transactions,
    unmatched,
)

AREAS = (
    payment,
    dashboard,
    transactions,
    unmatched,
    reassignments,
    alerts,
    notices,
    sms,
    configuration,
    callbacks,
    reconciliation,
    money,
    disbursements,
    reversals,
    refunds,
)


def init_app(app: Flask) -> None:
    app.jinja_env.globals.update(PaymentStatus=PaymentStatus, MatchRule=MatchRule)
    for area in AREAS:
        app.register_blueprint(area.bp)
