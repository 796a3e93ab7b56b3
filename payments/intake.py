"""Storing what Safaricom sends: store first, acknowledge second, process third."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, Engine, bindparam, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from lenders.book import record_audit
from lenders.database import Prepared, quick_engine
from lenders.models import utcnow
from payments.matching import find_reference
from payments.models import C2BPayment, CallbackLog, PaymentStatus, Shortcode
from payments.parsing import C2BNotice, NotDaraja, parse_c2b, received_time

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


def _insert_ignoring_duplicates(dialect_insert):
    table = C2BPayment.__table__
    return (
        dialect_insert(table)
        .on_conflict_do_nothing(index_elements=["shortcode_id", "trans_id"])
        .returning(table.c.id)
    )


# INSERT … ON CONFLICT (shortcode_id, trans_id) DO NOTHING RETURNING id, in each
# database's own dialect: the unique constraint decides, even under races, without a
# savepoint or an exception.
_PAYMENT_COLUMNS = (
    "shortcode_id",
    "trans_id",
    "trans_type",
    "trans_time",
    "amount",
    "bill_ref",
    "invoice_number",
    "third_party_trans_id",
    "org_account_balance",
    "msisdn",
    "msisdn_form",
    "first_name",
    "middle_name",
    "last_name",
    "status",
    "error",
    "credit",
    "attempts",
    "received_at",
)
_NEW_PAYMENT = {
    "sqlite": Prepared(_insert_ignoring_duplicates(sqlite.insert), _PAYMENT_COLUMNS),
    "postgresql": Prepared(_insert_ignoring_duplicates(postgresql.insert), _PAYMENT_COLUMNS),
}


def _payment_then_log_entry():
    """PostgreSQL: the payment and its log line in ONE statement (a data-modifying CTE), so a
    confirmation is one round trip: INSERT the payment ON CONFLICT DO NOTHING RETURNING id,
    and INSERT the log line FROM that, which writes nothing when the TransID was there."""
    payment = C2BPayment.__table__
    log_table = CallbackLog.__table__
    new = (
        postgresql.insert(payment)
        .values({c: bindparam(c, type_=payment.c[c].type) for c in _PAYMENT_COLUMNS})
        .on_conflict_do_nothing(index_elements=["shortcode_id", "trans_id"])
        .returning(payment.c.id)
        .cte("new_payment")
    )
    logged = ("shortcode_id", "kind", "received_at", "source_ip", "headers", "body", "outcome")
    return (
        insert(log_table)
        .from_select(
            [*logged, "payment_id"],
            select(*(bindparam(c, type_=log_table.c[c].type) for c in logged), new.c.id),
        )
        .returning(log_table.c.payment_id)
    )


_NEW_PAYMENT_LOGGED = Prepared(_payment_then_log_entry())
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


def store_confirmation(
    engine: Engine,
    shortcode,
    body: bytes,
    *,
    source_ip: str | None,
    headers: dict,
    received_at: datetime | None = None,
) -> Stored:
    """A confirmation's request: keep what ``record_confirmation`` keeps, and commit. The
    usual confirmation (a new TransID, or a body that is not a notice) is written on one
    of the pool's DB-API connections, without SQLAlchemy's connection and transaction
    objects around it: on PostgreSQL one statement in autocommit, on a pool of its own that
    does not ping (a connection found dead is replaced and the statement sent once more:
    it is idempotent); on SQLite two INSERTs and a commit. A TransID seen before wrote
    nothing there (ON CONFLICT DO NOTHING): the repeat is compared with the first payment,
    through the ORM, in a transaction of its own."""
    writer = quick_engine(engine)
    if writer is not engine:  # PostgreSQL: one statement, in autocommit
        for attempt in (1, 2):
            pooled = writer.raw_connection()
            try:
                outcome = _store_new(
                    writer.dialect, pooled.driver_connection, shortcode, body, source_ip,
                    headers, received_at,
                )  # fmt: skip
                break
            except writer.dialect.dbapi.OperationalError:
                pooled.invalidate()  # a dead connection, or the server is gone
                if attempt == 2:
                    raise
            finally:
                pooled.close()  # back to the pool
        if isinstance(outcome, Stored):
            return outcome
        with engine.begin() as connection:
            return _record_repeat(connection, shortcode, *outcome)
    pooled = engine.raw_connection()  # SQLite: two INSERTs and a commit
    try:
        outcome = _store_new(
            engine.dialect, pooled.driver_connection, shortcode, body, source_ip, headers,
            received_at,
        )  # fmt: skip
        if isinstance(outcome, Stored):
            pooled.commit()
        else:
            pooled.rollback()
    except BaseException:
        pooled.rollback()
        raise
    finally:
        pooled.close()  # back to the pool
    if isinstance(outcome, Stored):
        return outcome
    with engine.begin() as connection:
        return _record_repeat(connection, shortcode, *outcome)


def record_confirmation(
    connection: Connection,
    shortcode,
    body: bytes,
    *,
    source_ip: str | None,
    headers: dict,
) -> Stored:
    """Keep the raw body and, when it is a Daraja C2B notice, the payment, in the
    transaction of the caller's ``connection`` (``session.connection()`` inside a session).
    A repeated TransID adds a log line and nothing else; the same TransID with another
    amount or account flags the payment for review. ``shortcode`` needs only ``id`` and
    ``number``. Does not commit.

    A new payment is two statements compiled once and run on the driver (``Prepared``), no
    ORM session or unit of work. Only a repeated TransID loads the payment through the ORM,
    in a session joined to the caller's transaction (it neither commits nor rolls back the
    caller's work)."""
    driver = connection.connection.driver_connection
    outcome = _store_new(connection.dialect, driver, shortcode, body, source_ip, headers)
    if isinstance(outcome, Stored):
        return outcome
    return _record_repeat(connection, shortcode, *outcome)


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


