"""The emulator's configuration and the Daraja apps it knows: what ``create_emulator(config)``
and ``flask emulator serve --config FILE`` accept, and the defaults ``make run`` uses (the
demo paybill's app, so that the demo lender's shortcode works against it as it is)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from payments.demo import (
    DEMO_CONSUMER_KEY,
    DEMO_CONSUMER_SECRET,
    SANDBOX_INITIATOR,
    SANDBOX_PASSKEY,
)

DEFAULT_CONFIG: dict = {
    "environment": "sandbox",  # production: https callback URLs, URLs registered once, no simulate
    "apps": [
        {
            "consumer_key": DEMO_CONSUMER_KEY,
            "consumer_secret": DEMO_CONSUMER_SECRET,
            "shortcodes": ["*"],  # "*": any shortcode belongs to this app
            "c2b_version": "v2",  # the C2B product on the app; the other version gets 401.003.01
            "passkey": SANDBOX_PASSKEY,
            "initiators": {SANDBOX_INITIATOR[0]: SANDBOX_INITIATOR[1]},
        }
    ],
    "token_lifetime": 3600,  # seconds; expires_in is sent as lifetime - 1
    "expires_in_type": "string",  # "string" ("3599", as real traffic) or "number" (3.0 docs)
    "single_token_per_app": False,  # Daraja's FAQ: a new token invalidates the previous one
    "external_validation": True,  # call the ValidationURL (Safaricom enables it per shortcode)
    "validation_timeout": 8.0,
    "callback_timeout": 10.0,
    "stk_user_delay": 3.0,  # seconds before the simulated customer answers the prompt
    # How long a prompt waits for its customer before it times out: ~60 s say the guides
    # (REFERENCE §13, UNVERIFIED). An unanswered prompt ends then (1037 or 1019, see stk.py).
    "stk_prompt_lifetime": 60.0,
    # Result 17 "Rule limited": the same amount from the same customer within 2 minutes
    # (REFERENCE §6.4, §12).
    "same_amount_window": 120.0,
    "result_delay": 1.0,  # seconds before B2C, status, balance and reversal results
    "url_rules": True,  # refuse callback URLs with Safaricom's forbidden words
    "credential_lock_after": None,  # wrong initiator passwords before 8006 (None: never)
    "stk_sends_c2b_confirmation": False,  # an STK payment also produces a C2B confirmation
    "subscribers": {"254705912645": "NICHOLAS JOHN SONGOK"},  # names in C2B/B2C callbacks
    "private_key_pem": None,  # the key its "Safaricom" certificate holds; generated if None
    "faults": {},  # switches on at start (see faults.FAULT_DEFAULTS)
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
    initiators: dict[str, str] = field(default_factory=lambda: dict([SANDBOX_INITIATOR]))

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
            initiators=dict(item.get("initiators", dict([SANDBOX_INITIATOR]))),
        )

    def owns(self, shortcode) -> bool:
        return "*" in self.shortcodes or str(shortcode) in self.shortcodes
