"""SMS settings, templates and delivery reports; officers' notices. Admin screens live on
the payments area; Africa's Talking's delivery reports come in on a tokened URL."""

from __future__ import annotations

import hmac
import logging
import re
from datetime import UTC, datetime

from flask import Blueprint, abort, flash, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import func, or_, select, update
from wtforms import PasswordField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, Optional, Regexp

from lenders.extensions import csrf, db
from lenders.web import hx_redirect, public, render_fragment, render_page, roles
from payments import sms
from payments.models import C2BPayment, OfficerNotice, SmsMessage, SmsSettings, SmsTemplate
from payments.reports import visible_payments
from payments.views import ActionForm, bp

reports_bp = Blueprint("sms", __name__, url_prefix="/payments/sms")
csrf.exempt(reports_bp)
log = logging.getLogger("marejesho.sms")
SAMPLE = {
    "lender": "Mkopo Bora",
    "amount": "KES 1,500.00",
    "receipt": "TK60708BHZ",
    "loan": "LOAN-000123",
    "balance": "KES 3,500.00",
    "next_due": "Next KES 1,000.00 by 15 Dec.",
    "allocations": "LOAN-000123 KES 1,200.00, LOAN-000124 KES 300.00",
    "credit": "KES 200.00",
}


class ProviderForm(FlaskForm):
    provider = SelectField(
        "Provider",
        choices=[
            SelectChoice("console", "Console (development: messages go to the log)"),
            SelectChoice("africastalking", "Africa's Talking"),
        ],
    )
    username = StringField(
        "Username ('sandbox' for Africa's Talking's sandbox)",
        validators=[Optional(), Length(max=80)],
    )
    api_key = PasswordField("API key", render_kw={"autocomplete": "off"})
    sender_id = StringField("Sender ID", validators=[Optional(), Length(max=11)])
    quiet_start = StringField("Quiet from (hour)", validators=[Regexp(r"^\d{1,2}$")])
    quiet_end = StringField("Quiet until (hour)", validators=[Regexp(r"^\d{1,2}$")])


class TemplateForm(FlaskForm):
    key = StringField(validators=[Regexp(r"^[a-z_]+$")])
    language = StringField(validators=[Regexp(r"^(en|sw)$")])
    body = TextAreaField(validators=[Length(min=1, max=600)])


def shown_settings() -> SmsSettings:
    """The saved provider settings, or the defaults a first visit shows: a GET writes
    nothing (the row and its delivery-report token are made when an admin saves)."""
    saved = db.session.get(SmsSettings, 1)
    return saved or SmsSettings(id=1, provider="console", quiet_start=21, quiet_end=7)


def settings_row() -> SmsSettings:
    """The row to save into, made on the first save."""
    row = db.session.get(SmsSettings, 1)
    if row is None:
        row = SmsSettings(id=1)
        db.session.add(row)
        db.session.flush()
    return row


def _templates():
    return [
        {
            "key": key,
            "language": lang,
            "body": sms.template_text(db.session, key, lang),
            "preview": sms.render(sms.template_text(db.session, key, lang), SAMPLE),
        }
        for key in sms.TEMPLATE_KEYS
        for lang in ("en", "sw")
    ]


@bp.get("/sms/")
@roles("admin")
def sms_settings():
    """The SMS provider, the receipt templates with a live preview, and recent messages."""
    row = shown_settings()
    form = ProviderForm(obj=row, formdata=None)
    form.api_key.data = ""
    form.quiet_start.data, form.quiet_end.data = str(row.quiet_start), str(row.quiet_end)
    recent = db.session.scalars(select(SmsMessage).order_by(SmsMessage.id.desc()).limit(20)).all()
    return render_page(
        "payments/sms.html",
        "content",
        form=form,
        row=row,
        templates=_templates(),
        variables=sms.VARIABLES,
        recent=recent,
        segments=sms.segments,
        errors={},
        action=ActionForm(),
    )


@bp.post("/sms/provider")
@roles("admin")
def save_sms_provider():
    """Save the provider; an empty API key keeps the stored one."""
    form = ProviderForm()
    if not form.validate() or not (
        0 <= int(form.quiet_start.data) < 24 and 0 <= int(form.quiet_end.data) < 24
    ):
        flash("Check the provider settings: hours are 0 to 23, sender ID at most 11 characters.")
        return hx_redirect(url_for("payments.sms_settings"))
    row = settings_row()
    row.provider, row.username = form.provider.data, (form.username.data or "").strip() or None
    row.sender_id = (form.sender_id.data or "").strip() or None
    row.quiet_start, row.quiet_end = int(form.quiet_start.data), int(form.quiet_end.data)
    if form.api_key.data:
        row.api_key = form.api_key.data.strip()
    if row.provider == "africastalking" and not (row.username and row.api_key):
        db.session.rollback()
        flash("Africa's Talking needs a username and an API key.")
        return hx_redirect(url_for("payments.sms_settings"))
    db.session.commit()
    flash("SMS provider saved.")
    return hx_redirect(url_for("payments.sms_settings"))


