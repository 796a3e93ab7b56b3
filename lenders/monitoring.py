"""What the health endpoint, /metrics and the admins' jobs screen show: one snapshot of the
deployment, taken the same way for all three. It knows no domain: each package registers
``@monitor.figures("name")``, a function of the session and the time that reads its own rows
(how many wait for each of its drains, what admins should see, extra gauges).

Every check that leaves the process runs in a thread of its own and is waited for at most
``HEALTH_TIMEOUT`` seconds: a database or Redis that does not answer (a dropped network, a
full pool, a lock) makes its check fail, never hangs the request. While a check of one kind
still hangs, the next one fails at once instead of starting another thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from flask import Flask
from sqlalchemy import text
from sqlalchemy.orm import Session

from lenders.extensions import db
from lenders.jobs import QUEUE, job_context, redis_connection, scheduled_jobs
from lenders.logs import mask_phones

HEALTH_TIMEOUT = 2.0  # seconds a check may take before it counts as failed


@dataclass(frozen=True)
class Sample:
    """One value of a gauge for /metrics."""

    name: str
    doc: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()


@dataclass
class Figures:
    """What a package reports: rows waiting per drain, details for admins (JSON-able), and
    gauges for /metrics."""

    depths: dict[str, int] = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    gauges: list[Sample] = field(default_factory=list)


class Monitor:
    """The packages' figures, by name."""

    def __init__(self) -> None:
        self.sources: dict[str, Callable[[Session, datetime], Figures]] = {}

    def figures(self, name: str):
        """Register ``func(session, now) -> Figures`` under ``name``."""

        def register(func):
            self.sources[name] = func
            return func

        return register


monitor = Monitor()


@dataclass(frozen=True)
class Check:
    """A reachability check: did it answer, how fast, and (for admins) why not."""

    ok: bool
    seconds: float = 0.0
    error: str | None = None

    def as_json(self) -> dict:
        found = {"ok": self.ok, "ms": round(self.seconds * 1000, 1)}
        if self.error:
            found["error"] = self.error
        return found


_in_flight: dict[str, threading.Thread] = {}
_in_flight_lock = threading.Lock()


def bounded(name: str, func: Callable[[], object], timeout: float) -> tuple[Check, object]:
    """Run ``func()`` in a thread and wait at most ``timeout`` seconds: its check and its
    value (None when it failed). Never raises."""
    box: dict = {}

    def run() -> None:
        started = time.perf_counter()
        try:
            box["value"] = func()
        except Exception as exc:  # noqa: BLE001 - any failure is a failed check
            box["error"] = mask_phones(f"{type(exc).__name__}: {exc}")[:300]
        box["seconds"] = time.perf_counter() - started

    with _in_flight_lock:
        running = _in_flight.get(name)
        if running is not None and running.is_alive():
            return Check(False, 0.0, "the previous check has not answered yet"), None
        thread = threading.Thread(
            target=run, name=f"marejesho-check-{name.split()[0]}", daemon=True
        )
        _in_flight[name] = thread
        thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return Check(False, timeout, f"no answer within {timeout:g} s"), None
    if "error" in box:
        return Check(False, box["seconds"], box["error"]), None
    return Check(True, box["seconds"]), box.get("value")


