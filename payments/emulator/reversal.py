"""Reversal of a C2B payment (REFERENCE §9.3): once (R000001 after), only for a receipt the
shortcode received (R000002 otherwise); the outcome goes to ResultURL."""

from __future__ import annotations

from flask import Blueprint

from payments.emulator import payloads as make
from payments.emulator.gateway import accepted, caller, emulator, json_body
from payments.emulator.initiator import (
    ACCEPTED,
    checked_after_delay,
    initiator_job,
    send_result,
    stamp,
)
from payments.emulator.state import ORGANISATION, Emulator, invalid, whole_amount

bp = Blueprint("reversal", __name__)


@bp.post("/mpesa/reversal/v1/request")
def request_reversal():
    """Reverse a C2B payment; the outcome goes to ResultURL."""
    emu = emulator()
    app = caller("reversal")
    body = json_body()
    job = initiator_job(app, body, ("TransactionReversal",), "Initiator")
    transaction_id = str(body.get("TransactionID") or "").strip()
    if not transaction_id:
        raise invalid("TransactionID")
    if "RecieverIdentifierType" not in body:  # Daraja's own spelling is the one it reads
        raise invalid("RecieverIdentifierType")
    job |= {
        "transaction_id": transaction_id,
        "amount": whole_amount(body.get("Amount")),
        "receiver": emu.shortcode(app, body.get("ReceiverParty"), "ReceiverParty"),
    }
    emu.courier.spawn(settle, emu, job)
    return accepted(job["ocid"], job["conversation_id"], ACCEPTED)


def settle(emu: Emulator, job: dict) -> None:
    if (checked := checked_after_delay(emu, job)) is None:
        return
    moment, code = checked
    parameters = None
    receipt = make.receipt(moment)
    if code == 0:
        with emu.lock:
            payment = emu.payments.get(job["transaction_id"])
            if payment is None or payment["shortcode"] != job["receiver"]:
                code = "R000002"
            elif payment["reversed"]:
                code = "R000001"
            else:
                payment["reversed"] = True
        if code == 0:
            original = payment["receipt"]
            balance = emu.move(
                payment["shortcode"],
                -payment["amount"],
                receipt=receipt,
                moment=moment,
                reason="Reversal",
                details=f"Reversal of transaction {original}",
                party=emu.public_name(payment["msisdn"]),
                linked=original,
            )
            parameters = [
                ("DebitAccountBalance", make.account_line("Utility Account", balance)),
                ("Amount", float(payment["amount"])),
                ("TransCompletedTime", stamp(moment)),
                ("OriginalTransactionID", payment["receipt"]),
                ("Charge", 0.0),
                ("CreditPartyPublicName", emu.public_name(payment["msisdn"])),
                ("DebitPartyPublicName", f"{payment['shortcode']} - {ORGANISATION}"),
            ]
    send_result(
        emu,
        "reversal_result",
        job,
        result_code=code,
        transaction_id=receipt,
        parameters=parameters,
        reference=("QueueTimeoutURL", make.QUEUE_TIMEOUT_REFERENCE.format("reversal")),
    )
