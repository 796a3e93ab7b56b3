"""A local Daraja: a small Flask app (not Marejesho's) that answers every API our client
speaks with Safaricom's shapes, codes, types and misspellings (REFERENCE §13), checks Basic
auth, bearer tokens, STK passwords and SecurityCredentials, refuses callback URLs Safaricom
would refuse, and calls our callback URLs back from background threads: C2B validation then
confirmation, the STK callback after the simulated customer answers, and B2C, status,
balance and reversal results.

Fault switches (``/_emulator/faults``, GET to read, POST a JSON object to change, DELETE
to reset; see ``emulator_state.FAULT_DEFAULTS``) make it misbehave as Daraja does:
duplicate or dropped or delayed callbacks, 500s, spike arrest, refused tokens, queue
timeouts, hashed/masked/plain MSISDNs and the sandbox's single subscriber. Other control
endpoints: ``/_emulator/certificate`` (the PEM certificate to make SecurityCredentials with),
``/_emulator/calls`` and ``/_emulator/deliveries`` (what it was asked and what it sent),
``/_emulator/tokens/revoke``.

Run it with ``serve(host, port, config)`` (``flask payments emulator``), or in a thread with
``background_server(create_emulator(config))``."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from flask import Blueprint, Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import WSGIRequestHandler, make_server, run_simple

from payments.daraja import emulator_payloads as make
from payments.daraja.emulator_core import (
    B2C_COMMANDS,
    ORGANISATION,
    PRODUCT_MISMATCH,
    STK_TYPES,
    Emulator,
    Refusal,
    invalid,
    msisdn,
    whole_amount,
)
from payments.daraja.emulator_payloads import NAIROBI, SANDBOX_SUBSCRIBER, money, now_nairobi
from payments.daraja.emulator_state import EmulatedApp

api = Blueprint("daraja", __name__)
control = Blueprint("daraja_control", __name__, url_prefix="/_emulator")


def emulator() -> Emulator:
    return current_app.extensions["daraja_emulator"]


def caller(which: str) -> EmulatedApp:
    """The app whose bearer token came with this request (or the ``which`` API's refusal)."""
    return emulator().authorized_app(which, request.headers.get("Authorization", ""))


def daraja_error(status: int, code: str, message: str, request_id: str | None = None):
    body = {"requestId": request_id or make.daraja_id(), "errorCode": code, "errorMessage": message}
    return jsonify(body), status


def json_body() -> dict:
    data = request.get_json(force=True, silent=True)
    if not isinstance(data, dict):
        raise Refusal(400, "400.002.05", "Invalid Request Payload")
    return data


def accepted(ocid: str, conversation: str, description: str) -> dict:
    return {
        "OriginatorConversationID": ocid,
        "ConversationID": conversation,
        "ResponseCode": "0",
        "ResponseDescription": description,
    }


@api.before_request
def gateway():
    """Apigee's policies come first: spike arrest, then a failing backend."""
    faults = emulator().faults
    if faults.take("spike_arrest"):
        return daraja_error(500, "500.003.02", "Error Occurred: Spike Arrest Violation")
    if faults.take("fail_with_500"):
        return daraja_error(500, "500.003.1001", "Internal Server Error")
    return None


@api.after_request
def remember_call(response):
    data = response.get_json(silent=True) if response.is_json else None
    code = data.get("errorCode") if isinstance(data, dict) else None
    entry = {
        "method": request.method,
        "path": request.path,
        "status": response.status_code,
        "error_code": code,
    }
    with emulator().lock:
        emulator().calls.append(entry)
    return response


@api.errorhandler(Refusal)
def refused(refusal: Refusal):
    return daraja_error(refusal.status, refusal.code, refusal.message, refusal.request_id)


@api.get("/oauth/v1/generate")
@api.get("/oauth/v2/generate")
def oauth():
    """An access token for the app whose key and secret came as HTTP Basic auth."""
    emu = emulator()
    if request.args.get("grant_type") != "client_credentials":
        raise Refusal(400, "400.008.02", "Invalid grant type passed")
    auth = request.authorization
    if auth is None or auth.type != "basic":
        raise Refusal(400, "400.008.01", "Invalid authentication type passed")
    app = emu.app_for_credentials(auth.username or "", auth.password or "")
    if app is None:  # the real body for a wrong key or secret is UNVERIFIED
        raise Refusal(400, "400.008.01", "Invalid Authentication passed")
    token = make.access_token()
    emu.tokens.issue(app, token)
    expires_in = int(emu.config["token_lifetime"]) - 1
    return {
        "access_token": token,
        "expires_in": str(expires_in) if emu.config["expires_in_type"] == "string" else expires_in,
    }


@api.post("/mpesa/c2b/<version>/registerurl")
def register_urls(version: str):
    """Register a shortcode's validation and confirmation URLs (the app's C2B version only)."""
    emu = emulator()
    if version not in ("v1", "v2"):
        return not_found(None)
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


@api.post("/mpesa/c2b/<version>/simulate")
def simulate(version: str):
    """A customer pays the shortcode (sandbox only); callbacks follow in the background."""
    emu = emulator()
    if version not in ("v1", "v2") or emu.environment == "production":
        return not_found(None)
    app = caller("c2b")
    body = json_body()
    shortcode = emu.shortcode(app, body.get("ShortCode"), "ShortCode")
    command = body.get("CommandID")
    if command not in STK_TYPES:
        raise invalid("CommandID")
    amount = whole_amount(body.get("Amount"))
    payer = msisdn(body.get("Msisdn"), "Msisdn")
    bill_ref = str(body.get("BillRefNumber") or "")
    emu.courier.spawn(emu.pay_c2b, shortcode, amount, payer, bill_ref, command)
    description = "Accept the service request successfully."
    if version == "v1":  # a real 2018 v1 answer had no ResponseCode
        return {
            "ConversationID": make.conversation_id(now_nairobi()),
            "OriginatorCoversationID": make.legacy_id(),
            "ResponseDescription": description,
        }
    return {
        "OriginatorCoversationID": make.daraja_id(),
        "ResponseCode": "0",
        "ResponseDescription": description,
    }


@api.post("/mpesa/stkpush/v1/processrequest")
def stk_push():
    """Prompt the customer; the simulated answer and the callback follow."""
    emu = emulator()
    app = caller("stk")
    body = json_body()
    shortcode = emu.shortcode(app, body.get("BusinessShortCode"), "BusinessShortCode")
    emu.check_stk_password(app, shortcode, body)
    if body.get("TransactionType") not in STK_TYPES:
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
    checkout_id = make.checkout_request_id(now_nairobi(), phone)
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
            "merchant_request_id": merchant_request_id,
            "shortcode": shortcode,
            "party_b": party_b,
            "msisdn": phone,
            "amount": amount,
            "account_reference": reference,
            "callback_url": callback,
            "status": "pending",
        }
    emu.courier.spawn(emu.answer_prompt, checkout_id)
    message = "Success. Request accepted for processing"
    return {
        "MerchantRequestID": merchant_request_id,
        "CheckoutRequestID": checkout_id,
        "ResponseCode": "0",
        "ResponseDescription": message,
        "CustomerMessage": message,
    }