def _ping_database(engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def _engine(app: Flask):
    with app.app_context():
        return db.engine


def up(app: Flask) -> tuple[Check, Check | None]:
    """The database's check and Redis's (None without REDIS_URL)."""
    timeout = app.config.get("HEALTH_TIMEOUT", HEALTH_TIMEOUT)
    engine = _engine(app)
    # One check at a time per database (and per Redis), not per app: an app is a process.
    database, _ = bounded(f"database {engine.url}", lambda: _ping_database(engine), timeout)
    url = app.config.get("REDIS_URL")
    if not url:
        return database, None
    redis, _ = bounded(f"redis {url}", lambda: redis_connection(url).ping(), timeout)
    return database, redis


@dataclass(frozen=True)
class RqCounts:
    """RQ's one-off jobs queue: waiting, running, failed, waiting for a retry; workers."""

    queued: int
    started: int
    failed: int
    scheduled: int
    workers: int

    def as_json(self) -> dict:
        return {
            "queued": self.queued,
            "started": self.started,
            "failed": self.failed,
            "scheduled": self.scheduled,
            "workers": self.workers,
        }


def rq_counts(url: str) -> RqCounts:
    from rq import Queue, Worker

    queue = Queue(QUEUE, connection=redis_connection(url))
    return RqCounts(
        queued=queue.count,
        started=queue.started_job_registry.count,
        failed=queue.failed_job_registry.count,
        scheduled=queue.scheduled_job_registry.count,
        workers=Worker.count(queue=queue),
    )


@dataclass
class Snapshot:
    """The deployment as one process sees it now."""

    at: datetime
    database: Check
    redis: Check | None
    rq: RqCounts | None = None
    depths: dict[str, int] = field(default_factory=dict)
    details: dict[str, dict] = field(default_factory=dict)
    gauges: list[Sample] = field(default_factory=list)
    periodic: list[dict] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def up(self) -> bool:
        """Up when the database answers, and Redis too where it is configured."""
        return self.database.ok and (self.redis is None or self.redis.ok)

    def as_json(self) -> dict:
        """The admins' details (no versions, no secrets)."""
        checks = {"database": self.database.as_json()}
        if self.redis is not None:
            checks["redis"] = self.redis.as_json()
        queues: dict = dict(self.depths)
        if self.rq is not None:
            queues["rq"] = self.rq.as_json()
        return {
            "status": "up" if self.up else "down",
            "checked_at": self.at.isoformat(timespec="seconds"),
            "checks": checks,
            "queues": queues,
            "periodic_jobs": [_json_times(row) for row in self.periodic],
            **self.details,
            **({"errors": self.errors} if self.errors else {}),
        }


def _periodic(session: Session) -> list[dict]:
    return [
        {
            "name": job.name,
            "due_at": job.due_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "error": mask_phones(job.error) if job.error else None,  # shown as a log line is
        }
        for job in scheduled_jobs(session)
    ]


def _json_times(row: dict) -> dict:
    return {
        k: v.isoformat(timespec="seconds") if isinstance(v, datetime) else v for k, v in row.items()
    }


def _read_figures(app: Flask, now: datetime) -> dict[str, Figures | str]:
    """Every package's figures, read in one app context; a package whose reading fails
    gives its error instead."""
    found: dict[str, Figures | str] = {}
    with job_context(app):
        session = db.session
        for name, read in monitor.sources.items():
            try:
                found[name] = read(session, now)
            except Exception as exc:  # noqa: BLE001 - one package's failure spares the rest
                session.rollback()
                found[name] = mask_phones(f"{type(exc).__name__}: {exc}")[:300]
        found["periodic"] = _periodic(session)
    return found


def take_snapshot(app: Flask, *, now: datetime | None = None) -> Snapshot:
    """Check the database and Redis, then read every package's figures, RQ's counts and the
    periodic jobs' lease rows, each bounded in time. Never raises."""
    now = now or datetime.now(UTC)
    timeout = app.config.get("HEALTH_TIMEOUT", HEALTH_TIMEOUT)
    database, redis = up(app)
    snapshot = Snapshot(at=now, database=database, redis=redis)
    if redis is not None and redis.ok:
        url = app.config["REDIS_URL"]
        check, counts = bounded(f"rq {url}", lambda: rq_counts(url), timeout)
        snapshot.rq = counts
        if not check.ok:
            snapshot.errors["rq"] = check.error or "failed"
    if not database.ok:
        return snapshot
    key = f"figures {_engine(app).url}"
    check, found = bounded(key, lambda: _read_figures(app, now), timeout)
    if not check.ok:
        snapshot.errors["figures"] = check.error or "failed"
        return snapshot
    snapshot.periodic = found.pop("periodic")
    for name, figures in found.items():
        if isinstance(figures, str):
            snapshot.errors[name] = figures
            continue
        snapshot.depths.update(figures.depths)
        snapshot.gauges.extend(figures.gauges)
        if figures.details:
            snapshot.details[name] = figures.details
    return snapshot
