"""Where jobs run: ``flask jobs worker`` in production, a thread per server process in the
embedded default. Both build nothing per job: the app is built once per process.

``flask jobs worker`` (REDIS_URL set) runs RQ's non-forking worker in its main thread for
one-off jobs, and beside it a thread that runs the drains and periodic jobs (lenders/jobs.py),
wakes on Redis and also polls the database, and promotes RQ's scheduled jobs (retries) to
their queue, as RQ's own scheduler would. A Redis outage stops neither: the RQ worker is
started again once Redis answers, and the drains keep polling the database meanwhile."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from lenders.jobs import (
    POLL_SECONDS,
    QUEUE,
    WAKE_KEY,
    JobRunner,
    Loop,
    _serving,
    job_context,
    redis_connection,
    run_drains,
    runner,
)

log = logging.getLogger("marejesho.jobs")


class JobThread:
    """The embedded default's worker: one thread in each server process. It runs the jobs
    its requests enqueued and the drains and periodic jobs, after requests are answered
    and only when no request has been in flight in the process for ``quiet`` seconds, so
    Safaricom's callbacks come first. Nothing depends on its memory: rows are the work,
    and it polls for them. With REDIS_URL set it runs only the jobs that belong to this
    host (``runner.local``), and ``flask jobs worker`` does the rest."""

    def __init__(
        self, app: Flask, jobs: JobRunner, quiet: float = 0.05, poll: float = POLL_SECONDS
    ) -> None:
        self.app = app
        self.jobs = jobs
        self.quiet = quiet
        self.poll = poll
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._queue: queue.Queue = queue.Queue()
        self._woken = threading.Event()
        self._stop = threading.Event()
        self._in_flight = 0
        self._last_request = 0.0
        self._thread: threading.Thread | None = None
        app.wsgi_app = self._counting(app.wsgi_app)

    def _counting(self, wsgi_app):
        def counted(environ, start_response):
            if self._pid != os.getpid():
                self._start()
            with self._lock:
                self._in_flight += 1
            token = _serving.set(True)
            try:
                return wsgi_app(environ, start_response)
            finally:
                _serving.reset(token)
                with self._lock:
                    self._in_flight -= 1
                    self._last_request = time.monotonic()

        return counted

    @property
    def embedded(self) -> bool:
        """True when this thread is the deployment's worker (no Redis, jobs not inline)."""
        config = self.app.config
        return not config.get("REDIS_URL") and config.get("JOBS_IN_BACKGROUND", True)

    def _start(self) -> None:
        """This process's thread, on its first request (a forked server worker inherits no
        threads)."""
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._queue = queue.Queue()
            self._stop = threading.Event()
            if not self.embedded and not self.jobs.local:
                return
            self._thread = threading.Thread(target=self._work, name="marejesho-jobs", daemon=True)
            self._thread.start()

    def submit(self, func: Callable, *args) -> None:
        """Queue ``func(*args)`` for this process's thread."""
        if self._pid != os.getpid():
            self._start()
        self._queue.put((func, args))
        self._woken.set()

    def wake(self) -> None:
        if self._pid != os.getpid():
            self._start()
        self._woken.set()

    def join(self, timeout: float = 30.0) -> bool:
        """Wait until every queued one-off job has run and a pass of the drains found
        nothing left (tests and benchmarks); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks or self._woken.is_set() or self._passing:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Let the thread finish what it is doing and end (tests; a server just exits)."""
        thread = self._thread
        if thread is not None and thread.is_alive() and self._pid == os.getpid():
            self._stop.set()
            self._woken.set()
            thread.join(timeout)

    _passing = False

    def _idle(self) -> None:
        """Return once no request has been in flight for ``quiet`` seconds."""
        while True:
            with self._lock:
                busy = self._in_flight or time.monotonic() - self._last_request < self.quiet
            if not busy:
                return
            time.sleep(self.quiet / 2)

    def _work(self) -> None:
        loop = Loop(self.app, poll=self.poll, gate=self._idle)
        while not self._stop.is_set():
            self._woken.wait(self.poll)
            if self._stop.is_set():
                return
            self._passing = True
            self._woken.clear()
            try:
                self._run_one_offs()
                if self.embedded:
                    loop.tick()
                loop.tick_local()
            except Exception:  # noqa: BLE001 - never let the thread die
                log.exception("job thread pass failed")
            finally:
                self._passing = False

    def _run_one_offs(self) -> None:
        while True:
            try:
                func, args = self._queue.get_nowait()
            except queue.Empty:
                return
            try:
                self._idle()
                with job_context(self.app):
                    func(*args)
            except Exception:  # noqa: BLE001 - jobs record their own failures; keep going
                log.exception("in-process job %s failed", getattr(func, "__name__", func))
            finally:
                self._queue.task_done()


# --- flask jobs worker --------------------------------------------------------------------


