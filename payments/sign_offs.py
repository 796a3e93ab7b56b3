"""An admin's sign-off of a shortcode's Nairobi day, and the signed-off days whose figures
moved since (flagged on the dashboard)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from lenders.book import record_audit
from lenders.models import StaffUser
from lenders.web import nairobi_today
from payments.daily_close import close_day, fingerprints
from payments.models import Shortcode
from payments.reconciliation_models import ReconciliationSignOff


class CloseError(ValueError):
    """A sign-off refused; the message is for the admin."""


def sign_off(
    session: Session, shortcode: Shortcode, day: date, *, actor: StaffUser, note: str = ""
) -> ReconciliationSignOff:
    """An admin signs the day off (again, after a change), with the figures signed."""
    if not actor.is_admin:
        raise CloseError("only an admin signs a day off")
    if day >= nairobi_today():
        raise CloseError("a day is signed off once it is over (Nairobi time)")
    close = close_day(session, shortcode, day)
    signed = close.sign_off or ReconciliationSignOff(shortcode_id=shortcode.id, day=day)
    before = dict(signed.figures or {}) if close.sign_off else None
    signed.figures = close.as_json() | {"fingerprint": close.fingerprint}
    signed.figures.pop("changed_since_sign_off", None)
    signed.signed_off_by_id, signed.signed_off_at = actor.id, datetime.now(UTC)
    signed.note = (note or "").strip()[:500] or None
    session.add(signed)
    session.flush()
    record_audit(
        session,
        "reconciliation.signed_off",
        signed,
        actor=actor,
        before={"fingerprint": before.get("fingerprint")} if before else None,
        after={k: signed.figures[k] for k in ("date", "shortcode", "received", "variance")},
        reason=signed.note,
    )
    return signed


def changed_days(
    session: Session, since_days: int = 120
) -> list[tuple[ReconciliationSignOff, dict]]:
    """Signed-off days whose figures have moved since, newest first."""
    signed = session.scalars(
        select(ReconciliationSignOff)
        .where(ReconciliationSignOff.day >= nairobi_today() - timedelta(days=since_days))
        .order_by(ReconciliationSignOff.day.desc())
    ).all()
    now = fingerprints(session, [(s.shortcode_id, s.day) for s in signed])
    return [
        (s, now[(s.shortcode_id, s.day)])
        for s in signed
        if s.figures.get("fingerprint") != now[(s.shortcode_id, s.day)]
    ]
