"""OAuth against the emulator over HTTP: caching, early refresh, one refresh on a refused
token, expires_in as a string or a number, refused credentials."""

from __future__ import annotations

import pytest

from payments.daraja import AuthenticationFailed, InvalidAccessToken, MemoryTokenCache

OAUTH = "/oauth/v1/generate"
REGISTER = "/mpesa/c2b/v2/registerurl"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def register(daraja, emulator, receiver):
    return daraja.register_c2b_urls(
        emulator.paybill, receiver.hook_url("c2b/confirmation"), receiver.hook_url("c2b/validation")
    )


def test_token_is_fetched_once_and_cached(emulator, daraja):
    emulator.clear_calls()
    first = daraja.access_token()
    assert daraja.access_token() == first
    assert len(first) == 28
    assert len(emulator.calls(OAUTH)) == 1


def test_expires_in_string_3599_is_used_until_300_s_before_expiry(emulator, make_client):
    clock = Clock()
    daraja = make_client(token_cache=MemoryTokenCache(clock=clock))
    emulator.clear_calls()
    token = daraja.access_token()
    clock.now += 3599 - 300 - 1
    assert daraja.access_token() == token
    clock.now += 2
    assert daraja.access_token() != token
    assert len(emulator.calls(OAUTH)) == 2


def test_expired_token_is_refreshed_before_use(emulator, make_client, receiver):
    clock = Clock()
    daraja = make_client(token_cache=MemoryTokenCache(clock=clock))
    register(daraja, emulator, receiver)
    clock.now += 3600
    emulator.clear_calls()
    register(daraja, emulator, receiver)
    assert [c["path"] for c in emulator.calls()] == [OAUTH, REGISTER]


def test_refused_token_is_refreshed_once_and_the_call_retried(emulator, daraja, receiver):
    daraja.access_token()
    emulator.revoke_tokens()  # Daraja forgot it (expired early, or replaced)
    emulator.clear_calls()
    assert register(daraja, emulator, receiver).version == "v2"
    calls = emulator.calls()
    assert [(c["path"], c["status"]) for c in calls] == [
        (REGISTER, 400),
        (OAUTH, 200),
        (REGISTER, 200),
    ]
    assert calls[0]["error_code"] == "400.003.01"


def test_token_refused_twice_raises_after_exactly_one_refresh(emulator, daraja, receiver):
    daraja.access_token()
    emulator.faults(invalid_token=2)
    emulator.clear_calls()
    with pytest.raises(InvalidAccessToken) as caught:
        register(daraja, emulator, receiver)
    assert caught.value.error_code == "400.003.01"
    assert caught.value.http_status == 400
    assert [c["path"] for c in emulator.calls()] == [REGISTER, OAUTH, REGISTER]


def test_a_token_another_worker_fetched_is_used_without_asking_again(
    emulator, make_client, receiver
):
    shared = MemoryTokenCache()
    one, two = make_client(token_cache=shared), make_client(token_cache=shared)
    old = one.access_token()
    emulator.revoke_tokens()
    register(one, emulator, receiver)  # one fetches a new token into the shared cache
    assert shared.get(two.token_cache_key) != old
    emulator.clear_calls()
    register(two, emulator, receiver)
    assert [c["path"] for c in emulator.calls()] == [REGISTER]


def test_wrong_secret_is_an_authentication_failure_never_retried(emulator, make_client):
    daraja = make_client(secret="not-the-secret")
    emulator.clear_calls()
    with pytest.raises(AuthenticationFailed) as caught:
        daraja.access_token()
    assert caught.value.http_status == 400
    assert len(emulator.calls(OAUTH)) == 1


def test_expires_in_as_a_number_is_understood(start_emulator, make_client):
    other = start_emulator(expires_in_type="number", token_lifetime=120)
    clock = Clock()
    daraja = make_client(on=other, token_cache=MemoryTokenCache(clock=clock))
    token = daraja.access_token()
    clock.now += 59  # expires_in 119: a short-lived token is used for half its life
    assert daraja.access_token() == token
    clock.now += 1
    assert daraja.access_token() != token


def test_a_new_token_can_invalidate_the_old_one(start_emulator, make_client, receiver):
    other = start_emulator(single_token_per_app=True)
    one, two = make_client(on=other), make_client(on=other)
    one.access_token()
    two.access_token()  # Daraja's FAQ: each request invalidates the previous token
    other.clear_calls()
    register(one, other, receiver)
    assert [c["path"] for c in other.calls()] == [REGISTER, OAUTH, REGISTER]


def test_token_cache_key_is_per_app_environment_and_server(emulator, make_client):
    a, b = make_client(), make_client(key="another-key")
    assert a.token_cache_key != b.token_cache_key
    assert a.token_cache_key.startswith("daraja:token:sandbox:")
    assert emulator.key not in a.token_cache_key
