"""Paying a loan out (DESIGN.md, "Money out and back"): the disbursement of a ``pending``
loan, requested by an officer or admin and approved by a different admin (maker-checker),
then sent by B2C and settled by Safaricom's word.

This module is the book's side: the row and its state machine, who may move it, and what
completion does to the loan (it becomes ``active`` with its schedule counted from the
moment the money reached the borrower). Talking to Daraja is the payments package's work
(``payments/disbursing.py``): approving wakes its ``money`` drain.

States: ``requested`` → ``approved`` → ``sent`` → ``completed``; ``sent`` → ``ambiguous``
(a timeout, no answer, an HTTP failure: only a Transaction Status query settles it, nothing
is sent again before) → ``completed`` or ``failed``; ``failed`` → ``approved`` again (a
retry) or ``cancelled``. One disbursement per loan is alive at a time (a partial unique
index), so a loan is never paid out twice by two requests.

A disbursement's ``purpose`` is ``loan`` (the payout above) or ``refund``: borrower credit a
posted C2B payment left, paid back to the borrower's phone by the same B2C path. A refund
holds its credit from the moment it is requested (``borrower.credit`` goes down, never
below zero), gives it back when it is cancelled or fails, and keeps it spent when it is
completed; each of those moves is one audit event on the borrower. Which payment's credit
may be refunded is the payments package's business (payments/refunds.py): the book only
knows the payment by its key. A failed refund is not retried: its credit is back with the
borrower, and a new request is made (and approved) if the money should go again.

Services take the session and plain values, never commit, and write an audit event."""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import CheckConstraint, ForeignKey, Index, Numeric, String, Text, select, text
from sqlalchemy import update as sql_update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from lenders.book import loan_snapshot, lock_loan, record_audit
from lenders.extensions import db
from lenders.jobs import wake_on_commit
from lenders.models import (
    Borrower,
    Installment,
    Loan,
    Setting,
    StaffUser,
    UTCDateTime,
    utcnow,
)
from lenders.money import format_kes
from lenders.schedule import build_schedule

NAIROBI = ZoneInfo("Africa/Nairobi")
DISBURSEMENT_STATUSES = (
    "requested",
    "approved",
    "sent",
    "completed",
    "failed",
    "ambiguous",
    "cancelled",
)
IN_FLIGHT = ("sent", "ambiguous")  # Safaricom may have it: only its word settles it
CANCELLABLE = ("requested", "approved", "failed")
PURPOSES = ("loan", "refund")
# A refund in these states holds its amount of the borrower's credit (spent, once completed).
HOLDING = ("requested", "approved", "sent", "ambiguous", "completed")
FEES_UPFRONT = "disbursement_fees_upfront"
B2C_MIN, B2C_MAX = Decimal("10"), Decimal("250000")  # KES per B2C payment (REFERENCE §7.2)
_LIVE = "status <> 'cancelled'"


class DisbursementError(ValueError):
    """A disbursement step refused; the message is for the person who asked."""


