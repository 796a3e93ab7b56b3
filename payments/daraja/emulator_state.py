"""The emulator's moving parts that are not Daraja's API itself: its configuration and
apps, the fault switches, the access tokens it issued, and the courier that calls our
callback URLs from background threads (with the faults applied)."""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import requests

log = logging.getLogger("marejesho.daraja.emulator")

SANDBOX_PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
DEFAULT_CONSUMER_KEY = "marejesho-emulator-key"
DEFAULT_CONSUMER_SECRET = "marejesho-emulator-secret"
DEFAULT_INITIATOR = ("testapi", "Safaricom999!*!")

DEFAULT_CONFIG: dict = {
    "environment": "sandbox",  # production: https callback URLs, URLs registered once, no simulate
    "apps": [
        {
            "consumer_key": DEFAULT_CONSUMER_KEY,
            "consumer_secret": DEFAULT_CONSUMER_SECRET,
            "shortcodes": ["*"],  # "*": any shortcode belongs to this app
            "c2b_version": "v2",  # the C2B product on the app; the other version gets 401.003.01
            "passkey": SANDBOX_PASSKEY,
            "initiators": {DEFAULT_INITIATOR[0]: DEFAULT_INITIATOR[1]},
        }
    ],
    "token_lifetime": 3600,  # seconds; expires_in is sent as lifetime - 1
    "expires_in_type": "string",  # "string" ("3599", as real traffic) or "number" (3.0 docs)
    "single_token_per_app": False,  # Daraja's FAQ: a new token invalidates the previous one
    "external_validation": True,  # call the ValidationURL (Safaricom enables it per shortcode)
    "validation_timeout": 8.0,
    "callback_timeout": 10.0,
    "stk_user_delay": 3.0,  # seconds before the simulated customer answers the prompt
    "result_delay": 1.0,  # seconds before B2C, status, balance and reversal results
    "url_rules": True,  # refuse callback URLs with Safaricom's forbidden words
    "credential_lock_after": None,  # wrong initiator passwords before 8006 (None: never)
    "stk_sends_c2b_confirmation": False,  # an STK payment also produces a C2B confirmation
    "subscribers": {"254705912645": "NICHOLAS JOHN SONGOK"},  # names in C2B/B2C callbacks
    "private_key_pem": None,  # the key its "Safaricom" certificate holds; generated if None
    "faults": {},
}

MSISDN_MODES = ("auto", "hashed", "masked", "plain")
FAULT_DEFAULTS: dict = {
    "duplicate_delivery": False,  # every callback is delivered twice
    "drop_callback": False,  # callbacks (not validation) are never delivered
    "callback_delay_seconds": 0.0,  # wait before delivering each callback
    "fail_with_500": 0,  # the next n Daraja requests answer 500.003.1001
    "spike_arrest": 0,  # the next n Daraja requests answer 500.003.02
    "invalid_token": 0,  # the next n authenticated requests refuse the token
    "queue_timeout": 0,  # the next n B2C requests time out in the queue (QueueTimeOutURL)
    "msisdn_mode": "auto",  # C2B MSISDN: auto (v1 hashed, v2 masked), hashed, masked, plain
    "sandbox_single_subscriber": False,  # C2B always reports 254705912645 NICHOLAS JOHN SONGOK
    "stk_result_code": 0,  # what the simulated customer does: 0, 1032, 1037, 1, "SFC_IC0003" …
}


def merged_config(config: dict | None) -> dict:
    """The defaults with ``config``'s keys on top (``apps`` replaces the list)."""
    merged = copy.deepcopy(DEFAULT_CONFIG)
    for key, value in (config or {}).items():
        if key not in merged:
            raise ValueError(f"unknown emulator setting {key!r}")
        merged[key] = copy.deepcopy(value)
    if merged["environment"] not in ("sandbox", "production"):
        raise ValueError("environment must be sandbox or production")
    return merged


@dataclass
class EmulatedApp:
    """A Daraja app: its credentials, its shortcodes and the products it has."""

    consumer_key: str
    consumer_secret: str
    shortcodes: tuple[str, ...] = ("*",)
    c2b_version: str = "v2"
    passkey: str = SANDBOX_PASSKEY
    initiators: dict[str, str] = field(default_factory=lambda: dict([DEFAULT_INITIATOR]))

    @classmethod
    def from_config(cls, item: dict) -> EmulatedApp:
        shortcodes = item.get("shortcodes", item.get("shortcode", "*"))
        if isinstance(shortcodes, (str, int)):
            shortcodes = [shortcodes]
        version = item.get("c2b_version", "v2")
        if version not in ("v1", "v2"):
            raise ValueError("c2b_version must be v1 or v2")
        return cls(
            consumer_key=item["consumer_key"],
            consumer_secret=item["consumer_secret"],
            shortcodes=tuple(str(s) for s in shortcodes),
            c2b_version=version,
            passkey=item.get("passkey", SANDBOX_PASSKEY),
            initiators=dict(item.get("initiators", dict([DEFAULT_INITIATOR]))),
        )

    def owns(self, shortcode) -> bool:
        return "*" in self.shortcodes or str(shortcode) in self.shortcodes


