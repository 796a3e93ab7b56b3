"""B2C payment requests, v3 with our OriginatorConversationID and the legacy v1
(REFERENCE §7): the utility account pays a customer, the result goes to ResultURL, or a
queue timeout to QueueTimeOutURL."""

from __future__ import annotations

from flask import Blueprint

from payments.emulator import payloads as make
from payments.emulator.gateway import accepted, caller, emulator, json_body, not_found
from payments.emulator.initiator import ACCEPTED, checked_after_delay, initiator_job, send_result
from payments.emulator.state import Emulator, Refusal, invalid, msisdn, whole_amount

bp = Blueprint("b2c", __name__)
COMMANDS = ("BusinessPayment", "SalaryPayment", "PromotionPayment")


@bp.post("/mpesa/b2c/<version>/paymentrequest")
def payment_request(version: str):
    """Pay a customer (v3 with our OriginatorConversationID; v1 without)."""
    emu = emulator()
    if version not in ("v1", "v3"):  # Kenya has no B2C v2
        return not_found()
    app = caller("b2c")
    body = json_body()
    ocid = str(body.get("OriginatorConversationID") or "").strip()
    if version == "v3" and not ocid:
        raise invalid("OriginatorConversationID")
    job = initiator_job(app, body, COMMANDS, "InitiatorName") | {
        "amount": whole_amount(body.get("Amount")),
        "party_a": emu.shortcode(app, body.get("PartyA"), "PartyA"),
        "party_b": msisdn(body.get("PartyB"), "PartyB"),
        "occasion": str(body.get("Occassion", body.get("Occasion")) or ""),  # both spellings
        "status": "queued",
    }
    if not 2 <= len(str(body.get("Remarks") or "")) <= 100:
        raise invalid("Remarks")
    if emu.faults.get("sandbox_single_subscriber"):
        job["party_b"] = make.SANDBOX_SUBSCRIBER
    with emu.lock:
        if version == "v3" and ocid in emu.disbursements:
            raise Refusal(500, "500.002.1001", "Duplicate OriginatorConversationID.")
        job["ocid"] = ocid if version == "v3" else make.legacy_id()
        emu.disbursements[job["ocid"]] = job
    emu.courier.spawn(settle, emu, job)
    return accepted(job["ocid"], job["conversation_id"], ACCEPTED)


def settle(emu: Emulator, job: dict) -> None:
    """The money moves (or why not), and the result is posted."""
    reference = ("QueueTimeoutURL", make.QUEUE_TIMEOUT_REFERENCE.format("b2c"))
    if emu.faults.take("queue_timeout"):
        if emu.courier.wait(emu.config["result_delay"]):
            job["status"] = "timed out"
            send_result(  # modelled: Safaricom does not document this body (§7.5)
                emu,
                "b2c_timeout",
                job,
                job["queue_timeout_url"],
                result_code=1,
                result_desc="The service request has timed out.",
                transaction_id=make.non_financial_id(make.now_nairobi()),
                reference=reference,
            )
        return
    if (checked := checked_after_delay(emu, job)) is None:
        return
    moment, code = checked
    amount = job["amount"]
    receipt = make.receipt(moment)
    with emu.lock:  # the balance check and the debit together
        if code == 0 and amount < 10:
            code = 2
        elif code == 0 and amount > 250_000:
            code = 3
        elif code == 0 and emu.account(job["party_a"])["Utility Account"] < amount:
            code = 1
        if code == 0:
            payee = emu.public_name(job["party_b"])
            utility = emu.move(
                job["party_a"],
                -amount,
                receipt=receipt,
                moment=moment,
                reason="Business Payment to Customer via API",
                details=f"Business Payment to {payee}",
                party=payee,
            )
    parameters = None
    if code == 0:
        account = emu.account(job["party_a"])
        parameters = [
            ("TransactionAmount", int(amount)),
            ("TransactionReceipt", receipt),
            ("ReceiverPartyPublicName", emu.public_name(job["party_b"])),
            ("TransactionCompletedDateTime", moment.strftime("%d.%m.%Y %H:%M:%S")),
            ("B2CUtilityAccountAvailableFunds", float(utility)),
            ("B2CWorkingAccountAvailableFunds", float(account["Working Account"])),
            ("B2CRecipientIsRegisteredCustomer", "Y"),
            ("B2CChargesPaidAccountAvailableFunds", float(account["Charges Paid Account"])),
        ]
    with emu.lock:
        job.update(status="done", result_code=code, receipt=receipt if code == 0 else "")
        job["moment"] = moment
    send_result(
        emu,
        "b2c_result",
        job,
        result_code=code,
        transaction_id=receipt,
        parameters=parameters,
        reference=reference,
    )
