"""The transactions CSV (CONTRACT §6): masked MSISDNs only; written by lenders.csvfile."""

from __future__ import annotations

from collections.abc import Iterator
from zoneinfo import ZoneInfo

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, selectinload

from lenders.models import BorrowerPhone, Repayment
from lenders.phones import mask_phone
from payments.models import C2BPayment, Shortcode
from payments.parsing import masked_parts

NAIROBI = ZoneInfo("Africa/Nairobi")
TRANSACTION_COLUMNS = (
    "trans_id",
    "shortcode",
    "trans_time",
    "amount",
    "msisdn",
    "bill_ref",
    "status",
    "rule",
    "allocations",
    "credit",
    "note",
)


def shown_msisdn(payment: C2BPayment, phones_by_hash: dict[str, str]) -> str:
    """Never the full number or the hash: ``2547****5678``, or the masked form as sent."""
    if payment.msisdn_form == "plain":
        return mask_phone("".join(ch for ch in payment.msisdn if ch.isdigit()))
    if payment.msisdn_form == "masked":
        parts = masked_parts(payment.msisdn)
        return f"{parts[0]}****{parts[1]}" if parts else ""
    if payment.msisdn_form == "hashed":
        number = phones_by_hash.get(payment.msisdn.lower())
        return mask_phone(number) if number else ""
    return ""


def transaction_rows(session: Session, query: Select | None = None) -> Iterator[list]:
    """Header, then one row per payment of ``query`` (all payments by default), for
    ``lenders.csvfile``: amounts as Decimal, the time in Nairobi, text as stored."""
    query = query if query is not None else select(C2BPayment).order_by(C2BPayment.id)
    query = query.options(
        selectinload(C2BPayment.repayments).selectinload(Repayment.loan),
        selectinload(C2BPayment.shortcode),
    ).execution_options(yield_per=1000)
    yield list(TRANSACTION_COLUMNS)
    for chunk in session.scalars(query).partitions():
        hashes = [p.msisdn.lower() for p in chunk if p.msisdn_form == "hashed"]
        phones = (
            dict(
                session.execute(
                    select(BorrowerPhone.sha256, BorrowerPhone.number).where(
                        BorrowerPhone.sha256.in_(hashes)
                    )
                ).all()
            )
            if hashes
            else {}
        )
        for p in chunk:
            live = [r for r in p.repayments if not r.reversed]
            allocations = ";".join(f"{r.loan.number}:{r.amount:.2f}" for r in live if r.amount > 0)
            yield [
                p.trans_id,
                p.shortcode.number,
                p.trans_time.astimezone(NAIROBI),
                p.amount,
                shown_msisdn(p, phones),
                p.bill_ref,
                p.status,
                p.rule or "",
                allocations,
                sum((r.to_credit for r in live), start=p.credit * 0),
                p.reason or p.error or "",
            ]


def shortcode_json(shortcode: Shortcode, base_url: str) -> dict:
    """One item of ``payments shortcodes --json`` (CONTRACT §3)."""
    root = f"{base_url}/payments/c2b/{shortcode.callback_token}"
    return {
        "number": shortcode.number,
        "name": shortcode.name,
        "kind": shortcode.kind,
        "environment": shortcode.environment,
        "validation_url": f"{root}/validation",
        "confirmation_url": f"{root}/confirmation",
    }
