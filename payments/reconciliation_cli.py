"""``flask payments import-statement``, ``pull`` and ``reconciliation`` (CONTRACT §3)."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import select

from lenders.extensions import db
from payments.cli import group
from payments.models import Shortcode


def _shortcodes(number: str | None, *, one: bool) -> list[Shortcode]:
    query = select(Shortcode).order_by(Shortcode.number)
    if number:
        query = query.where(Shortcode.number == number)
    found = list(db.session.scalars(query))
    if number and not found:
        raise click.ClickException(f"no shortcode {number}")
    if one and len(found) != 1:
        raise click.ClickException(
            "no shortcode yet" if not found else "several shortcodes: name one with --shortcode"
        )
    return found


@group.command("import-statement")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--shortcode", "number", help="The paybill or till the statement is for.")
@with_appcontext
def import_statement_command(path: str, number: str | None) -> None:
    """Reconcile an M-Pesa org-portal statement (CSV or XLSX); prints a JSON summary.
    Customer payments no callback delivered are stored and then matched like callbacks;
    reversals reverse; the rest is listed, never posted."""
    from payments.statements import import_statement, wake_drains

    shortcode = _shortcodes(number, one=True)[0]
    summary = import_statement(db.session, Path(path), shortcode, checkpoint=db.session.commit)
    db.session.commit()
    click.echo(json.dumps(summary.as_json()))
    wake_drains()


def _since(text: str | None) -> datetime | None:
    if not text:
        return None
    from datetime import UTC
    from zoneinfo import ZoneInfo

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            "an ISO-8601 time, e.g. 2025-01-15T08:00", param_hint="--since"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo("Africa/Nairobi"))
    return moment.astimezone(UTC)


@group.command("pull")
@click.option("--shortcode", "number", help="Pull one shortcode (default: every registered one).")
@click.option("--since", help="ISO-8601 start (Nairobi time unless it says); 48 h back at most.")
@with_appcontext
def pull_command(number: str | None, since: str | None) -> None:
    """Ask Pull Transactions what the shortcode received and reconcile it like a statement;
    prints the same summary (one JSON line per shortcode)."""
    from payments.pull import PullError, pull_and_record
    from payments.reconciliation_models import PullRegistration

    start = _since(since)
    registered = set(db.session.scalars(select(PullRegistration.shortcode_id)))
    chosen = [s for s in _shortcodes(number, one=False) if s.id in registered or number]
    if not chosen:
        raise click.ClickException("no shortcode is registered for Pull Transactions")
    failed = False
    for shortcode in chosen:
        try:
            summary = pull_and_record(db.session, shortcode, current_app.config, since=start)
        except PullError as exc:
            click.echo(f"{shortcode.number}: {exc}", err=True)
            failed = True
            continue
        click.echo(json.dumps({"shortcode": shortcode.number} | summary.as_json()))
    if failed:
        raise SystemExit(1)


@group.command("reconciliation")
@click.option("--date", "day", required=True, help="The Nairobi day, YYYY-MM-DD.")
@click.option("--shortcode", "number", help="One shortcode (default: each).")
@click.option("--json", "as_json", is_flag=True, help="JSON, for scripts (CONTRACT §3).")
@with_appcontext
def reconciliation_command(day: str, number: str | None, as_json: bool) -> None:
    """The daily close: where the day's money went, beside the statement, with every
    difference; one JSON object per shortcode (a list when there are several)."""
    from payments.daily_close import close_day

    try:
        on = date.fromisoformat(day)
    except ValueError:
        raise click.BadParameter("a date as YYYY-MM-DD", param_hint="--date") from None
    closes = [close_day(db.session, s, on) for s in _shortcodes(number, one=False)]
    if as_json:
        items = [c.as_json() for c in closes]
        click.echo(json.dumps(items[0] if number or len(items) == 1 else items, indent=2))
        return
    for c in closes:
        click.echo(
            f"{c.shortcode.number} {c.day}: received {c.received:.2f} = posted {c.posted:.2f} "
            f"+ unmatched {c.unmatched:.2f} + credit {c.credit:.2f} + refunded "
            f"{c.refunded:.2f} + reversed {c.reversed:.2f} + review {c.review:.2f}"
            f"{'' if c.balanced else '  (DOES NOT BALANCE)'}; statement "
            f"{'-' if c.statement_total is None else f'{c.statement_total:.2f}'}, "
            f"{len(c.differences)} difference(s)"
        )
