"""Structured logs: one JSON object per line (time, level, logger, message, request id,
process), phones masked, set up in one place for gunicorn, ``flask jobs worker`` and every
command alike (``configure_logging`` in ``create_app``; lenders/serving.py reuses it for the
gunicorn master's own lines).

Each request gets an id: the caller's ``X-Request-ID`` when it is well formed (a proxy's or a
monitor's, so one id follows a request through every hop), else a new one; every log line
written while the request runs carries it, and the answer echoes it in ``X-Request-ID``.

Masking is done on the finished message and traceback, after every filter has run (such as
the callbacks' token redaction, which works on the record), so no Kenyan mobile number in any
form (``2547…``, ``+2547…``, ``07…``, and ``2541…`` alike) reaches a log line whatever put it
there. Packages add secrets of their own to mask the same way (``redact``): the callbacks'
tokens stay out of a line even if a record slipped past their filter."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime

from lenders.phones import mask_phone

REQUEST_ID_HEADER = "X-Request-ID"
_WELL_FORMED_ID = re.compile(r"[A-Za-z0-9._-]{8,128}")
_request_id: ContextVar[str | None] = ContextVar("marejesho_request_id", default=None)
# Not inside a longer run of digits: a receipt time (20251106230212) or an amount is no phone.
_PHONE = re.compile(r"(?<!\d)(?:\+?254|0)([17]\d{8})(?!\d)")
# gunicorn's access-log record carries the response's headers as "{name}o" atoms.
_ACCESS_ATOM = "{" + REQUEST_ID_HEADER.lower() + "}o"


def mask_phones(text: str) -> str:
    """Every Kenyan mobile number in ``text`` as ``2547****5678``."""
    if not text:
        return text
    return _PHONE.sub(lambda m: mask_phone("254" + m.group(1)), text)


_redactions: list[tuple[re.Pattern, str]] = []


def redact(pattern: re.Pattern, replacement: str) -> None:
    """Mask what ``pattern`` matches (as ``pattern.sub(replacement, …)``) in every log line's
    message and traceback, from now on, in this process."""
    if (pattern, replacement) not in _redactions:
        _redactions.append((pattern, replacement))


_TERMINAL_STYLE = re.compile(r"\x1b\[[0-9;]*m")  # the dev server colours its lines


def clean(text: str) -> str:
    """``text`` as a log line may show it: registered secrets and phones masked, no terminal
    colour codes."""
    if "\x1b" in text:
        text = _TERMINAL_STYLE.sub("", text)
    for pattern, replacement in _redactions:
        text = pattern.sub(replacement, text)
    return mask_phones(text)


def current_request_id() -> str | None:
    """The id of the request this code runs for, if any."""
    return _request_id.get()


def request_id_from(header: str | None) -> str:
    """The caller's request id if it is well formed (letters, digits, ``._-``, 8 to 128 of
    them: no spaces, quotes or line breaks that could forge a log line), else a new one."""
    if header and _WELL_FORMED_ID.fullmatch(header):
        return header
    return secrets.token_hex(16)


class RequestIds:
    """WSGI middleware: the request's id for the log lines written while it runs, and in the
    answer's ``X-Request-ID``. A few microseconds: no parsing beyond one header."""

    def __init__(self, wsgi_app) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        request_id = request_id_from(environ.get("HTTP_X_REQUEST_ID"))
        environ["marejesho.request_id"] = request_id

        def start_with_id(status, headers, exc_info=None):
            headers.append((REQUEST_ID_HEADER, request_id))
            return start_response(status, headers, exc_info)

        token = _request_id.set(request_id)
        try:
            return self.wsgi_app(environ, start_with_id)
        finally:
            _request_id.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per record on one line (a CR or LF in a message stays escaped inside
    it, so no one can forge a second line), phones masked."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": clean(_message(record)),
            "request_id": _record_request_id(record),
            "process": record.process,
        }
        if record.exc_info:
            entry["exception"] = clean(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = clean(record.exc_text)
        if record.stack_info:
            entry["stack"] = clean(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


def _message(record: logging.LogRecord) -> str:
    """The record's message. A filter that rewrote a record's single mapping of arguments
    (gunicorn's access line: ``"%(h)s …" % atoms``) into a one-item tuple is undone here, as
    ``LogRecord`` itself would have unwrapped it, rather than lose the line."""
    try:
        return record.getMessage()
    except TypeError:
        args = record.args
        if isinstance(args, tuple) and len(args) == 1 and isinstance(args[0], Mapping):
            record.args = args[0]
            return record.getMessage()
        raise


def _record_request_id(record: logging.LogRecord) -> str | None:
    """The request a record belongs to: the running request's, or, for gunicorn's access line
    (written once the request is over), the id the answer carried."""
    found = getattr(record, "request_id", None) or _request_id.get()
    args = record.args
    if isinstance(args, tuple) and len(args) == 1 and isinstance(args[0], Mapping):
        args = args[0]
    if found is None and isinstance(args, Mapping):
        found = args.get(_ACCESS_ATOM)
        found = found if isinstance(found, str) and _WELL_FORMED_ID.fullmatch(found) else None
    return found


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (a test's capture, a redirected
    stream), never to a stream closed since the handler was made."""

    marejesho = True

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # StreamHandler sets it; the property decides
        return None


# Loggers that do not hand their records to the root logger: gunicorn's (it sets their
# handlers and the files they write to); their handlers keep their files and take our format.
OWN_HANDLERS = ("gunicorn.error", "gunicorn.access")
# Libraries that say at INFO what no operator needs: seven lines per process start.
QUIET = {"alembic.runtime.plugins": logging.WARNING}


def configure_logging(level: str | int | None = None) -> None:
    """JSON lines on standard error for every logger, at ``level`` (MAREJESHO_LOG_LEVEL,
    INFO by default). Idempotent: each app built in a process (tests build many) finds the
    handler in place. Handlers of other libraries' own loggers (gunicorn's) keep writing
    where they write, in this format."""
    level = level or os.environ.get("MAREJESHO_LOG_LEVEL", "INFO").upper()
    formatter = JsonFormatter()
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "marejesho", False)), None)
    if handler is None:
        handler = StderrHandler()
        root.addHandler(handler)
    handler.setFormatter(formatter)
    root.setLevel(level)
    for name, quiet in QUIET.items():
        logging.getLogger(name).setLevel(quiet)
    for name in OWN_HANDLERS:
        for own in logging.getLogger(name).handlers:
            own.setFormatter(formatter)


def init_app(app) -> None:
    """Structured logs for this process and a request id for each of the app's requests."""
    configure_logging(app.config.get("LOG_LEVEL"))
    app.wsgi_app = RequestIds(app.wsgi_app)
