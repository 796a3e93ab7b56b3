"""The emulator's own endpoints under ``/_emulator`` (not Daraja's): an index of them, the
fault switches, the certificate to make SecurityCredentials with, what it was asked and
what it sent, revoking every token, the demo traffic's payments, and the org portal's
statement of a shortcode."""

from __future__ import annotations

from html import escape

from flask import Blueprint, jsonify, request, url_for

from payments.demo import DEMO_SHORTCODE
from payments.emulator import c2b, statement
from payments.emulator.gateway import emulator
from payments.emulator.state import Refusal

bp = Blueprint("daraja_control", __name__, url_prefix="/_emulator")


@bp.get("/")
def index():
    """A page of links to what a person can read here, with each shortcode's statement."""
    emu = emulator()
    with emu.lock:
        shortcodes = sorted({DEMO_SHORTCODE} | {line["shortcode"] for line in emu.ledger})
    links = [
        (url_for(".statement_file", shortcode=number), f"M-Pesa statement of {number} (CSV)")
        for number in shortcodes
    ] + [
        (url_for(".read_faults"), "fault switches (POST a JSON object to change them)"),
        (url_for(".deliveries"), "callbacks delivered, dropped or failed"),
        (url_for(".calls"), "the latest API calls"),
        (url_for(".certificate"), "the certificate for SecurityCredentials"),
    ]
    items = "".join(f'<li><a href="{escape(href)}">{escape(text)}</a></li>' for href, text in links)
    page = (
        "<!doctype html><title>Daraja emulator</title><h1>Daraja emulator</h1>"
        f"<p>{escape(emu.environment)}: not Safaricom. A statement downloaded here is what the "
        "org portal would give; upload it on Marejesho's Reconciliation page.</p>"
        f"<ul>{items}</ul>"
    )
    return page, 200, {"Content-Type": "text/html; charset=utf-8"}


@bp.get("/faults")
def read_faults():
    return emulator().faults.snapshot()


@bp.post("/faults")
def change_faults():
    """Flip fault switches: a JSON object of the ones to change (all or none)."""
    try:
        return emulator().faults.update(request.get_json(force=True, silent=True))
    except ValueError as exc:
        return {"error": str(exc)}, 400


@bp.delete("/faults")
def reset_faults():
    return emulator().faults.reset()


@bp.get("/certificate")
def certificate():
    """The certificate to make SecurityCredentials with for this emulator."""
    return emulator().certificate_pem, 200, {"Content-Type": "application/x-pem-file"}


@bp.get("/calls")
def calls():
    with emulator().lock:
        return jsonify(list(emulator().calls))


@bp.delete("/calls")
def forget_calls():
    with emulator().lock:
        emulator().calls.clear()
    return {"cleared": True}


@bp.get("/deliveries")
def deliveries():
    return jsonify(list(emulator().courier.deliveries))


@bp.post("/tokens/revoke")
def revoke_tokens():
    """Forget every access token issued, as when tokens expire or are replaced."""
    return {"revoked": emulator().tokens.revoke_all()}


@bp.post("/demo-payments")
def demo_payment():
    """A demo payment, received and confirmed as a simulated one (``c2b.demo_payment``):
    a JSON object of ``confirmation_url``, ``msisdn`` (the payer's real number) and
    ``notice`` (the confirmation as the demo wrote it). Answers the confirmation as it
    is being sent (TransID, TransTime and OrgAccountBalance written here); 400 naming the
    field that is wrong."""
    order = request.get_json(force=True, silent=True)
    if not isinstance(order, dict):
        return {"error": "send a JSON object: confirmation_url, msisdn and notice"}, 400
    try:
        return c2b.demo_payment(emulator(), order)
    except Refusal as refusal:
        return {"error": refusal.message}, 400


@bp.get("/statement.csv")
def statement_file():
    """The org portal's statement of ``shortcode`` (required), optionally ``from`` and
    ``to`` (Nairobi, ``2026-12-03`` or ``2026-12-03 14:30``): every payment, reversal and
    B2C payout the emulator booked, newest first, as a CSV download."""
    shortcode = request.args.get("shortcode", "").strip()
    if not shortcode.isdigit() or not 5 <= len(shortcode) <= 7:
        return {"error": "name the paybill or till: ?shortcode=600984"}, 400
    try:
        start = statement.bound(request.args.get("from"))
        end = statement.bound(request.args.get("to"), end=True)
    except ValueError:
        return {"error": "from and to are dates (2026-12-03) or times (2026-12-03 14:30)"}, 400
    text = statement.statement_csv(emulator(), shortcode, start, end)
    return (
        "\ufeff" + text,  # a byte-order mark, so spreadsheets read it as UTF-8
        200,
        {
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{statement.filename(shortcode)}"',
        },
    )
