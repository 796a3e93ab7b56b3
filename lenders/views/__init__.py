"""The lending book's screens: one blueprint per area, each named like its URL and its
template folder (``borrowers`` answers at /lenders/borrowers/ from
templates/lenders/borrowers/; ``jobs``, the job runner's screen, at /jobs/ from
templates/lenders/jobs/), and the start page."""

from __future__ import annotations

from flask import Flask, redirect, url_for

from lenders.views import borrowers, imports, jobs, loans, staff
from lenders.web import roles

AREAS = (borrowers, loans, imports, staff, jobs)


@roles("admin", "officer")
def index():
    """Staff start at the borrowers list."""
    return redirect(url_for("borrowers.index"))


def init_app(app: Flask) -> None:
    app.add_url_rule("/", "index", index)
    for area in AREAS:
        app.register_blueprint(area.bp)
