"""/metrics: served only with MAREJESHO_METRICS_TOKEN, to its bearer; callbacks counted by
shortcode and outcome, the callback-to-posting latency observed when the drain posts, the
queues and unmatched payments read at scrape time; counts from several processes (gunicorn's
workers, separate job workers) add up through PROMETHEUS_MULTIPROC_DIR."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lenders.extensions import db
from payments.models import C2BPayment
from tests.payments.conftest import c2b_body, record_unprocessed

TOKEN = "metrics-test-token-0123456789"
ROOT = Path(__file__).resolve().parents[2]
PROCESS = Path(__file__).with_name("metrics_process.py")


def scrape(client) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    found = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found, name: str, **labels) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def metrics_app(app):
    app.config["METRICS_TOKEN"] = TOKEN
    return app


def test_metrics_are_not_served_without_a_token(client):
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 404


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x"]
)
def test_metrics_need_the_bearer_token(metrics_app, client, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "marejesho" not in response.get_data(as_text=True)
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.both_databases
def test_callbacks_are_counted_by_shortcode_and_outcome(metrics_app, client, confirm, make_loan):
    loan = make_loan()
    before = scrape(client)
    first = c2b_body(BillRefNumber=loan.number, TransAmount="500.00")
    assert confirm(first).status_code == 200  # stored, and posted by the drain
    nobody = c2b_body(MSISDN="2547 ***** 999", FirstName="NOBODY")
    assert confirm(nobody).status_code == 200  # stored, no borrower: unmatched
    assert confirm(first).status_code == 200  # duplicate
    assert confirm(first | {"TransAmount": "900.00"}).status_code == 200  # conflict
    assert confirm("not json at all").status_code == 200  # quarantined
    assert confirm(c2b_body(), kind="validation").status_code == 200  # accepted
    assert confirm(c2b_body(TransAmount="0.50"), kind="validation").status_code == 200
    after = scrape(client)

    def counted(kind, outcome):
        labels = {"shortcode": "600984", "kind": kind, "outcome": outcome}
        name = "marejesho_callbacks_total"
        return value(after, name, **labels) - value(before, name, **labels)

    assert counted("confirmation", "stored") == 2
    assert counted("confirmation", "duplicate") == 1
    assert counted("confirmation", "conflict") == 1
    assert counted("confirmation", "quarantined") == 1
    assert counted("validation", "accepted") == 1
    assert counted("validation", "rejected") == 1

    def postings(outcome):
        name = "marejesho_payment_posting_seconds_count"
        return value(after, name, outcome=outcome) - value(before, name, outcome=outcome)

    assert postings("posted") == 1 and postings("unmatched") == 1
    assert value(after, "marejesho_payments_unmatched") == 1
    assert value(after, "marejesho_queue_depth", queue="payments") == 0
    assert value(after, "marejesho_database_up") == 1
    assert value(after, "marejesho_last_callback_timestamp_seconds", shortcode="600984") > 0


@pytest.mark.both_databases
def test_queues_and_the_oldest_waiting_payment_are_read_at_scrape_time(
    metrics_app, client, shortcode
):
    from datetime import UTC, datetime, timedelta

    stored = record_unprocessed(shortcode, c2b_body())
    record_unprocessed(shortcode, c2b_body())
    payment = db.session.get(C2BPayment, stored.payment_id)
    payment.received_at = datetime.now(UTC) - timedelta(minutes=10)
    db.session.commit()
    found = scrape(client)
    assert value(found, "marejesho_queue_depth", queue="payments") == 2
    assert value(found, "marejesho_queue_depth", queue="messages") == 0
    assert 590 < value(found, "marejesho_payments_oldest_received_age_seconds") < 700


@pytest.mark.both_databases
def test_a_rolled_back_drain_observes_nothing(app, shortcode):
    """The latency is observed when the drain's transaction commits, not before."""
    from prometheus_client import REGISTRY

    from payments import monitoring
    from payments.processing import claim_received_payments, post_claimed_payment

    def observed() -> float:
        name = "marejesho_payment_posting_seconds_count"
        return REGISTRY.get_sample_value(name, {"outcome": "unmatched"}) or 0.0

    def decide_batch() -> list[int]:
        ids = claim_received_payments(db.session, 10)
        for payment_id in ids:
            post_claimed_payment(db.session, payment_id)
        monitoring.observe_postings(db.session, ids)
        return ids

    record_unprocessed(shortcode, c2b_body())
    db.session.commit()
    before = observed()
    assert decide_batch()
    db.session.rollback()
    assert observed() == before
    assert decide_batch()
    db.session.commit()
    assert observed() == before + 1


