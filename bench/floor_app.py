"""The bare-Flask floor for bench/confirmations.py: the confirmation route with nothing behind
it. It parses the JSON body and answers Daraja's "Accepted", so gunicorn + Flask + JSON is
all it costs; Marejesho's own confirmation endpoint is compared against it.

    gunicorn -w 2 --chdir bench floor_app:app
"""

from __future__ import annotations

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/payments/c2b/<token>/confirmation")
def confirmation(token: str):
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict) or not body.get("TransID"):
        return jsonify(errorCode="400.002.02", errorMessage="Bad Request"), 400
    return jsonify({"ResultCode": 0, "ResultDesc": "Accepted"})
