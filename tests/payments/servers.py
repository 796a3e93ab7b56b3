"""The Daraja emulator seen from outside, and a callback receiver: what the fixtures in
tests/payments/conftest.py serve over real HTTP on free loopback ports."""

from __future__ import annotations

import threading
import time

import requests
from flask import Flask, request

from payments.demo import SANDBOX_INITIATOR, SANDBOX_PASSKEY

KEY, SECRET = "key-v2-app", "secret-v2-app"
KEY_V1, SECRET_V1 = "key-v1-app", "secret-v1-app"
INITIATOR, INITIATOR_PASSWORD = SANDBOX_INITIATOR
PAYBILL, STK_SHORTCODE, V1_PAYBILL = "600984", "174379", "600111"


def emulator_config(key_pem: bytes, **overrides) -> dict:
    config = {
        "apps": [
            {
                "consumer_key": KEY,
                "consumer_secret": SECRET,
                "shortcodes": [PAYBILL, STK_SHORTCODE, "600000"],
                "c2b_version": "v2",
                "passkey": SANDBOX_PASSKEY,
                "initiators": {INITIATOR: INITIATOR_PASSWORD},
            },
            {
                "consumer_key": KEY_V1,
                "consumer_secret": SECRET_V1,
                "shortcodes": [V1_PAYBILL],
                "c2b_version": "v1",
                "passkey": SANDBOX_PASSKEY,
                "initiators": {INITIATOR: INITIATOR_PASSWORD},
            },
        ],
        "stk_user_delay": 0.05,
        "result_delay": 0.05,
        "validation_timeout": 1.0,
        "callback_timeout": 2.0,
        "private_key_pem": key_pem.decode(),
    }
    config.update(overrides)
    return config


class Emulator:
    """The running emulator, seen from outside: its URL, its control endpoints, and the
    apps, shortcodes and initiator it was configured with."""

    key, secret, key_v1, secret_v1 = KEY, SECRET, KEY_V1, SECRET_V1
    paybill, stk_shortcode, v1_paybill = PAYBILL, STK_SHORTCODE, V1_PAYBILL
    initiator, initiator_password, passkey = INITIATOR, INITIATOR_PASSWORD, SANDBOX_PASSKEY

    def __init__(self, url: str):
        self.url = url

    def faults(self, **switches) -> dict:
        answer = requests.post(f"{self.url}/_emulator/faults", json=switches, timeout=5)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def reset_faults(self) -> None:
        requests.delete(f"{self.url}/_emulator/faults", timeout=5).raise_for_status()

    def calls(self, path: str | None = None) -> list[dict]:
        calls = requests.get(f"{self.url}/_emulator/calls", timeout=5).json()
        return [c for c in calls if path is None or c["path"] == path]

    def clear_calls(self) -> None:
        requests.delete(f"{self.url}/_emulator/calls", timeout=5).raise_for_status()

    def deliveries(self, ref: str | None = None) -> list[dict]:
        items = requests.get(f"{self.url}/_emulator/deliveries", timeout=5).json()
        return [d for d in items if ref is None or d["ref"] == ref]

    def wait_for_delivery(self, ref: str, kind: str, timeout: float = 5.0) -> list[dict]:
        """The emulator's record of what it did with a callback, once it has decided."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [d for d in self.deliveries(ref) if d["kind"] == kind]
            if found:
                return found
            time.sleep(0.02)
        raise AssertionError(f"the emulator never delivered {kind} for {ref}")

    def certificate(self) -> bytes:
        return requests.get(f"{self.url}/_emulator/certificate", timeout=5).content

    def revoke_tokens(self) -> None:
        requests.post(f"{self.url}/_emulator/tokens/revoke", timeout=5).raise_for_status()


class Receiver:
    """Our side of the callbacks: records every POST to ``/hooks/<name>``. Validation
    answers what ``validation_answer`` says, after ``validation_delay`` seconds."""

    def __init__(self):
        self.url = ""
        self.received: list[tuple[str, dict]] = []
        self.condition = threading.Condition()
        self.validation_answer: dict | None = {"ResultCode": "0", "ResultDesc": "Accepted"}
        self.validation_status = 200
        self.validation_delay = 0.0
        self.app = Flask("callback_receiver")
        self.app.add_url_rule("/hooks/<path:name>", "hook", self.hook, methods=["POST"])

    def hook(self, name: str):
        body = request.get_json(force=True, silent=True)
        with self.condition:
            self.received.append((name, body))
            self.condition.notify_all()
        if name.endswith("validation"):
            time.sleep(self.validation_delay)
            return (self.validation_answer or "not json"), self.validation_status
        return {"ResultCode": 0, "ResultDesc": "Accepted"}

    def hook_url(self, name: str) -> str:
        return f"{self.url}/hooks/{name}"

    def bodies(self, name: str) -> list[dict]:
        with self.condition:
            return [body for n, body in self.received if n == name]

    def wait_for(self, name: str, count: int = 1, timeout: float = 5.0, where=None) -> list[dict]:
        """The bodies POSTed to ``name`` (matching ``where``), once there are ``count``."""

        def matching():
            return [b for b in self.bodies(name) if where is None or where(b)]

        with self.condition:
            self.condition.wait_for(lambda: len(matching()) >= count, timeout=timeout)
        found = matching()
        assert len(found) >= count, f"{len(found)} of {count} {name} callbacks arrived"
        return found

    def reset(self) -> None:
        with self.condition:
            self.received.clear()
        self.validation_answer = {"ResultCode": "0", "ResultDesc": "Accepted"}
        self.validation_status = 200
        self.validation_delay = 0.0