def _check_fault(name: str, value):
    default = FAULT_DEFAULTS[name]
    if name == "msisdn_mode":
        if value not in MSISDN_MODES:
            raise ValueError(f"msisdn_mode must be one of {MSISDN_MODES}")
        return value
    if name == "stk_result_code":
        if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
            raise ValueError("stk_result_code must be a number or a code like SFC_IC0003")
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a count (0 or more)")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name} must be a number of seconds (0 or more)")
    return float(value)


class Faults:
    """The fault switches, flipped at run time through ``/_emulator/faults``."""

    def __init__(self, initial: dict | None = None):
        self._lock = threading.Lock()
        self._values = dict(FAULT_DEFAULTS)
        self.update(initial or {})

    def snapshot(self) -> dict:
        with self._lock:
            return dict(self._values)

    def update(self, changes: dict) -> dict:
        """Apply ``changes`` (all or none); ValueError names the first bad one."""
        if not isinstance(changes, dict):
            raise ValueError("send a JSON object of fault switches")
        checked = {}
        for name, value in changes.items():
            if name not in FAULT_DEFAULTS:
                raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULT_DEFAULTS)}")
            checked[name] = _check_fault(name, value)
        with self._lock:
            self._values.update(checked)
            return dict(self._values)

    def reset(self) -> dict:
        with self._lock:
            self._values = dict(FAULT_DEFAULTS)
            return dict(self._values)

    def get(self, name: str):
        with self._lock:
            return self._values[name]

    def take(self, name: str) -> bool:
        """Use up one of a counted fault; True when it fired."""
        with self._lock:
            if self._values[name] > 0:
                self._values[name] -= 1
                return True
            return False


@dataclass
class IssuedToken:
    app: EmulatedApp
    expires_at: float


class TokenStore:
    """The access tokens the emulator handed out, until they expire or are revoked."""

    def __init__(self, lifetime: float, single_per_app: bool, clock=time.monotonic):
        self.lifetime = lifetime
        self.single_per_app = single_per_app
        self.clock = clock
        self._tokens: dict[str, IssuedToken] = {}
        self._lock = threading.Lock()

    def issue(self, app: EmulatedApp, token: str) -> None:
        with self._lock:
            if self.single_per_app:
                self._tokens = {t: i for t, i in self._tokens.items() if i.app is not app}
            self._tokens[token] = IssuedToken(app, self.clock() + self.lifetime)

    def app_for(self, token: str) -> EmulatedApp | None:
        with self._lock:
            issued = self._tokens.get(token)
            if issued is None or issued.expires_at <= self.clock():
                return None
            return issued.app

    def revoke_all(self) -> int:
        with self._lock:
            count = len(self._tokens)
            self._tokens.clear()
            return count


class Courier:
    """Delivers callbacks to our URLs from background threads, as M-Pesa does: no retry,
    faults applied (drop, delay, duplicate), every outcome written to ``deliveries``.
    Bodies and URLs are never logged (URLs carry secret tokens)."""

    def __init__(self, faults: Faults, timeout: float):
        self.faults = faults
        self.timeout = timeout
        self.stopping = threading.Event()
        self.deliveries: deque[dict] = deque(maxlen=1000)
        self._lock = threading.Lock()

    def spawn(self, work: Callable, *args) -> None:
        """Run ``work(*args)`` in a daemon thread; an exception is logged, never raised."""

        def guarded():
            try:
                work(*args)
            except Exception:  # noqa: BLE001 - a background thread has no caller to tell
                log.exception("emulator background work failed")

        threading.Thread(target=guarded, daemon=True, name="daraja-emulator").start()

    def wait(self, seconds: float) -> bool:
        """Sleep unless the emulator is stopping; False when it is."""
        return not self.stopping.wait(max(0.0, seconds))

    def record(self, kind: str, ref: str, outcome: str, status: int | None = None) -> None:
        entry = {"kind": kind, "ref": ref, "outcome": outcome, "status": status, "at": time.time()}
        with self._lock:
            self.deliveries.append(entry)
        log.info("callback %s %s: %s %s", kind, ref, outcome, status or "")

    def post(self, url: str, body: dict, timeout: float) -> requests.Response:
        """One POST and nothing else (validation uses it directly)."""
        return requests.post(url, json=body, timeout=timeout)

    def deliver(self, kind: str, ref: str, url: str, body: dict) -> None:
        """A notification (confirmation, STK callback, result): with the fault switches."""
        faults = self.faults.snapshot()
        if faults["drop_callback"]:
            self.record(kind, ref, "dropped")
            return
        if faults["callback_delay_seconds"] and not self.wait(faults["callback_delay_seconds"]):
            return
        for _ in range(2 if faults["duplicate_delivery"] else 1):
            if self.stopping.is_set():
                return
            try:
                with self.post(url, body, self.timeout) as answer:
                    self.record(kind, ref, "delivered", answer.status_code)
            except requests.RequestException as exc:
                self.record(kind, ref, f"failed: {type(exc).__name__}")
