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

import lenders.book  # noqa: E402
import payments.jobs  # noqa: E402
import payments.processing  # noqa: E402
from app import create_app  # noqa: E402
from payments.jobs import post_received_payments  # noqa: E402
from tests.conftest import test_config  # noqa: E402

KILL_POINTS = ("after_claim", "mid_post", "after_post", "before_commit", "after_commit")


def die(point: str) -> None:
    print(f"killed at {point}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def root(session: Session) -> bool:
    """True when the transaction that commits is the session's own, not a savepoint."""
    return not session.in_nested_transaction()


def arm(point: str) -> None:
    """Wrap the step named ``point`` so that the process dies there."""
    if point == "after_claim":  # the payment is claimed (attempts + 1, uncommitted)
        real_claim = payments.jobs.claim_received_payments

        def claim_then_die(session, limit):
            claimed = real_claim(session, limit)
            session.flush()
            die(point)
            return claimed

        payments.jobs.claim_received_payments = claim_then_die
    elif point == "mid_post":  # installments and loan.paid changed and flushed, no audit yet
        real_audit = lenders.book.record_audit

        def audit_then_die(session, action, entity, **kw):
            if action == "repayment.posted":
                session.flush()
                die(point)
            return real_audit(session, action, entity, **kw)

        lenders.book.record_audit = audit_then_die
    elif point == "after_post":  # the repayment is flushed, the payment still 'received'
        real_post = payments.processing.post_repayment

        def post_then_die(session, *args, **kw):
            repayment = real_post(session, *args, **kw)
            session.flush()
            die(point)
            return repayment

        payments.processing.post_repayment = post_then_die
    elif point == "before_commit":  # all the work done in the transaction; COMMIT never sent
        event.listen(Session, "before_commit", lambda session: root(session) and die(point))
    elif point == "after_commit":  # committed; the job dies before it can report success
        event.listen(Session, "after_commit", lambda session: root(session) and die(point))
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
