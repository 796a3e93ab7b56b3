"""Web helpers both packages use: who may see a view, page-or-fragment rendering, what an
action answers (HTMX or not), redirects made safe for HTMX, security headers, error pages,
and the filters that show money and time."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from flask import (
    Flask,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from jinja2_fragments.flask import render_block as _render_block
from werkzeug.exceptions import BadRequest
from werkzeug.routing import IntegerConverter

from lenders.extensions import login_manager
from lenders.money import format_kes
from lenders.phones import mask_phone

NAIROBI = ZoneInfo("Africa/Nairobi")
security_log = logging.getLogger("marejesho.security")
# Sent by a page's own timed refresh (hx-headers on the polling element): no person acted.
BACKGROUND_POLL = "X-Marejesho-Poll"
# Ids are PostgreSQL integers: a larger number names nothing (and would overflow a query).
MAX_ID = 2**31 - 1


def roles(*allowed: str):
    """Name the roles that may reach a view. A view without ``roles`` or ``public`` is
    refused to everyone (see ``close_by_default``), so a new view is closed until named."""

    def decorate(view):
        view.allowed_roles = frozenset(allowed)
        return view

    return decorate


def public(view):
    """Reachable without logging in (login page, Safaricom's callbacks)."""
    view.allowed_roles = None
    return view


def close_by_default() -> None:
    """Before every request: anonymous visitors go to /login, staff without one of the
    view's roles get 403. Endpoints that declare nothing are refused."""
    if request.endpoint is None or request.endpoint == "static":
        return None
    view = current_app.view_functions[request.endpoint]
    if not hasattr(view, "allowed_roles"):
        security_log.error("endpoint %s declares no roles; refused", request.endpoint)
        abort(403)
    if view.allowed_roles is None:
        return None
    if not current_user.is_authenticated:
        return login_redirect()
    if not _session_is_fresh():
        from flask_login import logout_user

        logout_user()
        session.clear()
        return login_redirect()
    if current_user.role not in view.allowed_roles:
        security_log.warning(
            "authz denied: user %s (%s) to %s", current_user.id, current_user.role, request.path
        )
        abort(403)
    return None


def _session_is_fresh() -> bool:
    """Idle and absolute session timeouts (30 minutes idle, 12 hours in all by default)."""
    now = datetime.now(UTC).timestamp()
    started, seen = session.get("login_at"), session.get("seen_at")
    if started is None or seen is None:
        return False
    idle = timedelta(minutes=current_app.config["SESSION_IDLE_MINUTES"]).total_seconds()
    absolute = timedelta(hours=current_app.config["SESSION_ABSOLUTE_HOURS"]).total_seconds()
    if now - seen > idle or now - started > absolute:
        return False
    # A page refreshing itself is not a person at work: it must not keep an idle session.
    if now - seen > 60 and not request.headers.get(BACKGROUND_POLL):
        session["seen_at"] = now  # the cookie is written at most once a minute
    return True


class UnreadableInput(BadRequest):
    """A request carrying a NUL: no form sends one, and no database stores one."""

    description = (
        "The address or the form holds a character that cannot be read (a NUL byte). "
        "Retype what you were looking for."
    )


def refuse_unreadable_input() -> None:
    """Before every staff request (callbacks read their own body): a NUL in the path, the
    query string, a form field or an uploaded file's name is refused with 400, before any
    view can hand it to the database (PostgreSQL answers a NUL in a string with an error,
    so a 500)."""
    if request.path.startswith(StaffSessions.callbacks):
        return
    values = [*(request.view_args or {}).values()]
    for part in (request.args, request.form if request.method == "POST" else {}):
        values += [key for key in part] + [v for key in part for v in part.getlist(key)]
    if request.method == "POST":  # an upload's field and file names are input too
        values += [*request.files, *(f.filename for f in request.files.values())]
    if any("\x00" in value for value in values if isinstance(value, str)):
        raise UnreadableInput()


def _unreadable_page(error: UnreadableInput):
    return render_template(
        "error.html", code=400, title="Input cannot be read", message=error.description
    ), 400


class IdConverter(IntegerConverter):
    """``<int:…>`` in every URL: at most MAX_ID, so a longer number is a 404, not a query
    that overflows."""

    def __init__(self, map, fixed_digits=0, min=None, max=MAX_ID, signed=False):
        super().__init__(map, fixed_digits=fixed_digits, min=min, max=max, signed=signed)


def parse_id(text: str | None) -> int | None:
    """An id typed into a form or a query string (``before``, ``borrower_id``), or None for
    anything else: ASCII digits only (``int("²")`` raises), at most MAX_ID."""
    if not text or not text.isascii() or not text.isdigit() or len(text) > 10:
        return None
    value = int(text)
    return value if value <= MAX_ID else None


def start_session() -> None:
    now = datetime.now(UTC).timestamp()
    session["login_at"] = now
    session["seen_at"] = now


def login_redirect():
    """To /login with ``next`` (``redirect_htmx`` sends the whole page there under HTMX)."""
    here = request.full_path.rstrip("?")
    if request.headers.get("HX-Request") == "true" and request.headers.get("HX-Current-URL"):
        # The fragment's URL is no place to come back to; the page the user was on is.
        current = urlsplit(request.headers["HX-Current-URL"])
        here = current.path + (f"?{current.query}" if current.query else "")
    return redirect(url_for("auth.login", next=here), code=303)


REDIRECTS = frozenset((301, 302, 303, 307, 308))


def redirect_htmx(response):
    """After every request: a redirect answering an HTMX request becomes ``HX-Redirect``
    (204), so the browser loads the new page whole. The XHR would otherwise follow the
    redirect itself and swap the next page (the login form, say) into a table cell."""
    if response.status_code in REDIRECTS and request.headers.get("HX-Request") == "true":
        response.headers["HX-Redirect"] = response.headers.pop("Location")
        response.status_code = 204
        response.set_data(b"")
    return response


def action_done(message: str, *, fragment, back_to: str, event: str | None = None):
    """The answer to a successful action. To HTMX: ``fragment(message)``, the updated
    panel showing the message, and ``event`` in ``HX-Trigger`` for the page's other
    regions to refresh themselves. Without JavaScript: the message flashed and a redirect
    (303) to ``back_to``, the page the form was on."""
    if not wants_fragment():
        flash(message)
        return redirect(back_to, code=303)
    response = fragment(message)
    if event:
        response.headers["HX-Trigger"] = event
    return response


def wants_fragment() -> bool:
    """True for an HTMX request that should get a fragment rather than the page."""
    hx = request.htmx
    return bool(hx) and not hx.boosted and not hx.history_restore_request


def render_page(template: str, block: str, **context):
    """The whole page, or only ``block`` when HTMX asks for a fragment. Answers carry
    ``Vary: HX-Request`` so caches keep the two apart."""
    if wants_fragment():
        body = _render_block(template, block, **context)
    else:
        body = render_template(template, **context)
    response = current_app.make_response(body)
    response.headers.add("Vary", "HX-Request")
    return response


def render_fragment(template: str, block: str, status: int = 200, **context):
    """Only ``block``; used for form errors (422, which htmx is told to swap)."""
    return current_app.make_response((_render_block(template, block, **context), status))


SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
    ("X-Frame-Options", "DENY"),
)
HSTS = ("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
NO_STORE = ("Cache-Control", "no-store")


def add_security_headers(response):
    """Headers on every answer, unless the view set its own; pages that show borrowers are
    never cached. One pass over the headers (``setdefault`` raises and catches an exception
    for each header it adds, which every callback would pay)."""
    wanted = list(SECURITY_HEADERS)
    if current_app.config.get("SESSION_COOKIE_SECURE"):
        wanted.append(HSTS)
    if request.endpoint != "static":
        wanted.append(NO_STORE)
    present = {key.lower() for key, _ in response.headers.items()}
    response.headers.extend([(k, v) for k, v in wanted if k.lower() not in present])
    return response


def nairobi_time(value: datetime | None, fmt: str = "%d %b %Y %H:%M") -> str:
    """A stored UTC time as Nairobi local time."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(NAIROBI).strftime(fmt)


def nairobi_today():
    return datetime.now(NAIROBI).date()


class StaffSessions(SecureCookieSessionInterface):
    """Signed-cookie sessions for staff. Safaricom's callbacks send no cookie and get none:
    they skip the cookie's signing set-up, which every request would otherwise pay."""

    callbacks = "/payments/c2b/"

    def open_session(self, app, request):
        if request.path.startswith(self.callbacks):
            return self.session_class()
        return super().open_session(app, request)


def init_app(app: Flask) -> None:
    """Staff sessions, the ``<int:…>`` converter (IdConverter), the refusal of unreadable
    input, the closed-by-default check, the answer hooks, error pages and the template
    filters. Call after the extensions are bound and before any blueprint is registered
    (their ``<int:…>`` rules take the converter when they are added)."""
    app.session_interface = StaffSessions()
    app.url_map.converters["int"] = IdConverter
    login_manager.unauthorized_handler(login_redirect)
    app.before_request(refuse_unreadable_input)
    app.register_error_handler(UnreadableInput, _unreadable_page)
    app.before_request(close_by_default)
    app.after_request(redirect_htmx)
    app.after_request(add_security_headers)
    app.jinja_env.filters["kes"] = format_kes
    app.jinja_env.filters["nairobi"] = nairobi_time
    app.jinja_env.filters["day"] = lambda d: d.strftime("%d %b %Y") if d else ""
    app.jinja_env.filters["masked"] = mask_phone  # 2547****5678
    register_error_pages(app)


def register_error_pages(app: Flask) -> None:
    """Plain pages for errors; never a stack trace."""

    def page(code: int, title: str, message: str):
        return render_template("error.html", code=code, title=title, message=message), code

    app.register_error_handler(
        CSRFError, lambda e: page(400, "Form expired", "Reload the page and try again.")
    )
    app.register_error_handler(
        403, lambda e: page(403, "Not allowed", "Your role cannot open this page.")
    )
    app.register_error_handler(404, lambda e: page(404, "Not found", "Nothing is at this address."))
    app.register_error_handler(
        413, lambda e: page(413, "File too large", "The upload is larger than 16 MB.")
    )
    app.register_error_handler(
        429, lambda e: page(429, "Too many attempts", "Wait a few minutes and try again.")
    )
    app.register_error_handler(
        500, lambda e: page(500, "Something went wrong", "The error was logged; nothing was saved.")
    )
