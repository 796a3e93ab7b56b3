"""OAuth (REFERENCE §1): an access token for the app whose consumer key and secret came as
HTTP Basic auth, on ``/oauth/v1/generate`` and the ``v2`` path production code also calls."""

from __future__ import annotations

from flask import Blueprint, request

from payments.emulator import payloads as make
from payments.emulator.gateway import emulator
from payments.emulator.state import Refusal

bp = Blueprint("oauth", __name__)


@bp.get("/oauth/v1/generate")
@bp.get("/oauth/v2/generate")
def generate():
    """A token, ``expires_in`` a string (as real traffic) or a number (as the 3.0 docs)."""
    emu = emulator()
    if request.args.get("grant_type") != "client_credentials":
        raise Refusal(400, "400.008.02", "Invalid grant type passed")
    auth = request.authorization
    if auth is None or auth.type != "basic":
        raise Refusal(400, "400.008.01", "Invalid authentication type passed")
    app = emu.app_for_credentials(auth.username or "", auth.password or "")
    if app is None:
        # A wrong key or secret: HTTP 400 with an empty body, as third-party clients see
        # from Daraja (REFERENCE §13, "Seen by third-party clients").
        return "", 400, {"Content-Type": "text/plain"}
    token = make.access_token()
    emu.tokens.issue(app, token)
    expires_in = int(emu.config["token_lifetime"]) - 1
    return {
        "access_token": token,
        "expires_in": str(expires_in) if emu.config["expires_in_type"] == "string" else expires_in,
    }
