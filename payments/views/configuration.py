"""Configuration (/payments/configuration/, admins): the paybills and tills, each with its
settings, write-only credentials, sandbox or production, and the Daraja calls made from
its page."""

from __future__ import annotations

import logging

from flask import Blueprint, abort, current_app, flash, redirect, request, url_for
from flask_login import current_user
from sqlalchemy import func, select

from lenders.extensions import db
from lenders.forms import ActionForm
from lenders.web import render_fragment, render_page, roles
from payments import shortcodes as service
from payments.credentials import credentials_status
from payments.daraja import DarajaError, RequestRefused
from payments.exports import shortcode_json
from payments.forms import ShortcodeForm, TestPaymentForm
from payments.models import C2BPayment, CallbackLog, Shortcode

bp = Blueprint("configuration", __name__, url_prefix="/payments/configuration")
log = logging.getLogger("marejesho.shortcodes")
INDEX = "payments/configuration/index.html"
SHORTCODE = "payments/configuration/shortcode.html"


def _shortcode_or_404(shortcode_id: int) -> Shortcode:
    shortcode = db.session.get(Shortcode, shortcode_id)
    if shortcode is None:
        abort(404)
    return shortcode


def _page(shortcode: Shortcode, form: ShortcodeForm | None = None, **extra):
    form = form or ShortcodeForm(obj=shortcode, formdata=None)
    for secret in Shortcode.SECRET_FIELDS:  # never echo a secret back
        form[secret].data = ""
    recent = db.session.scalars(
        select(C2BPayment)
        .where(C2BPayment.shortcode_id == shortcode.id)
        .order_by(C2BPayment.id.desc())
        .limit(5)
    ).all()
    return {
        "s": shortcode,
        "form": form,
        "secrets": credentials_status(shortcode),
        "urls": shortcode_json(shortcode, current_app.config["PUBLIC_BASE_URL"]),
        "changes": service.production_changes(shortcode),
        "action": ActionForm(),
        "test_form": TestPaymentForm(formdata=None),
        "recent": recent,
        "message": "",
        "error": "",
        "confirm_production": False,
        **extra,
    }


@bp.get("/")
@roles("admin")
def index():
    """Paybills and tills with their callback URLs and last callback, and a form for a new one."""
    shortcodes = db.session.scalars(select(Shortcode).order_by(Shortcode.number)).all()
    last = dict(
        db.session.execute(
            select(CallbackLog.shortcode_id, func.max(CallbackLog.received_at)).group_by(
                CallbackLog.shortcode_id
            )
        ).all()
    )
    return render_page(
        INDEX,
        "content",
        shortcodes=shortcodes,
        last=last,
        form=ShortcodeForm(formdata=None),
        errors={},
    )


@bp.post("/shortcodes")
@roles("admin")
def create_shortcode():
    """Add a paybill or till (sandbox first) with a fresh callback token."""
    form = ShortcodeForm()
    try:
        shortcode = service.create_shortcode(db.session, form.to_input(), actor=current_user)
    except service.ShortcodeFormError as exc:
        db.session.rollback()
        shortcodes = db.session.scalars(select(Shortcode).order_by(Shortcode.number)).all()
        return render_page(
            INDEX,
            "new_shortcode",
            form=form,
            errors=exc.errors,
            shortcodes=shortcodes,
            last={},
        ), 422
    db.session.commit()
    flash(f"Shortcode {shortcode.number} added in sandbox.")
    return redirect(url_for("configuration.shortcode", shortcode_id=shortcode.id), code=303)


@bp.get("/shortcodes/<int:shortcode_id>")
@roles("admin")
def shortcode(shortcode_id: int):
    """One shortcode: settings, credentials (shown as set or not), actions."""
    return render_page(SHORTCODE, "content", **_page(_shortcode_or_404(shortcode_id)), errors={})


