"""What the admins' jobs screen shows of RQ (its queue, workers and failed jobs), and putting
a failed job back on its queue. Reads Redis only; the drains and periodic jobs come from the
database (lenders/monitoring.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from lenders.jobs import QUEUE, redis_connection
from lenders.logs import mask_phones
from lenders.monitoring import RqCounts, rq_counts

FAILED_SHOWN = 20
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class NotFailed(LookupError):
    """No failed job has this id (any more)."""


@dataclass(frozen=True)
class WorkerRow:
    name: str
    state: str
    current_job: str | None
    last_heartbeat: datetime | None
    successful: int
    failed: int


@dataclass(frozen=True)
class FailedJob:
    id: str
    description: str
    failed_at: datetime | None
    error: str


@dataclass(frozen=True)
class RqOverview:
    counts: RqCounts
    workers: list[WorkerRow]
    failed: list[FailedJob]


def _last_line(text: str | None) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return mask_phones(lines[-1].strip())[:300] if lines else ""


def _failed_job(job) -> FailedJob:
    result = job.latest_result()
    return FailedJob(
        id=job.id,
        description=mask_phones(job.description or job.id)[:200],
        failed_at=job.ended_at,
        error=_last_line(result.exc_string if result is not None else None),
    )


def overview(url: str, limit: int = FAILED_SHOWN) -> RqOverview:
    """RQ's counts, its workers, and the newest ``limit`` failed jobs with the last line of
    each one's error (job descriptions name functions and ids; phones are masked all the
    same)."""
    from rq import Queue, Worker
    from rq.job import Job

    connection = redis_connection(url)
    queue = Queue(QUEUE, connection=connection)
    workers = [
        WorkerRow(
            name=worker.name,
            state=str(worker.get_state()),
            current_job=worker.get_current_job_id(),
            last_heartbeat=worker.last_heartbeat,
            successful=worker.successful_job_count,
            failed=worker.failed_job_count,
        )
        for worker in Worker.all(queue=queue)
    ]
    ids = queue.failed_job_registry.get_job_ids(0, limit - 1, desc=True)
    jobs = [job for job in Job.fetch_many(ids, connection=connection) if job is not None]
    return RqOverview(
        counts=rq_counts(url),
        workers=sorted(workers, key=lambda w: w.name),
        failed=[_failed_job(job) for job in jobs],
    )


def requeue_failed(url: str, job_id: str) -> None:
    """Move a failed job back to its queue (its retries start over). Raises NotFailed when
    no failed job has this id."""
    from rq import Queue
    from rq.exceptions import InvalidJobOperation, NoSuchJobError

    if not _JOB_ID.fullmatch(job_id or ""):
        raise NotFailed(job_id)
    queue = Queue(QUEUE, connection=redis_connection(url))
    try:
        queue.failed_job_registry.requeue(job_id)
    except (InvalidJobOperation, NoSuchJobError) as exc:
        raise NotFailed(job_id) from exc