@api.post("/mpesa/stkpushquery/v1/query")
def stk_query():
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
    if prompt["status"] == "pending":
        raise Refusal(500, "500.001.1001", "The transaction is being processed", checkout_id)
    code = prompt["result_code"]
    return {
        "ResponseCode": "0",
        "ResponseDescription": "The service request has been accepted successsfully",
        "MerchantRequestID": prompt["merchant_request_id"],
        "CheckoutRequestID": checkout_id,
        "ResultCode": str(code),
        "ResultDesc": make.STK_RESULTS.get(code, "The service request failed."),
    }


def initiator_job(app: EmulatedApp, body: dict, commands: tuple[str, ...], name_key: str) -> dict:
    """What every initiator API (B2C, status, balance, reversal) is sent and checks alike:
    the initiator and the password inside its SecurityCredential, the CommandID, and the
    result and queue-timeout URLs; with the ids of the answer."""
    emu = emulator()
    initiator = str(body.get(name_key) or "")
    if not initiator:
        raise invalid(name_key)
    password = emu.security_credential(body.get("SecurityCredential"))
    if body.get("CommandID") not in commands:
        raise invalid("CommandID")
    return {
        "app": app,
        "initiator": initiator,
        "password": password,
        "result_url": emu.callback_url(body.get("ResultURL"), "ResultURL"),
        "queue_timeout_url": emu.callback_url(body.get("QueueTimeOutURL"), "QueueTimeOutURL"),
        "ocid": make.daraja_id(),
        "conversation_id": make.conversation_id(now_nairobi()),
    }


