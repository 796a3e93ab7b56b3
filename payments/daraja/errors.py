"""What can go wrong talking to Daraja, as exceptions a caller can act on.

Daraja answers errors as ``{"requestId", "errorCode", "errorMessage"}`` with the HTTP status
equal to the code's first segment (REFERENCE §12). Each exception carries those three values
and the HTTP status; the class says what to do about it. Messages never hold a secret: the
client redacts tokens and keys before an error is built."""

from __future__ import annotations

INVALID_TOKEN_CODES = frozenset({"404.001.03", "401.002.01", "400.003.01", "401.001"})


class DarajaError(Exception):
    """Daraja refused or failed a request. ``error_code`` is Daraja's ``errorCode``
    (``None`` when the failure happened before Daraja answered); ``operation`` names the
    call ("STK push")."""

    def __init__(
        self,
        error_message: str,
        *,
        error_code: str | None = None,
        request_id: str | None = None,
        http_status: int | None = None,
        operation: str | None = None,
    ):
        self.error_code = error_code
        self.error_message = error_message
        self.request_id = request_id
        self.http_status = http_status
        self.operation = operation
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.error_code} {self.error_message}" if self.error_code else self.error_message
        parts = [f"{self.operation}: {text}" if self.operation else text]
        if self.request_id:
            parts.append(f"requestId {self.request_id}")
        if self.http_status:
            parts.append(f"HTTP {self.http_status}")
        return " · ".join(parts)

    @property
    def retryable(self) -> bool:
        """True when sending the same request again later may succeed and cannot do harm
        twice: the gateway refused it before M-Pesa saw it."""
        return False


class RequestRefused(DarajaError, ValueError):
    """Refused here, before sending: the request would break one of Daraja's rules."""


class ForbiddenCallbackUrl(RequestRefused):
    """A callback URL holds a word Safaricom refuses (mpesa, safaricom, exe, sql, query …)
    or is not https in production. Names the field, never the URL: it carries a secret token."""

    def __init__(self, field: str, words: list[str], reason: str = ""):
        self.field = field
        self.words = list(words)
        why = reason or "contains " + ", ".join(repr(w) for w in self.words)
        super().__init__(f"{field} {why}; Safaricom refuses such callback URLs")


class SandboxOnly(RequestRefused):
    """The API exists only in the sandbox (C2B simulate)."""


class DarajaUnavailable(DarajaError):
    """Daraja could not be reached, or did not answer in time, after every retry."""


class UnexpectedResponse(DarajaError):
    """Daraja (or its gateway) answered with something that is not Daraja's JSON."""


class AuthenticationFailed(DarajaError):
    """The OAuth endpoint refused the consumer key and secret."""


class InvalidAccessToken(DarajaError):
    """The bearer token was refused (expired, revoked or unknown). The client fetches a new
    token and retries once before raising this."""


class ProductMismatch(DarajaError):
    """``401.003.01``: the Daraja app lacks the product or version called (C2B v1 vs v2)."""


class InvalidRequest(DarajaError):
    """``400.002.02`` and friends: a field Daraja does not accept."""


class ResourceNotFound(DarajaError):
    """``404.00x.01``: no such API path (or a gateway fault for one)."""


class SpikeArrest(DarajaError):
    """``500.003.02``: Daraja's rate limit; retried with backoff."""

    @property
    def retryable(self) -> bool:
        return True


class QuotaViolation(DarajaError):
    """``500.003.03``: the app's quota is used up; retrying soon will not help."""


class DuplicateOriginatorConversationID(DarajaError):
    """``500.002.1001``: this OriginatorConversationID was used before. For a B2C payment
    this means the first request reached Daraja: ask Transaction Status, never resend."""


class UrlsAlreadyRegistered(DarajaError):
    """``500.003.1001`` "Urls are already registered" (production registers once; delete the
    old URLs in Daraja's URL Management first)."""


class WrongCredentials(DarajaError):
    """``500.001.1001`` "Wrong credentials": the STK password (shortcode, passkey, timestamp)
    does not match."""


class MerchantNotFound(DarajaError):
    """``500.001.1001`` "Merchant does not exist": the shortcode is not an STK merchant."""


class SubscriberLocked(DarajaError):
    """``500.001.1001`` "Unable to lock subscriber": the customer has a transaction in
    progress; wait a minute before prompting again."""


class TransactionPending(DarajaError):
    """``500.001.1001`` "The transaction is being processed": an STK prompt is still open."""


class ServerError(DarajaError):
    """Any other 5xx. Retried unless the request could move money twice."""

    @property
    def retryable(self) -> bool:
        return True


_BY_CODE: dict[str, type[DarajaError]] = {
    "401.003.01": ProductMismatch,
    "500.003.02": SpikeArrest,
    "500.003.03": QuotaViolation,
    "500.002.1001": DuplicateOriginatorConversationID,
}
_BY_MESSAGE_500_001 = (
    ("wrong credentials", WrongCredentials),
    ("merchant does not exist", MerchantNotFound),
    ("unable to lock subscriber", SubscriberLocked),
    ("being processed", TransactionPending),
)


def error_class(error_code: str | None, error_message: str, http_status: int) -> type[DarajaError]:
    """The exception class for one Daraja error answer."""
    code = (error_code or "").strip()
    message = error_message.lower()
    if code in INVALID_TOKEN_CODES:
        return InvalidAccessToken
    if code in _BY_CODE:
        return _BY_CODE[code]
    if code == "500.001.1001":
        for fragment, cls in _BY_MESSAGE_500_001:
            if fragment in message:
                return cls
        return DarajaError
    if code == "500.003.1001" and ("already registered" in message or "duplicate" in message):
        return UrlsAlreadyRegistered
    if code.startswith("400.008"):
        return AuthenticationFailed
    if code.startswith("404.") and code.endswith(".01"):
        return ResourceNotFound
    if code.startswith("400."):
        return InvalidRequest
    if http_status >= 500:
        return ServerError
    return DarajaError
