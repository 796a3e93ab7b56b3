"""``GET /healthz`` for monitors and load balancers, ``GET /metrics`` for Prometheus.

/healthz is public: an anonymous caller learns only ``{"status": "up"}`` (200) or
``{"status": "down"}`` (503), nothing else; a logged-in admin gets the details as JSON (the
checks, queue depths, RQ's counts, the oldest payment waiting, the last callback of each
shortcode, the periodic jobs). Up means the database answers, and Redis too when REDIS_URL
is set, each within HEALTH_TIMEOUT seconds. It never answers 500.

/metrics is served only when MAREJESHO_METRICS_TOKEN is set (404 otherwise), to a caller
that sends it as ``Authorization: Bearer <token>``. Both keep the security headers every
answer carries."""

from __future__ import annotations

import hmac
import logging

from flask import Blueprint, Flask, abort, current_app, jsonify, request
from flask_login import current_user

from lenders import metrics
from lenders.monitoring import take_snapshot, up
from lenders.web import _session_is_fresh, public

bp = Blueprint("health", __name__)
security_log = logging.getLogger("marejesho.security")
log = logging.getLogger("marejesho.health")


def _admin_asking() -> bool:
    """A logged-in admin whose session is fresh; anyone else, or a database too sick to say
    who is asking, is anonymous here."""
    try:
        return bool(current_user.is_authenticated and current_user.is_admin and _session_is_fresh())
    except Exception:  # noqa: BLE001 - the user could not be loaded: answer as to anyone
        log.warning("health: could not load the session's user", exc_info=True)
        return False


@bp.get("/healthz")
@public
def healthz():
    """Up or down to anyone; the details to an admin."""
    app = current_app._get_current_object()
    if _admin_asking():
        snapshot = take_snapshot(app)
        return jsonify(snapshot.as_json()), 200 if snapshot.up else 503
    database, redis = up(app)
    ok = database.ok and (redis is None or redis.ok)
    return jsonify(status="up" if ok else "down"), 200 if ok else 503


def _bearer_matches(expected: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), expected.encode()
    )


@bp.get("/metrics")
@public
def prometheus_metrics():
    """Prometheus's scrape: counters of every process, gauges read from the database."""
    token = current_app.config.get("METRICS_TOKEN")
    if not token:
        abort(404)
    if not _bearer_matches(token):
        security_log.warning("metrics: missing or wrong bearer token from %s", request.remote_addr)
        response = current_app.response_class("unauthorized\n", status=401, mimetype="text/plain")
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body = metrics.exposition(take_snapshot(current_app._get_current_object()))
    return current_app.response_class(body, content_type=metrics.CONTENT_TYPE)


def init_app(app: Flask) -> None:
    """Serve /healthz and /metrics; refuse to start with an unusable metrics directory."""
    metrics.check_multiprocess_dir()
    app.register_blueprint(bp)
