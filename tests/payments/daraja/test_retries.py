"""Retries: 5xx and spike arrest are resent with backoff, 4xx and Daraja's refusals never;
connection failures become DarajaUnavailable; a request that could move money twice (B2C
v1, C2B simulate) is never resent once Daraja may have it."""

from __future__ import annotations

import time

import pytest
import requests
from flask import Flask

from payments.daraja import (
    DarajaClient,
    DarajaUnavailable,
    InvalidRequest,
    ServerError,
    SpikeArrest,
    UnexpectedResponse,
)
from payments.emulator.server import background_server

BALANCE = "/mpesa/accountbalance/v1/query"
B2C_V3, B2C_V1 = "/mpesa/b2c/v3/paymentrequest", "/mpesa/b2c/v1/paymentrequest"


def balance(daraja, emulator, receiver, credential):
    return daraja.account_balance(
        initiator_name=emulator.initiator,
        security_credential=credential,
        party_a="600000",
        result_url=receiver.hook_url("balance/result"),
        queue_timeout_url=receiver.hook_url("balance/timeout"),
    )


def b2c(daraja, emulator, receiver, credential, version="v3", ocid="MJ-R1"):
    return daraja.b2c_payment(
        originator_conversation_id=ocid if version == "v3" else None,
        initiator_name=emulator.initiator,
        security_credential=credential,
        amount=100,
        party_a="600000",
        party_b="254712345678",
        result_url=receiver.hook_url("b2c/result"),
        queue_timeout_url=receiver.hook_url("b2c/timeout"),
        version=version,
    )


def statuses(emulator, path):
    return [(c["status"], c["error_code"]) for c in emulator.calls(path)]


def test_500s_are_retried_then_succeed(emulator, daraja, receiver, credential):
    daraja.access_token()
    emulator.faults(fail_with_500=2)
    emulator.clear_calls()
    assert balance(daraja, emulator, receiver, credential)["ResponseCode"] == "0"
    assert statuses(emulator, BALANCE) == [
        (500, "500.003.1001"),
        (500, "500.003.1001"),
        (200, None),
    ]


def test_500s_beyond_the_retries_raise_server_error(emulator, daraja, receiver, credential):
    daraja.access_token()
    emulator.faults(fail_with_500=5)
    emulator.clear_calls()
    with pytest.raises(ServerError) as caught:
        balance(daraja, emulator, receiver, credential)
    assert caught.value.error_code == "500.003.1001"
    assert len(emulator.calls(BALANCE)) == 4  # the first try and max_retries=3


def test_spike_arrest_is_retried(emulator, daraja, receiver, credential):
    daraja.access_token()
    emulator.faults(spike_arrest=2)
    emulator.clear_calls()
    balance(daraja, emulator, receiver, credential)
    assert [code for _, code in statuses(emulator, BALANCE)] == ["500.003.02", "500.003.02", None]


def test_spike_arrest_beyond_the_retries(emulator, make_client, receiver, credential):
    daraja = make_client(max_retries=1)
    daraja.access_token()
    emulator.faults(spike_arrest=2)
    with pytest.raises(SpikeArrest):
        balance(daraja, emulator, receiver, credential)


def test_oauth_is_retried_too(emulator, daraja):
    emulator.faults(fail_with_500=1)
    emulator.clear_calls()
    daraja.access_token()
    assert statuses(emulator, "/oauth/v1/generate") == [(500, "500.003.1001"), (200, None)]


def test_4xx_is_never_retried(emulator, daraja, receiver):
    daraja.access_token()
    emulator.clear_calls()
    with pytest.raises(InvalidRequest):
        balance(daraja, emulator, receiver, "not a credential")
    assert statuses(emulator, BALANCE) == [(400, "400.002.02")]


def test_b2c_v3_is_resent_after_a_500(emulator, daraja, receiver, credential):
    daraja.access_token()
    emulator.faults(fail_with_500=1)
    emulator.clear_calls()
    assert b2c(daraja, emulator, receiver, credential, ocid="MJ-R2")["ResponseCode"] == "0"
    assert len(emulator.calls(B2C_V3)) == 2


