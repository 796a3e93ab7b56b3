"""M-Pesa: callbacks, matching, processing jobs, the Daraja client (`daraja/`), statements,
SMS; and, never imported by the rest, the local Daraja emulator (`emulator/`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing the package loads no Flask (the Daraja client must not)
    from flask import Flask


def init_app(app: Flask) -> None:
    """The payments back-office's screens, Safaricom's callbacks (C2B, and the results of
    the requests Marejesho makes: STK, B2C, status, balance, reversal), Africa's Talking's
    delivery reports, the ``flask payments`` commands, the package's drains and periodic
    jobs registered with the job runner (lenders/jobs.py) and its figures registered with
    the monitor (lenders/monitoring.py). Call after the extensions are bound: the callbacks
    skip the staff-only hooks."""
    from payments import callbacks, cli, money_callbacks, sms_callbacks, views
    from payments import jobs as _jobs  # noqa: F401 (registers its drains and periodic jobs)
    from payments import money_jobs as _money_jobs  # noqa: F401 (the money drains and jobs)
    from payments import monitoring as _monitoring  # noqa: F401 (registers its figures)

    views.init_app(app)
    sms_callbacks.init_app(app)
    money_callbacks.init_app(app)
    callbacks.init_app(app)
    app.cli.add_command(cli.group)
    from lenders.cli import group as lenders_commands
    from payments import refund_cli

    refund_cli.init_app(lenders_commands)  # ``flask lenders request-refund`` (CONTRACT §3)