class Disbursement(db.Model):
    """One payout of a loan to its borrower's phone, with Safaricom's side of it."""

    __tablename__ = "disbursement"
    __table_args__ = (
        CheckConstraint(
            "status IN ('requested', 'approved', 'sent', 'completed', 'failed', "
            "'ambiguous', 'cancelled')",
            name="status",
        ),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("purpose IN ('loan', 'refund')", name="purpose"),
        CheckConstraint(
            "(purpose = 'loan' AND loan_id IS NOT NULL AND payment_id IS NULL) OR "
            "(purpose = 'refund' AND loan_id IS NULL AND payment_id IS NOT NULL "
            "AND borrower_id IS NOT NULL)",
            name="purpose_target",
        ),
        Index(
            "uq_disbursement_live_loan",
            "loan_id",
            unique=True,
            sqlite_where=text(_LIVE),
            postgresql_where=text(_LIVE),
        ),
        Index("ix_disbursement_status_check_after", "status", "check_after"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    purpose: Mapped[str] = mapped_column(String(8), default="loan", server_default="loan")
    loan_id: Mapped[int | None] = mapped_column(ForeignKey("loan.id"), index=True)
    # A refund: the C2B payment whose credit goes back (a row of the payments package's
    # table, named here only by its key) and the borrower whose credit it is.
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("c2b_payment.id"), index=True)
    borrower_id: Mapped[int | None] = mapped_column(ForeignKey("borrower.id"), index=True)
    note: Mapped[str | None] = mapped_column(Text)  # why it was asked for (a refund's reason)
    amount: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    fees_deducted: Mapped[Decimal] = mapped_column(Numeric(14, 2), default=Decimal("0.00"))
    phone: Mapped[str] = mapped_column(String(12))
    status: Mapped[str] = mapped_column(String(12), default="requested")
    requested_by_id: Mapped[int] = mapped_column(ForeignKey("staff_user.id"))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    approved_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id"))
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Safaricom's side, written by payments/disbursing.py. The paying shortcode is a row of
    # the payments package's table, named here only by its key.
    shortcode_id: Mapped[int | None] = mapped_column(ForeignKey("shortcode.id"))
    attempt: Mapped[int] = mapped_column(default=1)
    # Our id for the B2C v3 request: Safaricom refuses a second request with it, so a
    # resend can never pay twice. A new attempt gets a new one only once Safaricom has
    # answered the old one with a failure (it will not take it again).
    originator_conversation_id: Mapped[str] = mapped_column(String(64), unique=True)
    callback_token: Mapped[str] = mapped_column(
        String(64), unique=True, default=lambda: secrets.token_hex(20)
    )
    conversation_id: Mapped[str | None] = mapped_column(String(64))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    check_after: Mapped[datetime | None] = mapped_column(UTCDateTime)  # ask Safaricom then
    status_checks: Mapped[int] = mapped_column(default=0)
    result_code: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)  # why it failed or is ambiguous, in words
    receipt: Mapped[str | None] = mapped_column(String(32))
    receiver_name: Mapped[str | None] = mapped_column(String(200))
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    loan: Mapped[Loan | None] = relationship()
    borrower: Mapped[Borrower | None] = relationship()
    requested_by: Mapped[StaffUser] = relationship(foreign_keys=[requested_by_id])
    approved_by: Mapped[StaffUser | None] = relationship(foreign_keys=[approved_by_id])

    def __repr__(self) -> str:
        return f"<Disbursement {self.id} loan={self.loan_id} {self.status}>"

    @property
    def settled(self) -> bool:
        return self.status in ("completed", "cancelled")

    @property
    def is_refund(self) -> bool:
        return self.purpose == "refund"

    @property
    def word(self) -> str:
        """What the audit trail calls it: ``disbursement`` or ``refund``."""
        return "refund" if self.is_refund else "disbursement"

    @property
    def subject(self):
        """What its audit events are about: the loan paid out, or the borrower refunded."""
        return self.borrower if self.is_refund else self.loan

    @property
    def payee(self) -> Borrower:
        return self.borrower if self.is_refund else self.loan.borrower


def new_originator_id(disbursement_id: int, attempt: int) -> str:
    """``MJ000042-1-9f3a0c1e``: the disbursement, its attempt, and a few random characters
    so that a restored or reset database can never hand Safaricom an id it has seen."""
    return f"MJ{disbursement_id:06d}-{attempt}-{secrets.token_hex(4)}"


def snapshot(disbursement: Disbursement) -> dict:
    shown = {
        "status": disbursement.status,
        "amount": str(disbursement.amount),
        "attempt": disbursement.attempt,
        "originator_conversation_id": disbursement.originator_conversation_id,
    }
    if disbursement.is_refund:
        shown["payment_id"] = disbursement.payment_id
    return shown


