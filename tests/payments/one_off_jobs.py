"""One-off jobs for the job runner's tests: RQ imports a job's function by its module path,
so they live in a module of their own."""

from __future__ import annotations

from flask import current_app
from sqlalchemy import text

from lenders.extensions import db

RUNS_KEY = "marejesho:test:runs"


def record_run(marker: str, fail_times: int = 0) -> str:
    """Count this run in Redis; fail (as a transient error would) the first ``fail_times``
    runs. Reads the database through the worker's app context, which a job must have."""
    from lenders.jobs import redis_connection

    redis = redis_connection()
    runs = redis.rpush(RUNS_KEY, marker)
    assert db.session.execute(text("SELECT 1")).scalar() == 1
    if runs <= fail_times:
        raise RuntimeError(f"run {runs} of {marker} fails on purpose")
    return current_app.config["SQLALCHEMY_DATABASE_URI"]
