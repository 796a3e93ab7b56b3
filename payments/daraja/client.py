"""A plain ``requests`` client for Safaricom's Daraja API (REFERENCE.md is the spec).

One method per API; each returns Daraja's JSON answer as a dict (C2B registration returns a
``Registration`` that also says which version Daraja took) or raises a ``DarajaError``
subclass carrying ``errorCode``, ``errorMessage`` and ``requestId``.

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
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

import requests

from payments.daraja.credentials import NAIROBI, stk_password, stk_timestamp
from payments.daraja.errors import (
    DarajaError,
    ForbiddenCallbackUrl,
    InvalidAccessToken,
    ProductMismatch,
    RequestRefused,
    SandboxOnly,
    UnexpectedResponse,
)
from payments.daraja.tokens import MemoryTokenCache, TokenCache
from payments.daraja.transport import Transport
from payments.daraja.urls import BASE_URLS, ENVIRONMENTS, callback_url_problem, forbidden_url_words

log = logging.getLogger("marejesho.daraja")

C2B_VERSIONS = ("v1", "v2")
RESPONSE_TYPES = ("Completed", "Cancelled")
STK_TRANSACTION_TYPES = ("CustomerPayBillOnline", "CustomerBuyGoodsOnline")
B2C_COMMANDS = ("BusinessPayment", "SalaryPayment", "PromotionPayment")
DEFAULT_EXPIRES_IN = 3599


@dataclass(frozen=True)
class Registration:
    """A C2B URL registration Daraja accepted: with which version, and its answer."""

    version: str
    response: dict
    fell_back: bool = False  # True when the asked-for version was refused with 401.003.01


def mask_msisdn(value) -> str:
    """``2547****5678`` for logs; never the whole number."""
    digits = re.sub(r"\D", "", str(value or ""))
    return f"{digits[:4]}****{digits[-4:]}" if len(digits) >= 8 else "****"


def canonical_msisdn(value, field: str = "PhoneNumber") -> str:
    """``0712345678``, ``+254712345678``, ``712345678`` or ``254712345678`` as the 12 digits
    Daraja wants; RequestRefused for anything that is not a Kenyan mobile number."""
    digits = re.sub(r"[\s\-]", "", str(value or "")).removeprefix("+")
    if re.fullmatch(r"0[17]\d{8}", digits):
        digits = "254" + digits[1:]
    elif re.fullmatch(r"[17]\d{8}", digits):
        digits = "254" + digits
    if not re.fullmatch(r"254[17]\d{8}", digits):
        raise RequestRefused(f"{field} is not a Kenyan mobile number")
    return digits


def whole_shillings(amount, field: str = "Amount") -> int:
    """Daraja takes whole shillings only, at least 1."""
    try:
        value = Decimal(str(amount).strip())
    except (InvalidOperation, ValueError):
        raise RequestRefused(f"{field} is not a number") from None
    if isinstance(amount, bool) or not value.is_finite() or value != value.to_integral_value():
        raise RequestRefused(f"{field} must be whole shillings")
    if value < 1:
        raise RequestRefused(f"{field} must be at least KES 1")
    return int(value)


def _seconds(value) -> int:
    """``expires_in`` as Daraja sends it: the string ``"3599"`` or a number."""
    try:
        seconds = int(float(str(value).strip()))
    except (TypeError, ValueError):
        return DEFAULT_EXPIRES_IN
    return seconds if seconds > 0 else DEFAULT_EXPIRES_IN


class DarajaClient:
    """Daraja for one app (consumer key and secret) in one environment.

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

    # -- C2B ---------------------------------------------------------------------------------

    def register_c2b_urls(
        self,
        shortcode: str,
        confirmation_url: str,
        validation_url: str,
        response_type: str = "Completed",
        version: str = "v2",
    ) -> Registration:
        """Register the shortcode's callback URLs. Tries ``version`` and, when Daraja answers
        ``401.003.01`` (the app has the other C2B product), the other version; the result
        says which one took. ``response_type`` is what M-Pesa does when our validation URL
        does not answer in ~8 s: ``Completed`` or ``Cancelled``."""
        if version not in C2B_VERSIONS:
            raise ValueError(f"version must be one of {C2B_VERSIONS}")
        if response_type not in RESPONSE_TYPES:
            raise RequestRefused(f"ResponseType must be one of {RESPONSE_TYPES}")
        body = {
            "ShortCode": str(shortcode),
            "ResponseType": response_type,
            "ConfirmationURL": self._callback_url("ConfirmationURL", confirmation_url),
            "ValidationURL": self._callback_url("ValidationURL", validation_url),
        }
        try:
            data = self._call(
                f"/mpesa/c2b/{version}/registerurl", body, what=f"C2B register {version}"
            )
            return Registration(version, data)
        except ProductMismatch:
            other = "v1" if version == "v2" else "v2"
            log.warning(
                "C2B register %s for shortcode %s: the app lacks that product (401.003.01); "
                "trying %s",
                version,
                shortcode,
                other,
            )
            data = self._call(f"/mpesa/c2b/{other}/registerurl", body, what=f"C2B register {other}")
            return Registration(other, data, fell_back=True)

    def simulate_c2b(
        self,
        shortcode: str,
        amount,
        msisdn: str,
        bill_ref: str = "",
        command_id: str = "CustomerPayBillOnline",
        version: str = "v2",
    ) -> dict:
        """Make the sandbox pay ``amount`` into ``shortcode`` as if ``msisdn`` had (Daraja then
        calls the registered validation and confirmation URLs). Sandbox only: refused for a
        production client before anything is sent. Sent once (a resend would be a second
        payment)."""
        if self.environment != "sandbox":
            raise SandboxOnly("C2B simulate exists only in the sandbox")
        if version not in C2B_VERSIONS:
            raise ValueError(f"version must be one of {C2B_VERSIONS}")
        if command_id not in STK_TRANSACTION_TYPES:
            raise RequestRefused(f"CommandID must be one of {STK_TRANSACTION_TYPES}")
        body = {
            "ShortCode": str(shortcode),
            "CommandID": command_id,
            "Amount": whole_shillings(amount),
            "Msisdn": canonical_msisdn(msisdn, "Msisdn"),
            "BillRefNumber": bill_ref,
        }
        log.info(
            "C2B simulate: KES %s to %s from %s", body["Amount"], shortcode, mask_msisdn(msisdn)
        )
        return self._call(
            f"/mpesa/c2b/{version}/simulate", body, what="C2B simulate", retry_ambiguous=False
        )

    # -- STK Push (M-Pesa Express) -------------------------------------------------------------

    def stk_push(
        self,
        shortcode: str,
        passkey: str,
        amount,
        phone: str,
        callback_url: str,
        account_reference: str,
        description: str = "Repayment",
        transaction_type: str = "CustomerPayBillOnline",
        party_b: str | None = None,
        timestamp: str | None = None,
    ) -> dict:
        """Prompt ``phone`` to pay ``amount`` to ``shortcode`` (for a till: ``shortcode`` is the
        store number, ``party_b`` the till, ``transaction_type`` CustomerBuyGoodsOnline).
        Daraja answers at once with the CheckoutRequestID; the outcome comes to
        ``callback_url`` after the customer acts."""
        if transaction_type not in STK_TRANSACTION_TYPES:
            raise RequestRefused(f"TransactionType must be one of {STK_TRANSACTION_TYPES}")
        if not account_reference or len(account_reference) > 12:
            raise RequestRefused("AccountReference must be 1 to 12 characters")
        if len(description) > 13:
            raise RequestRefused("TransactionDesc must be at most 13 characters")
        msisdn = canonical_msisdn(phone)
        fields = {
            "TransactionType": transaction_type,
            "Amount": str(whole_shillings(amount)),
            "PartyA": msisdn,
            "PartyB": str(party_b or shortcode),
            "PhoneNumber": msisdn,
            "CallBackURL": self._callback_url("CallBackURL", callback_url),
            "AccountReference": account_reference,
            "TransactionDesc": description,
        }
        log.info("STK push: KES %s to %s from %s", fields["Amount"], shortcode, mask_msisdn(msisdn))
        return self._stk_call(
            "/mpesa/stkpush/v1/processrequest", "STK push", shortcode, passkey, timestamp, fields
        )

    def stk_query(
        self, shortcode: str, passkey: str, checkout_request_id: str, timestamp: str | None = None
    ) -> dict:
        """What became of an STK push. ``ResultCode`` comes as a string here (``"0"``,
        ``"1032"``). While the prompt is still open Daraja answers an error, raised as
        ``TransactionPending``."""
        return self._stk_call(
            "/mpesa/stkpushquery/v1/query",
            "STK query",
            shortcode,
            passkey,
            timestamp,
            {"CheckoutRequestID": checkout_request_id},
        )

    def _stk_call(
        self, path: str, what: str, shortcode, passkey: str, timestamp: str | None, fields: dict
    ) -> dict:
        """STK Push and Query start alike: the shortcode, the password and its timestamp."""
        timestamp = timestamp or stk_timestamp()
        password = stk_password(shortcode, passkey, timestamp)
        body = {"BusinessShortCode": str(shortcode), "Password": password, "Timestamp": timestamp}
        return self._call(path, body | fields, what=what, secrets=(passkey, password))

    # -- B2C, Transaction Status, Account Balance, Reversal ------------------------------------

    def b2c_payment(
        self,
        *,
        originator_conversation_id: str | None,
        initiator_name: str,
        security_credential: str,
        amount,
        party_a: str,
        party_b: str,
        result_url: str,
        queue_timeout_url: str,
        command_id: str = "BusinessPayment",
        remarks: str = "Loan disbursement",
        occasion: str = "",
        version: str = "v3",
    ) -> dict:
        """Send money from shortcode ``party_a`` to phone ``party_b``. v3 carries our
        ``originator_conversation_id`` (the disbursement's idempotency key: Daraja refuses a
        reused one with ``DuplicateOriginatorConversationID``), so it is resent after a
        timeout or 5xx; v1 has no such key and is never resent once Daraja may have it.
        The outcome comes to ``result_url``."""
        if version not in ("v1", "v3"):
            raise ValueError("B2C version must be v3 (or the legacy v1); Kenya has no v2")
        if command_id not in B2C_COMMANDS:
            raise RequestRefused(f"CommandID must be one of {B2C_COMMANDS}")
        if not 2 <= len(remarks) <= 100:
            raise RequestRefused("Remarks must be 2 to 100 characters")
        body: dict = {}
        if version == "v3":
            if not originator_conversation_id:
                raise RequestRefused("B2C v3 needs our OriginatorConversationID")
            body["OriginatorConversationID"] = originator_conversation_id
        body |= {
            "InitiatorName": initiator_name,
            "SecurityCredential": security_credential,
            "CommandID": command_id,
            "Amount": str(whole_shillings(amount)),
            "PartyA": str(party_a),
            "PartyB": canonical_msisdn(party_b, "PartyB"),
            "Remarks": remarks,
            "QueueTimeOutURL": self._callback_url("QueueTimeOutURL", queue_timeout_url),
            "ResultURL": self._callback_url("ResultURL", result_url),
        }
        if occasion:
            body["Occassion"] = occasion  # Daraja's documented spelling
        log.info(
            "B2C %s: KES %s from %s to %s (%s)",
            version,
            body["Amount"],
            party_a,
            mask_msisdn(party_b),
            originator_conversation_id or "no originator id",
        )
        return self._call(
            f"/mpesa/b2c/{version}/paymentrequest",
            body,
            what=f"B2C {version}",
            retry_ambiguous=version == "v3",
        )

    def transaction_status(
        self,
        *,
        initiator_name: str,
        security_credential: str,
        party_a: str,
        result_url: str,
        queue_timeout_url: str,
        transaction_id: str | None = None,
        original_conversation_id: str | None = None,
        identifier_type: str = "4",
        remarks: str = "Status check",
        occasion: str = "",
    ) -> dict:
        """Ask what became of a transaction, by M-Pesa receipt (``transaction_id``) or by the
        OriginatorConversationID we gave a B2C v3 payment. The answer comes to
        ``result_url``."""
        if not transaction_id and not original_conversation_id:
            raise RequestRefused("give a TransactionID or an OriginalConversationID")
        body = {
            "Initiator": initiator_name,
            "SecurityCredential": security_credential,
            "CommandID": "TransactionStatusQuery",
            "TransactionID": transaction_id or "",
            "OriginalConversationID": original_conversation_id or "",
            "PartyA": str(party_a),
            "IdentifierType": str(identifier_type),
            "ResultURL": self._callback_url("ResultURL", result_url),
            "QueueTimeOutURL": self._callback_url("QueueTimeOutURL", queue_timeout_url),
            "Remarks": remarks,
            "Occasion": occasion,
        }
        return self._call("/mpesa/transactionstatus/v1/query", body, what="transaction status")

    def account_balance(
        self,
        *,
        initiator_name: str,
        security_credential: str,
        party_a: str,
        result_url: str,
        queue_timeout_url: str,
        identifier_type: str = "4",
        remarks: str = "Balance check",
    ) -> dict:
        """Ask for the shortcode's account balances; they come to ``result_url``."""
        body = {
            "Initiator": initiator_name,
            "SecurityCredential": security_credential,
            "CommandID": "AccountBalance",
            "PartyA": str(party_a),
            "IdentifierType": str(identifier_type),
            "Remarks": remarks,
            "QueueTimeOutURL": self._callback_url("QueueTimeOutURL", queue_timeout_url),
            "ResultURL": self._callback_url("ResultURL", result_url),
        }
        return self._call("/mpesa/accountbalance/v1/query", body, what="account balance")

    def reverse_transaction(
        self,
        *,
        initiator_name: str,
        security_credential: str,
        transaction_id: str,
        amount,
        receiver_party: str,
        result_url: str,
        queue_timeout_url: str,
        remarks: str = "Payment reversal",
        receiver_identifier_type: str = "11",
        occasion: str = "",
    ) -> dict:
        """Reverse a C2B payment (``transaction_id`` is its receipt) received by
        ``receiver_party``. A resend is refused by M-Pesa as already reversed (R000001)."""
        body = {
            "Initiator": initiator_name,
            "SecurityCredential": security_credential,
            "CommandID": "TransactionReversal",
            "TransactionID": transaction_id,
            "Amount": str(whole_shillings(amount)),
            "ReceiverParty": str(receiver_party),
            "RecieverIdentifierType": str(receiver_identifier_type),  # Daraja's spelling
            "ResultURL": self._callback_url("ResultURL", result_url),
            "QueueTimeOutURL": self._callback_url("QueueTimeOutURL", queue_timeout_url),
            "Remarks": remarks,
        }
        if occasion:
            body["Occasion"] = occasion
        return self._call("/mpesa/reversal/v1/request", body, what="reversal")

    # -- Pull Transactions ---------------------------------------------------------------------

    def register_pull(
        self, shortcode: str, nominated_number: str, callback_url: str, request_type: str = "Pull"
    ) -> dict:
        """Register the shortcode for Pull Transactions (once). ``ResponseStatus`` (or, in
        the older docs, ``Response Status``) is ``1000`` registered, ``1001`` already was."""
        body = {
            "ShortCode": str(shortcode),
            "RequestType": request_type,
            "NominatedNumber": nominated_number,
            "CallBackURL": self._callback_url("CallBackURL", callback_url),
        }
        return self._call("/pulltransactions/v1/register", body, what="pull register")

    def query_pull(
        self, shortcode: str, start: datetime, end: datetime, offset: int = 0
    ) -> list[dict]:
        """C2B transactions of the last 48 hours between ``start`` and ``end`` (aware
        datetimes are converted to Nairobi time, naive ones taken as Nairobi time), at most
        one page from row ``offset``. Daraja nests them as ``Response: [[...]]``; this returns
        the flat list, empty when Daraja has none (``1001``)."""
        body = {
            "ShortCode": str(shortcode),
            "StartDate": _nairobi_text(start),
            "EndDate": _nairobi_text(end),
            "OffSetValue": str(int(offset)),
        }
        data = self._call("/pulltransactions/v1/query", body, what="pull query")
        code = str(data.get("ResponseCode", "")).strip()
        if code == "1001":
            return []
        if code != "1000":
            raise DarajaError(
                str(data.get("ResponseMessage") or "pull query failed"),
                error_code=code or None,
                request_id=data.get("ResponseRefID"),
                http_status=200,
                operation="pull query",
            )
        rows: list[dict] = []
        for item in data.get("Response") or []:
            if isinstance(item, list):
                rows.extend(row for row in item if isinstance(row, dict))
            elif isinstance(item, dict):
                rows.append(item)
        return rows

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


def _nairobi_text(moment: datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(NAIROBI)
    return moment.strftime("%Y-%m-%d %H:%M:%S")