def run_process(database_url: str, multiproc: Path, *args: str) -> subprocess.Popen:
    env = os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(multiproc), "PYTHONPATH": str(ROOT)}
    env.pop("REDIS_URL", None)
    return subprocess.Popen(
        [sys.executable, str(PROCESS), database_url, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-3000:]
    return out + err


def test_counts_from_every_process_add_up(
    metrics_app, client, shortcode, database_url, tmp_path, monkeypatch
):
    """Two processes answer confirmations (as gunicorn's workers do), a third posts them (as
    ``flask jobs worker`` does); one scrape, from yet another process, sees all of it."""
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    token = shortcode.callback_token
    workers = [run_process(database_url, multiproc, "callbacks", token, p, "3") for p in "AB"]
    logs = [finish(worker) for worker in workers]
    logs.append(finish(run_process(database_url, multiproc, "drain")))
    assert len(list(multiproc.glob("counter_*.db"))) == 2  # each answering process its own
    assert list(multiproc.glob("histogram_*.db"))  # the drain's

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(multiproc))
    found = scrape(client)
    labels = {"shortcode": "600984", "kind": "confirmation"}
    assert value(found, "marejesho_callbacks_total", outcome="stored", **labels) == 6
    assert value(found, "marejesho_callbacks_total", outcome="duplicate", **labels) == 2
    assert value(found, "marejesho_payment_posting_seconds_count", outcome="unmatched") == 6
    assert value(found, "marejesho_queue_depth", queue="payments") == 0
    assert value(found, "marejesho_payments_unmatched") == 6

    # and every one of those processes logged in JSON, phones masked
    for text in logs:
        ours = [json.loads(line) for line in text.splitlines() if '"marejesho.test"' in line]
        assert ours and "2547****5678" in ours[0]["message"], text[-2000:]
        assert not re.search(r"2547\d{8}", text)


def test_an_unusable_metrics_directory_stops_the_app_from_starting(
    app_factory, tmp_path, monkeypatch
):
    from lenders.metrics import ConfigError

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(blocker / "metrics"))
    with pytest.raises(ConfigError):
        app_factory()


def test_confirmations_waiting_in_the_journal_are_a_queue_depth(
    metrics_app, client, shortcode, monkeypatch
):
    """While the database cannot take them, acknowledged confirmations wait on this host:
    /metrics (and /healthz for admins) say how many."""
    from sqlalchemy.exc import OperationalError

    from payments import intake

    def database_down(*args, **kwargs):
        driver_error = db.engine.dialect.dbapi.OperationalError("server closed the connection")
        raise OperationalError("INSERT INTO c2b_payment …", {}, driver_error)

    monkeypatch.setattr(intake, "store_confirmations", database_down)
    for amount in ("10.00", "20.00", "30.00"):
        url = f"/payments/c2b/{shortcode.callback_token}/confirmation"
        assert client.post(url, json=c2b_body(TransAmount=amount)).status_code == 200
    assert value(scrape(client), "marejesho_queue_depth", queue="journal") == 3
    monkeypatch.undo()

    from payments import journal

    assert journal.replay() == 3
    assert value(scrape(client), "marejesho_queue_depth", queue="journal") == 0
