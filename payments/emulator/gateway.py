"""What stands in front of every Daraja API, as Apigee does for Safaricom: the error shape,
spike arrest and failing backends, the synchronous-answer faults, the record of calls, and
the answers for paths and methods no API serves. Each API family's module serves its own
blueprint; ``daraja_api`` puts them behind these policies."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterable

from flask import Blueprint, current_app, jsonify, request

from payments.emulator import payloads as make
from payments.emulator.settings import EmulatedApp
from payments.emulator.state import Emulator, Refusal

log = logging.getLogger("marejesho.emulator")


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


def policies():
    """Apigee's policies come first: spike arrest, then a failing backend."""
    faults = emulator().faults
    if faults.take("spike_arrest"):
        return daraja_error(500, "500.003.02", "Error Occurred: Spike Arrest Violation")
    if faults.take("fail_with_500"):
        return daraja_error(500, "500.003.1001", "Internal Server Error")
    return None


def after_the_api(response):
    """Remember the call; then, for an M-Pesa API (not OAuth), hold the answer back
    (``answer_delay_seconds``) or withhold it (``withhold_answer``): the request has been
    carried out either way."""
    emu = emulator()
    oauth = request.path.startswith("/oauth/")
    withheld = not oauth and emu.faults.take("withhold_answer")
    data = response.get_json(silent=True) if response.is_json else None
    entry = {
        "method": request.method,
        "path": request.path,
        "status": response.status_code,
        "error_code": data.get("errorCode") if isinstance(data, dict) else None,
        "withheld": withheld,
    }
    with emu.lock:
        emu.calls.append(entry)
    delay = 0.0 if oauth else emu.faults.get("answer_delay_seconds")
    if delay and not emu.courier.wait(delay):
        return response
    if withheld:
        drop_connection()
    return response


def drop_connection() -> None:
    """Close the client's connection without an answer (the client sees it reset). The
    server then fails to write the answer, which werkzeug takes as a dropped connection."""
    connection = request.environ.get("werkzeug.socket")
    if connection is None:  # not werkzeug's server: nothing to close from here
        log.warning("withhold_answer needs werkzeug's server; the answer was sent")
        return
    with contextlib.suppress(OSError):  # the client may have gone already
        connection.shutdown(socket.SHUT_RDWR)


def refused(refusal: Refusal):
    return daraja_error(refusal.status, refusal.code, refusal.message, refusal.request_id)


def not_found(error=None):
    """Apigee's answer for a path no proxy serves."""
    fault = {
        "faultstring": f"Unable to identify proxy for host: secure and url: {request.path}",
        "detail": {"errorcode": "messaging.adaptors.http.flow.ApplicationNotFound"},
    }
    return jsonify({"fault": fault}), 404


def method_not_allowed(error):
    return daraja_error(405, "405.001", "Method Not Allowed")


def daraja_api(families: Iterable[Blueprint]) -> Blueprint:
    """One blueprint holding the API families' blueprints behind the gateway's policies
    (hooks and error handlers of a parent blueprint apply to the ones nested in it)."""
    api = Blueprint("daraja", __name__)
    api.before_request(policies)
    api.after_request(after_the_api)
    api.register_error_handler(Refusal, refused)
    for family in families:
        api.register_blueprint(family)
    return api
