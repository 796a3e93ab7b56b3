"""M-Pesa: callbacks, matching, processing jobs, Daraja client and emulator, statements, SMS."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing the package loads no Flask (the Daraja client must not)
    from flask import Flask


def init_app(app: Flask) -> None:
    """The payments back-office's screens, Safaricom's callbacks, Africa's Talking's
    delivery reports, the in-process job runner and the ``flask payments`` commands.
    Call after the extensions are bound: the callbacks skip the staff-only hooks."""
    from payments import callbacks, cli, jobs, sms_callbacks, views

    views.init_app(app)
    sms_callbacks.init_app(app)
    callbacks.init_app(app)
    jobs.init_app(app)
    app.cli.add_command(cli.group)
