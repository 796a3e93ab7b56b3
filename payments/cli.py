"""``flask payments …`` commands (CONTRACT §3)."""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import select

from lenders.csvfile import write_csv
from lenders.extensions import db
from payments.exports import shortcode_json, transaction_rows
from payments.models import Shortcode

group = click.Group("payments", help="M-Pesa shortcodes, callbacks and payments.")


@group.command("add-shortcode")
@click.argument("number")
@click.option("--name", required=True)
@click.option("--kind", type=click.Choice(["paybill", "till"]), default="paybill")
@click.option("--environment", type=click.Choice(["sandbox", "production"]), default="sandbox")
@click.option(
    "--register-version",
    type=click.Choice(["v1", "v2"]),
    default="v2",
    help="v1: Safaricom sends payers' numbers hashed; v2: masked.",
)
@with_appcontext
def add_shortcode(
    number: str, name: str, kind: str, environment: str, register_version: str
) -> None:
    """Create a shortcode with a fresh callback token; prints it as JSON."""
    if not re.fullmatch(r"\d{5,7}", number):
        raise click.BadParameter("a shortcode is 5 to 7 digits", param_hint="NUMBER")
    if db.session.scalar(select(Shortcode).where(Shortcode.number == number)):
        raise click.ClickException(f"shortcode {number} exists already")
    shortcode = Shortcode(
        number=number,
        name=name,
        kind=kind,
        environment=environment,
        register_version=register_version,
    )
    db.session.add(shortcode)
    db.session.commit()
    click.echo(json.dumps(shortcode_json(shortcode, current_app.config["PUBLIC_BASE_URL"])))


@group.command("shortcodes")
@click.option("--json", "as_json", is_flag=True, help="A JSON list, for scripts.")
@with_appcontext
def shortcodes(as_json: bool) -> None:
    """List shortcodes with their callback URLs."""
    items = [
        shortcode_json(s, current_app.config["PUBLIC_BASE_URL"])
        for s in db.session.scalars(select(Shortcode).order_by(Shortcode.number))
    ]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    for item in items:
        click.echo(f"{item['number']} {item['name']} ({item['kind']}, {item['environment']})")
        click.echo(f"  validation:   {item['validation_url']}")
        click.echo(f"  confirmation: {item['confirmation_url']}")


@group.command("sweep")
@with_appcontext
def sweep() -> None:
    """Post the payments waiting in ``received`` and send the queued messages, here and now
    (the workers do the same on their own; this is for cron without a worker, or a person)."""
    from lenders.jobs import run_drains

    app = current_app._get_current_object()
    count = run_drains(app, ["payments"])
    click.echo(f"processed {count} payment(s) waiting in received")
    messages = run_drains(app, ["messages"])
    if messages:
        click.echo(f"sent {messages} queued message(s)")


@group.command("replay-journal")
@click.argument("path", required=False, type=click.Path(exists=True, dir_okay=False))
@with_appcontext
def replay_journal_command(path: str | None) -> None:
    """Store journalled confirmations in the database: this host's journal files that no
    living process owns, or FILE, a journal file copied from another host. The server
    processes do this on their own every few seconds; this is for a host that is gone."""
    from payments.journal import replay, waiting

    count = replay(Path(path) if path else None)
    click.echo(f"replayed {count} confirmation(s); {waiting() if not path else 0} still waiting")


@group.command("export-transactions")
@click.argument("path", type=click.Path(dir_okay=False, writable=True))
@with_appcontext
def export_transactions(path: str) -> None:
    """Write every C2B payment as CSV (masked MSISDNs only)."""
    with open(path, "w", encoding="utf-8", newline="") as stream:
        count = write_csv(transaction_rows(db.session), stream)
    click.echo(f"exported {count} payments to {path}")


@group.command("load-demo")
@with_appcontext
def load_demo() -> None:
    """Create the demo paybill (idempotent). Refused in production."""
    from payments.demo import load_demo_shortcode

    if current_app.config["ENV_NAME"] == "production":
        raise click.ClickException("the demo paybill is never loaded in production")
    load_demo_shortcode(db.session)
    db.session.commit()


@group.command("rotate-keys")
@with_appcontext
def rotate_keys() -> None:
    """Re-encrypt every stored secret (every encrypted column of every model) under the
    first MAREJESHO_ENCRYPTION_KEYS key. Then the old keys can be removed from the list."""
    from lenders.vault import rotate_keys as rotate

    count = rotate(db.session, db.metadata)
    db.session.commit()
    click.echo(f"re-encrypted {count} secret(s) under the first key")


# --- reconciliation: import-statement, pull, reconciliation ---------------------------------


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


# --- money out and back (CONTRACT §3) ------------------------------------------------------


def _staff(email: str):
    from lenders.auth import find_staff

    user = find_staff(email)
    if user is None or not user.active:
        raise click.ClickException(f"no active staff user {email}")
    return user


