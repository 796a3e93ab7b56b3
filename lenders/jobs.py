"""The job runner. It knows no domain: packages register their work with it.

Three kinds of work:

* **Drains.** Rows in the database are the jobs (a payment in ``received``, a message in
  ``queued``). A package registers ``@runner.drain("payments")`` on a function that claims up
  to ``limit`` such rows, finishes them in one transaction, commits, and returns how many it
  claimed. ``wake("payments")`` after a commit is only a hint: the loop also polls, so a lost
  wake, a dead worker or a Redis outage delays the work by a poll and never loses it.
* **Periodic jobs.** ``@runner.every(60)``; one process runs each per interval, chosen by a
  lease row (``scheduled_job``) in the database, so they run the same with or without Redis.
* **One-off jobs.** ``enqueue(func, *args)``: RQ with retries when REDIS_URL is set, else the
  server process's job thread (from a request) or at once (from a command or a job).

Where it runs: ``flask jobs worker`` (lenders/worker.py), or, in the embedded default, one
thread in each server process. Jobs take ids, reload inside their own app context and own
their transaction.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache

from flask import Flask, current_app, has_request_context
from sqlalchemy import String, Text, event, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Mapped, Session, mapped_column, scoped_session

from lenders.extensions import db
from lenders.models import UTCDateTime

QUEUE = "marejesho"
WAKE_KEY = "marejesho:wake"
RETRY_INTERVALS = [1, 2, 4, 8, 16]  # seconds between RQ's retries of a one-off job
POLL_SECONDS = 1.0  # a drain is looked at this often even when nothing wakes it
WAKE_EVERY = 0.02  # a process sends Redis at most one wake-up in this many seconds
log = logging.getLogger("marejesho.jobs")


class ScheduledJob(db.Model):
    """The lease of one periodic job: the process whose write moves ``due_at`` on runs this
    interval's turn (lenders/jobs.py). Also what the admins' jobs screen shows."""

    __tablename__ = "scheduled_job"

    name: Mapped[str] = mapped_column(String(120), primary_key=True)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)

    def __repr__(self) -> str:
        return f"<ScheduledJob {self.name} due {self.due_at:%H:%M:%S}>"


@dataclass(frozen=True)
class Drain:
    name: str
    func: Callable[[int], int]
    batch: int


@dataclass(frozen=True)
class Periodic:
    name: str
    func: Callable[[], object]
    every: float


class JobRunner:
    """What each package registers: its drains and its periodic jobs."""

    def __init__(self) -> None:
        self.drains: dict[str, Drain] = {}
        self.periodic: dict[str, Periodic] = {}
        self.local: dict[str, Periodic] = {}

    def drain(self, name: str, *, batch: int = 100):
        """Register ``func(limit) -> claimed`` as the drain called ``name``."""

        def register(func):
            self.drains[name] = Drain(name, func, batch)
            return func

        return register

    def every(self, seconds: float, *, name: str | None = None, local: bool = False):
        """Register ``func()`` to run every ``seconds`` in one process of the deployment; or,
        ``local``, in every server process, for work on this host's own files (each such
        job keeps other processes out by itself)."""

        def register(func):
            key = name or f"{func.__module__}.{func.__name__}"
            (self.local if local else self.periodic)[key] = Periodic(key, func, seconds)
            return func

        return register

    def init_app(self, app: Flask) -> None:
        from lenders.worker import JobThread, cli

        app.extensions["marejesho.jobs"] = JobThread(app, self)
        app.cli.add_command(cli)


runner = JobRunner()
# Set while this process serves a request (the job thread's WSGI counter sets it): work a
# request asks for goes to the job thread; a command's or a job's runs at once.
_serving: ContextVar[bool] = ContextVar("marejesho_serving", default=False)


def serving() -> bool:
    """True inside a request a server is answering (also the confirmation's own WSGI path,
    which has no Flask request context)."""
    return _serving.get() or has_request_context()


@contextmanager
def job_context(app: Flask | None = None) -> Iterator[None]:
    """A fresh app context (its own database session) for one job."""
    app = app or current_app._get_current_object()
    with app.app_context():
        try:
            yield
        finally:
            db.session.remove()


def is_transient(exc: BaseException) -> bool:
    """Errors worth another try: the database was locked, busy, deadlocked or unreachable."""
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


# --- Redis, for waking and for RQ -------------------------------------------------------


@cache
def _redis(url: str):
    from redis import Redis

    # Short timeouts: a hung Redis must not hold a request (or Safaricom) for long.
    return Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)


def redis_connection(url: str | None = None):
    """One connection pool per process and URL."""
    return _redis(url or current_app.config["REDIS_URL"])


class _Breaker:
    """After Redis fails, do not try it again for ``pause`` seconds: every request would
    otherwise wait for the connection to time out. Polling covers the gap."""

    def __init__(self, pause: float = 5.0) -> None:
        self.pause = pause
        self.until = 0.0

    def open(self) -> bool:
        return time.monotonic() < self.until

    def trip(self, exc: Exception) -> None:
        if not self.open():
            log.warning("Redis unreachable (%s); workers find new work by polling", exc)
        self.until = time.monotonic() + self.pause


_breaker = _Breaker()
_last_wake = [0.0]


def wake(*names: str, app: Flask | None = None) -> None:
    """Tell the workers there is new work for these drains (all when none are named). Call
    after the commit that made the rows. Never raises: a wake that is lost costs a poll."""
    app = app or current_app._get_current_object()
    url = app.config.get("REDIS_URL")
    if url:
        now = time.monotonic()
        if _breaker.open() or now - _last_wake[0] < WAKE_EVERY:
            return  # under a burst the workers are awake already: they loop until it is done
        _last_wake[0] = now
        try:
            pipe = redis_connection(url).pipeline(transaction=False)
            pipe.lpush(WAKE_KEY, "1").ltrim(WAKE_KEY, 0, 0).execute()
        except Exception as exc:  # noqa: BLE001 - any Redis failure: poll instead
            _breaker.trip(exc)
        return
    if serving() and app.config.get("JOBS_IN_BACKGROUND", True):
        app.extensions["marejesho.jobs"].wake()
        return
    run_drains(app, names or None)


def wake_on_commit(session: Session, *names: str) -> None:
    """Wake these drains once ``session``'s transaction commits (services never commit
    themselves). A savepoint's release is not that commit; a rollback forgets the wake."""
    if isinstance(session, scoped_session):
        session = session()
    pending = session.info.setdefault(_PENDING, set())
    if not session.info.get(_LISTENING):
        session.info[_LISTENING] = True
        event.listen(session, "after_commit", _wake_pending)
        event.listen(session, "after_rollback", _forget_pending)
    pending.update(names or ("*",))