@bp.post("/sms/templates")
@roles("admin")
def save_sms_template():
    """Save one template (key and language)."""
    form = TemplateForm()
    if not form.validate() or form.key.data not in sms.TEMPLATE_KEYS:
        abort(400)
    problems = sms.template_problems(form.body.data)
    if problems:
        flash(f"Template not saved: {'; '.join(problems)}.")
        return hx_redirect(url_for("payments.sms_settings"))
    row = db.session.get(SmsTemplate, (form.key.data, form.language.data)) or SmsTemplate(
        key=form.key.data, language=form.language.data
    )
    row.body, row.updated_by_id = form.body.data.strip(), current_user.id
    db.session.add(row)
    db.session.commit()
    flash(f"Template {form.key.data} ({form.language.data}) saved.")
    return hx_redirect(url_for("payments.sms_settings"))


@bp.post("/sms/preview")
@roles("admin")
def preview_sms():
    """The template as a borrower would read it, with its SMS count, while the admin types."""
    text = sms.render(request.form.get("body", "")[:600], SAMPLE)
    count, encoding = sms.segments(text)
    return render_fragment(
        "payments/sms.html", "preview", text=text, count=count, encoding=encoding
    )


@bp.get("/sms/for/<any(payment, borrower):kind>/<int:item_id>")
@roles("admin", "officer")
def sms_list(kind: str, item_id: int):
    """Messages about a payment or to a borrower (loaded into those pages)."""
    from lenders.queries import get_borrower
    from payments.reports import get_payment

    if kind == "payment" and get_payment(db.session, current_user, item_id) is None:
        abort(404)
    if kind == "borrower" and get_borrower(db.session, current_user, item_id) is None:
        abort(404)
    messages = messages_for(current_user, kind, item_id)
    return render_fragment("payments/sms.html", "messages", messages=messages)


def messages_for(viewer, kind: str, item_id: int) -> list[SmsMessage]:
    """A payment's or a borrower's messages, newest first. A borrower with loans in two
    portfolios gets receipts for both: an officer sees those of payments in theirs."""
    column = SmsMessage.payment_id if kind == "payment" else SmsMessage.borrower_id
    query = select(SmsMessage).where(column == item_id)
    if not viewer.is_admin:
        mine = visible_payments(viewer).with_only_columns(C2BPayment.id)
        query = query.where(or_(SmsMessage.payment_id.is_(None), SmsMessage.payment_id.in_(mine)))
    return list(db.session.scalars(query.order_by(SmsMessage.id.desc())))


@bp.get("/notices/")
@roles("admin", "officer")
def notices():
    """Payments into the viewer's portfolio, newest first."""
    items = db.session.scalars(
        select(OfficerNotice)
        .where(OfficerNotice.staff_id == current_user.id)
        .order_by(OfficerNotice.id.desc())
        .limit(100)
    ).all()
    return render_page("payments/notices.html", "content", items=items, action=ActionForm())


@bp.post("/notices/read")
@roles("admin", "officer")
def read_notices():
    """Mark every notice of the viewer read."""
    if not ActionForm().validate():
        abort(400)
    db.session.execute(
        update(OfficerNotice)
        .where(OfficerNotice.staff_id == current_user.id, OfficerNotice.read_at.is_(None))
        .values(read_at=datetime.now(UTC))
    )
    db.session.commit()
    return hx_redirect(url_for("payments.notices"))


def unread_notices() -> int:
    if not current_user.is_authenticated:
        return 0
    return (
        db.session.scalar(
            select(func.count()).where(
                OfficerNotice.staff_id == current_user.id, OfficerNotice.read_at.is_(None)
            )
        )
        or 0
    )


@reports_bp.post("/<token>/delivery")
@public
def delivery_report(token: str):
    """Africa's Talking's delivery report (form fields id, status, failureReason)."""
    row = db.session.get(SmsSettings, 1)
    valid = re.fullmatch(r"[0-9a-f]{32,64}", token) is not None
    if row is None or not valid or not hmac.compare_digest(row.callback_token, token):
        log.warning("delivery report with an unknown token from %s", request.remote_addr)
        abort(404)
    message_id = (request.form.get("id") or "")[:80]
    status = (request.form.get("status") or "")[:40]
    known = sms.record_delivery(
        db.session, message_id, status, (request.form.get("failureReason") or "")[:200]
    )
    db.session.commit()
    return ("OK" if known else "unknown message"), 200


def init_app(app) -> None:
    app.register_blueprint(reports_bp)
    app.context_processor(lambda: {"unread_notices": unread_notices})
