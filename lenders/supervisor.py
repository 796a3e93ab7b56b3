"""``flask jobs worker --processes N``: a parent that keeps N worker processes alive.

The parent builds the app once and forks the workers from it (nothing is imported or built
again), starts a new one whenever one dies (a SIGKILL, an out-of-memory kill), and passes
SIGTERM on for a graceful stop. It holds no database or Redis connection itself, so a child
inherits none. A child whose parent dies is ended by the kernel (Linux), so no orphan keeps
working unsupervised; systemd (or the Procfile's manager) restarts the parent."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import time
from collections.abc import Callable

from flask import Flask

from lenders.extensions import db

log = logging.getLogger("marejesho.jobs")
GRACE_SECONDS = 30.0


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: the child notices by itself at its next poll
        pass


def _after_fork(app: Flask) -> None:
    """A child must not share its parent's pooled connections (none should exist)."""
    from lenders.jobs import _redis

    _redis.cache_clear()
    with app.app_context():
        db.engine.dispose(close=False)


def supervise(app: Flask, processes: int, work: Callable[[], None]) -> None:
    """Run ``work()`` in ``processes`` children until SIGTERM or SIGINT."""
    children: dict[int, int] = {}  # pid -> slot
    started: dict[int, float] = {}  # slot -> when its current child started
    stopping = False

    def start(slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # the child
            code = 0
            try:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(signum, signal.SIG_DFL)
                _die_with_parent()
                _after_fork(app)
                work()
            except BaseException:  # noqa: BLE001 - reported, then the parent starts another
                log.exception("worker process %s failed", os.getpid())
                code = 1
            finally:
                os._exit(code)
        children[pid] = slot
        started[slot] = time.monotonic()

    def stop(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    for slot in range(processes):
        start(slot)
    deadline = None
    while children:
        if stopping and deadline is None:
            deadline = time.monotonic() + GRACE_SECONDS
        try:
            pid, status = os.waitpid(-1, os.WNOHANG if stopping else 0)
        except ChildProcessError:
            break
        if pid == 0:  # stopping, children still finishing their work
            if time.monotonic() > deadline:
                for child in list(children):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
            time.sleep(0.1)
            continue
        slot = children.pop(pid, None)
        if slot is None or stopping:
            continue
        log.warning("worker process %s ended (%s); starting another", pid, _describe(status))
        if time.monotonic() - started[slot] < 1.0:
            time.sleep(1.0)  # one that dies at once must not spin
        start(slot)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit status {os.WEXITSTATUS(status)}"
