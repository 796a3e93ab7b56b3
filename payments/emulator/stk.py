"""STK Push and STK Query (REFERENCE §6): the prompt, the customer's answer and the
callback, and the query's view of it.

What the simulated customer does: answers after ``stk_user_delay`` with the
``stk_result_code`` fault's code (0: pays). Daraja's own outcomes come first: an over-long
AccountReference fails with 1025; the same amount from the same phone within
``same_amount_window`` of a paid prompt fails with 17 "Rule limited" (§6.4). A prompt nobody
answers ends at its lifetime (``stk_prompt_lifetime``): the sandbox's test number
254708374149 with a 1037 "No response from user." callback (§5); any prompt while the
``stk_prompt_expires`` fault is on, or whose customer is slower than the lifetime, with no
callback at all, the query then saying 1019 "Transaction has expired."."""

from __future__ import annotations

import re
import time
from datetime import timedelta

from flask import Blueprint

from payments.emulator import payloads as make
from payments.emulator.gateway import caller, emulator, json_body
from payments.emulator.state import Emulator, Refusal, invalid, msisdn, whole_amount

bp = Blueprint("stk", __name__)
TYPES = ("CustomerPayBillOnline", "CustomerBuyGoodsOnline")


@bp.post("/mpesa/stkpush/v1/processrequest")
def push():
    """Prompt the customer; the simulated answer and the callback follow."""
    emu = emulator()
    app = caller("stk")
    body = json_body()
    shortcode = emu.shortcode(app, body.get("BusinessShortCode"), "BusinessShortCode")
    emu.check_stk_password(app, shortcode, body)
    if body.get("TransactionType") not in TYPES:
        raise invalid("TransactionType")
    amount = whole_amount(body.get("Amount"))
    msisdn(body.get("PartyA"), "PartyA")
    phone = msisdn(body.get("PhoneNumber"), "PhoneNumber")
    party_b = str(body.get("PartyB") or "").strip()
    if not re.fullmatch(r"\d{5,7}", party_b):
        raise invalid("PartyB")
    callback = emu.callback_url(body.get("CallBackURL"), "CallBackURL")
    reference = str(body.get("AccountReference") or "")
    if not reference:
        raise invalid("AccountReference")
    checkout_id = make.checkout_request_id(make.now_nairobi(), phone)
    merchant_request_id = make.daraja_id(digits=4)
    with emu.lock:
        if phone in emu.prompted:
            raise Refusal(
                500,
                "500.001.1001",
                "Unable to lock subscriber, a transaction is already in process for the "
                "current subscriber",
            )
        emu.prompted.add(phone)
        emu.prompts[checkout_id] = {
            "checkout_request_id": checkout_id,
            "merchant_request_id": merchant_request_id,
            "shortcode": shortcode,
            "party_b": party_b,
            "msisdn": phone,
            "amount": amount,
            "account_reference": reference,
            "callback_url": callback,
            "status": "pending",
            "expires_at": time.monotonic() + emu.config["stk_prompt_lifetime"],
            "unanswered": emu.faults.get("stk_prompt_expires") or phone == make.TEST_MSISDN,
            "silent": emu.faults.get("stk_prompt_expires"),
        }
    emu.courier.spawn(answer, emu, checkout_id)
    message = "Success. Request accepted for processing"
    return {
        "MerchantRequestID": merchant_request_id,
        "CheckoutRequestID": checkout_id,
        "ResponseCode": "0",
        "ResponseDescription": message,
        "CustomerMessage": message,
    }


@bp.post("/mpesa/stkpushquery/v1/query")
def query():
    """A prompt's outcome (ResultCode as a string), or 500.001.1001 while it is open."""
    emu = emulator()
    app = caller("stk")
    body = json_body()
    shortcode = emu.shortcode(app, body.get("BusinessShortCode"), "BusinessShortCode")
    emu.check_stk_password(app, shortcode, body)
    checkout_id = str(body.get("CheckoutRequestID") or "")
    with emu.lock:
        prompt = dict(emu.prompts.get(checkout_id) or {})
    if not prompt or prompt["shortcode"] != shortcode:
        raise invalid("CheckoutRequestID")
    if prompt["status"] == "pending" and time.monotonic() >= prompt["expires_at"]:
        expire(emu, checkout_id, background=True)  # the lifetime is over, whoever notices
        with emu.lock:
            prompt = dict(emu.prompts[checkout_id])
    if prompt["status"] == "pending":
        raise Refusal(500, "500.001.1001", "The transaction is being processed", checkout_id)
    return {
        "ResponseCode": "0",
        "ResponseDescription": "The service request has been accepted successsfully",
        "MerchantRequestID": prompt["merchant_request_id"],
        "CheckoutRequestID": checkout_id,
        "ResultCode": str(prompt["result_code"]),
        "ResultDesc": prompt["result_desc"],
    }


