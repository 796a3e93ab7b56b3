"""One process of a deployment, counting into PROMETHEUS_MULTIPROC_DIR, for
tests/payments/test_monitoring.py's multiprocess test. Run as a subprocess:

    python tests/payments/metrics_process.py DATABASE_URL callbacks TOKEN PREFIX COUNT
    python tests/payments/metrics_process.py DATABASE_URL drain

``callbacks`` stands for a gunicorn worker: it builds the app and answers COUNT new
confirmations and one repeat (its job thread is held back, so nothing is posted here).
``drain`` stands for ``flask jobs worker``: it builds the app and posts what waits. Each
writes one log line with a phone in it, to show its logs are structured and masked."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from app import create_app  # noqa: E402
from lenders.jobs import run_drains  # noqa: E402
from payments import journal  # noqa: E402
from tests.conftest import test_config  # noqa: E402
from tests.payments.conftest import c2b_body  # noqa: E402


def answer_callbacks(url: str, token: str, prefix: str, count: int) -> None:
    app = create_app(test_config(url) | {"JOBS_IN_BACKGROUND": True})
    app.extensions["marejesho.jobs"].quiet = 3600.0  # the drain is another process's work
    client = app.test_client()
    bodies = [c2b_body(TransID=f"{prefix}{n:07d}") for n in range(count)]
    for body in [*bodies, bodies[0]]:
        response = client.post(
            f"/payments/c2b/{token}/confirmation",
            data=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 200, response.get_data(as_text=True)
    assert journal.shipped(app)  # its journal's shipper has stored them all


def drain(url: str) -> None:
    app = create_app(test_config(url))
    print(run_drains(app, ["payments"]), flush=True)


if __name__ == "__main__":
    database_url, role, *rest = sys.argv[1:]
    if role == "callbacks":
        answer_callbacks(database_url, rest[0], rest[1], int(rest[2]))
    else:
        drain(database_url)
    logging.getLogger("marejesho.test").warning("%s done; payer 254712345678", role)
