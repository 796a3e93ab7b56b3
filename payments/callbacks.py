"""The public endpoints Safaricom calls: /payments/c2b/<token>/validation and
/confirmation. Exempt from CSRF and login and nothing else: a wrong token is a 404 with
nothing written, every answer is Daraja-shaped JSON, and no body makes them answer 5xx."""

from __future__ import annotations

import functools
import hmac
import json
import logging
import re
import time
from typing import NamedTuple

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import bindparam, event, select
from werkzeug.exceptions import RequestEntityTooLarge

from lenders import logs
from lenders.database import Prepared
from lenders.extensions import csrf, db
from lenders.web import public
from payments import intake, journal
from payments.models import Shortcode
from payments.monitoring import count_callback

bp = Blueprint("c2b", __name__, url_prefix="/payments/c2b")
csrf.exempt(bp)
security_log = logging.getLogger("marejesho.security")
MAX_BODY = 64 * 1024
_TOKEN = re.compile(r"[0-9a-f]{32,64}")
ACKNOWLEDGED = {"ResultCode": 0, "ResultDesc": "Accepted"}
_ACKNOWLEDGED_JSON = json.dumps(ACKNOWLEDGED, separators=(",", ":")) + "\n"  # as jsonify writes it
# The request headers kept with a callback for audit, by their WSGI environ keys (read
# straight from the environ: looking up an absent header through werkzeug costs an exception).
KEPT_HEADERS = {
    "User-Agent": "HTTP_USER_AGENT",
    "Content-Type": "CONTENT_TYPE",
    "Content-Length": "CONTENT_LENGTH",
    "X-Forwarded-For": "HTTP_X_FORWARDED_FOR",
    "X-Real-IP": "HTTP_X_REAL_IP",
}


class RedactCallbackTokens(logging.Filter):
    """Access and error logs show /payments/c2b/***/confirmation (and the SMS delivery
    reports' URL): the tokens are secrets, and so is any long hex run (a token, a hashed
    phone) elsewhere in the line. The record's arguments keep their shape: gunicorn's
    access log formats a dict of atoms by name, werkzeug's a tuple by position, and a
    record that can no longer be formatted is printed whole, token and all, while its
    access line is lost."""

    pattern = re.compile(r"(/payments/(?:c2b|sms)/)[^/\s?\"]+")
    hex_run = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{32,}(?![0-9A-Fa-f])")

    def redact(self, text: str) -> str:
        return self.hex_run.sub("***", self.pattern.sub(r"\1***", text))

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, dict):  # in place: gunicorn's atoms answer "-" for what is absent
            for key, value in args.items():
                if isinstance(value, str):
                    args[key] = self.redact(value)
        elif isinstance(args, tuple):
            record.args = tuple(self.redact(a) if isinstance(a, str) else a for a in args)
        if isinstance(record.msg, str):
            record.msg = self.redact(record.msg)
        return True


# Where a request's path is logged: the development server's and gunicorn's access logs,
# gunicorn's "Error handling request <uri>", and Flask's "Exception on <path>" (app.logger).
REDACTED_LOGS = ("werkzeug", "gunicorn.access", "gunicorn.error")

# Extensions that serve staff only: rate limits (on the login form), Flask-Login's remember
# cookie, CSRF. Safaricom's callbacks carry money and are guarded by their token, never a
# rate limit, a login or a CSRF token, so these extensions' request hooks do not run for them
# at all (the limiter's alone would cost a confirmation a tenth of its time).
STAFF_EXTENSIONS = ("flask_limiter", "flask_login", "flask_wtf")
# The blueprints Safaricom calls: its confirmations and validations here, and the results
# of the requests Marejesho makes (payments/money_callbacks.py), under the same prefix.
SAFARICOM_BLUEPRINTS = frozenset((bp.name, "money_callbacks"))


def _skipped_for_callbacks(hook):
    @functools.wraps(hook)
    def staff_hook(*args):
        if request.blueprint in SAFARICOM_BLUEPRINTS:
            return args[0] if args else None  # after_request hands the response back
        return hook(*args)

    return staff_hook


