"""The emulator's own endpoints under ``/_emulator`` (not Daraja's): the fault switches,
the certificate to make SecurityCredentials with, what it was asked and what it sent, and
revoking every token."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from payments.emulator.gateway import emulator

bp = Blueprint("daraja_control", __name__, url_prefix="/_emulator")


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