def _loan(number: str, viewer):
    from lenders.models import Loan
    from lenders.references import reference_key

    found = db.session.scalars(
        select(Loan).where(Loan.reference_key == reference_key(number)).limit(2)
    ).all()
    exact = [loan for loan in found if loan.number == number] or found
    if len(exact) != 1 or (not viewer.is_admin and exact[0].officer_id != viewer.id):
        raise click.ClickException(f"no loan {number} that {viewer.email} may act on")
    return exact[0]


@group.command("stk-push")
@click.argument("loan_number")
@click.option("--amount", help="Whole shillings (default: what is due now).")
@click.option("--phone", help="One of the borrower's phones (default: the first).")
@click.option("--by", "email", required=True, help="The staff user sending the prompt.")
@with_appcontext
def stk_push(loan_number: str, amount: str | None, phone: str | None, email: str) -> None:
    """Prompt the borrower's phone to pay the loan (M-Pesa Express); prints the prompt."""
    from decimal import Decimal, InvalidOperation

    from lenders.phones import InvalidPhone, canonical_phone
    from payments.prompts import PromptRefused, prompt_borrower, send_prompt, stk_json

    user = _staff(email)
    loan = _loan(loan_number, user)
    try:
        asked = Decimal(amount) if amount is not None else None
        number = canonical_phone(phone) if phone else None
        made = prompt_borrower(
            db.session, loan, actor=user, config=current_app.config, amount=asked, phone=number
        )
    except (PromptRefused, InvalidPhone, InvalidOperation) as exc:
        db.session.rollback()
        raise click.ClickException(str(exc) or "the amount is not a number") from None
    db.session.commit()  # the row and its token exist before Safaricom can answer
    made = send_prompt(db.session, made.id, current_app.config)
    db.session.commit()
    if made.status in ("failed", "sending"):
        raise click.ClickException(made.result_desc or "Daraja refused the prompt")
    shown = stk_json(made)
    keys = ("id", "status", "checkout_request_id", "loan_number", "amount", "phone")
    click.echo(json.dumps({key: shown[key] for key in keys}))


@group.command("stk-requests")
@click.option("--json", "as_json", is_flag=True, help="A JSON list, for scripts.")
@with_appcontext
def stk_requests(as_json: bool) -> None:
    """Every STK prompt, newest first, with its status and Safaricom's words."""
    from payments.money_models import StkRequest
    from payments.prompts import stk_json

    items = [
        stk_json(r) for r in db.session.scalars(select(StkRequest).order_by(StkRequest.id.desc()))
    ]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    for item in items:
        click.echo(
            f"{item['id']} {item['loan_number']} {item['amount']} {item['phone']} "
            f"{item['status']} {item['receipt'] or ''} {item['result_desc'] or ''}".rstrip()
        )


def _reversal_json(reversal) -> dict:
    return {
        "id": reversal.id,
        "trans_id": reversal.payment.trans_id,
        "amount": str(reversal.amount),
        "status": reversal.status,
        "reason": reversal.reason,
        "requested_by": reversal.requested_by.email,
        "result_desc": reversal.result_desc,
    }


@group.command("reverse")
@click.argument("trans_id")
@click.option("--by", "email", required=True, help="The admin asking.")
@click.option("--reason", required=True, help="Why the money goes back (kept in the audit).")
@with_appcontext
def reverse(trans_id: str, email: str, reason: str) -> None:
    """Ask Safaricom to reverse a C2B payment (admins). With maker-checker on it waits for
    another admin (``payments approve-reversal``). Prints the reversal as JSON."""
    from payments.models import C2BPayment
    from payments.reversing import ReversalRefused, request_reversal

    user = _staff(email)
    found = db.session.scalars(select(C2BPayment).where(C2BPayment.trans_id == trans_id)).all()
    if len(found) != 1:
        raise click.ClickException(f"no single payment with receipt {trans_id}")
    try:
        made = request_reversal(db.session, found[0].id, actor=user, reason=reason)
    except ReversalRefused as exc:
        db.session.rollback()
        raise click.ClickException(str(exc)) from None
    db.session.commit()  # wakes the money drain: here, it sends before we print
    db.session.expire_all()
    click.echo(json.dumps(_reversal_json(db.session.get(type(made), made.id))))


@group.command("approve-reversal")
@click.argument("reversal_id", type=int)
@click.option("--by", "email", required=True, help="An admin other than the requester.")
@with_appcontext
def approve_reversal(reversal_id: int, email: str) -> None:
    """Approve a waiting reversal (maker-checker); it is sent at once."""
    from payments.reversing import ReversalRefused, decide_reversal

    try:
        made = decide_reversal(db.session, reversal_id, approve=True, actor=_staff(email))
    except ReversalRefused as exc:
        db.session.rollback()
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    db.session.expire_all()
    click.echo(json.dumps(_reversal_json(db.session.get(type(made), made.id))))
