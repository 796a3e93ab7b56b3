"""Staff access: adding people, changing their access, a borrower's SMS preferences.
Services: they take the session and plain values, audit every change, never commit."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lenders.book import record_audit
from lenders.models import Borrower, StaffUser


class StaffError(ValueError):
    """A change to someone's access that is refused; the message is for the admin."""


def save_staff(
    session: Session, *, email: str, name: str, role: str, password: str, actor: StaffUser
) -> StaffUser:
    """Add a member of staff, or update (and reactivate) the one with this e-mail. A new
    password ends that person's other sessions."""
    email = email.strip().lower()
    user = session.scalar(select(StaffUser).where(func.lower(StaffUser.email) == email))
    created = user is None
    if created:
        user = StaffUser(email=email, name=name, role=role)
        session.add(user)
    user.name, user.role, user.active = name.strip(), role, True
    user.set_password(password)
    record_audit(
        session,
        "staff.created" if created else "staff.updated",
        user,
        actor=actor,
        after={"email": email, "role": user.role},
    )
    return user


def change_access(session: Session, user: StaffUser, action: str, *, actor: StaffUser) -> None:
    """``deactivate`` (which ends every session), ``activate``, or ``end_sessions``.
    Nobody changes their own access here (they could lock the last admin out).

    :raise StaffError: for a change to one's own access."""
    if user.id == actor.id and action != "end_sessions":
        raise StaffError("You cannot change your own access here.")
    before = {"active": user.active}
    if action == "deactivate":
        user.active = False
    elif action == "activate":
        user.active = True
    user.end_sessions()
    record_audit(
        session, f"staff.{action}", user, actor=actor, before=before, after={"active": user.active}
    )


def set_sms_preferences(
    session: Session, borrower: Borrower, *, language: str, opt_out: bool, actor: StaffUser
) -> None:
    """The borrower's SMS language and opt-out, audited."""
    before = {"sms_language": borrower.sms_language, "sms_opt_out": borrower.sms_opt_out}
    borrower.sms_language, borrower.sms_opt_out = language, opt_out
    record_audit(
        session,
        "borrower.sms",
        borrower,
        actor=actor,
        before=before,
        after={"sms_language": language, "sms_opt_out": opt_out},
    )
