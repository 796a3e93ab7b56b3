"""GET /healthz: up or down, and nothing else, to anyone; the details to an admin; never a
500, and a database that is gone or hangs is "down" within the timeout."""

from __future__ import annotations

import json
import socket
import time

import pytest
import redis
from conftest import REDIS_URL, need
from sqlalchemy.exc import OperationalError

from lenders.extensions import db
from payments.models import C2BPayment, CallbackLog, Shortcode, SmsMessage
from tests.payments.conftest import c2b_body, record_unprocessed

# What an anonymous answer may carry: the body, the security headers, and the request id.
ALLOWED_HEADERS = {
    "content-type",
    "content-length",
    "content-security-policy",
    "x-content-type-options",
    "referrer-policy",
    "x-frame-options",
    "cache-control",
    "vary",
    "x-request-id",
    "strict-transport-security",
}


def assert_tells_only(response, status: str, code: int) -> None:
    assert response.status_code == code
    assert response.get_data() == json.dumps({"status": status}, separators=(",", ":")).encode() + (
        b"\n"
    )
    assert {k.lower() for k, _ in response.headers.items()} <= ALLOWED_HEADERS, response.headers
    assert "Set-Cookie" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


@pytest.fixture
def busy_book(app):
    """A shortcode with a payment waiting, one unmatched, a quarantined body and a queued
    message: enough that details, if they leaked, would show."""
    shortcode = Shortcode(number="600984", name="Test paybill")
    db.session.add(shortcode)
    db.session.commit()
    record_unprocessed(shortcode, c2b_body(MSISDN="254712345678"))
    stored = record_unprocessed(shortcode, c2b_body())
    db.session.get(C2BPayment, stored.payment_id).status = "unmatched"
    db.session.add(
        CallbackLog(shortcode_id=shortcode.id, kind="confirmation", body="{", outcome="quarantined")
    )
    db.session.add(SmsMessage(kind="receipt", to_phone="254712345678", body="Asante"))
    db.session.commit()
    return shortcode


def test_anonymous_callers_learn_up_and_nothing_else(client, busy_book):
    response = client.get("/healthz")
    assert_tells_only(response, "up", 200)
    text = response.get_data(as_text=True)
    for leak in ("600984", "payments", "2547", "version", "sqlite", "queue"):
        assert leak not in text


def test_staff_who_are_not_admins_learn_no_more(client, auth, busy_book):
    auth.login("officer")
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "up"}


@pytest.mark.both_databases
def test_admins_get_the_details(client, auth, busy_book):
    auth.login("admin")
    response = client.get("/healthz")
    assert response.status_code == 200
    found = response.get_json()
    assert found["status"] == "up"
    assert found["checks"]["database"]["ok"] is True
    assert "redis" not in found["checks"]  # no REDIS_URL: nothing to check
    assert found["queues"] == {"payments": 1, "messages": 1, "reversals": 0, "journal": 0}
    payments = found["payments"]
    assert payments["oldest_received_age_seconds"] >= 0
    assert payments["waiting_for_staff"] == {"unmatched": 1, "failed": 0, "review": 0}
    assert payments["last_callback"]["600984"]["at"]
    text = response.get_data(as_text=True)
    assert "version" not in text.lower() and "254712345678" not in text


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_database_that_refuses_connections_is_down(app_factory):
    gone = f"postgresql+psycopg://mj:mj@127.0.0.1:{closed_port()}/nothing"
    client = app_factory(SQLALCHEMY_DATABASE_URI=gone, HEALTH_TIMEOUT=2.0).test_client()
    assert_tells_only(client.get("/healthz"), "down", 503)


def test_a_database_that_never_answers_is_down_within_the_timeout(app_factory):
    """A server that accepts the connection and then says nothing (a hung proxy, a dropped
    network): the check gives up after HEALTH_TIMEOUT and the next one fails at once."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # never accepted: the client waits for a greeting forever
        port = silent.getsockname()[1]
        url = f"postgresql+psycopg://mj:mj@127.0.0.1:{port}/nothing"
        client = app_factory(SQLALCHEMY_DATABASE_URI=url, HEALTH_TIMEOUT=0.5).test_client()
        started = time.monotonic()
        assert_tells_only(client.get("/healthz"), "down", 503)
        assert time.monotonic() - started < 2.0
        started = time.monotonic()
        assert_tells_only(client.get("/healthz"), "down", 503)  # the first still hangs
        assert time.monotonic() - started < 0.5


def test_health_answers_even_when_the_session_user_cannot_be_loaded(app, client, auth):
    auth.login("admin")

    def broken(_user_id):
        raise OperationalError("SELECT staff_user", {}, Exception("server closed the connection"))

    real = app.login_manager._user_callback
    app.login_manager._user_callback = broken
    try:
        response = client.get("/healthz")
    finally:
        app.login_manager._user_callback = real
    assert response.status_code == 200
    assert response.get_json() == {"status": "up"}


@pytest.fixture
def redis_url():
    url = need("Redis (MAREJESHO_TEST_REDIS_URL)", REDIS_URL)
    redis.Redis.from_url(url).ping()
    return url


def test_redis_down_means_down(app_factory):
    dead = f"redis://127.0.0.1:{closed_port()}/0"
    client = app_factory(REDIS_URL=dead).test_client()
    assert_tells_only(client.get("/healthz"), "down", 503)


def test_admins_see_redis_and_rqs_counts(app_factory, redis_url, make_staff):
    from tests.conftest import PASSWORD

    app = app_factory(REDIS_URL=redis_url)
    admin = make_staff("admin")
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    client.post("/login", data={"email": admin.email, "password": PASSWORD, "csrf_token": token})
    found = client.get("/healthz").get_json()
    assert found["checks"]["redis"]["ok"] is True
    rq = found["queues"]["rq"]
    assert set(rq) == {"queued", "started", "failed", "scheduled", "workers"}
    assert all(isinstance(v, int) for v in rq.values())
