"""Account Balance (REFERENCE §9.2): the shortcode's accounts, sent to ResultURL with
string ResultType and ResultCode, as documented."""

from __future__ import annotations

from flask import Blueprint

from payments.emulator import payloads as make
from payments.emulator.gateway import accepted, caller, emulator, json_body
from payments.emulator.initiator import checked_after_delay, initiator_job, send_result
from payments.emulator.state import Emulator

bp = Blueprint("balance", __name__)


@bp.post("/mpesa/accountbalance/v1/query")
def query():
    """The shortcode's balances, sent to ResultURL."""
    emu = emulator()
    app = caller("balance")
    body = json_body()
    job = initiator_job(app, body, ("AccountBalance",), "Initiator")
    job["party_a"] = emu.shortcode(app, body.get("PartyA"), "PartyA")
    emu.courier.spawn(settle, emu, job)
    # the documented answer has no full stop here, unlike the other initiator APIs
    return accepted(job["ocid"], job["conversation_id"], "Accept the service request successfully")


def settle(emu: Emulator, job: dict) -> None:
    if (checked := checked_after_delay(emu, job)) is None:
        return
    moment, code = checked
    completed = ("BOCompletedTime", moment.strftime("%Y%m%d%H%M%S"))
    if code == 0:
        account = emu.account(job["party_a"])
        lines = "&".join(make.account_line(name, value) for name, value in account.items())
        parameters = [("AccountBalance", lines), completed]
    elif emu.variants()["parameter_shape"] == "object":
        parameters = [completed]  # the production failure's single parameter (§13), modelled
    else:
        parameters = None
    send_result(
        emu,
        "balance_result",
        job,
        result_code=code,
        transaction_id=make.non_financial_id(moment),
        parameters=parameters,
        reference=("QueueTimeoutURL", make.QUEUE_TIMEOUT_REFERENCE.format("ab")),
        as_strings=True,  # Account Balance sends ResultType and ResultCode as strings
    )
