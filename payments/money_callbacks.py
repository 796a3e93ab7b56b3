"""Safaricom's answers to the requests Marejesho makes (CONTRACT §5): the STK callback at
``/payments/c2b/<token>/stk`` and the results and queue timeouts of B2C, Transaction
Status, Account Balance and Reversal at ``/payments/c2b/<token>/<kind>/<result|timeout>``.

A blueprint of their own under the confirmations' prefix, with what makes a Safaricom
endpoint (payments/callbacks.py): no login, CSRF or session, tokens kept out of the logs,
Daraja-shaped answers and never a 5xx for a body. Each request row has a token of its
own: a token no row has is a 404 and nothing is written; a body that is not a result is
kept, quarantined, and acknowledged; a repeated result changes nothing. Every callback is
kept as it arrived in ``callback_log``, with what became of it."""

from __future__ import annotations

import hmac
import json
import logging
import re

from flask import Blueprint, Flask, jsonify, request
from sqlalchemy import select

from lenders.extensions import csrf, db
from lenders.web import public
from payments import callbacks, daraja_queries, disbursing, prompts, reversing
from payments.callbacks import ACKNOWLEDGED, KEPT_HEADERS, read_body
from payments.daraja import MalformedResult, parse_result, parse_stk_callback
from payments.intake import source_allowed
from payments.models import CallbackLog, Shortcode
from payments.money_models import DarajaQuery, Reversal, StkRequest

bp = Blueprint("money_callbacks", __name__, url_prefix=callbacks.bp.url_prefix)
csrf.exempt(bp)
bp.register_error_handler(413, callbacks.too_large)
bp.register_error_handler(Exception, callbacks.unexpected)
security_log = logging.getLogger("marejesho.security")
_TOKEN = re.compile(r"[0-9a-f]{40}")


def _find(model, token: str, **where):
    """The row whose callback token this is (compared in constant time), or None."""
    if not _TOKEN.fullmatch(token or ""):
        return None
    row = db.session.scalar(select(model).where(model.callback_token == token).filter_by(**where))
    if row is None or not hmac.compare_digest(row.callback_token, token):
        return None
    return row


def _refused(shortcode_id: int | None):
    """404 for a token no row has; 403 from an address the shortcode does not allow."""
    if shortcode_id is None:
        security_log.warning("result callback with an unknown token from %s", request.remote_addr)
        return jsonify(errorCode="404.001.01", errorMessage="Resource not found"), 404
    shortcode = db.session.get(Shortcode, shortcode_id)
    if not source_allowed(shortcode, request.remote_addr):
        security_log.warning("result callback from %s, not on the allow-list", request.remote_addr)
        return jsonify(errorCode="403.001.01", errorMessage="Forbidden"), 403
    return None


def _keep(shortcode_id: int, kind: str, body: bytes, outcome: str, **extra) -> None:
    environ = request.environ
    db.session.add(
        CallbackLog(
            shortcode_id=shortcode_id,
            kind=kind[:16],
            source_ip=request.remote_addr,
            headers={k: environ[key][:200] for k, key in KEPT_HEADERS.items() if key in environ},
            body=body.decode("utf-8", errors="replace").replace("\x00", "\ufffd"),
            outcome=outcome,
            **extra,
        )
    )


def _read(parse):
    """The body and what ``parse`` makes of it (or the reason it is not a result)."""
    body = read_body()
    try:
        return body, parse(json.loads(body)), None
    except (ValueError, MalformedResult) as exc:  # not JSON, not UTF-8, not a result
        return body, None, str(exc)[:500]


@bp.post("/<token>/stk")
@public
def stk_callback(token: str):
    """An STK prompt's outcome: applied to its row once; a paid one's money becomes a
    C2B payment, posted by the payments drain after the commit."""
    prompt = _find(StkRequest, token)
    if refusal := _refused(prompt.shortcode_id if prompt else None):
        return refusal
    body, outcome, problem = _read(parse_stk_callback)
    if outcome is None:
        _keep(prompt.shortcode_id, "stk", body, "quarantined", error=problem)
    else:
        what, payment_id = prompts.apply_outcome(db.session, prompt.id, outcome, via="callback")
        _keep(prompt.shortcode_id, "stk", body, what, payment_id=payment_id)
    db.session.commit()
    return jsonify(ACKNOWLEDGED)


def _target(kind: str, token: str):
    """The request row a result URL names, its shortcode's id, and the payment it is about
    (kept with the callback, so the payment's page lists it)."""
    if kind == "b2c":
        from lenders.disbursements import Disbursement

        row = _find(Disbursement, token)
        if row is None:
            return None, None, None
        # A payout approved without a shortcode gets one as it is sent, committed with
        # Daraja's answer: a result faster than that answer comes from the one it is paid from.
        shortcode = disbursing.paying_shortcode(db.session, row)
        return row, shortcode.id if shortcode else None, row.payment_id  # a refund's payment
    if kind == "reversal":
        row = _find(Reversal, token)
        return row, row.payment.shortcode_id if row else None, row.payment_id if row else None
    row = _find(DarajaQuery, token, kind=kind)
    return row, row.shortcode_id if row else None, row.payment_id if row else None


@bp.post("/<token>/<any(b2c, status, balance, reversal):kind>/<any(result, timeout):which>")
@public
def result_callback(token: str, kind: str, which: str):
    """A result or queue timeout for a payout, a status or balance query, or a reversal."""
    row, shortcode_id, payment_id = _target(kind, token)
    if refusal := _refused(shortcode_id):
        return refusal
    body, result, problem = _read(parse_result)
    kept = {"payment_id": payment_id}
    if result is None:
        _keep(shortcode_id, f"{kind}_{which}", body, "quarantined", error=problem, **kept)
    else:
        _keep(shortcode_id, f"{kind}_{which}", body, apply_result(kind, row, result, which), **kept)
    db.session.commit()
    return jsonify(ACKNOWLEDGED)


def apply_result(kind: str, row, result, which: str) -> str:
    """What the result did: ``applied``, ``duplicate``, ``stale`` or ``conflict``."""
    if kind == "b2c":
        return disbursing.apply_b2c_result(db.session, row.id, result, which)
    if kind == "reversal":
        return reversing.apply_reversal_result(db.session, row.id, result, which)
    if not daraja_queries.record_result(db.session, row, result, which):
        return "duplicate"
    if which == "result" and row.disbursement_id is not None:
        disbursing.settle_by_status(db.session, row, result)
    elif which == "result" and row.reversal_id is not None:
        reversing.settle_by_status(db.session, row, result)
    return "applied"


def init_app(app: Flask) -> None:
    """Register the result URLs; before ``callbacks.init_app``, which keeps the staff-only
    hooks off them."""
    app.register_blueprint(bp)
