"""The public endpoints Safaricom calls: /payments/c2b/<token>/validation and
/confirmation. Exempt from CSRF and login and nothing else: a wrong token is a 404 with
nothing written, every answer is Daraja-shaped JSON, and no body makes them answer 5xx."""

from __future__ import annotations

import hmac
import logging
import re
import time
from typing import NamedTuple

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import bindparam, event, select
from werkzeug.exceptions import RequestEntityTooLarge

from lenders.database import Prepared
from lenders.extensions import csrf, db, limiter
from lenders.web import public
from payments import intake
from payments.jobs import enqueue, process_payment_job
from payments.models import CallbackLog, Shortcode

bp = Blueprint("c2b", __name__, url_prefix="/payments/c2b")
csrf.exempt(bp)
security_log = logging.getLogger("marejesho.security")
MAX_BODY = 64 * 1024
_TOKEN = re.compile(r"[0-9a-f]{32,64}")
ACKNOWLEDGED = {"ResultCode": 0, "ResultDesc": "Accepted"}
KEPT_HEADERS = ("User-Agent", "Content-Type", "Content-Length", "X-Forwarded-For", "X-Real-IP")


class RedactCallbackTokens(logging.Filter):
    """Access logs show /payments/c2b/***/confirmation (and SMS delivery reports' URL):
    the tokens are secrets."""

    pattern = re.compile(r"(/payments/(?:c2b|sms)/)[^/\s]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(
                self.pattern.sub(r"\1***", a) if isinstance(a, str) else a
                for a in (record.args if isinstance(record.args, tuple) else (record.args,))
            )
        if isinstance(record.msg, str):
            record.msg = self.pattern.sub(r"\1***", record.msg)
        return True


@limiter.request_filter
def _callbacks_are_never_rate_limited() -> bool:
    """Safaricom's callbacks carry money: their token guards them, never a rate limit (and
    the limiter's checks would cost a confirmation a tenth of its time)."""
    return request.blueprint == bp.name


