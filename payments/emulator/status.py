"""Transaction Status (REFERENCE §9.1): what became of a receipt or of one of our B2C
payments (by its OriginatorConversationID), sent to ResultURL."""

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
from payments.emulator.state import ORGANISATION, Emulator, invalid

bp = Blueprint("status", __name__)
# §9.1 lists Transaction Status's result codes as 0 and SFC_IC0003 "The operator does not
# exist." and no other: a receipt M-Pesa does not know gets the latter (Daraja's code for
# exactly that case is not documented), never a Reversal code such as R000002.
UNKNOWN = ("SFC_IC0003", "The operator does not exist.")


@bp.post("/mpesa/transactionstatus/v1/query")
def query():
    """Ask about a receipt or a B2C OriginatorConversationID; the answer goes to ResultURL."""
    emu = emulator()
    app = caller("status")
    body = json_body()
    job = initiator_job(app, body, ("TransactionStatusQuery",), "Initiator")
    transaction_id = str(body.get("TransactionID") or "").strip()
    original = str(body.get("OriginalConversationID") or "").strip()
    if not transaction_id and not original:
        raise invalid("TransactionID")
    if str(body.get("IdentifierType") or "") not in ("1", "2", "4"):
        raise invalid("IdentifierType")
    job |= {
        "transaction_id": transaction_id,
        "original_conversation_id": original,
        "party_a": emu.shortcode(app, body.get("PartyA"), "PartyA"),
        "occasion": str(body.get("Occasion") or ""),
    }
    emu.courier.spawn(settle, emu, job)
    return accepted(job["ocid"], job["conversation_id"], ACCEPTED)


def settle(emu: Emulator, job: dict) -> None:
    if (checked := checked_after_delay(emu, job)) is None:
        return
    moment, code = checked
    parameters, description = None, None
    if code == 0:
        parameters = status_of(emu, job["transaction_id"], job["original_conversation_id"])
        if parameters is None:
            code, description = UNKNOWN
    reference = (
        ("Occasion", job["occasion"])
        if job["occasion"]
        else ("QueueTimeoutURL", make.QUEUE_TIMEOUT_REFERENCE.format("transactionstatus"))
    )
    send_result(
        emu,
        "status_result",
        job,
        result_code=code,
        result_desc=description,
        transaction_id=make.non_financial_id(moment),
        parameters=parameters,
        reference=reference,
    )


def status_of(emu: Emulator, receipt: str, ocid: str) -> list[tuple[str, object]] | None:
    """Transaction Status's parameters for a payment or a disbursement we know."""
    with emu.lock:
        payment = emu.payments.get(receipt)
        disbursement = emu.disbursements.get(ocid) or next(
            (d for d in emu.disbursements.values() if receipt and d.get("receipt") == receipt),
            None,
        )
    if payment:
        return [
            ("DebitPartyName", emu.public_name(payment["msisdn"])),
            ("CreditPartyName", f"{payment['shortcode']} - {ORGANISATION}"),
            ("OriginatorConversationID", make.daraja_id()),
            ("InitiatedTime", stamp(payment["moment"])),
            ("CreditPartyCharges", None),
            ("DebitAccountType", "MMF Account For Customer"),
            ("TransactionReason", None),
            ("ReasonType", "Pay Bill Online" if payment["kind"] == "stk" else "Pay Utility"),
            ("TransactionStatus", "Reversed" if payment["reversed"] else "Completed"),
            ("FinalisedTime", stamp(payment["moment"])),
            ("Amount", float(payment["amount"])),
            ("ConversationID", make.conversation_id(payment["moment"])),
            ("ReceiptNo", payment["receipt"]),
        ]
    if disbursement and disbursement.get("result_code") == 0:
        return [
            ("DebitPartyName", f"{disbursement['party_a']} - {ORGANISATION}"),
            ("CreditPartyName", emu.public_name(disbursement["party_b"])),
            ("OriginatorConversationID", disbursement["ocid"]),
            ("InitiatedTime", stamp(disbursement["moment"])),
            ("DebitPartyCharges", "Fee For B2C Payment|KES|22.40"),
            ("DebitAccountType", "Utility Account"),
            ("TransactionReason", None),
            ("ReasonType", "Business Payment to Customer via API"),
            ("TransactionStatus", "Completed"),
            ("FinalisedTime", stamp(disbursement["moment"])),
            ("Amount", float(disbursement["amount"])),
            ("ConversationID", disbursement["conversation_id"]),
            ("ReceiptNo", disbursement["receipt"]),
        ]
    return None
