"""The courier that calls our callback URLs from background threads, as M-Pesa does."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import requests

from payments.emulator.faults import Faults

log = logging.getLogger("marejesho.emulator")


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
