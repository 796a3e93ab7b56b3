"""How a request reaches Daraja and how its answer comes back: a timeout on every request,
resends with exponential backoff and jitter for what is worth resending, and Daraja's error
answers (and its gateway's) turned into typed exceptions with every secret redacted."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable

import requests
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from payments.daraja.errors import (
    AuthenticationFailed,
    DarajaError,
    DarajaUnavailable,
    ResourceNotFound,
    SpikeArrest,
    UnexpectedResponse,
    error_class,
)

log = logging.getLogger("marejesho.daraja")
TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


def _was_maybe_sent(exc: requests.RequestException) -> bool:
    """False only when the connection was never made, so Daraja cannot have seen it."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    if isinstance(exc, requests.ConnectionError):
        reason = exc.args[0] if exc.args else None
        reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
        if isinstance(reason, (NewConnectionError, ConnectTimeoutError)):
            return False
    return True


def _describe(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.ConnectTimeout):
        return "could not connect in time"
    if isinstance(exc, requests.ReadTimeout):
        return "no answer in time"
    if isinstance(exc, requests.ConnectionError):
        return "could not connect" if not _was_maybe_sent(exc) else "the connection broke"
    return f"request failed ({type(exc).__name__})"


def _fault_text(data, depth: int = 0) -> str:
    """The ``faultstring`` of an Apigee fault (JSON or SOAP-in-JSON), if there is one."""
    if depth > 5 or not isinstance(data, dict):
        return ""
    if isinstance(data.get("faultstring"), str):
        return data["faultstring"]
    for value in data.values():
        found = _fault_text(value, depth + 1)
        if found:
            return found
    return ""


class Transport:
    """Requests to one Daraja base URL. ``max_retries`` counts resends after the first
    attempt; the n-th waits about ``backoff_base * 2**(n-1)`` seconds (half of it fixed,
    half random), at most ``backoff_max``.

    What is resent: connection failures, 5xx and spike arrest. Never 4xx nor Daraja's
    business refusals. With ``retry_ambiguous=False`` (a request that could move money
    twice) only what Daraja cannot have acted on is resent: a connection never made, or
    spike arrest, which the gateway refuses before M-Pesa sees the request."""

    def __init__(
        self,
        base_url: str,
        session: requests.Session,
        timeout: float | tuple[float, float],
        max_retries: int,
        backoff_base: float,
        backoff_max: float,
    ):
        self.base_url = base_url
        self.session = session
        self.timeout = timeout
        self.max_retries = max(0, max_retries)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max

    def send(
        self,
        method: str,
        path: str,
        *,
        what: str,
        oauth: bool = False,
        retry_ambiguous: bool = True,
        secrets: Iterable[str] = (),
        **kwargs,
    ) -> dict:
        """One request, resent on what is worth resending; Daraja's JSON object or raises."""
        attempts = self.max_retries + 1
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            try:
                response = self.session.request(
                    method, self.base_url + path, timeout=self.timeout, **kwargs
                )
            except requests.RequestException as exc:
                error: DarajaError = DarajaUnavailable(_describe(exc), operation=what)
                error.__cause__ = exc
                retry = isinstance(exc, TRANSIENT) and (retry_ambiguous or not _was_maybe_sent(exc))
            else:
                with response:
                    log.debug(
                        "%s %s -> %s in %d ms (attempt %d)",
                        method,
                        path,
                        response.status_code,
                        (time.monotonic() - started) * 1000,
                        attempt,
                    )
                    try:
                        return self.read(response, what, oauth=oauth, secrets=secrets)
                    except DarajaError as exc:
                        error = exc
                # Spike arrest is refused at the gateway, so resending cannot do anything twice.
                retry = error.retryable and (retry_ambiguous or isinstance(error, SpikeArrest))
            if not retry or attempt == attempts:
                raise error
            delay = self.backoff(attempt)
            log.warning(
                "%s: %s; retrying in %.2fs (attempt %d of %d)",
                what,
                error,
                delay,
                attempt + 1,
                attempts,
            )
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def read(
        self, response: requests.Response, what: str, *, oauth: bool, secrets: Iterable[str]
    ) -> dict:
        status = response.status_code
        try:
            data = response.json()
        except ValueError:
            data = None
        if 200 <= status < 300:
            if isinstance(data, dict):
                return data
            raise UnexpectedResponse(
                "the answer is not a JSON object", http_status=status, operation=what
            )
        code = request_id = None
        if isinstance(data, dict) and ("errorCode" in data or "errorMessage" in data):
            code = str(data.get("errorCode") or "").strip() or None
            message = str(data.get("errorMessage") or "")
            request_id = str(data["requestId"]) if data.get("requestId") else None
        elif isinstance(data, dict) and _fault_text(data):
            message = f"gateway fault: {_fault_text(data)}"
        elif oauth and 400 <= status < 500:
            # Daraja's answer to a wrong consumer key or secret: 400 with an empty body
            # (REFERENCE §13, seen by third-party clients).
            message = f"the consumer key or secret was refused (HTTP {status}, no error body)"
        else:
            message = f"HTTP {status} without a Daraja error body"
        message = redact(message, secrets)[:300]
        cls = error_class(code, message, status)
        if oauth and 400 <= status < 500:
            cls = AuthenticationFailed
        elif code is None and status == 404:
            cls = ResourceNotFound
        raise cls(
            message, error_code=code, request_id=request_id, http_status=status, operation=what
        )


def redact(text: str, secrets: Iterable[str]) -> str:
    """Daraja echoes the token in some errors ("Invalid Access Token - <token>")."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text
