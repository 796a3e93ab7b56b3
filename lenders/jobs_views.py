"""The admins' jobs screen: the drains' depths, the periodic jobs' last runs, RQ's queue,
workers and failed jobs (with a button to run a failed job again). Our own screen, not
rq-dashboard: it keeps the app's login, roles, CSRF and Content-Security-Policy."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from flask import Blueprint, Flask, abort, current_app, flash, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm

from lenders import rq_admin
from lenders.jobs import runner
from lenders.monitoring import bounded, take_snapshot
from lenders.web import hx_redirect, render_page, roles

bp = Blueprint("jobs", __name__, url_prefix="/jobs")
security_log = logging.getLogger("marejesho.security")


class RequeueForm(FlaskForm):
    """Button-only: carries the CSRF token."""


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
        "jobs/index.html",
        "figures" if request.headers.get("HX-Target") == "jobs-figures" else "content",
        s=snapshot,
        rq=rq,
        rq_error=rq_error,
        drains=list(runner.drains),
        form=RequeueForm(),
        now=datetime.now(UTC),
    )


@bp.post("/failed/<job_id>/requeue")
@roles("admin")
def requeue(job_id: str):
    """Put a failed one-off job back on its queue; a worker runs it again."""
    if not RequeueForm().validate():
        abort(400)
    url = current_app.config.get("REDIS_URL")
    if not url:
        abort(404)
    try:
        rq_admin.requeue_failed(url, job_id)
    except rq_admin.NotFailed:
        flash("No failed job has that id any more: nothing was queued.")
        return hx_redirect(url_for("jobs.index"))
    except Exception:  # noqa: BLE001 - Redis went away between the page and the click
        logging.getLogger("marejesho.jobs").exception("requeue of job %s failed", job_id)
        flash("Redis did not answer: nothing was queued. Try again.")
        return hx_redirect(url_for("jobs.index"))
    security_log.info("jobs: user %s requeued failed job %s", current_user.id, job_id)
    flash(f"Job {job_id} is queued again.")
    return hx_redirect(url_for("jobs.index"))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
