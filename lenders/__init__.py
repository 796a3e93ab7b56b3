"""The lending book: staff and roles, borrowers, loans, schedules, repayments, audit."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing the package loads no Flask (the Daraja client must not)
    from flask import Flask


def init_app(app: Flask) -> None:
    """Logging in, the lending book's screens and the ``flask lenders`` commands."""
    from lenders import auth, cli, views

    app.register_blueprint(auth.bp)
    views.init_app(app)
    app.cli.add_command(cli.group)
