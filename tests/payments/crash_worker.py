"""A payment worker that dies by SIGKILL at a chosen point of the payments drain.

Run by tests/payments/test_exactly_once.py as a subprocess:

    python tests/payments/crash_worker.py DATABASE_URL PAYMENT_ID KILL_POINT

It builds the app with ``create_app`` on the test database (the tests' own ``test_config``),
wraps one step of the job so that the process prints ``killed at KILL_POINT`` and SIGKILLs
itself there (no ``finally``, no rollback, no goodbye to the database), and runs the job.
If the kill point is never reached it exits with status 3, so the test sees that too."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sqlalchemy import event  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

import payments.jobs  # noqa: E402
import payments.processing  # noqa: E402
from app import create_app  # noqa: E402
from payments.jobs import post_received_payments  # noqa: E402
from tests.conftest import test_config  # noqa: E402

KILL_POINTS = ("after_claim", "mid_post", "after_post", "before_commit", "after_commit")


def die(point: str) -> None:
    print(f"killed at {point}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


_commits = [0]


def posting(session: Session) -> bool:
    """True at the posting's commit: the drain's second (the first commits its claim), and
    the session's own transaction, not a savepoint."""
    if session.in_nested_transaction():
        return False
    _commits[0] += 1
    return _commits[0] == 2


def arm(point: str) -> None:
    """Wrap the step named ``point`` so that the process dies there."""
    if point == "after_claim":  # the claim is committed (attempts + 1, a lease), no posting
        real_post = payments.jobs.post_batch

        def die_before_posting(session, ids, **kw):
            die(point)
            return real_post(session, ids, **kw)

        payments.jobs.post_batch = die_before_posting
    elif point == "mid_post":  # repayments and allocations written, installments not yet
        from sqlalchemy import Engine

        def die_after_allocations(conn, cursor, statement, *args):
            if statement.startswith("INSERT INTO allocation"):
                die(point)

        event.listen(Engine, "after_cursor_execute", die_after_allocations)
    elif point == "after_post":  # every row of the batch written; COMMIT not yet sent
        real_post = payments.jobs.post_batch

        def post_then_die(session, ids, **kw):
            outcome = real_post(session, ids, **kw)
            session.flush()
            die(point)
            return outcome

        payments.jobs.post_batch = post_then_die
    elif point == "before_commit":  # the posting done in its transaction; COMMIT never sent
        event.listen(Session, "before_commit", lambda session: posting(session) and die(point))
    elif point == "after_commit":  # the posting committed; the worker dies before going on
        event.listen(Session, "after_commit", lambda session: posting(session) and die(point))
    else:
        raise SystemExit(f"unknown kill point {point!r}; one of {', '.join(KILL_POINTS)}")


def main() -> None:
    url, point = sys.argv[1], sys.argv[3]  # argv[2]: the payment waiting in received
    app = create_app(test_config(url))
    arm(point)
    with app.app_context():
        claimed = post_received_payments(100)
    print(f"kill point {point} never reached; the drain claimed {claimed}", flush=True)
    sys.exit(3)


if __name__ == "__main__":
    main()
