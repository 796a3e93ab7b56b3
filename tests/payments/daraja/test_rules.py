"""The pure parts: Safaricom's callback URL rules, Daraja's error codes as exceptions,
token caches, phone and amount checks, and the client's import boundary."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from payments.daraja import (
    DarajaClient,
    DuplicateOriginatorConversationID,
    InvalidAccessToken,
    InvalidRequest,
    MemoryTokenCache,
    MerchantNotFound,
    ProductMismatch,
    QuotaViolation,
    RedisTokenCache,
    RequestRefused,
    ResourceNotFound,
    ServerError,
    SpikeArrest,
    SubscriberLocked,
    TransactionPending,
    UrlsAlreadyRegistered,
    WrongCredentials,
    callback_url_problem,
    canonical_msisdn,
    forbidden_url_words,
    mask_msisdn,
)
from payments.daraja.client import whole_shillings
from payments.daraja.errors import DarajaError, error_class


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://pay.lender.co.ke/payments/c2b/9f2c4e1ab03d/confirmation", []),
        ("https://pay.lender.co.ke/payments/c2b/9f2c4e1ab03d/validation", []),
        ("https://MPESA.lender.co.ke/c2b", ["mpesa"]),
        ("https://lender.co.ke/m_pesa/c2b", ["m-pesa"]),
        ("https://lender.co.ke/M.Pesa/c2b", ["m-pesa"]),
        ("https://lender.co.ke/m%2Dpesa/c2b", ["m-pesa"]),
        ("https://lender.co.ke/SafariCom/c2b", ["safaricom"]),
        ("https://lender.co.ke/app.exe", ["exe"]),
        ("https://lender.co.ke/exec", ["exe", "exec"]),
        ("https://lender.co.ke/CMD", ["cmd"]),
        ("https://lender.co.ke/mysql/x", ["sql"]),
        ("https://lender.co.ke/status?query=1", ["query"]),
        ("https://lender.co.ke/mpesa/exec/sql", ["mpesa", "exe", "exec", "sql"]),
    ],
)
def test_forbidden_url_words(url, words):
    assert forbidden_url_words(url) == words


def test_callback_url_problems():
    assert (
        callback_url_problem("http://127.0.0.1:5000/payments/c2b/ab/confirmation", "sandbox") == ""
    )
    assert "https" in callback_url_problem("http://lender.co.ke/c2b", "production")
    assert callback_url_problem("https://lender.co.ke/c2b", "production") == ""
    assert "not an http" in callback_url_problem("ftp://lender.co.ke/c2b", "sandbox")
    assert "not an http" in callback_url_problem("", "sandbox")
    assert "'query'" in callback_url_problem("https://lender.co.ke/query", "production")


@pytest.mark.parametrize(
    ("code", "message", "status", "cls"),
    [
        ("404.001.03", "Invalid Access Token", 404, InvalidAccessToken),
        ("401.002.01", "Error Occurred - Invalid Access Token - ***", 401, InvalidAccessToken),
        ("400.003.01", "Invalid Access Token", 400, InvalidAccessToken),
        (
            "401.003.01",
            "Error Occurred - Invalid Access Token - Invalid API call",
            401,
            ProductMismatch,
        ),
        ("500.003.02", "Error Occurred: Spike Arrest Violation", 500, SpikeArrest),
        ("500.003.03", "Error Occurred: Quota Violation", 500, QuotaViolation),
        (
            "500.002.1001",
            "Duplicate OriginatorConversationID.",
            500,
            DuplicateOriginatorConversationID,
        ),
        ("500.003.1001", "Urls are already registered.", 500, UrlsAlreadyRegistered),
        ("500.003.1001", "Internal Server Error", 500, ServerError),
        ("500.001.1001", "Wrong credentials", 500, WrongCredentials),
        ("500.001.1001", "Merchant does not exist", 500, MerchantNotFound),
        (
            "500.001.1001",
            "Unable to lock subscriber, a transaction is already",
            500,
            SubscriberLocked,
        ),
        ("500.001.1001", "The transaction is being processed", 500, TransactionPending),
        ("400.002.02", "Bad Request - Invalid BusinessShortCode", 400, InvalidRequest),
        ("404.001.01", "Resource not found", 404, ResourceNotFound),
        (None, "HTTP 503", 503, ServerError),
    ],
)
def test_error_codes_become_typed_exceptions(code, message, status, cls):
    assert error_class(code, message, status) is cls


def test_only_transient_failures_are_retryable():
    assert SpikeArrest("x").retryable and ServerError("x").retryable
    assert not any(
        cls("x").retryable
        for cls in (InvalidRequest, WrongCredentials, DuplicateOriginatorConversationID)
    )


def test_error_carries_daraja_fields_and_reads_well():
    error = WrongCredentials(
        "Wrong credentials",
        error_code="500.001.1001",
        request_id="22759-3566117-1",
        http_status=500,
        operation="STK push",
    )
    assert (error.error_code, error.error_message, error.request_id, error.http_status) == (
        "500.001.1001",
        "Wrong credentials",
        "22759-3566117-1",
        500,
    )
    assert str(error) == (
        "STK push: 500.001.1001 Wrong credentials · requestId 22759-3566117-1 · HTTP 500"
    )
    assert isinstance(error, DarajaError)


def test_memory_cache_forgets_at_expiry():
    now = [0.0]
    cache = MemoryTokenCache(clock=lambda: now[0])
    cache.set("k", "tok-abc123", 10)
    assert "tok-abc123" not in repr(cache)
    now[0] = 9.9
    assert cache.get("k") == "tok-abc123"
    now[0] = 10
    assert cache.get("k") is None


class FakeRedis:
    def __init__(self):
        self.items: dict[str, tuple[bytes, int]] = {}

    def get(self, key):
        item = self.items.get(key)
        return item[0] if item else None

    def set(self, key, value, ex=None):
        self.items[key] = (value.encode(), ex)


def test_redis_cache_uses_redis_expiry():
    redis = FakeRedis()
    cache = RedisTokenCache(redis)
    cache.set("daraja:token:sandbox:x", "token", 3299.7)
    assert redis.items["marejesho:daraja:token:sandbox:x"] == (b"token", 3299)
    assert cache.get("daraja:token:sandbox:x") == "token"
    assert cache.get("missing") is None


@pytest.mark.redis
def test_redis_cache_on_a_real_redis():
    from conftest import REDIS_URL, need

    url = need("Redis (MAREJESHO_TEST_REDIS_URL)", REDIS_URL)
    cache = RedisTokenCache.from_url(url, prefix="marejesho-test:")
    cache.set("daraja:token:test", "token", 5)
    assert cache.get("daraja:token:test") == "token"
    assert 0 < cache.redis.ttl("marejesho-test:daraja:token:test") <= 5


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("0712345678", "254712345678"),
        ("+254712345678", "254712345678"),
        ("254 712 345 678", "254712345678"),
        ("712345678", "254712345678"),
        ("0110123456", "254110123456"),
    ],
)
def test_canonical_msisdn(raw, canonical):
    assert canonical_msisdn(raw) == canonical


@pytest.mark.parametrize("raw", ["", "12345", "0812345678", "2547123456789", None])
def test_not_a_kenyan_mobile(raw):
    with pytest.raises(RequestRefused):
        canonical_msisdn(raw)


def test_mask_msisdn():
    assert mask_msisdn("254712345678") == "2547****5678"
    assert mask_msisdn("") == "****"


@pytest.mark.parametrize("amount", ["10.5", 0, -5, "abc", True, float("nan")])
def test_amounts_are_whole_shillings(amount):
    with pytest.raises(RequestRefused):
        whole_shillings(amount)


def test_whole_amounts():
    assert whole_shillings("1500.00") == 1500 and whole_shillings(10) == 10


def test_client_refuses_unknown_environment():
    with pytest.raises(ValueError):
        DarajaClient("k", "s", environment="staging")


def test_client_repr_holds_no_secret():
    with DarajaClient("consumer-key", "consumer-secret") as daraja:
        assert "consumer-secret" not in repr(daraja)
        assert daraja.base_url == "https://sandbox.safaricom.co.ke"
    with DarajaClient("k", "s", environment="production") as daraja:
        assert daraja.base_url == "https://api.safaricom.co.ke"


def test_the_client_imports_no_flask_database_or_app_code():
    code = (
        "import sys, payments.daraja, payments.daraja.client\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('flask', 'werkzeug', 'sqlalchemy', 'lenders', 'redis')"
        " or (m.startswith('payments.') and not m.startswith('payments.daraja')))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy()
    )
    assert result.returncode == 0, result.stderr