def _audit(session: Session, step: str, d: Disbursement, **kw) -> None:
    """``disbursement.<step>`` on the loan, or ``refund.<step>`` on the borrower."""
    after = snapshot(d) | {"disbursement_id": d.id} | kw.pop("after", {})
    record_audit(session, f"{d.word}.{step}", d.subject, after=after, **kw)


# --- a refund's hold on the borrower's credit --------------------------------------------


def lock_borrower(session: Session, borrower_id: int) -> Borrower:
    """The borrower after a write on its row: whoever else moves its credit waits for this
    transaction (a row lock on PostgreSQL, the write lock on SQLite), and the row is
    read fresh."""
    session.execute(
        sql_update(Borrower)
        .where(Borrower.id == borrower_id)
        .values(credit=Borrower.credit)
        .execution_options(synchronize_session=False)
    )
    return session.scalars(
        select(Borrower).where(Borrower.id == borrower_id).execution_options(populate_existing=True)
    ).one()


def _move_credit(session: Session, borrower_id: int, change: Decimal) -> tuple[Decimal, Decimal]:
    """Add ``change`` (negative: take) to the borrower's credit in one guarded write:
    (before, after). Raises DisbursementError rather than leave it below zero."""
    moved = session.execute(
        sql_update(Borrower)
        .where(Borrower.id == borrower_id, Borrower.credit + change >= 0)
        .values(credit=Borrower.credit + change)
        .execution_options(synchronize_session=False)
    ).rowcount
    borrower = session.scalars(
        select(Borrower).where(Borrower.id == borrower_id).execution_options(populate_existing=True)
    ).one()
    if not moved:
        raise DisbursementError(
            f"{borrower.name} has {format_kes(borrower.credit)} of credit, "
            f"not {format_kes(-change)}"
        )
    return borrower.credit - change, borrower.credit


def hold_credit(session: Session, d: Disbursement, step: str, *, actor=None, reason=None):
    """Take a refund's amount from its borrower's credit (it is held, then spent), with
    its audit event. Raises DisbursementError when the credit is short."""
    _refund_credit(session, d, step, -d.amount, actor=actor, reason=reason)


def give_back_credit(session: Session, d: Disbursement, step: str, *, actor=None, reason=None):
    """A refund that did not pay: its amount is the borrower's credit again, audited."""
    _refund_credit(
        session, d, step, d.amount, actor=actor, reason=reason,
        noted={"credit_given_back": str(d.amount)},
    )  # fmt: skip


def _refund_credit(session, d: Disbursement, step: str, change: Decimal, *, noted=None, **kw):
    before, after = _move_credit(session, d.borrower_id, change)
    _audit(
        session,
        step,
        d,
        before={"credit": str(before)},
        after={"credit": str(after)} | (noted or {}),
        **kw,
    )


def _status_now(session: Session, disbursement_id: int) -> str | None:
    return session.scalar(select(Disbursement.status).where(Disbursement.id == disbursement_id))


# --- what is paid out ---------------------------------------------------------------------


def fees_upfront(session: Session) -> bool:
    """The lender's rule: are a loan's fees kept back from the payout?"""
    setting = session.get(Setting, FEES_UPFRONT)
    return bool(setting and setting.value.get("on"))


def set_fees_upfront(session: Session, on: bool, *, actor: StaffUser) -> None:
    setting = session.get(Setting, FEES_UPFRONT) or Setting(key=FEES_UPFRONT, value={})
    before = dict(setting.value or {})
    setting.value, setting.updated_by_id = {"on": bool(on)}, actor.id
    session.add(setting)
    session.flush()
    record_audit(
        session, "setting.changed", setting, actor=actor, before=before, after=setting.value
    )


def payout_amount(session: Session, loan: Loan) -> tuple[Decimal, Decimal]:
    """(what the borrower receives, the fees kept back)."""
    fees = loan.fees if fees_upfront(session) else Decimal("0.00")
    return loan.principal - fees, fees


