"""Storing what Safaricom sends: store first, acknowledge second, process third."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, Engine, insert, select
from sqlalchemy.orm import Session

from lenders.book import record_audit
from lenders.database import Prepared, quick_engine
from lenders.models import utcnow
from payments.bulk_sql import insert_rows
from payments.matching import find_reference
from payments.models import C2BPayment, CallbackLog, PaymentStatus, Shortcode
from payments.parsing import C2BNotice, NotDaraja, parse_c2b

log = logging.getLogger("marejesho.callbacks")
security_log = logging.getLogger("marejesho.security")


@dataclass(frozen=True)
class Stored:
    """What became of one confirmation."""

    outcome: str  # stored | duplicate | conflict | quarantined
    payment_id: int | None = None

    @property
    def needs_processing(self) -> bool:
        return self.outcome == "stored"


def source_allowed(shortcode: Shortcode, address: str | None) -> bool:
    """True when the shortcode has no allow-list or the address is on it."""
    entries = [e.strip() for e in (shortcode.allowed_ips or "").split(",") if e.strip()]
    if not entries:
        return True
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    for entry in entries:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


# A payment made from an STK prompt's callback (payments/prompts.py) before Safaricom's C2B
# confirmation for the same receipt: the confirmation's account may be typed differently.
STK_TRANS_TYPE = "Pay Bill Online"


def _same_payment(payment: C2BPayment, notice: C2BNotice) -> bool:
    same_account = payment.bill_ref == notice.bill_ref or payment.trans_type == STK_TRANS_TYPE
    return payment.amount == notice.amount and same_account


_NEW_LOG_ENTRY = Prepared(
    insert(CallbackLog.__table__),
    (
        "shortcode_id",
        "kind",
        "received_at",
        "source_ip",
        "headers",
        "body",
        "outcome",
        "error",
        "payment_id",
    ),
)
UNREADABLE_TIME = "TransTime was unreadable; time of receipt used"


@dataclass(frozen=True)
class Kept:
    """One confirmation as it arrived: what the journal keeps and the database gets."""

    shortcode: object  # needs id, number (payments.callbacks.CallbackShortcode)
    body: bytes
    source_ip: str | None
    headers: dict
    received_at: datetime | None = None


def store_confirmations(session: Session, kept: list[Kept]) -> list[Stored]:
    """Keep what Safaricom sent, in the caller's transaction (the caller commits): each raw
    body in callback_log and, for a C2B notice, the payment in ``received``; a body that is
    not a notice is quarantined. New payments and their log lines are one INSERT … ON
    CONFLICT DO NOTHING each for the whole batch (the unique TransID per shortcode decides,
    even under races); a TransID seen before, in the database or earlier in the batch, is
    logged as a duplicate, or as a conflict that flags the first payment for review. What
    became of each, in order."""
    outcomes: list[Stored | None] = [None] * len(kept)
    entries: list[dict] = [
        _log_entry(k.shortcode, k.body, k.source_ip, k.headers, k.received_at) for k in kept
    ]
    notices: dict[int, C2BNotice] = {}
    first: dict[tuple[int, str], int] = {}  # (shortcode id, TransID) -> its first item
    repeats: list[int] = []
    for i, item in enumerate(kept):
        try:
            notice = parse_c2b(item.body)
            if notice.short_code and notice.short_code != item.shortcode.number:
                raise NotDaraja(
                    f"BusinessShortCode {notice.short_code} is not this URL's shortcode"
                )
        except NotDaraja as exc:
            entries[i]["error"] = str(exc)
            outcomes[i] = Stored("quarantined")
            log.warning("confirmation quarantined for shortcode %s: %s", item.shortcode.number, exc)
            continue
        notices[i] = notice
        key = (item.shortcode.id, notice.trans_id)
        if key in first:
            repeats.append(i)
        else:
            first[key] = i
    new_ids: dict[tuple[int, str], int] = {}
    if first:
        rows = [_payment_row(kept[i].shortcode, notices[i], entries[i]) for i in first.values()]
        new_ids = {
            (shortcode_id, trans_id): id_
            for shortcode_id, trans_id, id_ in insert_rows(
                session,
                C2BPayment.__table__,
                rows,
                conflict=["shortcode_id", "trans_id"],
                returning=("shortcode_id", "trans_id", "id"),
            )
        }
    for key, i in first.items():
        if key in new_ids:
            entries[i] |= {"outcome": "stored", "payment_id": new_ids[key]}
            outcomes[i] = Stored("stored", new_ids[key])
        else:
            repeats.append(i)
    logged = [entries[i] for i, outcome in enumerate(outcomes) if outcome is not None]
    if logged:
        insert_rows(session, CallbackLog.__table__, logged)
    for i in sorted(repeats):
        outcomes[i] = _record_repeat(
            session.connection(), kept[i].shortcode, notices[i], entries[i]
        )
    return outcomes  # type: ignore[return-value]


def _payment_row(shortcode, notice: C2BNotice, entry: dict) -> dict:
    return {
        "shortcode_id": shortcode.id,
        "trans_id": notice.trans_id,
        "trans_type": notice.trans_type,
        "trans_time": notice.trans_time or entry["received_at"],  # unreadable: when it came
        "amount": notice.amount,
        "bill_ref": notice.bill_ref,
        "invoice_number": notice.invoice_number,
        "third_party_trans_id": notice.third_party_trans_id,
        "org_account_balance": notice.org_account_balance,
        "msisdn": notice.msisdn,
        "msisdn_form": notice.msisdn_form,
        "first_name": notice.first_name,
        "middle_name": notice.middle_name,
        "last_name": notice.last_name,
        "status": PaymentStatus.RECEIVED,
        "error": None if notice.trans_time else UNREADABLE_TIME,
        "credit": Decimal("0.00"),
        "attempts": 0,
        "received_at": entry["received_at"],
    }


def record_confirmation(
    connection: Connection,
    shortcode,
    body: bytes,
    *,
    source_ip: str | None,
    headers: dict,
) -> Stored:
    """One confirmation stored as the journal's shipper stores it, in the transaction of the
    caller's ``connection`` (``session.connection()`` inside a session); does not commit
    (tests and benchmarks that need a payment in ``received``)."""
    with Session(bind=connection) as session:
        (stored,) = store_confirmations(session, [Kept(shortcode, body, source_ip, headers)])
        session.flush()
    return stored


def _record_repeat(connection: Connection, shortcode, notice: C2BNotice, entry: dict) -> Stored:
    """A TransID already stored (for this shortcode): log it as a duplicate, or, with another
    amount or account, as a conflict that flags the first payment for review."""
    with Session(bind=connection) as session:
        existing = session.scalars(
            select(C2BPayment).where(
                C2BPayment.shortcode_id == shortcode.id, C2BPayment.trans_id == notice.trans_id
            )
        ).one()
        entry["payment_id"] = existing.id
        if _same_payment(existing, notice):
            _NEW_LOG_ENTRY.run(connection, {**entry, "outcome": "duplicate"}).close()
            log.info("duplicate confirmation %s ignored", notice.trans_id)
            return Stored("duplicate", existing.id)
        entry["outcome"] = "conflict"
        entry["error"] = (
            f"TransID {notice.trans_id} came again with amount {notice.amount} and "
            f"account {notice.bill_ref!r}; first seen with {existing.amount} and "
            f"{existing.bill_ref!r}"
        )
        _NEW_LOG_ENTRY.run(connection, entry).close()
        flag_for_review(session, existing, entry["error"])
        session.flush()
    security_log.warning("conflicting confirmation for %s", notice.trans_id)
    return Stored("conflict", existing.id)


def _log_entry(
    shortcode, body: bytes, source_ip: str | None, headers: dict, received_at=None
) -> dict:
    return {
        "shortcode_id": shortcode.id,
        "kind": "confirmation",
        "received_at": received_at or utcnow(),
        "source_ip": source_ip,
        "headers": headers,
        "body": body.decode("utf-8", errors="replace").replace("\x00", "\ufffd"),
        "outcome": "quarantined",
        "error": None,
        "payment_id": None,
    }


def store_payments(session: Session, rows: list[dict]) -> dict[str, int]:
    """Store many payments at once (statement and Pull Transactions gaps), in the caller's
    transaction: one INSERT … ON CONFLICT DO NOTHING per batch, so a TransID already here
    (a callback that came meanwhile) is left as it is. ``rows`` carry every column of
    ``_payment_row``. Returns {trans_id: id} of those stored now."""
    found = insert_rows(
        session,
        C2BPayment.__table__,
        rows,
        conflict=["shortcode_id", "trans_id"],
        returning=("trans_id", "id"),
    )
    return dict(found)


def flag_for_review(session: Session, payment: C2BPayment, why: str) -> None:
    """Put a payment in front of an admin. Money already posted stays posted."""
    before = {"status": payment.status}
    payment.status = PaymentStatus.REVIEW
    record_audit(
        session,
        "payment.review",
        payment,
        before=before,
        after={"status": PaymentStatus.REVIEW},
        reason=why,
    )


def log_validation(
    engine: Engine, shortcode, body: bytes, *, source_ip: str | None, answer: dict, why: str
) -> bool:
    """Keep a validation's body and answer in callback_log, in a transaction of its own: one
    INSERT (in autocommit on PostgreSQL's quick pool). True when it was accepted."""
    accepted = answer["ResultCode"] == "0"
    entry = _log_entry(shortcode, body, source_ip, {}) | {
        "kind": "validation",
        "headers": None,
        "outcome": "accepted" if accepted else f"rejected:{answer['ResultCode']}",
        "error": None if accepted else why,
    }
    writer = quick_engine(engine)
    pooled = writer.raw_connection()
    try:
        _NEW_LOG_ENTRY.execute(writer.dialect, pooled.driver_connection, entry).close()
        pooled.commit()
    except BaseException:
        pooled.rollback()
        raise
    finally:
        pooled.close()
    return accepted


# Validation answers (CONTRACT §5); ResultCode is a string here, as Daraja documents it.
ACCEPT = {"ResultCode": "0", "ResultDesc": "Accepted"}


def reject(code: str) -> dict:
    return {"ResultCode": code, "ResultDesc": "Rejected"}


def validate_payment(session: Session, shortcode: Shortcode, body: bytes) -> tuple[dict, str, int]:
    """Daraja's validation answer, why, and the HTTP status (400 for a body that is not a
    C2B notice). Reads, never waits on a queue: a couple of indexed lookups at most."""
    try:
        notice = parse_c2b(body)
    except NotDaraja as exc:
        code = "C2B00013" if "TransAmount" in str(exc) else "C2B00016"
        return reject(code), str(exc), 400
    if notice.short_code and notice.short_code != shortcode.number:
        return reject("C2B00015"), "BusinessShortCode is not this URL's shortcode", 200
    if notice.amount < Decimal("1.00"):
        return reject("C2B00013"), "amount below KES 1", 200
    if shortcode.validation_policy == "reject_unknown":
        loan, borrower_id, _ = find_reference(session, notice.bill_ref)
        if loan is None and borrower_id is None:
            why = f"account {notice.bill_ref!r} names no loan or borrower"
            return reject("C2B00012"), why, 200
    return ACCEPT, "accepted", 200
