"""What the four initiator APIs (B2C, Transaction Status, Account Balance, Reversal) share:
the checks made on the request, the initiator's password checked after the result delay,
and the ``{"Result": {...}}`` posted to the ResultURL (REFERENCE §7-§9)."""

from __future__ import annotations

from datetime import datetime

from payments.emulator import payloads as make
from payments.emulator.gateway import emulator
from payments.emulator.settings import EmulatedApp
from payments.emulator.state import Emulator, invalid

ACCEPTED = "Accept the service request successfully."


def initiator_job(app: EmulatedApp, body: dict, commands: tuple[str, ...], name_key: str) -> dict:
    """What every initiator API is sent and checks alike: the initiator and the password
    inside its SecurityCredential, the CommandID, and the result and queue-timeout URLs;
    with the ids of the answer."""
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
        "conversation_id": make.conversation_id(make.now_nairobi()),
    }


def checked_after_delay(emu: Emulator, job: dict) -> tuple[datetime, int] | None:
    """After ``result_delay`` (None when the emulator stops): the time, and the initiator
    check's code (0, 2001 or 8006)."""
    if not emu.courier.wait(emu.config["result_delay"]):
        return None
    return make.now_nairobi(), emu.initiator_result(job["app"], job["initiator"], job["password"])


def send_result(emu: Emulator, kind: str, job: dict, url: str | None = None, **envelope) -> None:
    """POST a ``{"Result": {...}}`` about ``job`` to its ResultURL (or ``url``), in the
    shape the variant switches ask for."""
    body = make.result_envelope(
        originator_conversation_id=job["ocid"],
        conversation_id=job["conversation_id"],
        **(emu.variants() | envelope),
    )
    emu.courier.deliver(kind, job["ocid"], url or job["result_url"], body)


def stamp(moment: datetime) -> int:
    """``20240206143645``: how results carry times, as a number."""
    return int(moment.strftime("%Y%m%d%H%M%S"))