def spare_callbacks_staff_hooks(app) -> None:
    """Wrap the app-wide request hooks of ``STAFF_EXTENSIONS`` so callbacks skip them."""
    for hooks in (app.before_request_funcs, app.after_request_funcs, app.teardown_request_funcs):
        hooks[None] = [
            _skipped_for_callbacks(hook)
            if getattr(hook, "func", hook).__module__.startswith(STAFF_EXTENSIONS)
            else hook
            for hook in hooks.get(None, [])
        ]


def init_app(app) -> None:
    """Register the blueprint, keep staff-only hooks off it and its tokens out of the access
    logs. Call after the extensions are bound."""
    app.register_blueprint(bp)
    spare_callbacks_staff_hooks(app)
    app.register_error_handler(405, _wrong_method)
    for logger in (*map(logging.getLogger, REDACTED_LOGS), app.logger):
        if not any(isinstance(f, RedactCallbackTokens) for f in logger.filters):
            logger.addFilter(RedactCallbackTokens())
    logs.redact(RedactCallbackTokens.pattern, r"\1***")  # and on every line, whatever the logger


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


def find_shortcode(token: str, *, fresh: bool = False, app=None, engine=None):
    """The shortcode whose callback token this is (compared in constant time): a plain row
    of what a callback needs, not the model, whose encrypted credentials would be
    decrypted on every callback. Only real shortcodes are remembered (a few), never a
    wrong token. While the database is unreachable, the last known row answers (from this
    process, or from the journal for a process started during the outage)."""
    if not _TOKEN.fullmatch(token or ""):  # before any query: no NUL reaches the driver
        return None
    app = app or current_app._get_current_object()
    known = app.extensions.setdefault("marejesho.shortcodes", {})
    now = time.monotonic()
    remembered = known.get(token)
    if (
        not fresh
        and remembered
        and remembered[0] == _changes[0]
        and now - remembered[1] < SHORTCODE_TTL
    ):
        return remembered[2]
    engine = engine or db.engine
    try:
        with engine.connect() as connection:
            cursor = _SHORTCODE_BY_TOKEN.run(connection, {"token": token})
            row = cursor.fetchone()
            cursor.close()
    except Exception as exc:
        if not journal.database_unreachable(exc, engine.dialect):
            raise
        last = remembered[2] if remembered else journal.remembered_shortcode(token, app)
        if last is None:
            raise
        return last
    shortcode = CallbackShortcode(*row) if row else None
    if shortcode is None or not hmac.compare_digest(shortcode.callback_token, token):
        known.pop(token, None)
        return None
    if not remembered or remembered[2] != shortcode:
        journal.remember_shortcode(shortcode, app)
    known[token] = (_changes[0], now, shortcode)
    return shortcode


def read_body() -> bytes:
    """The raw body, at most 64 KiB (413 beyond). A body with its Content-Length (as
    Safaricom sends them) is read straight from the server's input; one without (chunked)
    through werkzeug's limited stream."""
    length = request.content_length
    if length is not None and length > MAX_BODY:
        raise RequestEntityTooLarge()
    if length is not None:
        return request.environ["wsgi.input"].read(length)
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
    """Keep the body on this host's journal, synced to disk, and answer "Accepted"; the
    journal's shipper stores it in the database moments later (payments/journal.py). The
    usual confirmation never gets here: payments/confirmations.py serves it with the same
    services; this answers the rest (a chunked body, for one)."""
    shortcode, refusal = gatekeep(token)
    if refusal:
        return refusal
    environ = request.environ
    headers = {k: environ[key][:200] for k, key in KEPT_HEADERS.items() if key in environ}
    body = read_body()
    app = current_app._get_current_object()
    if not journal.accept(app, shortcode, body, request.remote_addr, headers):
        return jsonify(errorCode="503.001", errorMessage="Service unavailable, try again"), 503
    return current_app.response_class(_ACKNOWLEDGED_JSON, mimetype="application/json")


@bp.post("/<token>/validation")
@public
def validation(token: str):
    """Accept or reject before the money moves, with Daraja's codes, in milliseconds."""
    shortcode, refusal = gatekeep(token)
    if refusal:
        return refusal
    body = read_body()
    answer, why, status = intake.validate_payment(db.session, shortcode, body)
    accepted = intake.log_validation(
        db.engine, shortcode, body, source_ip=request.remote_addr, answer=answer, why=why
    )
    count_callback(shortcode.number, "validation", "accepted" if accepted else "rejected")
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
