"""The switches that make the emulator misbehave as Daraja does, flipped at run time through
``/_emulator/faults`` (GET reads them, POST a JSON object changes some, DELETE resets).

Counted faults (``fail_with_500: 2``) fire on the next n requests and then switch off. The
"variants" at the end choose between shapes Daraja is known to send for the same thing, so
that a parser which only knows the documented one fails here rather than in production."""

from __future__ import annotations

import threading

CHOICES: dict[str, tuple[str, ...]] = {
    "msisdn_mode": ("auto", "hashed", "masked", "plain"),
    "result_code_type": ("documented", "number", "string"),
    "result_parameter_shape": ("list", "object"),
}
FAULT_DEFAULTS: dict = {
    "duplicate_delivery": False,  # every callback is delivered twice
    "drop_callback": False,  # callbacks (not validation) are never delivered
    "callback_delay_seconds": 0.0,  # wait before delivering each callback
    "fail_with_500": 0,  # the next n Daraja requests answer 500.003.1001
    "spike_arrest": 0,  # the next n Daraja requests answer 500.003.02
    "invalid_token": 0,  # the next n authenticated requests refuse the token
    "queue_timeout": 0,  # the next n B2C requests time out in the queue (QueueTimeOutURL)
    # The synchronous answer of the M-Pesa APIs (not OAuth, so that the fault lands on the
    # call being rehearsed): the request is carried out (a B2C pays, its result follows),
    # then the answer comes late, or never (the connection is closed without one).
    "answer_delay_seconds": 0.0,
    "withhold_answer": 0,  # the next n M-Pesa API requests are carried out but never answered
    "msisdn_mode": "auto",  # C2B MSISDN: auto (v1 hashed, v2 masked), hashed, masked, plain
    "sandbox_single_subscriber": False,  # C2B always reports 254705912645 NICHOLAS JOHN SONGOK
    "stk_result_code": 0,  # what the simulated customer does: 0, 1032, 1037, 1, "SFC_IC0003" …
    "stk_prompt_expires": False,  # customers never answer: no callback, the query says 1019
    # Variants (REFERENCE §13). result_code_type: "documented" (Account Balance strings,
    # the others numbers), "number" or "string" for every ResultCode and ResultType, STK
    # callbacks included (an alphanumeric code is always a string).
    "result_code_type": "documented",
    # "object": a result holding one parameter sends ResultParameter as that object, not a
    # one-item list, as a production Account Balance failure did; Account Balance failures
    # then hold one, BOCompletedTime (modelled on that report).
    "result_parameter_shape": "list",
}


def _check(name: str, value):
    default = FAULT_DEFAULTS[name]
    if name in CHOICES:
        if value not in CHOICES[name]:
            raise ValueError(f"{name} must be one of {', '.join(CHOICES[name])}")
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
    """The switches' current values, safe to read and change from any thread."""

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
            checked[name] = _check(name, value)
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
