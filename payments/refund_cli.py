"""``flask lenders request-refund`` and ``flask lenders approve-refund``: the command-line
twin of the refund panel and the payout page's approval, with the same rules
(payments/refunds.py, lenders/disbursements.py). They sit in the ``lenders`` group beside
``request-disbursement`` (CONTRACT §3) but live here, since the book never imports
payments; ``payments.init_app`` adds them to the group."""

from __future__ import annotations

import json

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from lenders.cli import _acting
from lenders.disbursements import Disbursement, DisbursementError, approve_disbursement
from lenders.extensions import db
from lenders.phones import InvalidPhone, canonical_phone
from payments import refunds
from payments.models import C2BPayment, Shortcode


def refund_json(refund: Disbursement, trans_id: str) -> dict:
    """A refund as the commands print it (phone masked)."""
    return {
        "id": refund.id,
        "purpose": refund.purpose,
        "trans_id": trans_id,
        "borrower": refund.borrower.name,
        "amount": str(refund.amount),
        "phone": f"{refund.phone[:4]}****{refund.phone[-4:]}",
        "status": refund.status,
        "reason": refund.note,
        "originator_conversation_id": refund.originator_conversation_id,
        "requested_by": refund.requested_by.email,
        "approved_by": refund.approved_by.email if refund.approved_by else None,
        "receipt": refund.receipt,
        "receiver_name": refund.receiver_name,
        "failure": refund.reason,
        "credit_left": str(refund.borrower.credit),
    }


def _payment(trans_id: str, shortcode: str | None) -> C2BPayment:
    query = select(C2BPayment).where(C2BPayment.trans_id == trans_id.strip().upper())
    if shortcode:
        query = query.join(Shortcode).where(Shortcode.number == shortcode)
    found = db.session.scalars(query.limit(2)).all()
    if not found:
        raise click.ClickException(f"no payment {trans_id}")
    if len(found) > 1:
        raise click.ClickException(f"{trans_id} was paid to several shortcodes: add --shortcode")
    return found[0]


@click.command("request-refund")
@click.argument("trans_id")
@click.option("--amount", required=True, help="Whole shillings, at most the credit left.")
@click.option("--reason", required=True, help="Why the credit goes back.")
@click.option("--by", "email", required=True, help="The officer or admin asking.")
@click.option("--phone", help="One of the borrower's phones (default: the first).")
@click.option("--shortcode", help="The shortcode paid, when the receipt is on several.")
@with_appcontext
def request_refund_command(trans_id, amount, reason, email, phone, shortcode) -> None:
    """Ask for a posted payment's borrower credit to be refunded by M-Pesa; it waits for
    another admin's approval (approve-refund). Prints the refund as JSON."""
    user, payment = _acting(email), _payment(trans_id, shortcode)
    try:
        number = canonical_phone(phone) if phone else None
        made = refunds.request_refund(
            db.session, payment.id, amount, actor=user, reason=reason, phone=number
        )
    except (refunds.RefundRefused, InvalidPhone) as exc:
        db.session.rollback()
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    click.echo(json.dumps(refund_json(made, payment.trans_id)))


@click.command("approve-refund")
@click.argument("trans_id")
@click.option("--by", "email", required=True, help="An admin other than the requester.")
@click.option("--id", "refund_id", type=int, help="Which refund, when several wait.")
@click.option("--shortcode", help="The shortcode paid, when the receipt is on several.")
@with_appcontext
def approve_refund_command(trans_id, email, refund_id, shortcode) -> None:
    """Approve a payment's requested refund; it is sent at once. Prints it as JSON."""
    user, payment = _acting(email), _payment(trans_id, shortcode)
    waiting = [
        r for r in refunds.payment_refunds(db.session, payment.id) if r.status == "requested"
    ]
    if refund_id is not None:
        waiting = [r for r in waiting if r.id == refund_id]
    if not waiting:
        raise click.ClickException(f"no refund of {payment.trans_id} waits for approval")
    if len(waiting) > 1:
        ids = ", ".join(str(r.id) for r in waiting)
        raise click.ClickException(f"several refunds of {payment.trans_id} wait ({ids}): add --id")
    try:
        approve_disbursement(db.session, waiting[0].id, actor=user)
    except DisbursementError as exc:
        db.session.rollback()
        raise click.ClickException(str(exc)) from None
    db.session.commit()  # wakes the money drain: here, it sends before we print
    db.session.expire_all()
    click.echo(
        json.dumps(refund_json(db.session.get(Disbursement, waiting[0].id), payment.trans_id))
    )


def init_app(group: click.Group) -> None:
    group.add_command(request_refund_command)
    group.add_command(approve_refund_command)
