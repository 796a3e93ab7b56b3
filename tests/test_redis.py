"""With REDIS_URL set, the login limit holds across every worker (one shared count)."""

import uuid

import pytest
import redis
from conftest import REDIS_URL, need
from conftest import test_config as app_config

from app import create_app


@pytest.fixture
def redis_url():
    url = need("Redis (MAREJESHO_TEST_REDIS_URL)", REDIS_URL)
    redis.Redis.from_url(url).ping()
    return url


def login_attempt(client, email):
    page = client.get("/login").get_data(as_text=True)
    token = page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    return client.post(
        "/login", data={"email": email, "password": "wrong-password", "csrf_token": token}
    )


def test_login_limit_is_shared_by_workers_through_redis(database_url, redis_url):
    # Two apps stand for two gunicorn workers; each remote address gets its own count.
    config = app_config(database_url) | {"RATELIMIT_STORAGE_URI": redis_url}
    worker_a, worker_b = create_app(config), create_app(config)
    # a fresh address and account: the counts of earlier runs stay in Redis for their window
    address = f"10.9.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    email = f"someone-{uuid.uuid4().hex[:12]}@example.test"
    statuses = []
    for n in range(11):
        worker = worker_a if n % 2 else worker_b
        client = worker.test_client()
        client.environ_base["REMOTE_ADDR"] = address
        with worker.app_context():
            statuses.append(login_attempt(client, email).status_code)
    assert statuses[:10] == [422] * 10
    assert statuses[10] == 429
    # the count lives in Redis, where every worker process sees it
    keys = [k.decode() for k in redis.Redis.from_url(redis_url).scan_iter("LIMITS*")]
    assert any(address in key for key in keys), keys