_PENDING, _LISTENING = "marejesho.wake", "marejesho.wake.listening"


def _wake_pending(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint was released: not committed yet
        return
    names = session.info.pop(_PENDING, set())
    if names:
        wake(*(() if "*" in names else sorted(names)))


def _forget_pending(session: Session) -> None:
    if not session.in_nested_transaction():
        session.info.pop(_PENDING, None)


def enqueue(func: Callable, *args) -> None:
    """Run ``func(*args)`` once: on RQ with retries when Redis is configured, else on this
    server process's job thread (from a request), else now. Call it after the commit that
    made the job's rows visible. Work that must never be lost is a drain, not this."""
    app = current_app._get_current_object()
    url = app.config.get("REDIS_URL")
    if url:
        from rq import Queue, Retry

        Queue(QUEUE, connection=redis_connection(url)).enqueue(
            func,
            *args,
            retry=Retry(max=len(RETRY_INTERVALS), interval=RETRY_INTERVALS),
            job_timeout=600,
        )
        return
    if serving() and app.config.get("JOBS_IN_BACKGROUND", True):
        app.extensions["marejesho.jobs"].submit(func, *args)
        return
    with job_context(app):
        func(*args)


# --- running drains and periodic jobs -----------------------------------------------------


def _no_gate() -> None:
    return None


def run_drain(app: Flask, drain: Drain, gate: Callable[[], None] = _no_gate) -> int:
    """Call the drain until it claims less than a full batch (``gate()`` before each
    call); how many rows it claimed."""
    total = 0
    while True:
        gate()
        with job_context(app):
            claimed = drain.func(drain.batch)
        total += claimed
        if claimed < drain.batch:
            return total


def run_drains(app: Flask, names=None, gate: Callable[[], None] = _no_gate) -> int:
    """Run the named drains (all by default) until each is empty; errors are logged."""
    total = 0
    for drain in list(runner.drains.values()):
        if names and drain.name not in names:
            continue
        try:
            total += run_drain(app, drain, gate)
        except Exception as exc:  # noqa: BLE001 - the rows stay; the next pass tries again
            _log_failure(f"drain {drain.name}", exc)
    return total


_last_failure: dict[str, float] = {}


def _log_failure(what: str, exc: Exception) -> None:
    """Log a failing drain or job with its traceback, but once a minute at most for the
    same cause (a database outage would otherwise write a traceback every poll)."""
    key = f"{what}:{type(exc).__name__}"
    now = time.monotonic()
    if now - _last_failure.get(key, -60.0) >= 60.0:
        _last_failure[key] = now
        log.error("%s failed: %s", what, exc, exc_info=not is_transient(exc))


_LEASE_INSERT = {
    "sqlite": sqlite.insert(ScheduledJob).on_conflict_do_nothing(index_elements=["name"]),
    "postgresql": postgresql.insert(ScheduledJob).on_conflict_do_nothing(index_elements=["name"]),
}


def claim_periodic(session: Session, job: Periodic, now: datetime) -> bool:
    """Take this interval's run of ``job`` if no other process has: a write on its lease
    row decides, so it works the same on SQLite and PostgreSQL, with or without Redis."""
    dialect = session.get_bind().dialect.name
    session.execute(_LEASE_INSERT[dialect].values(name=job.name, due_at=now))
    claimed = session.execute(
        update(ScheduledJob)
        .where(ScheduledJob.name == job.name, ScheduledJob.due_at <= now)
        .values(due_at=now + timedelta(seconds=job.every), started_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    session.commit()
    return bool(claimed)


def run_periodic(app: Flask, job: Periodic) -> bool:
    """Run ``job`` if its interval is due and no other process took it; True if it ran."""
    with job_context(app):
        if not claim_periodic(db.session, job, datetime.now(UTC)):
            return False
    error = None
    try:
        with job_context(app):
            job.func()
    except Exception as exc:  # noqa: BLE001 - recorded on the lease row and logged
        _log_failure(f"periodic job {job.name}", exc)
        error = f"{type(exc).__name__}: {exc}"[:500]
    with job_context(app):
        db.session.execute(
            update(ScheduledJob)
            .where(ScheduledJob.name == job.name)
            .values(finished_at=datetime.now(UTC), error=error)
        )
        db.session.commit()
    return True


class Loop:
    """One pass runs every drain until empty and every periodic job that is due. Used by
    ``flask jobs worker`` and by the embedded default's job thread alike."""

    def __init__(
        self, app: Flask, *, poll: float = POLL_SECONDS, gate: Callable[[], None] = _no_gate
    ) -> None:
        self.app = app
        self.poll = poll
        self.gate = gate
        self._next_periodic: dict[str, float] = {}

    def tick(self) -> int:
        """One pass; how many rows the drains claimed. Never raises."""
        done = run_drains(self.app, gate=self.gate)
        now = time.monotonic()
        for job in list(runner.periodic.values()):
            if self._next_periodic.get(job.name, 0.0) > now:
                continue
            # Ask again in a poll or at the job's interval, whichever is sooner: another
            # process may hold this interval's lease.
            self._next_periodic[job.name] = now + min(job.every, max(self.poll, 1.0))
            self.gate()
            try:
                run_periodic(self.app, job)
            except Exception as exc:  # noqa: BLE001 - the database is down: keep looping
                _log_failure(f"periodic job {job.name}", exc)
        return done

    def tick_local(self) -> None:
        """This host's own periodic jobs (every server process runs them)."""
        now = time.monotonic()
        for job in list(runner.local.values()):
            if self._next_periodic.get(job.name, 0.0) > now:
                continue
            self._next_periodic[job.name] = now + job.every
            try:
                with job_context(self.app):
                    job.func()
            except Exception as exc:  # noqa: BLE001 - keep looping
                _log_failure(f"local job {job.name}", exc)

    def run(self, stop: threading.Event, wait: Callable[[float], object]) -> None:
        """Pass after pass until ``stop`` is set; ``wait(timeout)`` returns early on a wake."""
        while not stop.is_set():
            try:
                busy = self.tick()
            except Exception:  # noqa: BLE001 - never let the loop die
                log.exception("job loop pass failed")
                busy = 0
            if not busy and not stop.is_set():
                wait(self.poll)


def scheduled_jobs(session: Session) -> list[ScheduledJob]:
    """The periodic jobs' lease rows, for the admin's jobs screen."""
    return list(session.scalars(select(ScheduledJob).order_by(ScheduledJob.name)))
