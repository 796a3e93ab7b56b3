"""Jobs (/jobs/, admins): the drains' depths, the periodic jobs' last runs, RQ's queue,
workers and failed jobs (with a button to run a failed job again). Our own screen, not
rq-dashboard: it keeps the app's login, roles, CSRF and Content-Security-Policy."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from flask import Blueprint, abort, current_app, flash, redirect, request, url_for
from flask_login import current_user

from lenders import rq_admin
from lenders.forms import ActionForm
from lenders.jobs import runner
from lenders.monitoring import bounded, take_snapshot
from lenders.web import render_page, roles

bp = Blueprint("jobs", __name__, url_prefix="/jobs")
security_log = logging.getLogger("marejesho.security")
PAGE = "lenders/jobs/index.html"


@bp.get("/")
@roles("admin")
def index():
    """Everything the job runner has to do and has done; refreshes itself."""
    app = current_app._get_current_object()
    snapshot = take_snapshot(app)
    rq, rq_error = None, None
    if snapshot.redis is not None and snapshot.redis.ok:
        url = app.config["REDIS_URL"]
        check, rq = bounded(f"rq-overview {url}", lambda: rq_admin.overview(url), 3.0)
        rq_error = None if check.ok else check.error
    return render_page(
        PAGE,
        "figures" if request.headers.get("HX-Target") == "jobs-figures" else "content",
        s=snapshot,
        rq=rq,
        rq_error=rq_error,
        drains=list(runner.drains),
        form=ActionForm(),
        now=datetime.now(UTC),
    )


def _back(message: str):
    """To the jobs screen, with the message (``redirect_htmx`` makes it HX-Redirect)."""
    flash(message)
    return redirect(url_for("jobs.index"), code=303)


@bp.post("/failed/<job_id>/requeue")
@roles("admin")
def requeue(job_id: str):
    """Put a failed one-off job back on its queue; a worker runs it again."""
    if not ActionForm().validate():
        abort(400)
    url = current_app.config.get("REDIS_URL")
    if not url:
        abort(404)
    try:
        rq_admin.requeue_failed(url, job_id)
    except rq_admin.NotFailed:
        return _back("No failed job has that id any more: nothing was queued.")
    except Exception:  # noqa: BLE001 - Redis went away between the page and the click
        logging.getLogger("marejesho.jobs").exception("requeue of job %s failed", job_id)
        return _back("Redis did not answer: nothing was queued. Try again.")
    security_log.info("jobs: user %s requeued failed job %s", current_user.id, job_id)
    return _back(f"Job {job_id} is queued again.")
