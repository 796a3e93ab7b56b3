"""``flask lenders …`` commands (CONTRACT §3)."""

from __future__ import annotations

import sys

import click
from flask import current_app
from flask.cli import with_appcontext

from lenders.csvfile import write_csv
from lenders.exports import export_loans
from lenders.extensions import db
from lenders.importer import import_loans
from lenders.loanbook import EMAIL, utf8_lines
from lenders.models import ROLES, StaffUser

group = click.Group("lenders", help="The loan book and its staff.")


@group.command("create-user")
@click.argument("email")
@click.option("--name", required=True, help="The person's name as staff see it.")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@with_appcontext
def create_user(email: str, name: str, role: str, password_stdin: bool) -> None:
    """Create or update a staff user (the first admin, or a password reset)."""
    from lenders.auth import find_staff

    if not EMAIL.match(email) or len(email) > 254:
        raise click.BadParameter(f"{email!r} is not an e-mail address", param_hint="EMAIL")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < 10:
        raise click.ClickException("the password must have at least 10 characters")
    user = find_staff(email)
    created = user is None
    if created:
        user = StaffUser(email=email.strip().lower(), name=name, role=role)
        db.session.add(user)
    user.name, user.role, user.active = name, role, True
    user.set_password(password)
    db.session.commit()
    click.echo(f"{'created' if created else 'updated'} {role} {user.email}")


@group.command("import-loans")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@with_appcontext
def import_loans_command(path: str) -> None:
    """Import a loan-book CSV: all rows or none; every bad row is printed with its line."""
    with open(path, "rb") as stream:
        result = import_loans(db.session, utf8_lines(stream), source_name=path)
    if not result.ok:
        db.session.rollback()
        for error in result.errors:
            click.echo(error, err=True)
        click.echo(f"{len(result.errors)} error(s); nothing was imported", err=True)
        sys.exit(1)
    db.session.commit()
    click.echo(
        f"imported {result.loans} loans ({result.borrowers_created} new borrowers, "
        f"{result.officers_created} new officers)"
    )


@group.command("export-loans")
@click.argument("path", type=click.Path(dir_okay=False, writable=True))
@with_appcontext
def export_loans_command(path: str) -> None:
    """Write the loan book as CSV."""
    with open(path, "w", encoding="utf-8", newline="") as stream:
        count = write_csv(export_loans(db.session), stream)
    click.echo(f"exported {count} loans to {path}")


@group.command("load-demo")
@with_appcontext
def load_demo_command() -> None:
    """Load the demo lender (idempotent) and print its logins. Refused in production."""
    from lenders.demo import DEMO_PASSWORDS, load_demo

    if current_app.config["ENV_NAME"] == "production":
        raise click.ClickException("the demo lender is never loaded in production")
    loaded = load_demo(db.session)
    db.session.commit()
    click.echo("demo lender " + ("loaded" if loaded else "already present"))
    click.echo("logins (email / password):")
    for email, password in DEMO_PASSWORDS.items():
        click.echo(f"  {email:32} {password}")


# --- payouts (CONTRACT §3): the CLI twin of the payout screens -----------------------------


def _acting(email: str) -> StaffUser:
    """The active staff user named by ``--by``."""
    from lenders.auth import find_staff

    user = find_staff(email)
    if user is None or not user.active:
        raise click.ClickException(f"no active staff user {email}")
    return user


def _loan_numbered(number: str):
    from sqlalchemy import select

    from lenders.models import Loan
    from lenders.references import reference_key

    found = db.session.scalars(
        select(Loan).where(Loan.reference_key == reference_key(number)).limit(2)
    ).all()
    exact = [loan for loan in found if loan.number == number]
    if len(exact) == 1 or len(found) == 1:
        return (exact or found)[0]
    raise click.ClickException(f"no loan {number}")


def disbursement_json(disbursement) -> dict:
    """A payout as the commands print it (phone masked)."""
    return {
        "id": disbursement.id,
        "purpose": disbursement.purpose,
        "loan_number": disbursement.loan.number if disbursement.loan else None,
        "amount": str(disbursement.amount),
        "phone": f"{disbursement.phone[:4]}****{disbursement.phone[-4:]}",
        "status": disbursement.status,
        "originator_conversation_id": disbursement.originator_conversation_id,
        "requested_by": disbursement.requested_by.email,
        "approved_by": disbursement.approved_by.email if disbursement.approved_by else None,
        "receipt": disbursement.receipt,
        "receiver_name": disbursement.receiver_name,
        "reason": disbursement.reason,
    }


@group.command("request-disbursement")
@click.argument("loan_number")
@click.option("--by", "email", required=True, help="The officer or admin asking.")
@click.option("--phone", help="One of the borrower's phones (default: the first).")
@with_appcontext
def request_disbursement_command(loan_number: str, email: str, phone: str | None) -> None:
    """Ask for a pending loan to be paid out by M-Pesa; prints the payout as JSON."""
    import json

    from lenders.disbursements import DisbursementError, request_disbursement
    from lenders.phones import InvalidPhone, canonical_phone

    user, loan = _acting(email), _loan_numbered(loan_number)
    try:
        number = canonical_phone(phone) if phone else None
        made = request_disbursement(db.session, loan, actor=user, phone=number)
    except (DisbursementError, InvalidPhone) as exc:
        db.session.rollback()
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    click.echo(json.dumps(disbursement_json(made)))


@group.command("approve-disbursement")
@click.argument("loan_number")
@click.option("--by", "email", required=True, help="An admin other than the requester.")
@with_appcontext
def approve_disbursement_command(loan_number: str, email: str) -> None:
    """Approve a loan's requested payout; it is sent at once. Prints it as JSON."""
    import json

    from lenders.disbursements import DisbursementError, approve_disbursement, live_disbursement

    user, loan = _acting(email), _loan_numbered(loan_number)
    waiting = live_disbursement(db.session, loan.id)
    if waiting is None:
        raise click.ClickException(f"no payout of {loan.number} was requested")
    try:
        approve_disbursement(db.session, waiting.id, actor=user)
    except DisbursementError as exc:
        db.session.rollback()
        raise click.ClickException(str(exc)) from None
    db.session.commit()  # wakes the money drain: here, it sends before we print
    db.session.expire_all()
    click.echo(json.dumps(disbursement_json(db.session.get(type(waiting), waiting.id))))