def test_b2c_v1_is_never_resent_after_a_500(emulator, daraja, receiver, credential):
    daraja.access_token()
    emulator.faults(fail_with_500=1)
    emulator.clear_calls()
    with pytest.raises(ServerError):
        b2c(daraja, emulator, receiver, credential, version="v1")
    assert len(emulator.calls(B2C_V1)) == 1


def test_b2c_v1_is_resent_after_spike_arrest(emulator, daraja, receiver, credential):
    daraja.access_token()
    emulator.faults(spike_arrest=1)  # refused at the gateway: nothing happened
    emulator.clear_calls()
    b2c(daraja, emulator, receiver, credential, version="v1")
    assert len(emulator.calls(B2C_V1)) == 2


def test_simulate_is_never_resent_after_a_500(emulator, daraja):
    daraja.access_token()
    emulator.faults(fail_with_500=1)
    emulator.clear_calls()
    with pytest.raises(ServerError):
        daraja.simulate_c2b(emulator.paybill, 10, "254712345678", bill_ref="once")
    assert len(emulator.calls("/mpesa/c2b/v2/simulate")) == 1


class CountingSession(requests.Session):
    def __init__(self):
        super().__init__()
        self.sent = 0

    def request(self, *args, **kwargs):
        self.sent += 1
        return super().request(*args, **kwargs)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_nobody_listening_is_unavailable_after_the_retries():
    session = CountingSession()
    daraja = DarajaClient(
        "k",
        "s",
        base_url=f"http://127.0.0.1:{free_port()}",
        session=session,
        backoff_base=0.01,
        timeout=(1, 1),
    )
    with session, pytest.raises(DarajaUnavailable) as caught:
        daraja.access_token()
    assert session.sent == 4
    assert caught.value.error_code is None
    assert "could not connect" in str(caught.value)


@pytest.fixture(scope="module")
def slow_daraja():
    """A Daraja that takes 0.5 s over B2C and whose gateway answers HTML once."""
    app = Flask("slow_daraja")
    hits = {"b2c": 0, "balance": 0}

    @app.get("/oauth/v1/generate")
    def token():
        return {"access_token": "slowtoken", "expires_in": "3599"}

    @app.post("/mpesa/b2c/<version>/paymentrequest")
    def slow(version):
        hits["b2c"] += 1
        time.sleep(0.5)
        return {"ResponseCode": "0"}

    @app.post("/mpesa/accountbalance/v1/query")
    def gateway():
        hits["balance"] += 1
        if hits["balance"] == 1:
            return "<html>502 Bad Gateway</html>", 502, {"Content-Type": "text/html"}
        return "<html>maintenance</html>", 200, {"Content-Type": "text/html"}

    with background_server(app) as url:
        yield url, hits


def slow_client(url):
    return DarajaClient("k", "s", base_url=url, timeout=(1, 0.2), backoff_base=0.01)


def test_read_timeout_on_b2c_v1_is_not_resent(slow_daraja, emulator, receiver, credential):
    url, hits = slow_daraja
    hits["b2c"] = 0
    with slow_client(url) as daraja, pytest.raises(DarajaUnavailable, match="no answer in time"):
        b2c(daraja, emulator, receiver, credential, version="v1")
    assert hits["b2c"] == 1


def test_read_timeout_on_b2c_v3_is_resent(slow_daraja, emulator, receiver, credential):
    url, hits = slow_daraja
    hits["b2c"] = 0
    with slow_client(url) as daraja, pytest.raises(DarajaUnavailable):
        b2c(daraja, emulator, receiver, credential, ocid="MJ-R3")
    assert hits["b2c"] == 4


def test_gateway_html_is_retried_then_unexpected(slow_daraja, emulator, receiver, credential):
    url, hits = slow_daraja
    with slow_client(url) as daraja, pytest.raises(UnexpectedResponse):
        balance(daraja, emulator, receiver, credential)
    assert hits["balance"] == 2


def test_backoff_doubles_with_jitter_up_to_the_ceiling():
    daraja = DarajaClient("k", "s", backoff_base=1.0, backoff_max=5.0)
    for attempt, (low, high) in enumerate([(0.5, 1), (1, 2), (2, 4), (2.5, 5), (2.5, 5)], 1):
        delays = {daraja.http.backoff(attempt) for _ in range(50)}
        assert all(low <= d <= high for d in delays)
        assert len(delays) > 1  # jitter
    daraja.close()