def init_app(app) -> None:
    """Register the blueprint and keep its tokens out of the access logs."""
    app.register_blueprint(bp)
    app.register_error_handler(405, _wrong_method)
    for name in ("werkzeug", "gunicorn.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactCallbackTokens) for f in logger.filters):
            logger.addFilter(RedactCallbackTokens())


def _wrong_method(error):
    """A wrong method fails in routing, before the blueprint is known: answer callback
    paths in Daraja's shape, every other path with the app's own error page."""
    if request.path.startswith(bp.url_prefix + "/"):
        return jsonify(errorCode="405.001", errorMessage="Method Not Allowed"), 405
    return error


_SHORTCODE_BY_TOKEN = Prepared(
    select(
        Shortcode.id,
        Shortcode.number,
        Shortcode.callback_token,
        Shortcode.allowed_ips,
        Shortcode.validation_policy,
    ).where(Shortcode.callback_token == bindparam("token"))
)


class CallbackShortcode(NamedTuple):
    """What a callback needs of its shortcode."""

    id: int
    number: str
    callback_token: str
    allowed_ips: str
    validation_policy: str


# A server process trusts what it read of a shortcode for this long: during a burst of
# callbacks the lookup is not repeated for each. A change made through this process (the
# admin screen, a command) is seen at once; one made through another within this time.
SHORTCODE_TTL = 2.0
_changes = [0]  # bumped whenever a shortcode is written through the ORM in this process


@event.listens_for(Shortcode, "after_insert")
@event.listens_for(Shortcode, "after_update")
@event.listens_for(Shortcode, "after_delete")
def _shortcode_changed(*_args) -> None:
    _changes[0] += 1


def find_shortcode(token: str):
    """The shortcode whose callback token this is (compared in constant time): a plain row
    of what a callback needs, not the model, whose encrypted credentials would be
    decrypted on every callback. Only real shortcodes are remembered (a few), never a
    wrong token."""
    if not _TOKEN.fullmatch(token or ""):  # before any query: no NUL reaches the driver
        return None
    known = current_app.extensions.setdefault("marejesho.shortcodes", {})
    now = time.monotonic()
    remembered = known.get(token)
    if remembered and remembered[0] == _changes[0] and now - remembered[1] < SHORTCODE_TTL:
        return remembered[2]
    cursor = _SHORTCODE_BY_TOKEN.run(db.session.connection(), {"token": token})
    row = cursor.fetchone()
    cursor.close()
    shortcode = CallbackShortcode(*row) if row else None
    if shortcode is None or not hmac.compare_digest(shortcode.callback_token, token):
        known.pop(token, None)
        return None
    known[token] = (_changes[0], now, shortcode)
    return shortcode


def read_body() -> bytes:
    """The raw body, at most 64 KiB (413 beyond)."""
    request.max_content_length = MAX_BODY + 1  # one byte more, to see that there is more
    body = request.stream.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise RequestEntityTooLarge()
    return body


def gatekeep(token: str):
    """The shortcode, or the answer to refuse with (404 wrong token, 403 source IP)."""
    shortcode = find_shortcode(token)
    if shortcode is None:
        security_log.warning("callback with an unknown token from %s", request.remote_addr)
        return None, (jsonify(errorCode="404.001.01", errorMessage="Resource not found"), 404)
    if not intake.source_allowed(shortcode, request.remote_addr):
        security_log.warning(
            "callback for shortcode %s from %s, not on its allow-list",
            shortcode.number,
            request.remote_addr,
        )
        return None, (jsonify(intake.reject("C2B00016")), 403)
    return shortcode, None


@bp.post("/<token>/confirmation")
@public
def confirmation(token: str):
    """Store the payment (or the unreadable body), commit, then process it; Safaricom hears
    "Accepted" only once the payment is in the database."""
    shortcode, refusal = gatekeep(token)
    if refusal:
        return refusal
    headers = {k: request.headers[k][:200] for k in KEPT_HEADERS if k in request.headers}
    stored = intake.record_confirmation(
        db.session, shortcode, read_body(), source_ip=request.remote_addr, headers=headers
    )
    db.session.commit()
    if stored.needs_processing:
        try:
            enqueue(process_payment_job, stored.payment_id)
        except Exception:  # noqa: BLE001 - stored and acknowledged; the sweeper retries
            logging.getLogger("marejesho.jobs").exception(
                "could not enqueue payment %s; it waits in received", stored.payment_id
            )
    return jsonify(ACKNOWLEDGED)


@bp.post("/<token>/validation")
@public
def validation(token: str):
    """Accept or reject before the money moves, with Daraja's codes, in milliseconds."""
    shortcode, refusal = gatekeep(token)
    if refusal:
        return refusal
    body = read_body()
    answer, why, status = intake.validate_payment(db.session, shortcode, body)
    accepted = answer["ResultCode"] == "0"
    db.session.add(
        CallbackLog(
            shortcode_id=shortcode.id,
            kind="validation",
            source_ip=request.remote_addr,
            body=body.decode("utf-8", errors="replace").replace("\x00", "\ufffd"),
            outcome="accepted" if accepted else f"rejected:{answer['ResultCode']}",
            error=None if accepted else why,
        )
    )
    db.session.commit()
    return jsonify(answer), status


@bp.errorhandler(413)
def too_large(error):
    return jsonify(intake.reject("C2B00016") | {"ResultDesc": "Rejected: body too large"}), 413


@bp.errorhandler(Exception)
def unexpected(error):
    """Infrastructure failure (the database is down): say so in Daraja's shape. Nothing
    was acknowledged, so reconciliation will bring the payment in."""
    db.session.rollback()
    logging.getLogger("marejesho.callbacks").exception("callback failed")
    return jsonify(errorCode="503.001", errorMessage="Service unavailable, try again"), 503