@bp.post("/shortcodes/<int:shortcode_id>")
@roles("admin")
def update_shortcode(shortcode_id: int):
    """Save settings; empty secret fields keep what is stored."""
    shortcode = _shortcode_or_404(shortcode_id)
    form = ShortcodeForm()
    try:
        service.update_shortcode(db.session, shortcode, form.to_input(), actor=current_user)
    except service.ShortcodeFormError as exc:
        db.session.rollback()
        return render_page(
            SHORTCODE,
            "settings",
            **_page(_shortcode_or_404(shortcode_id), form),
            errors=exc.errors,
        ), 422
    db.session.commit()
    flash("Saved.")
    return redirect(url_for("configuration.shortcode", shortcode_id=shortcode_id), code=303)


@bp.post("/shortcodes/<int:shortcode_id>/environment")
@roles("admin")
def switch_environment(shortcode_id: int):
    """Switch sandbox/production; production asks for confirmation first."""
    shortcode = _shortcode_or_404(shortcode_id)
    if not ActionForm().validate():
        abort(400)
    target = request.form.get("environment", "")
    if target == "production" and request.form.get("confirm") != "yes":
        return render_fragment(
            SHORTCODE, "environment", **_page(shortcode, confirm_production=True)
        )
    try:
        service.switch_environment(
            db.session,
            shortcode,
            target,
            actor=current_user,
            base_url=current_app.config["PUBLIC_BASE_URL"],
        )
    except service.ShortcodeError as exc:
        db.session.rollback()
        return render_fragment(
            SHORTCODE,
            "environment",
            **_page(_shortcode_or_404(shortcode_id), error=str(exc)),
            status=422,
        )
    db.session.commit()
    flash(f"Shortcode {shortcode.number} is now in {target}. Register its URLs there.")
    return redirect(url_for("configuration.shortcode", shortcode_id=shortcode_id), code=303)


def _daraja_action(shortcode_id: int, work):
    """Run one Daraja call from the page; its answer, or a plain-language failure, comes
    back in the actions panel. Logs never carry secrets."""
    shortcode = _shortcode_or_404(shortcode_id)
    try:
        message = work(shortcode)
        db.session.commit()
        return render_fragment(SHORTCODE, "actions", **_page(shortcode, message=message))
    except (service.ShortcodeError, DarajaError, RequestRefused) as exc:
        db.session.rollback()
        log.warning("daraja action on %s failed: %s", shortcode.number, type(exc).__name__)
        text = str(exc) if isinstance(exc, service.ShortcodeError) else service.explain(exc)
        return render_fragment(
            SHORTCODE,
            "actions",
            **_page(_shortcode_or_404(shortcode_id), error=text),
            status=422,
        )


@bp.post("/shortcodes/<int:shortcode_id>/register")
@roles("admin")
def register_urls(shortcode_id: int):
    """Register the callback URLs with Daraja and show its answer."""
    if not ActionForm().validate():
        abort(400)
    return _daraja_action(
        shortcode_id,
        lambda s: service.register_urls(db.session, s, current_app.config, actor=current_user),
    )


@bp.post("/shortcodes/<int:shortcode_id>/test-payment")
@roles("admin")
def test_payment(shortcode_id: int):
    """Sandbox only: ask Daraja to simulate a customer payment; it arrives below."""
    form = TestPaymentForm()
    if not form.validate():
        return render_fragment(
            SHORTCODE,
            "actions",
            **_page(_shortcode_or_404(shortcode_id), error="Amount: a whole number of shillings."),
            status=422,
        )
    return _daraja_action(
        shortcode_id,
        lambda s: service.test_payment(
            s,
            current_app.config,
            amount=form.amount.data,
            msisdn=form.msisdn.data or "",
            bill_ref=form.bill_ref.data or "",
        ),
    )


@bp.post("/shortcodes/<int:shortcode_id>/check")
@roles("admin")
def check_connection(shortcode_id: int):
    """Fetch a token and ask for the account balances (shown below when they come)."""
    if not ActionForm().validate():
        abort(400)
    return _daraja_action(
        shortcode_id,
        lambda s: service.check_connection(db.session, s, current_app.config, actor=current_user),
    )


@bp.get("/shortcodes/<int:shortcode_id>/recent")
@roles("admin")
def recent_payments(shortcode_id: int):
    """The shortcode's latest payments (polled while a test payment is on its way)."""
    return render_fragment(SHORTCODE, "recent", **_page(_shortcode_or_404(shortcode_id)))
