"""Marejesho: the back-office a Kenyan lender runs beside its M-Pesa paybill."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

import lenders
import payments
from lenders import database, logs, vault, web
from lenders.config import config_from_env
from lenders.extensions import csrf, db, htmx, limiter, login_manager, migrate
from payments import confirmations


def create_app(config: dict | None = None) -> Flask:
    """Build the app: configuration from the environment, then ``config`` on top."""
    app = Flask(__name__, instance_relative_config=True)
    app.config.update(config_from_env())
    app.config.update(config or {})
    confirmations.init_app(app)  # innermost WSGI: Safaricom's confirmations, below the rest
    logs.init_app(app)  # first: every later line is structured and carries its request id
    # Secure cookies whenever Safaricom and staff reach us over https (always in production).
    app.config["SESSION_COOKIE_SECURE"] = app.config["PUBLIC_BASE_URL"].startswith("https://")
    if app.config["PROXY_HOPS"]:
        hops = app.config["PROXY_HOPS"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)

    db.init_app(app)
    vault.init_app(app)
    database.init_app(app)
    migrate.init_app(app, db, directory=str(database.MIGRATIONS_DIR), render_as_batch=True)
    login_manager.init_app(app)
    csrf.init_app(app)
    htmx.init_app(app)
    limiter.init_app(app)

    web.init_app(app)
    lenders.init_app(app)
    payments.init_app(app)
    return app
