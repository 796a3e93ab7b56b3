"""Reconciliation (/payments/reconciliation/, admins): a statement's upload with its
progress, each import's summary and the rows that need a person, the daily close with its
sign-off and its print-friendly page, a shortcode's Pull Transactions panel (loaded into its
Configuration page) and the dashboard's flag of signed-off days that changed
(payments/reconciliation.py reads them)."""

from __future__ import annotations

from datetime import date, timedelta

from flask import Blueprint, abort, current_app, flash, redirect, request, url_for
from flask_login import current_user

from lenders.extensions import db
from lenders.jobs import enqueue
from lenders.web import render_fragment, render_page, roles
from payments import reconciliation as pages
from payments.daily_close import close_day
from payments.daraja import DarajaError, RequestRefused
from payments.forms import PullRegistrationForm, SignOffForm, StatementUploadForm
from payments.jobs import run_statement_import
from payments.models import Shortcode
from payments.pull import PullError, pull_and_record, register
from payments.reconciliation_models import StatementImport
from payments.shortcodes import ShortcodeError, explain
from payments.sign_offs import CloseError, changed_days, sign_off

bp = Blueprint("reconciliation", __name__, url_prefix="/payments/reconciliation")
FOLDER = "payments/reconciliation"


def _shortcode_or_404(shortcode_id: int) -> Shortcode:
    return db.session.get(Shortcode, shortcode_id) or abort(404)


