"""The admins' jobs screen: the drains' depths, the periodic jobs' last runs and errors, and,
with Redis, RQ's queue, workers and failed jobs, which an admin can run again (CSRF on)."""

from __future__ import annotations

import re

import pytest
import redis
from conftest import PASSWORD, REDIS_URL, need
from rq import Queue

from lenders.extensions import db
from lenders.jobs import QUEUE, Periodic, run_periodic
from lenders.worker import run_rq
from payments.models import C2BPayment, Shortcode
from tests.payments.conftest import c2b_body, record_unprocessed
from tests.payments.one_off_jobs import record_run


def fails() -> None:
    raise RuntimeError("the provider said no for 254712345678")


def test_admins_see_the_drains_and_the_periodic_jobs(app, client, auth):
    shortcode = Shortcode(number="600984", name="Paybill")
    db.session.add(shortcode)
    db.session.commit()
    for _ in range(3):
        record_unprocessed(shortcode, c2b_body())
    db.session.commit()
    run_periodic(app, Periodic("tests.healthy_job", lambda: None, 60))
    run_periodic(app, Periodic("tests.broken_job", fails, 60))
    auth.login("admin")
    response = client.get("/jobs/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    payments = re.search(r"payments drain</small>\s*<p class=\"big\">(\d+)</p>", html)
    assert payments and payments.group(1) == "3"
    assert "tests.healthy_job" in html and "tests.broken_job" in html
    assert "RuntimeError: the provider said no for 2547****5678" in html
    assert "254712345678" not in html
    assert "No REDIS_URL" in html
    fragment = client.hx_get("/jobs/", headers={"HX-Target": "jobs-figures"})
    assert "<h1>" not in fragment.get_data(as_text=True)
    assert "tests.broken_job" in fragment.get_data(as_text=True)


def test_officers_cannot_see_the_jobs(client, auth):
    auth.login("officer")
    assert client.get("/jobs/").status_code == 403


@pytest.fixture
def redis_url():
    """The test Redis, without RQ keys from before."""
    url = need("Redis (MAREJESHO_TEST_REDIS_URL)", REDIS_URL)
    connection = redis.Redis.from_url(url)

    def forget():
        keys = [*connection.scan_iter("rq:*"), *connection.scan_iter("marejesho:*")]
        if keys:
            connection.delete(*keys)

    forget()
    yield url
    forget()
    connection.close()


def log_in(client, user) -> str:
    """Log in through the form; the CSRF token of the logged-in session."""
    page = client.get("/login").get_data(as_text=True)
    token = page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    client.post("/login", data={"email": user.email, "password": PASSWORD, "csrf_token": token})
    page = client.get("/jobs/").get_data(as_text=True)
    return re.search(r'"X-CSRFToken": "([^"]+)"', page).group(1)


def test_failed_jobs_are_shown_and_can_run_again(app_factory, redis_url, make_staff):
    app = app_factory(REDIS_URL=redis_url)
    connection = redis.Redis.from_url(redis_url)
    queue = Queue(QUEUE, connection=connection)
    job = queue.enqueue(record_run, "requeue-me", 99)  # fails every time, no retries
    run_rq(app, redis_url, None, burst=True)
    assert queue.failed_job_registry.count == 1

    client = app.test_client()
    token = log_in(client, make_staff("admin"))
    html = client.get("/jobs/").get_data(as_text=True)
    assert job.id in html
    assert "RuntimeError: run 1 of requeue-me fails on purpose" in html
    assert "record_run" in html
    assert re.search(r'<table id="rq-workers">.*</table>', html, re.S)

    refused = client.post(f"/jobs/failed/{job.id}/requeue")
    assert refused.status_code == 400  # no CSRF token
    assert queue.failed_job_registry.count == 1

    again = client.post(f"/jobs/failed/{job.id}/requeue", data={"csrf_token": token})
    assert again.status_code == 303
    assert queue.failed_job_registry.count == 0 and queue.count == 1
    assert f"Job {job.id} is queued again." in client.get("/jobs/").get_data(as_text=True)

    gone = client.post(f"/jobs/failed/{job.id}/requeue", data={"csrf_token": token})
    assert gone.status_code == 303
    assert "No failed job has that id" in client.get("/jobs/").get_data(as_text=True)
    connection.close()


def test_the_screen_survives_a_payment_table_in_any_state(app, client, auth):
    """A payment stuck in an odd state changes the figures, never the page's health."""
    shortcode = Shortcode(number="600985", name="Till")
    db.session.add(shortcode)
    db.session.commit()
    stored = record_unprocessed(shortcode, c2b_body(BusinessShortCode="600985"))
    db.session.get(C2BPayment, stored.payment_id).status = "review"
    db.session.commit()
    auth.login("admin")
    assert client.get("/jobs/").status_code == 200
