"""Structured logs: one JSON object per line with time, level, logger, message and the
request's id (the caller's X-Request-ID when well formed, echoed back); phones masked and
callback tokens redacted on every line, gunicorn's own included."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from datetime import timedelta

import pytest

from lenders.logs import JsonFormatter, configure_logging, mask_phones, request_id_from

FULL_PHONE = re.compile(r"(?<!\d)(?:\+?254|0)[17]\d{8}(?!\d)")


def lines(text: str) -> list[dict]:
    """Every line our handler wrote (other handlers' lines are not JSON objects)."""
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def test_a_request_id_follows_the_request_into_its_log_lines_and_answer(client, capsys):
    token = client.csrf_token("/login")
    capsys.readouterr()
    response = client.post(
        "/login",
        data={"email": "nobody@example.test", "password": "wrong", "csrf_token": token},
        headers={"X-Request-ID": "edge-7f3a9c21"},
    )
    assert response.headers["X-Request-ID"] == "edge-7f3a9c21"
    written = lines(capsys.readouterr().err)
    refused = [e for e in written if e["logger"] == "marejesho.security"]
    assert refused, written
    assert set(refused[0]) >= {"time", "level", "logger", "message", "request_id"}
    assert refused[0]["request_id"] == "edge-7f3a9c21"
    assert refused[0]["level"] in ("WARNING", "INFO")
    assert refused[0]["time"].endswith("+00:00")


@pytest.mark.parametrize(
    "given",
    ["", "short", "has space inside it", 'quote"injected"here', "x" * 129, "ünïcode-request-id"],
)
def test_a_malformed_request_id_is_replaced_by_a_new_one(client, given):
    response = client.get("/login", headers={"X-Request-ID": given} if given else {})
    issued = response.headers["X-Request-ID"]
    assert issued != given
    assert re.fullmatch(r"[0-9a-f]{32}", issued)
    again = client.get("/login", headers={"X-Request-ID": given} if given else {})
    assert again.headers["X-Request-ID"] != issued  # a new one each time


def test_request_ids_are_accepted_in_the_usual_shapes():
    for good in ("0f1e2d3c4b5a69788796a5b4c3d2e1f0", "3d0c5c1e-8a4b-4e43-9f0e-6f5d2a1b7c9e"):
        assert request_id_from(good) == good


def test_no_full_phone_reaches_a_log_line_in_any_form(app, capsys):
    configure_logging()
    log = logging.getLogger("marejesho.test")
    capsys.readouterr()
    log.warning("payer 254712345678 and +254 form +254798765432, local 0712345678")
    log.warning("args too: %s / %s", "254110123456", {"msisdn": "254701234567"})
    try:
        raise ValueError("boom for 254722000111")
    except ValueError:
        log.exception("failed for %s", "0733444555")
    log.warning("not phones: receipt time 20251106230212, amount 2547.00, id 12345678")
    out = capsys.readouterr().err
    written = lines(out)
    assert len(written) == 4
    assert not FULL_PHONE.search(out), out
    assert "2547****5678" in written[0]["message"]
    assert "2541****3456" in written[1]["message"]
    assert "2547****0111" in written[2]["exception"]
    assert "20251106230212" in written[3]["message"]


def test_a_line_break_in_a_message_cannot_forge_a_second_line(app, capsys):
    configure_logging()
    capsys.readouterr()
    logging.getLogger("marejesho.test").warning(
        "account %s", 'LOAN-1\n{"level": "INFO", "message": "forged"}'
    )
    out = capsys.readouterr().err
    ours = [line for line in out.splitlines() if "LOAN-1" in line]
    assert len(ours) == 1 and "forged" in ours[0]
    assert not any(line.startswith('{"level"') for line in out.splitlines())


@pytest.fixture
def gunicorn_logger():
    """gunicorn's own logger class with an access log on standard output, as
    ``gunicorn --access-logfile -`` sets it up in a worker; undone afterwards."""
    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    config = Config()
    config.set("accesslog", "-")
    logger = Logger(config)
    logger.written = io.StringIO()  # where both of its handlers write, for the test to read
    for name in ("gunicorn.error", "gunicorn.access"):
        for handler in logging.getLogger(name).handlers:
            handler.setStream(logger.written)
    yield logger
    for name in ("gunicorn.error", "gunicorn.access"):
        own = logging.getLogger(name)
        for handler in list(own.handlers):
            own.removeHandler(handler)
        own.propagate = True


def test_gunicorn_access_lines_are_json_with_the_request_id_and_nothing_secret(
    app_factory, gunicorn_logger
):
    app_factory()  # building the app gives gunicorn's handlers our format
    token = "a" * 40

    class Response:
        status = "200 OK"
        headers = [("Content-Type", "application/json"), ("X-Request-ID", "lb-0042-abcdef")]
        sent = 38

    environ = {
        "REQUEST_METHOD": "POST",
        "RAW_URI": f"/payments/c2b/{token}/confirmation?msisdn=254712345678",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "PATH_INFO": f"/payments/c2b/{token}/confirmation",
        "QUERY_STRING": "msisdn=254712345678",
        "REMOTE_ADDR": "196.201.214.200",
    }
    gunicorn_logger.access(Response(), [("User-Agent", "x")], environ, timedelta(milliseconds=3))
    out = gunicorn_logger.written.getvalue()
    assert "Logging error" not in out, out
    access = [e for e in lines(out) if e["logger"] == "gunicorn.access"]
    assert len(access) == 1, out
    assert access[0]["request_id"] == "lb-0042-abcdef"
    assert "/payments/c2b/***/confirmation" in access[0]["message"]
    assert token not in out and not FULL_PHONE.search(out)


def test_gunicorn_error_lines_take_the_same_format(app_factory, gunicorn_logger):
    app_factory()
    gunicorn_logger.error("Worker (pid:%s) was sent SIGKILL! for %s", 4242, "0712345678")
    written = lines(gunicorn_logger.written.getvalue())
    assert written[-1]["logger"] == "gunicorn.error"
    assert written[-1]["message"] == "Worker (pid:4242) was sent SIGKILL! for 2547****5678"


def test_masking_keeps_numbers_that_are_not_phones():
    assert mask_phones("TransTime 20251106230212 amount 254712345678.00") == (
        "TransTime 20251106230212 amount 2547****5678.00"
    )
    assert mask_phones("national id 31234567, till 600984") == "national id 31234567, till 600984"


def test_the_formatter_writes_one_object_per_record_without_a_request():
    record = logging.LogRecord(
        "marejesho.jobs", logging.INFO, __file__, 1, "drain %s", ("x",), None
    )
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "drain x" and entry["request_id"] is None
    assert entry["logger"] == "marejesho.jobs" and entry["level"] == "INFO"
    assert "\n" not in JsonFormatter().format(record)
    assert sys.stderr is not None


def test_terminal_colours_do_not_reach_the_json(app, capsys):
    configure_logging()
    capsys.readouterr()
    logging.getLogger("werkzeug").info('"\x1b[33mPOST /x HTTP/1.1\x1b[0m" 404 -')
    written = lines(capsys.readouterr().err)
    assert written[-1]["message"] == '"POST /x HTTP/1.1" 404 -'


def test_gunicorn_settings_give_the_master_our_format_from_its_first_line():
    """lenders/serving.py's logger class: gunicorn's handlers, our format, before the app
    (and so the master's own lines: starting, booting and reaping workers)."""
    from gunicorn.config import Config

    from lenders import serving

    config = Config()
    config.set("logger_class", serving.logger_class)
    logger = config.logger_class(config)
    buffer = io.StringIO()
    try:
        for handler in logging.getLogger("gunicorn.error").handlers:
            handler.setStream(buffer)
        logger.info("Booting worker with pid: %s", 4242)
        entry = json.loads(buffer.getvalue().splitlines()[-1])
        assert entry["logger"] == "gunicorn.error"
        assert entry["message"] == "Booting worker with pid: 4242"
    finally:
        for name in ("gunicorn.error", "gunicorn.access"):
            own = logging.getLogger(name)
            for handler in list(own.handlers):
                own.removeHandler(handler)
            own.propagate = True
