"""The emulator as a Flask app (not Marejesho's), and running it.

It answers every API our client speaks with Safaricom's shapes, codes, types and
misspellings (REFERENCE §13), checks Basic auth, bearer tokens, STK passwords and
SecurityCredentials, refuses callback URLs Safaricom would refuse, and calls our callback
URLs back from background threads. Fault switches and the other control endpoints are
under ``/_emulator`` (``control.py``, ``faults.FAULT_DEFAULTS``).

Run it with ``serve(host, port, config)`` (``flask emulator serve``), or in a thread with
``background_server(create_emulator(config))``, as the tests do."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from flask import Flask
from werkzeug.exceptions import HTTPException
from werkzeug.serving import WSGIRequestHandler, make_server, run_simple

from payments.emulator import b2c, balance, c2b, control, oauth, pull, reversal, status, stk
from payments.emulator.gateway import daraja_api, daraja_error, method_not_allowed, not_found
from payments.emulator.state import Emulator

FAMILIES = (oauth.bp, c2b.bp, stk.bp, b2c.bp, status.bp, balance.bp, reversal.bp, pull.bp)


def create_emulator(config: dict | None = None) -> Flask:
    """The emulator as a Flask app. ``config`` overrides ``settings.DEFAULT_CONFIG``; its
    state is ``app.extensions["daraja_emulator"]`` (stop it with ``.stop()``)."""
    app = Flask(__name__)
    app.json.sort_keys = False  # Daraja's key order, for people reading the bodies
    app.extensions["daraja_emulator"] = Emulator(config)
    app.register_blueprint(daraja_api(FAMILIES))
    app.register_blueprint(control.bp)
    app.register_error_handler(404, not_found)
    app.register_error_handler(405, method_not_allowed)

    @app.errorhandler(HTTPException)
    def other_http_error(error: HTTPException):
        code = error.code or 500
        return daraja_error(code, f"{code}.001", error.name)

    return app


def serve(host: str = "127.0.0.1", port: int = 5055, config: dict | None = None, echo=print):
    """Run the emulator until interrupted (``flask emulator serve --port 5055``)."""
    app = create_emulator(config)
    emu: Emulator = app.extensions["daraja_emulator"]
    base = f"http://{host}:{port}"
    echo(f"Daraja emulator ({emu.environment}) at {base}")
    for item in emu.apps:
        echo(
            f"  app {item.consumer_key}: shortcodes {', '.join(item.shortcodes)}, "
            f"C2B {item.c2b_version}, initiators {', '.join(item.initiators)}"
        )
    echo(f"  certificate for SecurityCredentials: {base}/_emulator/certificate")
    echo(f"  fault switches: {base}/_emulator/faults")
    echo(f"  M-Pesa statements to upload on Reconciliation: {base}/_emulator/")
    run_simple(host, port, app, threaded=True, use_reloader=False)


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:
        pass


@contextlib.contextmanager
def background_server(app: Flask, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` over real HTTP from a thread (port 0: a free one); yields its base URL.
    For the emulator, for callback receivers and for Marejesho itself in tests. An
    emulator's pending callbacks give up when it stops."""
    server = make_server(host, port, app, threaded=True, request_handler=_QuietHandler)
    # Requests still being answered are waited for when it stops (server_close joins their
    # threads): one cut off would keep its database connection past the test that made it.
    server.daemon_threads = False
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="http"
    )
    thread.start()
    try:
        yield f"http://{host}:{server.server_port}"
    finally:
        emu = app.extensions.get("daraja_emulator")
        if emu is not None:
            emu.stop()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