def _app_worker_class():
    from rq import SimpleWorker

    class AppWorker(SimpleWorker):
        """RQ's non-forking worker; each job runs in an app context of the app this process
        built once (a forking worker would import and build the app again for every job)."""

        app: Flask
        stopping: threading.Event

        def perform_job(self, *args, **kwargs):
            with job_context(self.app):
                return super().perform_job(*args, **kwargs)

        def request_stop(self, signum, frame):
            self.stopping.set()
            super().request_stop(signum, frame)

    return AppWorker


class RedisWakeups:
    """The drain thread's wait: woken by ``wake()`` through Redis, and meanwhile RQ's
    scheduled jobs (retries waiting their interval) are moved to their queue, under RQ's
    scheduler lock so that one worker does it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.scheduler = None

    def wait(self, timeout: float) -> None:
        try:
            self._schedule()
            redis_connection(self.url).blpop([WAKE_KEY], timeout=max(1, int(timeout)))
        except Exception as exc:  # noqa: BLE001 - Redis is down: poll the database instead
            log.debug("wake-up wait failed: %s", exc)
            self.scheduler = None
            time.sleep(timeout)

    def _schedule(self) -> None:
        from rq.scheduler import RQScheduler

        if self.scheduler is None:
            self.scheduler = RQScheduler([QUEUE], connection=redis_connection(self.url))
        if self.scheduler.should_reacquire_locks:
            self.scheduler.acquire_locks()
        if self.scheduler.acquired_locks:
            self.scheduler.heartbeat()
            self.scheduler.enqueue_scheduled_jobs()

    def release(self) -> None:
        if self.scheduler is not None:
            with contextlib.suppress(Exception):  # Redis is down: the lock expires by itself
                self.scheduler.release_locks()


def run_rq(app: Flask, url: str, stop: threading.Event | None, *, burst: bool = False) -> None:
    """RQ's worker for one-off jobs, started again whenever Redis drops, until SIGTERM
    (``burst``: the jobs queued now, once)."""
    from redis.exceptions import RedisError
    from rq import Queue
    from rq.exceptions import StopRequested

    AppWorker = _app_worker_class()
    stop = stop or threading.Event()
    pause = 1.0
    while not stop.is_set():
        connection = redis_connection(url)
        try:
            worker = AppWorker([Queue(QUEUE, connection=connection)], connection=connection)
            worker.app, worker.stopping = app, stop
            worker.work(burst=burst, logging_level="WARNING")
            pause = 1.0
        except StopRequested:
            stop.set()
        except RedisError as exc:
            log.warning("RQ worker lost Redis (%s); trying again in %.0f s", exc, pause)
        if burst:
            return
        if not stop.is_set():
            stop.wait(pause)
            pause = min(pause * 2, 30.0)


cli = click.Group("jobs", help="The job runner: workers, drains and periodic jobs.")


@cli.command("worker")
@click.option("--burst", is_flag=True, help="Do all the work there is now, then exit.")
@click.option("--poll", default=POLL_SECONDS, show_default=True, help="Seconds between polls.")
@click.option(
    "--processes",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Worker processes, kept alive by this one (a killed one is started again).",
)
@with_appcontext
def worker_command(burst: bool, poll: float, processes: int) -> None:
    """Run jobs: payments to post, receipts to send, periodic and one-off jobs. Several
    workers share the work. Survives Redis and database outages; stop with SIGTERM."""
    app = current_app._get_current_object()
    if burst:
        work_once(app)
        return
    url = app.config.get("REDIS_URL")
    click.echo(
        f"jobs worker: {processes} process(es); drains {', '.join(runner.drains) or '-'}; "
        f"{len(runner.periodic)} periodic job(s); {'RQ queue ' + QUEUE if url else 'no Redis'}"
    )
    if processes == 1:
        work(app, poll)
        return
    from lenders.supervisor import supervise

    supervise(app, processes, lambda: work(app, poll))


def work_once(app: Flask) -> None:
    """All the work there is now: the drains, the periodic jobs due, RQ's queued jobs."""
    loop = Loop(app)
    loop.tick()
    url = app.config.get("REDIS_URL")
    if url:
        run_rq(app, url, threading.Event(), burst=True)
        loop.tick()


def work(app: Flask, poll: float = POLL_SECONDS) -> None:
    """One worker process until SIGTERM: RQ in the main thread (with Redis), the drains and
    periodic jobs in a thread beside it (or in the main thread without Redis)."""
    url = app.config.get("REDIS_URL")
    loop = Loop(app, poll=poll)
    stop = threading.Event()
    if not url:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        loop.run(stop, stop.wait)
        return
    wakeups = RedisWakeups(url)
    thread = threading.Thread(
        target=loop.run, args=(stop, wakeups.wait), name="marejesho-drains", daemon=True
    )
    thread.start()
    try:
        run_rq(app, url, stop)
    finally:
        stop.set()
        thread.join(30)
        wakeups.release()


@cli.command("run")
@click.argument("names", nargs=-1)
@with_appcontext
def run_command(names: tuple[str, ...]) -> None:
    """Run the named drains (all by default) until nothing is left, here and now."""
    done = run_drains(current_app._get_current_object(), names or None)
    click.echo(f"{done} row(s) done")
