"""A local stand-in for Africa's Talking's SMS API, as its official Python SDK calls it.

``POST /version1/messaging`` with the ``apiKey`` header and the form fields ``username``,
``to``, ``message``, optional ``from`` and ``bulkSMSMode``; it answers 201 with
``{"SMSMessageData": {"Message": …, "Recipients": [{statusCode, number, status, cost,
messageId}]}}`` and Content-Type ``application/json`` exactly (the SDK compares the header
as a whole string before it parses JSON). ``mode`` makes it fail like the real service:
``http500``, ``invalid_phone`` (statusCode 403 "InvalidPhoneNumber") or ``text`` (a 201
that is not JSON)."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import count

from flask import Flask, Response, request
from werkzeug.serving import WSGIRequestHandler, make_server


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:  # the tests' logs stay theirs
        pass


@dataclass
class SentRequest:
    api_key: str
    accept: str
    form: dict[str, str]


@dataclass
class AfricasTalkingStandIn:
    api_key: str
    username: str = "sandbox"
    mode: str = "ok"  # ok | http500 | invalid_phone | text
    delay: float = 0.0
    url: str = ""
    requests: list[SentRequest] = field(default_factory=list)
    accepted: list[SentRequest] = field(default_factory=list)
    _ids: count = field(default_factory=lambda: count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wsgi(self) -> Flask:
        app = Flask("africastalking-standin")
        app.add_url_rule("/version1/messaging", "messaging", self.messaging, methods=["POST"])
        return app

    def messaging(self) -> Response:
        sent = SentRequest(
            request.headers.get("apiKey", ""),
            request.headers.get("Accept", ""),
            request.form.to_dict(),
        )
        with self._lock:
            self.requests.append(sent)
        if self.delay:
            time.sleep(self.delay)
        if sent.api_key != self.api_key:
            return Response("The supplied authentication is invalid", 401, mimetype="text/plain")
        if sent.form.get("username") != self.username:
            return Response("Invalid username", 401, mimetype="text/plain")
        if not sent.form.get("to") or not sent.form.get("message"):
            return Response("Missing to or message", 400, mimetype="text/plain")
        if self.mode == "http500":
            return Response("Internal Server Error", 500, mimetype="text/plain")
        if self.mode == "text":
            return Response("Sent", 201, content_type="text/plain")
        number = sent.form["to"].split(",")[0]
        if self.mode == "invalid_phone":
            recipient = {
                "statusCode": 403,
                "number": number,
                "status": "InvalidPhoneNumber",
                "cost": "0",
                "messageId": "None",
            }
            summary = "Sent to 0/1 Total Cost: 0"
        else:
            with self._lock:
                self.accepted.append(sent)
                message_id = f"ATXid_{next(self._ids):08d}"
            recipient = {
                "statusCode": 101,
                "number": number,
                "status": "Success",
                "cost": "KES 0.8000",
                "messageId": message_id,
            }
            summary = "Sent to 1/1 Total Cost: KES 0.8000"
        body = {"SMSMessageData": {"Message": summary, "Recipients": [recipient]}}
        return Response(json.dumps(body), 201, content_type="application/json")


@contextmanager
def serve_standin(api_key: str):
    """The stand-in on a free loopback port, for the ``with`` block."""
    standin = AfricasTalkingStandIn(api_key=api_key)
    server = make_server(
        "127.0.0.1", 0, standin.wsgi(), threaded=True, request_handler=_QuietHandler
    )
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="at-standin", daemon=True
    )
    thread.start()
    standin.url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield standin
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
