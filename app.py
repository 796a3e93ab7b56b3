"""Marejesho: the back-office a Kenyan lender runs beside its M-Pesa paybill."""

from __future__ import annotations

from flask import Flask, redirect, render_template, url_for
from flask_wtf.csrf import CSRFError
from werkzeug.middleware.proxy_fix import ProxyFix

from lenders import auth, database, health, jobs_views, logs, vault
from lenders import cli as lenders_cli
from lenders import views as lenders_views
from lenders.config import config_from_env
from lenders.extensions import csrf, db, htmx, limiter, login_manager, migrate
from lenders.jobs import runner as jobs
from lenders.web import init_web, roles, unauthorized_to_login
from payments import callbacks as payments_callbacks
from payments import cli as payments_cli
from payments import configuration as payments_configuration  # noqa: F401 (routes)
from payments import jobs as payments_jobs  # noqa: F401 (registers its drains and jobs)
from payments import messages as payments_messages
from payments import (
    money_callbacks,  # noqa: F401 (Safaricom's results, on the callbacks' bp)
    money_jobs,  # noqa: F401 (registers the money drains and jobs)
    money_views,
)
from payments import monitoring as payments_monitoring  # noqa: F401 (registers its figures)
from payments import quarantine as payments_quarantine  # noqa: F401 (routes)
from payments import views as payments_views


def create_app(config: dict | None = None) -> Flask:
    """Build the app: configuration from the environment, then ``config`` on top."""
    app = Flask(__name__, instance_relative_config=True)
    app.config.update(config_from_env())
    app.config.update(config or {})
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
    login_manager.unauthorized_handler(unauthorized_to_login)
    csrf.init_app(app)
    htmx.init_app(app)
    limiter.init_app(app)
    init_web(app)

    app.register_blueprint(auth.bp)
    app.register_blueprint(lenders_views.bp)
    app.register_blueprint(payments_views.bp)
    payments_callbacks.init_app(app)
    payments_messages.init_app(app)
    money_views.init_app(app)
    jobs.init_app(app)
    health.init_app(app)
    jobs_views.init_app(app)
    app.cli.add_command(lenders_cli.group)
    app.cli.add_command(payments_cli.group)

    @app.get("/")
    @roles("admin", "officer")
    def index():
        """Staff start at the borrowers list."""
        return redirect(url_for("lenders.borrowers"))

    register_error_pages(app)
    return app


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
