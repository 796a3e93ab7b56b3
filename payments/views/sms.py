"""SMS (/payments/sms/, admins): the provider, the receipt templates with a live
preview, recent messages; and the messages about one payment or borrower, which those
pages load."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, request, url_for
from flask_login import current_user
from sqlalchemy import select

from lenders.extensions import db
from lenders.forms import ActionForm
from lenders.queries import get_borrower
from lenders.web import render_fragment, render_page, roles
from payments import sms
from payments.forms import ProviderForm, TemplateForm
from payments.models import SmsMessage
from payments.sms_settings import (
    CHECK_PROVIDER,
    SAMPLE,
    SmsSettingsError,
    messages_for,
    save_provider,
    save_template,
    shown_settings,
    template_previews,
)
from payments.visibility import get_payment

bp = Blueprint("sms", __name__, url_prefix="/payments/sms")
PAGE = "payments/sms/index.html"


@bp.get("/")
@roles("admin")
def index():
    """The SMS provider, the receipt templates with a live preview, and recent messages."""
    row = shown_settings(db.session)  # a GET writes nothing
    form = ProviderForm(obj=row, formdata=None)
    form.api_key.data = ""
    form.quiet_start.data, form.quiet_end.data = str(row.quiet_start), str(row.quiet_end)
    recent = db.session.scalars(select(SmsMessage).order_by(SmsMessage.id.desc()).limit(20)).all()
    return render_page(
        PAGE,
        "content",
        form=form,
        row=row,
        templates=template_previews(db.session),
        variables=sms.VARIABLES,
        recent=recent,
        segments=sms.segments,
        action=ActionForm(),
    )


def _back(message: str):
    """To the SMS page, with the message."""
    flash(message)
    return redirect(url_for("sms.index"), code=303)


@bp.post("/provider")
@roles("admin")
def provider():
    """Save the provider; an empty API key keeps the stored one."""
    form = ProviderForm()
    if not form.validate():
        return _back(CHECK_PROVIDER)
    try:
        save_provider(
            db.session,
            provider=form.provider.data,
            username=form.username.data or "",
            api_key=form.api_key.data or "",
            sender_id=form.sender_id.data or "",
            quiet_start=int(form.quiet_start.data),
            quiet_end=int(form.quiet_end.data),
        )
    except SmsSettingsError as exc:
        db.session.rollback()
        return _back(str(exc))
    db.session.commit()
    return _back("SMS provider saved.")


@bp.post("/templates")
@roles("admin")
def template():
    """Save one template (key and language); one with a problem is not saved, and the
    page says why."""
    form = TemplateForm()
    if not form.validate() or form.key.data not in sms.TEMPLATE_KEYS:
        abort(400)
    try:
        save_template(
            db.session, form.key.data, form.language.data, form.body.data, actor=current_user
        )
    except SmsSettingsError as exc:
        return _back(str(exc))
    db.session.commit()
    return _back(f"Template {form.key.data} ({form.language.data}) saved.")


@bp.post("/preview")
@roles("admin")
def preview():
    """The template as a borrower would read it, with its SMS count, while the admin types."""
    text = sms.render(request.form.get("body", "")[:600], SAMPLE)
    count, encoding = sms.segments(text)
    return render_fragment(PAGE, "preview", text=text, count=count, encoding=encoding)


@bp.get("/for/<any(payment, borrower):kind>/<int:item_id>")
@roles("admin", "officer")
def messages(kind: str, item_id: int):
    """Messages about a payment or to a borrower (loaded into those pages)."""
    if kind == "payment" and get_payment(db.session, current_user, item_id) is None:
        abort(404)
    if kind == "borrower" and get_borrower(db.session, current_user, item_id) is None:
        abort(404)
    found = messages_for(db.session, current_user, kind, item_id)
    return render_fragment(PAGE, "messages", messages=found)