def _day_or_404(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        abort(404)


def _upload_form() -> StatementUploadForm:
    form = StatementUploadForm()
    form.shortcode.choices = [(s.id, f"{s.number} {s.name}") for s in pages.shortcodes(db.session)]
    return form


def _index(form: StatementUploadForm, error: str = "", status: int = 200):
    page = render_page(
        f"{FOLDER}/index.html",
        "content",
        imports=pages.recent_imports(db.session),
        changed=changed_days(db.session),
        shortcodes=pages.shortcodes(db.session),
        yesterday=pages.parse_day(None),
        form=form,
        error=error,
    )
    page.status_code = status
    return page


@bp.get("/")
@roles("admin")
def index():
    """Recent imports and pulls, the days whose sign-off no longer holds, a day to close."""
    return _index(_upload_form())


@bp.post("/upload")
@roles("admin")
def upload():
    """Keep the file, start its import as a job, and go to its progress. (A file over the
    app's MAX_CONTENT_LENGTH, 16 MB, is refused with 413 before this runs.)"""
    form = _upload_form()
    if not form.validate() or not form.file.data:  # the paybill among the choices, first
        return _index(form, "Choose the paybill and a statement file.", 422)
    shortcode = db.session.get(Shortcode, form.shortcode.data)
    try:
        record = pages.queue_statement(
            db.session, shortcode, form.file.data.filename, form.file.data.read(),
            actor=current_user,
        )  # fmt: skip
    except pages.UploadError as exc:
        db.session.rollback()
        return _index(form, str(exc), 422)
    db.session.commit()
    enqueue(run_statement_import, record.id)
    return redirect(url_for("reconciliation.statement_import", import_id=record.id), code=303)


@bp.get("/imports/<int:import_id>")
@roles("admin")
def statement_import(import_id: int):
    """An import's progress while it runs; then its summary and the rows for a person."""
    record = db.session.get(StatementImport, import_id) or abort(404)
    block = "progress" if request.headers.get("HX-Target") == "progress" else "content"
    return render_page(
        f"{FOLDER}/import.html",
        block,
        r=record,
        attention=pages.needing_a_person(db.session, import_id) if record.summary else [],
        outcomes=pages.import_outcomes(db.session, import_id) if record.summary else {},
    )


@bp.get("/days/")
@roles("admin")
def day():
    """The daily close of one shortcode and Nairobi day (yesterday by default)."""
    codes = pages.shortcodes(db.session)
    chosen = next((s for s in codes if str(s.id) == request.args.get("shortcode")), None)
    chosen = chosen or (codes[0] if codes else None)
    on = pages.parse_day(request.args.get("date"))
    return render_page(
        f"{FOLDER}/day.html",
        "content",
        close=close_day(db.session, chosen, on) if chosen else None,
        shortcodes=codes,
        on=on,
        around=(on - timedelta(days=1), on + timedelta(days=1)),
        form=SignOffForm(formdata=None),
    )


@bp.post("/days/<int:shortcode_id>/<day_text>/sign-off")
@roles("admin")
def sign_day_off(shortcode_id: int, day_text: str):
    """Sign the day off: who and when are kept with the figures signed."""
    shortcode, on = _shortcode_or_404(shortcode_id), _day_or_404(day_text)
    form = SignOffForm()
    if not form.validate():
        abort(400)
    try:
        sign_off(db.session, shortcode, on, actor=current_user, note=form.note.data or "")
        db.session.commit()
        flash(f"{shortcode.number} on {on:%d %b %Y} is signed off.")
    except CloseError as exc:
        db.session.rollback()
        flash(str(exc))
    return redirect(url_for("reconciliation.day", shortcode=shortcode.id, date=on), code=303)


@bp.get("/days/<int:shortcode_id>/<day_text>/print")
@roles("admin")
def print_day(shortcode_id: int, day_text: str):
    """The day's close on paper: figures, differences, sign-off; no navigation."""
    shortcode, on = _shortcode_or_404(shortcode_id), _day_or_404(day_text)
    return render_page(
        f"{FOLDER}/day_print.html", "content", close=close_day(db.session, shortcode, on)
    )


@bp.get("/changed")
@roles("admin")
def changed():
    """The dashboard's flag: signed-off days whose figures moved since."""
    return render_fragment(f"{FOLDER}/_changed.html", "changed", changed=changed_days(db.session))


@bp.get("/pull/<int:shortcode_id>")
@roles("admin")
def pull_panel(shortcode_id: int):
    """The shortcode page's Pull Transactions panel."""
    return _pull_panel(_shortcode_or_404(shortcode_id))


@bp.post("/pull/<int:shortcode_id>/register")
@roles("admin")
def register_pull(shortcode_id: int):
    """Register the shortcode for Pull Transactions with Daraja."""
    shortcode, form = _shortcode_or_404(shortcode_id), PullRegistrationForm()

    def work() -> str:
        nominated = form.nominated.data or ""
        return register(
            db.session, shortcode, current_app.config, nominated=nominated, actor=current_user
        )

    return _pull_action(shortcode, form, work)


@bp.post("/pull/<int:shortcode_id>/now")
@roles("admin")
def pull_now(shortcode_id: int):
    """Pull the last 48 hours (or since the last pull) now, and show its figures."""
    shortcode, form = _shortcode_or_404(shortcode_id), PullRegistrationForm()

    def work() -> str:
        summary = pull_and_record(db.session, shortcode, current_app.config, actor=current_user)
        return f"Pulled {summary.rows} transaction(s): {summary.gaps_filled} gap(s) filled."

    return _pull_action(shortcode, form, work)


def _pull_action(shortcode: Shortcode, form: PullRegistrationForm, work):
    """Run a Pull Transactions call from the panel: the panel again with its answer, or
    with a plain account of the failure (422)."""
    if not form.validate():
        abort(400)
    try:
        message = work()
        db.session.commit()
    except (PullError, ShortcodeError, DarajaError, RequestRefused) as exc:
        db.session.rollback()
        failed = str(exc) if isinstance(exc, PullError | ShortcodeError) else explain(exc)
        return _pull_panel(shortcode, error=failed, status=422)
    return _pull_panel(shortcode, message=message)


def _pull_panel(shortcode: Shortcode, *, message: str = "", error: str = "", status: int = 200):
    return render_fragment(
        f"{FOLDER}/_pull.html", "pull", status=status, **pages.pull_panel(db.session, shortcode),
        form=PullRegistrationForm(formdata=None), message=message, error=error,
    )  # fmt: skip