def live_disbursement(session: Session, loan_id: int) -> Disbursement | None:
    return session.scalar(
        select(Disbursement).where(
            Disbursement.loan_id == loan_id, Disbursement.status != "cancelled"
        )
    )


# --- the maker and the checker ------------------------------------------------------------


def request_disbursement(
    session: Session, loan: Loan, *, actor: StaffUser, phone: str | None = None
) -> Disbursement:
    """Ask for a pending loan to be paid out to one of its borrower's phones. Refused for
    a loan that is not pending, one already being paid out, an amount M-Pesa cannot pay,
    or an officer's request outside their portfolio."""
    if not actor.is_admin and loan.officer_id != actor.id:
        raise DisbursementError(f"loan {loan.number} is outside your portfolio")
    if loan.status != "pending":
        raise DisbursementError(
            f"loan {loan.number} is {loan.status.replace('_', ' ')}: "
            "only a pending loan is paid out"
        )
    if (existing := live_disbursement(session, loan.id)) is not None:
        raise DisbursementError(
            f"loan {loan.number} already has a disbursement ({existing.status})"
        )
    phones = [p.number for p in loan.borrower.phones]
    if not phones:
        raise DisbursementError(f"{loan.borrower.name} has no phone to pay to")
    chosen = phone or phones[0]
    if chosen not in phones:
        raise DisbursementError("pay to one of the borrower's own phones")
    amount, fees = payout_amount(session, loan)
    if amount != amount.to_integral_value():
        raise DisbursementError(f"M-Pesa pays whole shillings; {format_kes(amount)} has cents")
    if not B2C_MIN <= amount <= B2C_MAX:
        raise DisbursementError("M-Pesa pays between KES 10 and KES 250,000 in one payment")
    disbursement = Disbursement(
        loan_id=loan.id,
        amount=amount,
        fees_deducted=fees,
        phone=chosen,
        requested_by_id=actor.id,
        originator_conversation_id=f"pending-{secrets.token_hex(8)}",
    )
    try:
        with session.begin_nested():  # the partial unique index refuses a second live one
            session.add(disbursement)
    except IntegrityError:
        raise DisbursementError(f"loan {loan.number} already has a disbursement") from None
    disbursement.originator_conversation_id = new_originator_id(disbursement.id, 1)
    record_audit(
        session,
        "disbursement.requested",
        loan,
        actor=actor,
        after=snapshot(disbursement) | {"disbursement_id": disbursement.id},
    )
    return disbursement


