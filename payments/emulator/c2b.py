"""C2B (REFERENCE §2-§5): registering a shortcode's URLs, the sandbox's simulate, and what
M-Pesa does when a customer pays: validation (if enabled), the money moving, then the
confirmation."""

from __future__ import annotations

import requests
from flask import Blueprint

from payments.emulator import payloads as make
from payments.emulator.gateway import caller, emulator, json_body, not_found
from payments.emulator.state import Emulator, Refusal, invalid, msisdn, whole_amount

bp = Blueprint("c2b", __name__)
COMMANDS = ("CustomerPayBillOnline", "CustomerBuyGoodsOnline")
PRODUCT_MISMATCH = (
    "Error Occurred - Invalid Access Token - Invalid API call as no apiproduct match found"
)


@bp.post("/mpesa/c2b/<version>/registerurl")
def register_urls(version: str):
    """Register a shortcode's validation and confirmation URLs (the app's C2B version only)."""
    emu = emulator()
    if version not in ("v1", "v2"):
        return not_found()
    app = caller("c2b")
    if app.c2b_version != version:
        raise Refusal(401, "401.003.01", PRODUCT_MISMATCH)
    body = json_body()
    shortcode = emu.shortcode(app, body.get("ShortCode"), "ShortCode")
    response_type = body.get("ResponseType")
    if response_type not in ("Completed", "Cancelled"):
        raise invalid("ResponseType")
    confirmation = emu.callback_url(body.get("ConfirmationURL"), "ConfirmationURL")
    validation = emu.callback_url(body.get("ValidationURL"), "ValidationURL")
    with emu.lock:
        if shortcode in emu.registrations and emu.environment == "production":
            raise Refusal(500, "500.003.1001", "Urls are already registered.")
        emu.registrations[shortcode] = {
            "confirmation_url": confirmation,
            "validation_url": validation,
            "response_type": response_type,
            "version": version,
        }
    if version == "v1":
        return {
            "OriginatorCoversationID": make.legacy_id(),
            "ResponseCode": "0",
            "ResponseDescription": "success",
        }
    return {
        "OriginatorCoversationID": make.daraja_id(),
        "ResponseCode": "0",
        "ResponseDescription": "Success",
    }


@bp.post("/mpesa/c2b/<version>/simulate")
def simulate(version: str):
    """A customer pays the shortcode (sandbox only); callbacks follow in the background."""
    emu = emulator()
    if version not in ("v1", "v2") or emu.environment == "production":
        return not_found()
    app = caller("c2b")
    body = json_body()
    shortcode = emu.shortcode(app, body.get("ShortCode"), "ShortCode")
    command = body.get("CommandID")
    if command not in COMMANDS:
        raise invalid("CommandID")
    amount = whole_amount(body.get("Amount"))
    payer = msisdn(body.get("Msisdn"), "Msisdn")
    bill_ref = str(body.get("BillRefNumber") or "")
    emu.courier.spawn(pay, emu, shortcode, amount, payer, bill_ref, command)
    description = "Accept the service request successfully."
    if version == "v1":  # a real 2018 v1 answer had no ResponseCode
        return {
            "ConversationID": make.conversation_id(make.now_nairobi()),
            "OriginatorCoversationID": make.legacy_id(),
            "ResponseDescription": description,
        }
    return {
        "OriginatorCoversationID": make.daraja_id(),
        "ResponseCode": "0",
        "ResponseDescription": description,
    }


def pay(emu: Emulator, shortcode: str, amount, payer: str, bill_ref: str, command: str) -> None:
    """What M-Pesa does when a customer pays: validation (if enabled), then the money
    moves, then the confirmation. Runs in a background thread."""
    moment = make.now_nairobi()
    trans_id = make.receipt(moment)
    if emu.faults.get("sandbox_single_subscriber"):
        payer = make.SANDBOX_SUBSCRIBER
    with emu.lock:
        registration = emu.registrations.get(shortcode)
    version = registration["version"] if registration else "v2"
    notice = make.c2b_notice(
        trans_id=trans_id,
        moment=moment,
        amount=amount,
        shortcode=shortcode,
        bill_ref=bill_ref if command == "CustomerPayBillOnline" else "",
        msisdn=emu.msisdn_as_sent(payer, version),
        names=emu.names(payer),
        org_balance="",
        transaction_type="Pay Bill" if command == "CustomerPayBillOnline" else "Buy Goods",
        only_first_name=emu.environment == "production" and version == "v2",
    )
    if registration and emu.config["external_validation"]:
        verdict, third_party = validate(emu, registration, notice)
        if verdict == "rejected" or (
            verdict == "unreachable" and registration["response_type"] == "Cancelled"
        ):
            emu.courier.record("payment", trans_id, "cancelled")
            return
        notice["ThirdPartyTransID"] = third_party
    balance = emu.record_payment(
        {
            "receipt": trans_id,
            "kind": "c2b",
            "shortcode": shortcode,
            "amount": amount,
            "msisdn": payer,
            "bill_ref": notice["BillRefNumber"],
            "moment": moment,
            "reversed": False,
            "transaction_type": notice["TransactionType"],
        }
    )
    if registration is None:
        emu.courier.record("confirmation", trans_id, "no URLs registered")
        return
    notice["OrgAccountBalance"] = make.money(balance)
    emu.courier.deliver("confirmation", trans_id, registration["confirmation_url"], notice)


