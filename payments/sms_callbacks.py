"""Africa's Talking's delivery reports: /payments/sms/<token>/delivery, public and exempt
from CSRF like Safaricom's callbacks, guarded by the settings' secret token instead."""

from __future__ import annotations

import hmac
import logging
import re

from flask import Blueprint, Flask, abort, request

from lenders.extensions import csrf, db
from lenders.web import public
from payments import sms
from payments.models import SmsSettings

bp = Blueprint("sms_callbacks", __name__, url_prefix="/payments/sms")
csrf.exempt(bp)
log = logging.getLogger("marejesho.sms")


@bp.post("/<token>/delivery")
@public
def delivery_report(token: str):
    """Africa's Talking's delivery report (form fields id, status, failureReason); an
    unknown token is a 404 with nothing written."""
    row = db.session.get(SmsSettings, 1)
    valid = re.fullmatch(r"[0-9a-f]{32,64}", token) is not None
    if row is None or not valid or not hmac.compare_digest(row.callback_token, token):
        log.warning("delivery report with an unknown token from %s", request.remote_addr)
        abort(404)
    message_id = (request.form.get("id") or "")[:80]
    status = (request.form.get("status") or "")[:40]
    known = sms.record_delivery(
        db.session, message_id, status, (request.form.get("failureReason") or "")[:200]
    )
    db.session.commit()
    return ("OK" if known else "unknown message"), 200


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
