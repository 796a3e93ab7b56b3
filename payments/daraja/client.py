"""A plain ``requests`` client for Safaricom's Daraja API (REFERENCE.md is the spec).

One method per API (by family in ``c2b.py``, ``stk.py``, ``initiator.py`` and ``pull.py``,
mixed into ``DarajaClient`` here); each returns Daraja's JSON answer as a dict (C2B
registration returns a ``Registration`` that also says which version Daraja took) or raises
a ``DarajaError`` subclass carrying ``errorCode``, ``errorMessage`` and ``requestId``.

What it promises:
- an OAuth token per Daraja app and environment, cached (``MemoryTokenCache`` or
  ``RedisTokenCache``) until shortly before it expires, and fetched again once when Daraja
  says the token is invalid;
- a timeout on every request; retries with exponential backoff and jitter on connection
  failures, 5xx and spike arrest, never on 4xx nor on Daraja's business refusals, and never
  for a request that could move money twice (B2C v1 and C2B simulate are sent once whenever
  Daraja may have received them; B2C v3 is safe to resend because Daraja refuses a reused
  OriginatorConversationID);
- callback URLs checked against Safaricom's rules before anything is sent;
- no secret (consumer secret, passkey, initiator password, token) in a log line or an error
  message, and phones masked in logs.

No Flask, no database: the CLI, the jobs and the tests use it as it is."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable

import requests

from payments.daraja.c2b import C2B_VERSIONS, RESPONSE_TYPES, C2BCalls, Registration
from payments.daraja.errors import ForbiddenCallbackUrl, InvalidAccessToken, UnexpectedResponse
from payments.daraja.fields import canonical_msisdn, mask_msisdn, whole_shillings
from payments.daraja.initiator import B2C_COMMANDS, InitiatorCalls
from payments.daraja.pull import PullCalls
from payments.daraja.stk import STK_TRANSACTION_TYPES, StkCalls
from payments.daraja.tokens import MemoryTokenCache, TokenCache
from payments.daraja.transport import Transport
from payments.daraja.urls import BASE_URLS, ENVIRONMENTS, callback_url_problem, forbidden_url_words

__all__ = [  # the names this module has always offered
    "B2C_COMMANDS",
    "C2B_VERSIONS",
    "RESPONSE_TYPES",
    "STK_TRANSACTION_TYPES",
    "DarajaClient",
    "Registration",
    "canonical_msisdn",
    "mask_msisdn",
    "whole_shillings",
]

log = logging.getLogger("marejesho.daraja")

DEFAULT_EXPIRES_IN = 3599


def _seconds(value) -> int:
    """``expires_in`` as Daraja sends it: the string ``"3599"`` or a number."""
    try:
        seconds = int(float(str(value).strip()))
    except (TypeError, ValueError):
        return DEFAULT_EXPIRES_IN
    return seconds if seconds > 0 else DEFAULT_EXPIRES_IN


class DarajaClient(C2BCalls, StkCalls, InitiatorCalls, PullCalls):
    """Daraja for one app (consumer key and secret) in one environment: OAuth and the
    plumbing here, the calls by API family in ``c2b``, ``stk``, ``initiator`` and ``pull``.

    ``base_url`` overrides the environment's URL (the emulator: ``http://127.0.0.1:5055``).
    ``timeout`` is requests' (connect, read) seconds on every request; ``max_retries``,
    ``backoff_base`` and ``backoff_max`` shape the resends (see ``Transport``). A token is
    used until ``refresh_margin`` seconds (at most half its life) before Daraja's expiry."""

    def __init__(
        self,
        consumer_key: str,
        consumer_secret: str,
        environment: str = "sandbox",
        base_url: str | None = None,
        token_cache: TokenCache | None = None,
        timeout: float | tuple[float, float] = (5, 30),
        max_retries: int = 3,
        session: requests.Session | None = None,
        *,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        refresh_margin: int = 300,
    ):
        if environment not in ENVIRONMENTS:
            raise ValueError(f"environment must be one of {ENVIRONMENTS}")
        if not consumer_key or not consumer_secret:
            raise ValueError("a consumer key and secret are needed")
        self.environment = environment
        self.base_url = (base_url or BASE_URLS[environment]).rstrip("/")
        self.consumer_key = consumer_key
        self._consumer_secret = consumer_secret
        self.token_cache: TokenCache = (
            token_cache if token_cache is not None else MemoryTokenCache()
        )
        self.refresh_margin = refresh_margin
        self._owns_session = session is None
        self.session = session or requests.Session()
        self.http = Transport(
            self.base_url, self.session, timeout, max_retries, backoff_base, backoff_max
        )
        self._token_lock = threading.Lock()
        # A token belongs to a Daraja app in one environment (and one server, so a token from
        # the emulator is never sent to Safaricom): shortcodes sharing an app share it.
        app_id = hashlib.sha256(f"{self.base_url}\n{consumer_key}".encode()).hexdigest()[:24]
        self.token_cache_key = f"daraja:token:{environment}:{app_id}"

    def __repr__(self) -> str:
        return f"<DarajaClient {self.environment} {self.base_url} key={self.consumer_key[:4]}…>"

    def close(self) -> None:
        if self._owns_session:
            self.session.close()

    def __enter__(self) -> DarajaClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- OAuth -------------------------------------------------------------------------------

    def access_token(self, *, force_refresh: bool = False) -> str:
        """A valid bearer token: the cached one, or a new one from Daraja."""
        if not force_refresh and (token := self.token_cache.get(self.token_cache_key)):
            return token
        with self._token_lock:
            if not force_refresh and (token := self.token_cache.get(self.token_cache_key)):
                return token
            return self._fetch_token()

    def _renew_token(self, refused: str) -> str:
        """A token other than ``refused``: another worker may have fetched one already."""
        with self._token_lock:
            cached = self.token_cache.get(self.token_cache_key)
            if cached and cached != refused:
                return cached
            return self._fetch_token()

    def _fetch_token(self) -> str:
        data = self._send(
            "GET",
            "/oauth/v1/generate",
            what="OAuth",
            oauth=True,
            params={"grant_type": "client_credentials"},
            auth=(self.consumer_key, self._consumer_secret),
        )
        token = data.get("access_token")
        if not isinstance(token, str) or not token.strip():
            raise UnexpectedResponse("no access_token in the answer", operation="OAuth")
        expires_in = _seconds(data.get("expires_in"))
        ttl = max(1, expires_in - min(self.refresh_margin, expires_in // 2))
        self.token_cache.set(self.token_cache_key, token.strip(), ttl)
        log.info(
            "new Daraja access token (%s, key %s…): expires in %ss, used for %ss",
            self.environment,
            self.consumer_key[:4],
            expires_in,
            ttl,
        )
        return token.strip()

    # -- plumbing ------------------------------------------------------------------------------

    def _callback_url(self, field: str, url: str) -> str:
        problem = callback_url_problem(url, self.environment)
        if problem:
            raise ForbiddenCallbackUrl(field, forbidden_url_words(url), problem)
        return url

    def _call(
        self,
        path: str,
        body: dict,
        *,
        what: str,
        retry_ambiguous: bool = True,
        secrets: Iterable[str] = (),
    ) -> dict:
        """POST ``body`` with a bearer token; once, on an invalid-token answer, with a new one."""

        def post(token: str) -> dict:
            return self._send(
                "POST",
                path,
                what=what,
                json=body,
                headers={"Authorization": f"Bearer {token}"},
                retry_ambiguous=retry_ambiguous,
                secrets=(token, *secrets),
            )

        token = self.access_token()
        try:
            return post(token)
        except InvalidAccessToken as exc:
            log.info("%s: Daraja refused the access token (%s); fetching a new one", what, exc)
            return post(self._renew_token(refused=token))

    def _send(self, method: str, path: str, *, secrets: Iterable[str] = (), **kwargs) -> dict:
        return self.http.send(method, path, secrets=(self._consumer_secret, *secrets), **kwargs)
