"""Safaricom's confirmations answered without the web framework's request cycle.

A confirmation is the product's hot path (and validation, when Safaricom calls it, its
twin): Safaricom sends every payment to it, in bursts, and what it must do is small (find
the shortcode by its token, append the body to this host's journal, synced to disk, answer
"Accepted", wake the journal's shipper). Flask's request cycle (the request and its
context, routing, before- and after-request hooks, the response object) costs about as
much as that work, so this thin WSGI layer, the innermost around Flask, serves the usual
confirmation itself: a POST to /payments/c2b/<token>/confirmation with a Content-Length of
at most 64 KiB, from an allowed address, for a known token. It uses the same services as
the blueprint (payments.callbacks, intake, journal, monitoring, the job runner) in an app
context, and answers with the same bytes and security headers. Anything else, an unknown
token or a refused address included, goes on to Flask, whose blueprint answers it as
before (404, 403, 413, 405), so the two can never disagree about what is refused.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

from flask import Flask

from lenders.extensions import db
from lenders.web import HSTS, NO_STORE, SECURITY_HEADERS
from payments import intake, journal
from payments.callbacks import _ACKNOWLEDGED_JSON, KEPT_HEADERS, find_shortcode
from payments.monitoring import count_callback

PREFIX = "/payments/c2b/"
SUFFIXES = ("/confirmation", "/validation")
MAX_BODY = 64 * 1024
log = logging.getLogger("marejesho.callbacks")


class Confirmations:
    """WSGI middleware: the usual confirmation served here, everything else by ``wsgi_app``."""

    def __init__(self, app: Flask, wsgi_app) -> None:
        self.app = app
        self.wsgi_app = wsgi_app
        self._headers: list[tuple[str, str]] | None = None
        self.engine = None  # the app's engine, read once in an app context

    def _answer_headers(self, length: int) -> list[tuple[str, str]]:
        if self._headers is None:
            wanted = list(SECURITY_HEADERS)
            if self.app.config.get("SESSION_COOKIE_SECURE"):
                wanted.append(HSTS)
            self._headers = [("Content-Type", "application/json"), *wanted, NO_STORE]
        return [*self._headers, ("Content-Length", str(length))]

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") != "POST" or not path.startswith(PREFIX):
            return self.wsgi_app(environ, start_response)
        token, _, kind = path[len(PREFIX) :].partition("/")
        if kind not in ("confirmation", "validation"):
            return self.wsgi_app(environ, start_response)
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            return self.wsgi_app(environ, start_response)  # chunked or too large: Flask
        if kind == "confirmation":  # the hot path needs no app context until something fails
            answer = self._confirm(environ, token, length)
        else:
            with self.app.app_context():
                answer = self._validate(environ, token, length)
        if answer is None:
            return self.wsgi_app(environ, start_response)
        status, body = answer
        start_response(status, self._answer_headers(len(body)))
        return [body]

    def _confirm(self, environ, token: str, length: int):
        """Store and acknowledge; None to let the blueprint answer (before the body is read).
        Runs outside an app context while all goes well (pushing one costs a tenth of a
        confirmation): the engine and the app are passed to what needs them."""
        if self.engine is None:
            with self.app.app_context():
                self.engine = db.engine
        shortcode, address = self._gate(environ, token)
        if shortcode is None:
            return None
        headers = {k: environ[key][:200] for k, key in KEPT_HEADERS.items() if key in environ}
        body = environ["wsgi.input"].read(length)
        if not journal.accept(self.app, shortcode, body, address, headers):
            return "503 SERVICE UNAVAILABLE", _UNAVAILABLE
        return "200 OK", _ACKNOWLEDGED

    def _validate(self, environ, token: str, length: int):
        """Daraja's validation answer, logged; None to let the blueprint answer."""
        shortcode, address = self._gate(environ, token)
        if shortcode is None:
            return None
        body = environ["wsgi.input"].read(length)
        try:
            answer, why, status = intake.validate_payment(db.session, shortcode, body)
            accepted = intake.log_validation(
                db.engine, shortcode, body, source_ip=address, answer=answer, why=why
            )
        except Exception:  # noqa: BLE001 - Safaricom applies the registered default
            log.exception("callback failed")
            return "503 SERVICE UNAVAILABLE", _UNAVAILABLE
        count_callback(shortcode.number, "validation", "accepted" if accepted else "rejected")
        reason = f"{status} {HTTPStatus(status).phrase.upper()}"
        return reason, (json.dumps(answer, separators=(",", ":"), sort_keys=True) + "\n").encode()

    def _gate(self, environ, token: str):
        """The shortcode and caller's address, or (None, …) for the blueprint to refuse."""
        address = environ.get("REMOTE_ADDR")
        try:
            shortcode = find_shortcode(token, app=self.app, engine=self.engine)
        except Exception:  # noqa: BLE001 - the blueprint answers (its 503 included)
            return None, address
        if shortcode is None or not intake.source_allowed(shortcode, address):
            return None, address
        return shortcode, address


_ACKNOWLEDGED = _ACKNOWLEDGED_JSON.encode()
_UNAVAILABLE = b'{"errorCode":"503.001","errorMessage":"Service unavailable, try again"}\n'


def init_app(app: Flask) -> None:
    """Put the confirmation's own path innermost around Flask. Call before any other WSGI
    middleware is added (request ids, the job thread's request count, ProxyFix), so that
    they all apply to it as to every request."""
    app.wsgi_app = Confirmations(app, app.wsgi_app)
