"""What the money screens show (read models, scoped to the viewer): a loan's prompts and
payout, the money overview, a payment's dealings with Safaricom, a shortcode's balances."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from lenders.disbursements import Disbursement, fees_upfront
from lenders.models import Loan, StaffUser
from payments.models import C2BPayment, Shortcode
from payments.money_models import DarajaQuery, Reversal, StkRequest
from payments.visibility import get_payment, in_portfolio

RECENT = 25


def loan_prompts(session: Session, loan_id: int, limit: int = 5) -> list[StkRequest]:
    return list(
        session.scalars(
            select(StkRequest)
            .where(StkRequest.loan_id == loan_id)
            .order_by(StkRequest.id.desc())
            .limit(limit)
        )
    )


def loan_disbursements(session: Session, loan_id: int) -> list[Disbursement]:
    return list(
        session.scalars(
            select(Disbursement)
            .where(Disbursement.loan_id == loan_id)
            .order_by(Disbursement.id.desc())
        )
    )


def visible_disbursement(session: Session, viewer: StaffUser, disbursement_id: int):
    """The payout or refund if the viewer may see it (an officer: a loan of their
    portfolio, or a refund of a payment in it)."""
    found = session.get(Disbursement, disbursement_id)
    if found is None or viewer.is_admin:
        return found
    if found.is_refund:
        return found if get_payment(session, viewer, found.payment_id) is not None else None
    return found if found.loan.officer_id == viewer.id else None


@dataclass
class Overview:
    """The money screen: what waits for an admin, what is in flight, what happened."""

    to_approve: list[Disbursement] = field(default_factory=list)
    in_flight: list[Disbursement] = field(default_factory=list)
    recent: list[Disbursement] = field(default_factory=list)
    refunds_to_approve: list[Disbursement] = field(default_factory=list)
    refunds: list[Disbursement] = field(default_factory=list)
    receipts: dict[int, str] = field(default_factory=dict)  # a refund's payment: its TransID
    reversals: list[Reversal] = field(default_factory=list)
    prompts: list[StkRequest] = field(default_factory=list)
    fees_upfront: bool = False


def overview(session: Session, viewer: StaffUser) -> Overview:
    payouts = (
        select(Disbursement)
        .join(Loan, Loan.id == Disbursement.loan_id)
        .options(selectinload(Disbursement.loan))
    )
    prompts = select(StkRequest).join(Loan, Loan.id == StkRequest.loan_id)
    refunds = (
        select(Disbursement)
        .join(C2BPayment, C2BPayment.id == Disbursement.payment_id)
        .where(Disbursement.purpose == "refund", in_portfolio(viewer))
        .options(selectinload(Disbursement.borrower))
    )
    if not viewer.is_admin:
        payouts = payouts.where(Loan.officer_id == viewer.id)
        prompts = prompts.where(Loan.officer_id == viewer.id)

    def rows(query, *where, oldest_first: bool = False):
        order = Disbursement.id if oldest_first else Disbursement.id.desc()
        return list(session.scalars(query.where(*where).order_by(order).limit(RECENT)))

    found = Overview(fees_upfront=fees_upfront(session))
    found.to_approve = rows(payouts, Disbursement.status == "requested", oldest_first=True)
    found.in_flight = rows(
        payouts, Disbursement.status.in_(("approved", "sent", "ambiguous", "failed"))
    )
    found.recent = rows(payouts, Disbursement.status.in_(("completed", "cancelled")))
    found.refunds_to_approve = rows(refunds, Disbursement.status == "requested", oldest_first=True)
    found.refunds = rows(refunds, Disbursement.status != "requested")
    ids = {d.payment_id for d in found.refunds_to_approve + found.refunds}
    if ids:
        found.receipts = dict(
            session.execute(
                select(C2BPayment.id, C2BPayment.trans_id).where(C2BPayment.id.in_(ids))
            ).all()
        )
    found.prompts = list(session.scalars(prompts.order_by(StkRequest.id.desc()).limit(RECENT)))
    if viewer.is_admin:
        found.reversals = list(
            session.scalars(select(Reversal).order_by(Reversal.id.desc()).limit(RECENT))
        )
    return found


def paying_shortcodes(session: Session) -> list[Shortcode]:
    """Shortcodes that can pay out (they have a B2C initiator)."""
    return list(
        session.scalars(
            select(Shortcode)
            .where(Shortcode.initiator_name.is_not(None), Shortcode.initiator_password.is_not(None))
            .order_by(Shortcode.number)
        )
    )


def payment_dealings(
    session: Session, payment_id: int
) -> tuple[list[Reversal], DarajaQuery | None]:
    """A payment's reversals (newest first) and its latest Transaction Status query."""
    reversals = list(
        session.scalars(
            select(Reversal).where(Reversal.payment_id == payment_id).order_by(Reversal.id.desc())
        )
    )
    status = session.scalar(
        select(DarajaQuery)
        .where(DarajaQuery.payment_id == payment_id, DarajaQuery.kind == "status")
        .order_by(DarajaQuery.id.desc())
        .limit(1)
    )
    return reversals, status


def disbursement_status_query(session: Session, disbursement_id: int) -> DarajaQuery | None:
    return session.scalar(
        select(DarajaQuery)
        .where(DarajaQuery.disbursement_id == disbursement_id)
        .order_by(DarajaQuery.id.desc())
        .limit(1)
    )
