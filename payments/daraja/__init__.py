"""Safaricom's Daraja API, the client Marejesho uses in production: the client (``client``,
its calls by API family in ``c2b``, ``stk``, ``initiator`` and ``pull``, the values they
carry in ``fields``), how requests travel (``transport``), its errors (``errors``), token
caches (``tokens``), derived credentials (``credentials``, Safaricom's ``certs``), callback
URL rules (``urls``) and the readers of Daraja's results and callbacks (``results``).

The local emulator is not here: ``payments/emulator/``, which production code never imports."""

from payments.daraja.client import DarajaClient, Registration, canonical_msisdn, mask_msisdn
from payments.daraja.credentials import (
    default_certificate,
    security_credential,
    stk_password,
    stk_timestamp,
)
from payments.daraja.errors import (
    AuthenticationFailed,
    DarajaError,
    DarajaUnavailable,
    DuplicateOriginatorConversationID,
    ForbiddenCallbackUrl,
    InvalidAccessToken,
    InvalidRequest,
    MerchantNotFound,
    ProductMismatch,
    QuotaViolation,
    RequestRefused,
    ResourceNotFound,
    SandboxOnly,
    ServerError,
    SpikeArrest,
    SubscriberLocked,
    TransactionPending,
    UnexpectedResponse,
    UrlsAlreadyRegistered,
    WrongCredentials,
)
from payments.daraja.results import (
    AccountBalance,
    MalformedResult,
    Result,
    StkOutcome,
    account_balances,
    parse_result,
    parse_stk_callback,
    parse_stk_query,
    result_code,
)
from payments.daraja.tokens import MemoryTokenCache, RedisTokenCache, TokenCache
from payments.daraja.urls import (
    PRODUCTION_URL,
    SANDBOX_URL,
    callback_url_problem,
    forbidden_url_words,
)

__all__ = [
    "AccountBalance",
    "AuthenticationFailed",
    "DarajaClient",
    "DarajaError",
    "DarajaUnavailable",
    "DuplicateOriginatorConversationID",
    "ForbiddenCallbackUrl",
    "InvalidAccessToken",
    "InvalidRequest",
    "MalformedResult",
    "MemoryTokenCache",
    "MerchantNotFound",
    "PRODUCTION_URL",
    "ProductMismatch",
    "QuotaViolation",
    "RedisTokenCache",
    "Registration",
    "RequestRefused",
    "Result",
    "ResourceNotFound",
    "SANDBOX_URL",
    "SandboxOnly",
    "ServerError",
    "SpikeArrest",
    "StkOutcome",
    "SubscriberLocked",
    "TokenCache",
    "TransactionPending",
    "UnexpectedResponse",
    "UrlsAlreadyRegistered",
    "WrongCredentials",
    "account_balances",
    "callback_url_problem",
    "canonical_msisdn",
    "default_certificate",
    "forbidden_url_words",
    "mask_msisdn",
    "parse_result",
    "parse_stk_callback",
    "parse_stk_query",
    "result_code",
    "security_credential",
    "stk_password",
    "stk_timestamp",
]