@api.post("/mpesa/b2c/<version>/paymentrequest")
def b2c(version: str):
    """Pay a customer (v3 with our OriginatorConversationID; v1 without)."""
    emu = emulator()
    if version not in ("v1", "v3"):  # Kenya has no B2C v2
        return not_found(None)
    app = caller("b2c")
    body = json_body()
    ocid = str(body.get("OriginatorConversationID") or "").strip()
    if version == "v3" and not ocid:
        raise invalid("OriginatorConversationID")
    job = initiator_job(app, body, B2C_COMMANDS, "InitiatorName") | {
        "amount": whole_amount(body.get("Amount")),
        "party_a": emu.shortcode(app, body.get("PartyA"), "PartyA"),
        "party_b": msisdn(body.get("PartyB"), "PartyB"),
        "occasion": str(body.get("Occassion", body.get("Occasion")) or ""),  # both spellings
        "status": "queued",
    }
    if not 2 <= len(str(body.get("Remarks") or "")) <= 100:
        raise invalid("Remarks")
    if emu.faults.get("sandbox_single_subscriber"):
        job["party_b"] = SANDBOX_SUBSCRIBER
    with emu.lock:
        if version == "v3" and ocid in emu.disbursements:
            raise Refusal(500, "500.002.1001", "Duplicate OriginatorConversationID.")
        job["ocid"] = ocid if version == "v3" else make.legacy_id()
        emu.disbursements[job["ocid"]] = job
    emu.courier.spawn(emu.settle_b2c, job)
    return accepted(job["ocid"], job["conversation_id"], "Accept the service request successfully.")


@api.post("/mpesa/transactionstatus/v1/query")
def transaction_status():
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
    emu.courier.spawn(emu.settle_status, job)
    return accepted(job["ocid"], job["conversation_id"], "Accept the service request successfully.")


@api.post("/mpesa/accountbalance/v1/query")
def account_balance():
    """The shortcode's balances, sent to ResultURL."""
    emu = emulator()
    app = caller("balance")
    body = json_body()
    job = initiator_job(app, body, ("AccountBalance",), "Initiator")
    job["party_a"] = emu.shortcode(app, body.get("PartyA"), "PartyA")
    emu.courier.spawn(emu.settle_balance, job)
    return accepted(job["ocid"], job["conversation_id"], "Accept the service request successfully")


@api.post("/mpesa/reversal/v1/request")
def reversal():
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
    emu.courier.spawn(emu.settle_reversal, job)
    return accepted(job["ocid"], job["conversation_id"], "Accept the service request successfully.")


@api.post("/pulltransactions/v1/register")
def pull_register():
    """Register a shortcode for Pull Transactions: 1000 the first time, 1001 after."""
    emu = emulator()
    app = caller("pull")
    body = json_body()
    shortcode = str(body.get("ShortCode") or "").strip()
    if not re.fullmatch(r"\d{5,7}", shortcode) or not app.owns(shortcode):
        raise Refusal(400, "400.001", "Invalid ShortCode")
    callback = emu.callback_url(body.get("CallBackURL"), "CallBackURL")
    with emu.lock:
        again = shortcode in emu.pull_registrations
        emu.pull_registrations.setdefault(shortcode, {"callback_url": callback})
    return {
        "ResponseRefID": make.daraja_id(),
        "ResponseStatus": "1001" if again else "1000",
        "ShortCode": shortcode,
        "ResponseDescription": "ShortCode already Registered"
        if again
        else "Shortcode Registered Successfully",
    }


def pull_date(value, field: str) -> datetime:
    text = str(value or "").strip()
    for pattern in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"):
        try:
            return datetime.strptime(text, pattern).replace(tzinfo=NAIROBI)
        except ValueError:
            continue
    raise invalid(field)