def _store_new(
    dialect, driver, shortcode, body, source_ip, headers, received_at=None
) -> Stored | tuple[C2BNotice, dict]:
    """Keep a body that is not a C2B notice (quarantined), or a new payment and its log
    line, on a DB-API connection in its transaction. When the TransID is already there,
    nothing was written: the notice and its log entry come back for ``_record_repeat``."""
    entry = _log_entry(shortcode, body, source_ip, headers, received_at)
    try:
        notice = parse_c2b(body)
        if notice.short_code and notice.short_code != shortcode.number:
            raise NotDaraja(f"BusinessShortCode {notice.short_code} is not this URL's shortcode")
    except NotDaraja as exc:
        entry["error"] = str(exc)
        _NEW_LOG_ENTRY.execute(dialect, driver, entry).close()
        log.warning("confirmation quarantined for shortcode %s: %s", shortcode.number, exc)
        return Stored("quarantined")

    payment = {
        "shortcode_id": shortcode.id,
        "trans_id": notice.trans_id,
        "trans_type": notice.trans_type,
        "trans_time": received_time(notice),
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
    if dialect.name == "postgresql":  # one statement, one round trip
        inserted = _NEW_PAYMENT_LOGGED.execute(
            dialect, driver, entry | payment | {"outcome": "stored"}
        )
        row = inserted.fetchone()
        inserted.close()
        return Stored("stored", row[0]) if row else (notice, entry)
    inserted = _NEW_PAYMENT[dialect.name].execute(dialect, driver, payment)
    row = inserted.fetchone()
    inserted.close()
    if row is None:
        return notice, entry
    entry |= {"outcome": "stored", "payment_id": row[0]}
    _NEW_LOG_ENTRY.execute(dialect, driver, entry).close()
    return Stored("stored", row[0])


def store_payments(session: Session, rows: list[dict]) -> dict[str, int]:
    """Store many payments at once (statement and Pull Transactions gaps), in the caller's
    transaction: one INSERT … ON CONFLICT DO NOTHING per batch, so a TransID already here
    (a callback that came meanwhile) is left as it is. ``rows`` carry every column of
    ``_PAYMENT_COLUMNS``. Returns {trans_id: id} of those stored now."""
    from payments.bulk_sql import insert_rows

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
