"""The SMS provider's settings and the receipt templates, as admins edit them, and the
messages a member of staff may read. Services: they take the session and plain values and
never commit."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from lenders.models import StaffUser
from payments import sms
from payments.models import C2BPayment, SmsMessage, SmsSettings, SmsTemplate
from payments.visibility import visible_payments

# What the template previews fill in.
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


CHECK_PROVIDER = "Check the provider settings: hours are 0 to 23, sender ID at most 11 characters."


class SmsSettingsError(ValueError):
    """Settings or a template refused; the message is for the admin."""


def shown_settings(session: Session) -> SmsSettings:
    """The saved provider settings, or the defaults a first visit shows: reading writes
    nothing (the row and its delivery-report token are made when an admin saves)."""
    saved = session.get(SmsSettings, 1)
    return saved or SmsSettings(id=1, provider="console", quiet_start=21, quiet_end=7)


def settings_row(session: Session) -> SmsSettings:
    """The one settings row to save into, made on the first save."""
    row = session.get(SmsSettings, 1)
    if row is None:
        row = SmsSettings(id=1)
        session.add(row)
        session.flush()
    return row


def save_provider(
    session: Session,
    *,
    provider: str,
    username: str,
    api_key: str,
    sender_id: str,
    quiet_start: int,
    quiet_end: int,
) -> SmsSettings:
    """Save the provider; an empty API key keeps the stored one.

    :raise SmsSettingsError: an hour outside 0-23, or Africa's Talking without a username
        and an API key (nothing is changed then)."""
    if not (0 <= quiet_start < 24 and 0 <= quiet_end < 24):
        raise SmsSettingsError(CHECK_PROVIDER)
    row = settings_row(session)
    username, api_key = username.strip(), api_key.strip()
    if provider == "africastalking" and not (username and (api_key or row.api_key)):
        raise SmsSettingsError("Africa's Talking needs a username and an API key.")
    row.provider, row.username = provider, username or None
    row.sender_id = sender_id.strip() or None
    row.quiet_start, row.quiet_end = quiet_start, quiet_end
    if api_key:
        row.api_key = api_key
    return row


def save_template(
    session: Session, key: str, language: str, body: str, *, actor: StaffUser
) -> SmsTemplate:
    """Save one receipt template.

    :raise SmsSettingsError: an unknown variable or another problem the borrower would see."""
    problems = sms.template_problems(body)
    if problems:
        raise SmsSettingsError(f"Template not saved: {'; '.join(problems)}.")
    row = session.get(SmsTemplate, (key, language)) or SmsTemplate(key=key, language=language)
    row.body, row.updated_by_id = body.strip(), actor.id
    session.add(row)
    return row


def template_previews(session: Session) -> list[dict]:
    """Every template in both languages, with its text filled in from ``SAMPLE``."""
    previews = []
    for key in sms.TEMPLATE_KEYS:
        for language in ("en", "sw"):
            text = sms.template_text(session, key, language)
            previews.append(
                {
                    "key": key,
                    "language": language,
                    "body": text,
                    "preview": sms.render(text, SAMPLE),
                }
            )
    return previews


def messages_for(session: Session, viewer: StaffUser, kind: str, item_id: int) -> list[SmsMessage]:
    """A payment's (``kind`` "payment") or a borrower's messages, newest first. A borrower
    with loans in two portfolios gets receipts for both: an officer sees those of payments
    in theirs."""
    column = SmsMessage.payment_id if kind == "payment" else SmsMessage.borrower_id
    query = select(SmsMessage).where(column == item_id)
    if not viewer.is_admin:
        mine = visible_payments(viewer).with_only_columns(C2BPayment.id)
        query = query.where(or_(SmsMessage.payment_id.is_(None), SmsMessage.payment_id.in_(mine)))
    return list(session.scalars(query.order_by(SmsMessage.id.desc())))
