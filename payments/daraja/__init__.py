"""Safaricom's Daraja API: the client (``client``), its errors (``errors``), token caches
(``tokens``), derived credentials (``credentials``), callback URL rules (``urls``) and a local
emulator (``emulator``, which needs Flask; import it from its module)."""

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
from payments.daraja.tokens import MemoryTokenCache, RedisTokenCache, TokenCache
from payments.daraja.urls import (
    PRODUCTION_URL,
    SANDBOX_URL,
    callback_url_problem,
    forbidden_url_words,
)

__all__ = [
    "AuthenticationFailed",
    "DarajaClient",
    "DarajaError",
    "DarajaUnavailable",
    "DuplicateOriginatorConversationID",
    "ForbiddenCallbackUrl",
    "InvalidAccessToken",
    "InvalidRequest",
    "MemoryTokenCache",
    "MerchantNotFound",
    "PRODUCTION_URL",
    "ProductMismatch",
    "QuotaViolation",
    "RedisTokenCache",
    "Registration",
    "RequestRefused",
    "ResourceNotFound",
    "SANDBOX_URL",
    "SandboxOnly",
    "ServerError",
    "SpikeArrest",
    "SubscriberLocked",
    "TokenCache",
    "TransactionPending",
    "UnexpectedResponse",
    "UrlsAlreadyRegistered",
    "WrongCredentials",
    "callback_url_problem",
    "canonical_msisdn",
    "default_certificate",
    "forbidden_url_words",
    "mask_msisdn",
    "security_credential",
    "stk_password",
    "stk_timestamp",
]