def _claim(session: Session, disbursement_id: int, statuses, **values) -> Disbursement | None:
    """Move the row out of ``statuses`` by one write: of two people (or workers) acting at
    once, the second finds it moved on. The row comes back fresh, or None."""
    moved = session.execute(
        sql_update(Disbursement)
        .where(Disbursement.id == disbursement_id, Disbursement.status.in_(statuses))
        .values(updated_at=datetime.now(UTC), **values)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not moved:
        return None
    return session.scalars(
        select(Disbursement)
        .where(Disbursement.id == disbursement_id)
        .execution_options(populate_existing=True)
    ).one()


def _refuse_moved(session: Session, disbursement_id: int, wanted: str) -> DisbursementError:
    current = session.get(Disbursement, disbursement_id)
    if current is None:
        return DisbursementError("no such disbursement")
    session.refresh(current)
    return DisbursementError(f"this disbursement is {current.status}, not {wanted}")


def approve_disbursement(
    session: Session,
    disbursement_id: int,
    *,
    actor: StaffUser,
    shortcode_id: int | None = None,
    available: Decimal | None = None,
) -> Disbursement:
    """A second admin lets the money go: the drain sends it once the caller commits.
    ``available`` is the utility account's balance as last reported; when it is known
    and short of the amount, nothing is approved."""
    current = session.get(Disbursement, disbursement_id)
    if current is None:
        raise DisbursementError("no such disbursement")
    if not actor.is_admin:
        raise DisbursementError("only an admin approves a disbursement")
    if current.requested_by_id == actor.id:
        raise DisbursementError("a disbursement is approved by someone other than who asked")
    if available is not None and available < current.amount:
        raise DisbursementError(
            f"insufficient funds: the utility account has {format_kes(available)}, "
            f"the payout is {format_kes(current.amount)}; top it up first"
        )
    values = {"approved_by_id": actor.id, "approved_at": datetime.now(UTC), "status": "approved"}
    if shortcode_id is not None:
        values["shortcode_id"] = shortcode_id
    approved = _claim(session, disbursement_id, ("requested",), **values)
    if approved is None:
        raise _refuse_moved(session, disbursement_id, "waiting for approval")
    _audit(session, "approved", approved, actor=actor)
    wake_on_commit(session, "money")
    return approved


def cancel_disbursement(
    session: Session, disbursement_id: int, *, actor: StaffUser, reason: str = ""
) -> Disbursement:
    """Stop a payout that has not left (or failed): by its requester or an admin."""
    current = session.get(Disbursement, disbursement_id)
    if current is None:
        raise DisbursementError("no such disbursement")
    if not actor.is_admin and current.requested_by_id != actor.id:
        raise DisbursementError("only its requester or an admin cancels a disbursement")
    prior = _status_now(session, disbursement_id)
    # From the state just read, so a refund's credit is given back exactly once.
    cancelled = _claim(
        session, disbursement_id, (prior,) if prior in CANCELLABLE else (), status="cancelled"
    )
    if cancelled is None:
        raise _refuse_moved(session, disbursement_id, "cancellable")
    why = (reason or "").strip()[:500] or None
    if cancelled.is_refund and prior in HOLDING:
        give_back_credit(session, cancelled, "cancelled", actor=actor, reason=why)
    else:
        _audit(session, "cancelled", cancelled, actor=actor, reason=why)
    return cancelled


def retry_disbursement(session: Session, disbursement_id: int, *, actor: StaffUser) -> Disbursement:
    """Send a failed payout again, approved by an admin other than its requester. Our id
    is kept unless Safaricom answered it with a failure (it would refuse it as a repeat)."""
    current = session.get(Disbursement, disbursement_id)
    if current is None:
        raise DisbursementError("no such disbursement")
    if current.is_refund:
        raise DisbursementError(
            "a failed refund is not sent again: its credit is back with the borrower; "
            "request a new refund"
        )
    if not actor.is_admin or current.requested_by_id == actor.id:
        raise DisbursementError("a retry is approved by an admin other than the requester")
    values: dict = {"status": "approved", "approved_by_id": actor.id, "reason": None}
    if current.result_code is not None:  # Safaricom used the old id up
        values |= {"attempt": current.attempt + 1, "result_code": None, "conversation_id": None}
        values["originator_conversation_id"] = new_originator_id(current.id, current.attempt + 1)
    retried = _claim(session, disbursement_id, ("failed",), status_checks=0, **values)
    if retried is None:
        raise _refuse_moved(session, disbursement_id, "failed")
    _audit(session, "retried", retried, actor=actor)
    wake_on_commit(session, "money")
    return retried


# --- Safaricom's word ---------------------------------------------------------------------


def complete_disbursement(
    session: Session,
    disbursement_id: int,
    *,
    receipt: str,
    receiver_name: str,
    completed_at: datetime | None,
    how: str,
) -> Disbursement | None:
    """Safaricom says the money reached the borrower: the disbursement is completed once
    (None when it was already) and its loan becomes active, its schedule counted from the
    completion day. Applies even after a failure or a cancellation was recorded: the money
    has left, and the book must say so."""
    when = completed_at or datetime.now(UTC)
    prior = _status_now(session, disbursement_id)
    done = _claim(
        session,
        disbursement_id,
        (prior,) if prior != "completed" else (),
        status="completed",
        receipt=(receipt or None),
        receiver_name=(receiver_name or "")[:200] or None,
        completed_at=when.astimezone(UTC),
        check_after=None,
        reason=None,
    )
    if done is None:
        return None
    if done.is_refund:
        _refund_completed(session, done, prior, receipt=receipt, how=how)
        return done
    _audit(session, "completed", done, after={"receipt": receipt})
    activate_loan(session, done.loan_id, when.astimezone(NAIROBI).date(), how)
    return done


def _refund_completed(
    session: Session, done: Disbursement, prior: str, *, receipt: str, how: str
) -> None:
    """The refund's held credit stays spent. Paid after a failure or a cancellation gave
    it back: it is taken again, as far as the borrower's credit goes (never below zero),
    and what it could not cover is said in the audit event for a person to settle."""
    if prior in HOLDING:
        after = {"receipt": receipt, "credit_spent": str(done.amount)}
        _audit(session, "completed", done, after=after, reason=how)
        return
    borrower = lock_borrower(session, done.borrower_id)
    taken = min(done.amount, borrower.credit)
    before, left = _move_credit(session, done.borrower_id, -taken)
    short = done.amount - taken
    _audit(
        session,
        "completed",
        done,
        before={"credit": str(before)},
        after={"credit": str(left), "receipt": receipt, "credit_spent": str(taken)}
        | ({"not_covered_by_credit": str(short)} if short else {}),
        reason=f"{how}: paid after it was recorded {prior}"
        + (f"; {format_kes(short)} was not covered by credit" if short else ""),
    )


def activate_loan(session: Session, loan_id: int, disbursed_on: date, how: str) -> Loan:
    """A pending loan paid out on ``disbursed_on`` becomes active with its schedule from
    then (it has taken no repayment: a pending loan cannot)."""
    loan = lock_loan(session, loan_id)
    if loan.status != "pending":
        return loan
    before = loan_snapshot(loan) | {"disbursed_on": loan.disbursed_on.isoformat()}
    loan.installments.clear()
    session.flush()  # the old rows go before the new take their (loan, seq)
    for seq, due_on, amount in build_schedule(
        loan.total_due, disbursed_on, loan.installment_count, loan.frequency
    ):
        loan.installments.append(Installment(seq=seq, due_on=due_on, amount_due=amount))
    loan.disbursed_on, loan.status = disbursed_on, "active"
    session.flush()
    record_audit(
        session,
        "loan.disbursed",
        loan,
        before=before,
        after=loan_snapshot(loan) | {"disbursed_on": disbursed_on.isoformat()},
        reason=how,
    )
    return loan


def fail_disbursement(
    session: Session,
    disbursement_id: int,
    reason: str,
    *,
    result_code: str | None = None,
    statuses=IN_FLIGHT,
) -> Disbursement | None:
    """No money left: say why in words. None when the row was not in ``statuses``."""
    values = {"status": "failed", "reason": reason[:1000], "check_after": None}
    if result_code is not None:
        values["result_code"] = result_code
    prior = _status_now(session, disbursement_id)
    failed = _claim(session, disbursement_id, (prior,) if prior in statuses else (), **values)
    if failed is None:
        return None
    if failed.is_refund and prior in HOLDING:
        give_back_credit(session, failed, "failed", reason=reason[:500])
    else:
        _audit(session, "failed", failed, after={"result_code": result_code}, reason=reason[:500])
    return failed


def mark_ambiguous(
    session: Session, disbursement_id: int, reason: str, *, check_after: datetime
) -> Disbursement | None:
    """Safaricom may or may not have paid: nothing is sent again until Transaction Status
    says which. None when the row was no longer ``sent``."""
    unsure = _claim(
        session,
        disbursement_id,
        ("sent", "ambiguous"),
        status="ambiguous",
        reason=reason[:1000],
        check_after=check_after,
    )
    if unsure is not None:
        _audit(session, "ambiguous", unsure, reason=reason[:500])
    return unsure
