"""Pull Transactions (REFERENCE §10.1): registering a shortcode once, then its C2B payments
of the last 48 hours, 100 a page, nested ``Response: [[...]]`` with lower-case keys."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from flask import Blueprint

from payments.emulator import payloads as make
from payments.emulator.gateway import caller, emulator, json_body
from payments.emulator.state import ORGANISATION, Refusal, invalid

bp = Blueprint("pull", __name__)


@bp.post("/pulltransactions/v1/register")
def register():
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
            return datetime.strptime(text, pattern).replace(tzinfo=make.NAIROBI)
        except ValueError:
            continue
    raise invalid(field)


@bp.post("/pulltransactions/v1/query")
def query():
    """The shortcode's C2B payments in a window of the last 48 hours, one page."""
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
    horizon = make.now_nairobi() - timedelta(hours=48)
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
            "sender": (p.get("names") or emu.names(p["msisdn"]))[0],
            "transactiontype": "c2b-pay-bill-debit",
            "billreference": p["bill_ref"],
            "amount": make.money(p["amount"]),
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
