"""Logging in and out. A wrong e-mail and a wrong password get the same answer."""

from __future__ import annotations

import hashlib
import hmac
import logging
from functools import cache
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, redirect, request, session, url_for
from flask_login import current_user, login_user, logout_user
from sqlalchemy import func, select
from werkzeug.security import check_password_hash, generate_password_hash

from lenders.config import PASSWORD_HASH_METHOD
from lenders.extensions import db, limiter, login_manager
from lenders.forms import LoginForm
from lenders.models import StaffUser, password_hash_method
from lenders.web import public, render_page, roles, start_session

bp = Blueprint("auth", __name__)
security_log = logging.getLogger("marejesho.security")
BAD_LOGIN = "Email or password is incorrect."


@cache
def _dummy_hash(method: str) -> str:
    """Checked when the e-mail is unknown, so that both failures take the same time."""
    return generate_password_hash("not-a-real-password", method=method)


_dummy_hash(PASSWORD_HASH_METHOD)  # made now, so that the first unknown e-mail is no slower


@login_manager.user_loader
def load_user(user_id: str) -> StaffUser | None:
    """The cookie holds "<id>:<session token>"; a changed token ends the session."""
    staff_id, _, token = user_id.partition(":")
    if not staff_id.isdigit():
        return None
    user = db.session.get(StaffUser, int(staff_id))
    if user is None or not hmac.compare_digest(user.session_token, token):
        return None
    return user


def find_staff(email: str) -> StaffUser | None:
    return db.session.scalar(
        select(StaffUser).where(func.lower(StaffUser.email) == email.strip().lower())
    )


def authenticate(email: str, password: str) -> StaffUser | None:
    """The active staff user with this e-mail and password, or None (in constant work)."""
    user = find_staff(email)
    if user is None or not user.password_hash:
        check_password_hash(_dummy_hash(password_hash_method()), password)
        return None
    if not user.check_password(password) or not user.active:
        return None
    return user


def safe_next(target: str | None) -> str:
    """A local path to go to after login; anything with a scheme or host is ignored."""
    if not target:
        return url_for("index")
    parts = urlsplit(target.replace("\\", "/"))
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("index")
    return target


def _count_failed_login(response) -> bool:
    return response.status_code != 303


def _login_account() -> str:
    """The account a login attempt names, as the limiter counts it (hashed: no typed text
    in a storage key)."""
    email = (request.form.get("email") or "").strip().lower()
    return "account:" + hashlib.sha256(email.encode()).hexdigest()


@bp.get("/login")
@public
def login():
    """The login form; a logged-in user goes straight on."""
    if current_user.is_authenticated:
        return redirect(safe_next(request.args.get("next")))
    return render_page("auth/login.html", "content", form=LoginForm(), error=None)


@bp.post("/login")
@public
@limiter.limit(
    lambda: current_app.config["LOGIN_RATE_LIMIT"],
    key_func=_login_account,
    deduct_when=_count_failed_login,
)
@limiter.limit(
    lambda: current_app.config["LOGIN_ADDRESS_RATE_LIMIT"], deduct_when=_count_failed_login
)
def login_post():
    """Check the e-mail and password; on success start a fresh session (no fixation)."""
    form = LoginForm()
    user = (
        authenticate(form.email.data or "", form.password.data or "") if form.validate() else None
    )
    if user is None:
        security_log.warning("login failed from %s", request.remote_addr)
        return render_page("auth/login.html", "content", form=form, error=BAD_LOGIN), 422
    session.clear()
    login_user(user)
    start_session()
    security_log.info("login: user %s", user.id)
    return redirect(safe_next(request.args.get("next")), code=303)


@bp.post("/logout")
@roles("admin", "officer")
def logout():
    """End this user's sessions (every device: the session token changes)."""
    user = db.session.get(StaffUser, current_user.id)
    user.end_sessions()
    db.session.commit()
    logout_user()
    session.clear()
    flash("You are logged out.")
    return redirect(url_for("auth.login"), code=303)