def validate(emu: Emulator, registration: dict, notice: dict) -> tuple[str, str]:
    """accepted | rejected | unreachable, and any ThirdPartyTransID we returned. A
    timeout, a broken connection, a non-2xx or a body that is not JSON is unreachable
    (then M-Pesa applies the registered ResponseType)."""
    trans_id = notice["TransID"]
    try:
        with emu.courier.post(
            registration["validation_url"], notice, emu.config["validation_timeout"]
        ) as answer:
            status = answer.status_code
            data = answer.json() if 200 <= status < 300 else None
    except (requests.RequestException, ValueError) as exc:
        emu.courier.record("validation", trans_id, f"unreachable: {type(exc).__name__}")
        return "unreachable", ""
    if not isinstance(data, dict):
        emu.courier.record("validation", trans_id, "unreachable", status)
        return "unreachable", ""
    verdict = "accepted" if data.get("ResultCode") in (0, "0") else "rejected"
    emu.courier.record("validation", trans_id, verdict, status)
    return verdict, str(data.get("ThirdPartyTransID") or "")


def demo_payment(emu: Emulator, order: dict) -> dict:
    """A payment the demo traffic makes up (``POST /_emulator/demo-payments``), received as
    a simulated one is: M-Pesa's part (TransID, TransTime, OrgAccountBalance from the
    shortcode's running balance) is written here, the rest of ``order["notice"]`` is kept
    as the demo wrote it (its masked or hashed MSISDN, odd account and names); the payment
    is kept for Pull Transactions, status, reversals and the statement, under the payer's
    real number ``order["msisdn"]``; and the confirmation goes to
    ``order["confirmation_url"]`` through the courier, so the fault switches apply (no
    validation: the demo has no registered URLs). The confirmation as sent; raises
    Refusal for an order that lacks one of these."""
    notice = order.get("notice")
    if not isinstance(notice, dict):
        raise invalid("notice")
    url = emu.callback_url(order.get("confirmation_url"), "confirmation_url")
    payer = msisdn(order.get("msisdn"), "msisdn")
    shortcode = str(notice.get("BusinessShortCode") or "").strip()
    if not shortcode.isdigit() or not 5 <= len(shortcode) <= 7:
        raise invalid("BusinessShortCode")
    amount = whole_amount(notice.get("TransAmount"), "TransAmount")
    moment = make.now_nairobi()
    names = [str(notice.get(k) or "").strip() for k in ("FirstName", "MiddleName", "LastName")]
    shown = " ".join(n for n in names if n)
    body = dict(notice)
    with emu.lock:
        trans_id = make.receipt(moment)
        while trans_id in emu.payments:
            trans_id = make.receipt(moment)
        body |= {
            "TransID": trans_id,
            "TransTime": moment.strftime("%Y%m%d%H%M%S"),
            "TransAmount": make.money(amount),
            "BusinessShortCode": shortcode,
        }
        balance = emu.record_payment(
            {
                "receipt": trans_id,
                "kind": "c2b",
                "shortcode": shortcode,
                "amount": amount,
                "msisdn": payer,
                "bill_ref": str(body.get("BillRefNumber") or ""),
                "moment": moment,
                "reversed": False,
                "transaction_type": body.get("TransactionType"),
                "names": tuple(names) if names[0] else None,  # Pull's sender
            },
            party=f"{payer} - {shown}" if shown else payer,
        )
    body["OrgAccountBalance"] = make.money(balance)
    emu.courier.spawn(emu.courier.deliver, "confirmation", trans_id, url, body)
    return body
