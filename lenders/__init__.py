"""The lending book: staff and roles, borrowers, loans, schedules, repayments, audit."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing the package loads no Flask (the Daraja client must not)
    from flask import Flask


def init_app(app: Flask) -> None:
    """Logging in, the lending book's screens, the ``flask lenders`` commands, the job
    runner (lenders/jobs.py: its worker thread and ``flask jobs``; packages register their
    work with it) and /healthz and /metrics (lenders/health.py)."""
    from lenders import auth, cli, health, views
    from lenders.jobs import runner

    app.register_blueprint(auth.bp)
    views.init_app(app)
    app.cli.add_command(cli.group)
    runner.init_app(app)
    health.init_app(app)
