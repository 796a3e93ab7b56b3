"""The access tokens the emulator handed out, until they expire or are revoked."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from payments.emulator.settings import EmulatedApp


@dataclass
class IssuedToken:
    app: EmulatedApp
    expires_at: float


class TokenStore:
    """Tokens by value. ``single_per_app``: a new token invalidates the app's others, as
    Daraja's FAQ says it does (REFERENCE §1)."""

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