def answer(emu: Emulator, checkout_id: str) -> None:
    """The customer answers after ``stk_user_delay``, or never: then the prompt expires."""
    with emu.lock:
        prompt = emu.prompts[checkout_id]
    delay, lifetime = emu.config["stk_user_delay"], emu.config["stk_prompt_lifetime"]
    if prompt["unanswered"] or delay >= lifetime:
        if emu.courier.wait(lifetime):
            expire(emu, checkout_id)
        return
    if not emu.courier.wait(delay):
        return
    code = emu.faults.get("stk_result_code")
    if len(prompt["account_reference"]) > 12:
        code = 1025  # the USSD prompt got too long
    done = finish(emu, checkout_id, code)
    if done:
        send_callback(emu, done)


def expire(emu: Emulator, checkout_id: str, background: bool = False) -> None:
    """End an unanswered prompt: 1037 with a callback for the sandbox's test number,
    otherwise 1019 and no callback. Does nothing to a prompt that has ended."""
    with emu.lock:
        prompt = emu.prompts[checkout_id]
        test_number = prompt["msisdn"] == make.TEST_MSISDN and not prompt["silent"]
    if test_number:
        done = finish(emu, checkout_id, 1037, make.NO_RESPONSE)
    else:
        done = finish(emu, checkout_id, 1019)
    if done and test_number:
        if background:
            emu.courier.spawn(send_callback, emu, done)
        else:
            send_callback(emu, done)


def finish(emu: Emulator, checkout_id: str, code, desc: str | None = None) -> dict | None:
    """Settle a pending prompt with ``code`` (17 instead of a payment when the same amount
    came from the same phone within the window); a copy of it, or None when it had
    ended already. A paid prompt is a payment, and credits the shortcode."""
    moment = make.now_nairobi()
    with emu.lock:
        prompt = emu.prompts[checkout_id]
        if prompt["status"] != "pending":
            return None
        if code == 0 and paid_same_amount_since(emu, prompt, moment):
            code = 17
        receipt = make.receipt(moment) if code == 0 else ""
        prompt.update(
            status="done",
            result_code=code,
            result_desc=desc or make.STK_RESULTS.get(code, "The service request failed."),
            receipt=receipt,
            moment=moment,
        )
        emu.prompted.discard(prompt["msisdn"])
        if receipt:
            prompt["balance"] = emu.record_payment(
                {
                    "receipt": receipt,
                    "kind": "stk",
                    "shortcode": prompt["party_b"],
                    "amount": prompt["amount"],
                    "msisdn": prompt["msisdn"],
                    "bill_ref": prompt["account_reference"],
                    "moment": moment,
                    "reversed": False,
                }
            )
        return dict(prompt)


def paid_same_amount_since(emu: Emulator, prompt: dict, moment) -> bool:
    """A paid prompt from this phone for this amount within ``same_amount_window``."""
    since = moment - timedelta(seconds=emu.config["same_amount_window"])
    return any(
        p["kind"] == "stk"
        and p["msisdn"] == prompt["msisdn"]
        and p["amount"] == prompt["amount"]
        and p["moment"] >= since
        for p in emu.payments.values()
    )


def send_callback(emu: Emulator, prompt: dict) -> None:
    """M-Pesa calls the CallBackURL; and, when configured, a paid prompt's C2B confirmation."""
    body = make.stk_callback(
        merchant_request_id=prompt["merchant_request_id"],
        checkout_request_id=prompt["checkout_request_id"],
        result_code=prompt["result_code"],
        result_desc=prompt["result_desc"],
        amount=prompt["amount"],
        receipt_number=prompt["receipt"],
        moment=prompt["moment"],
        msisdn=prompt["msisdn"],
        code_type=emu.variants()["code_type"],
    )
    emu.courier.deliver("stk_callback", prompt["checkout_request_id"], prompt["callback_url"], body)
    with emu.lock:
        registration = emu.registrations.get(prompt["party_b"])
    if prompt["receipt"] and registration and emu.config["stk_sends_c2b_confirmation"]:
        notice = make.c2b_notice(
            trans_id=prompt["receipt"],
            moment=prompt["moment"],
            amount=prompt["amount"],
            shortcode=prompt["party_b"],
            bill_ref=prompt["account_reference"],
            msisdn=emu.msisdn_as_sent(prompt["msisdn"], registration["version"]),
            names=emu.names(prompt["msisdn"]),
            org_balance=make.money(prompt["balance"]),
        )
        emu.courier.deliver(
            "confirmation", prompt["receipt"], registration["confirmation_url"], notice
        )