@api.post("/pulltransactions/v1/query")
def pull_query():
    """The shortcode's C2B payments of the last 48 hours in a window, 100 a page,
    nested ``Response: [[...]]`` with lower-case keys."""
    emu = emulator()
    app = caller("pull")
    body = json_body()
    shortcode = str(body.get("ShortCode") or "").strip()
    if shortcode not in emu.pull_registrations or not app.owns(shortcode):
        raise Refusal(400, "400.001", "Invalid ShortCode")
    start = pull_date(body.get("StartDate"), "StartDate")
    end = pull_date(body.get("EndDate"), "EndDate")
    try:
        offset = max(0, int(str(body.get("OffSetValue") or "0")))
    except ValueError:
        raise invalid("OffSetValue") from None
    horizon = now_nairobi() - timedelta(hours=48)
    with emu.lock:
        found = sorted(
            (
                p
                for p in emu.payments.values()
                if p["shortcode"] == shortcode and max(start, horizon) <= p["moment"] <= end
            ),
            key=lambda p: p["moment"],
        )[offset : offset + 100]
    if not found:
        return {
            "ResponseRefID": make.daraja_id(),
            "ResponseCode": "1001",
            "ResponseMessage": "No transactions found",
            "Transaction": "[[]]",
        }
    rows = [
        {
            "transactionId": p["receipt"],
            "trxDate": p["moment"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "msisdn": int(p["msisdn"]),
            "sender": emu.names(p["msisdn"])[0],
            "transactiontype": "c2b-pay-bill-debit",
            "billreference": p["bill_ref"],
            "amount": money(p["amount"]),
            "organizationname": ORGANISATION,
        }
        for p in found
    ]
    return {
        "ResponseRefID": make.daraja_id(),
        "ResponseCode": "1000",
        "ResponseMessage": "Success",
        "Response": [rows],
    }


def not_found(error):
    """Apigee's answer for a path no proxy serves."""
    fault = {
        "faultstring": f"Unable to identify proxy for host: secure and url: {request.path}",
        "detail": {"errorcode": "messaging.adaptors.http.flow.ApplicationNotFound"},
    }
    return jsonify({"fault": fault}), 404


def method_not_allowed(error):
    return daraja_error(405, "405.001", "Method Not Allowed")


# -- control ---------------------------------------------------------------------------------


@control.get("/faults")
def read_faults():
    return emulator().faults.snapshot()


@control.post("/faults")
def change_faults():
    """Flip fault switches: a JSON object of the ones to change (all or none)."""
    try:
        return emulator().faults.update(request.get_json(force=True, silent=True))
    except ValueError as exc:
        return {"error": str(exc)}, 400


@control.delete("/faults")
def reset_faults():
    return emulator().faults.reset()


@control.get("/certificate")
def certificate():
    """The certificate to make SecurityCredentials with for this emulator."""
    return emulator().certificate_pem, 200, {"Content-Type": "application/x-pem-file"}


@control.get("/calls")
def calls():
    with emulator().lock:
        return jsonify(list(emulator().calls))


@control.delete("/calls")
def forget_calls():
    with emulator().lock:
        emulator().calls.clear()
    return {"cleared": True}


@control.get("/deliveries")
def deliveries():
    return jsonify(list(emulator().courier.deliveries))


@control.post("/tokens/revoke")
def revoke_tokens():
    """Forget every access token issued, as when tokens expire or are replaced."""
    return {"revoked": emulator().tokens.revoke_all()}


def create_emulator(config: dict | None = None) -> Flask:
    """The emulator as a Flask app. ``config`` overrides ``emulator_state.DEFAULT_CONFIG``."""
    app = Flask(__name__)
    app.json.sort_keys = False  # Daraja's key order, for people reading the bodies
    app.extensions["daraja_emulator"] = Emulator(config)
    app.register_blueprint(api)
    app.register_blueprint(control)
    app.register_error_handler(404, not_found)
    app.register_error_handler(405, method_not_allowed)

    @app.errorhandler(HTTPException)
    def other_http_error(error: HTTPException):
        code = error.code or 500
        return daraja_error(code, f"{code}.001", error.name)

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:
        pass


@contextlib.contextmanager
def background_server(app: Flask, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` over real HTTP from a thread (port 0: a free one); yields its base URL.
    Used by the tests for the emulator and for callback receivers."""
    server = make_server(host, port, app, threaded=True, request_handler=_QuietHandler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="http"
    )
    thread.start()
    try:
        yield f"http://{host}:{server.server_port}"
    finally:
        emu = app.extensions.get("daraja_emulator")
        if emu is not None:
            emu.stop()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def serve(host: str = "127.0.0.1", port: int = 5055, config: dict | None = None) -> None:
    """Run the emulator until interrupted (``flask payments emulator --port 5055``)."""
    app = create_emulator(config)
    emu: Emulator = app.extensions["daraja_emulator"]
    base = f"http://{host}:{port}"
    print(f"Daraja emulator ({emu.environment}) at {base}")
    for item in emu.apps:
        print(
            f"  app {item.consumer_key}: shortcodes {', '.join(item.shortcodes)}, "
            f"C2B {item.c2b_version}, initiators {', '.join(item.initiators)}"
        )
    print(f"  certificate for SecurityCredentials: {base}/_emulator/certificate")
    print(f"  fault switches: {base}/_emulator/faults")
    run_simple(host, port, app, threaded=True, use_reloader=False)
