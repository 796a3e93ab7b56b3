"""Callback tokens are secrets: the access log of a real gunicorn shows every request, with
the token redacted, and never the token itself (CONTRACT §5)."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from payments.callbacks import RedactCallbackTokens
from tests.payments.conftest import c2b_body

pytestmark = pytest.mark.both_databases
ROOT = Path(__file__).resolve().parents[2]
WRONG_TOKEN = "ab" * 20


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(base: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(server.communicate()[1])
        try:
            requests.get(base + "/login", timeout=5)
            return
        except requests.RequestException:  # not listening yet, or slow to answer its first
            time.sleep(0.1)
    raise AssertionError("gunicorn did not start")


def test_gunicorn_prints_each_access_line_and_never_the_token(database_url, shortcode, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env |= {"DATABASE_URL": database_url, "SECRET_KEY": "access-log-test"}
    env["MAREJESHO_JOURNAL_DIR"] = str(tmp_path / "journal")  # not the checkout's instance/
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
        + ["--access-logfile", "-", "--error-logfile", "-", "--no-control-socket"]
        + ["app:create_app()"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base, server)
        stored = requests.post(
            f"{base}/payments/c2b/{shortcode.callback_token}/confirmation",
            data=json.dumps(c2b_body()),
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        wrong = requests.post(f"{base}/payments/c2b/{WRONG_TOKEN}/validation?x=1", timeout=10)
        report = requests.post(f"{base}/payments/sms/{WRONG_TOKEN}/delivery", timeout=10)
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    assert (stored.status_code, wrong.status_code, report.status_code) == (200, 404, 404)

    logged = out + err
    # Log lines are JSON objects (lenders/logs.py): read each message as a person would.
    messages = "\n".join(
        json.loads(line)["message"] if line.startswith("{") else line
        for line in logged.splitlines()
    )
    assert shortcode.callback_token not in logged and WRONG_TOKEN not in logged, logged
    assert "Logging error" not in logged, logged
    for line in (
        '"POST /payments/c2b/***/confirmation HTTP/1.1" 200',
        '"POST /payments/c2b/***/validation?x=1 HTTP/1.1" 404',
        '"POST /payments/sms/***/delivery HTTP/1.1" 404',
    ):
        assert line in messages, logged


def record(msg, args) -> logging.LogRecord:
    return logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, msg, args, None)


def test_the_filter_redacts_gunicorns_dict_of_atoms_and_keeps_it_a_dict():
    token = "0123456789abcdef" * 3
    atoms = {"r": f"POST /payments/c2b/{token}/confirmation HTTP/1.1", "s": "200", "b": 5}
    line = record('"%(r)s" %(s)s %(b)s', atoms)
    assert RedactCallbackTokens().filter(line)
    assert line.getMessage() == '"POST /payments/c2b/***/confirmation HTTP/1.1" 200 5'


def test_the_filter_redacts_werkzeugs_tuple_and_an_error_lines_uri():
    token = "fedcba9876543210" * 3
    dev = record('%s - - [%s] "%s" %s', ("127.0.0.1", "now", f"GET /payments/sms/{token}", 404))
    failed = record("Error handling request %s", (f"/payments/c2b/{token}/validation",))
    for line in (dev, failed):
        assert RedactCallbackTokens().filter(line)
        assert token not in line.getMessage() and "***" in line.getMessage()
