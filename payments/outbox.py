"""The messages waiting to be sent, and their sending: claimed by the messages drain in
batches with a lease, marked ``sending`` (and committed) just before the provider is called,
and the provider's answer recorded. A worker killed before the mark leaves a message to be
sent later; one killed after it leaves it ``sending``, never sent twice without a person."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from lenders.database import claim_rows
from payments.models import SmsMessage

log = logging.getLogger("marejesho.sms")

SMS_ATTEMPTS = 5  # then the message is failed, for a person to look at
RETRY_SECONDS = (30, 120, 600, 1800)  # between a failed attempt and the next


CLAIM_LEASE = timedelta(seconds=15)


def claim_messages(session: Session, limit: int, now: datetime | None = None) -> list[int]:
    """Claim up to ``limit`` queued messages whose time has come: each stays ``queued`` but
    is not due again for CLAIM_LEASE, so other workers pass it by, and a worker that dies
    before handing it to the provider leaves it to be sent later. The caller commits."""
    now = now or datetime.now(UTC)
    return claim_rows(
        session,
        SmsMessage,
        SmsMessage.status == "queued",
        or_(SmsMessage.next_attempt_at.is_(None), SmsMessage.next_attempt_at <= now),
        order_by=SmsMessage.id,
        limit=limit,
        values={"next_attempt_at": now + CLAIM_LEASE},
        key_share=True,
    )


@dataclass(frozen=True)
class Outgoing:
    """A message marked ``sending``: what the provider needs, and what was tried."""

    id: int
    kind: str
    to_phone: str
    body: str
    attempts: int


def start_sending(session: Session, message_id: int) -> Outgoing | None:
    """Mark a claimed message ``sending`` (attempts + 1) just before the provider is called,
    and read what to send, in one statement; None if another worker got there first. The
    caller commits before calling the provider: from then on the message is never sent
    again without a person (the provider may have taken it)."""
    row = session.execute(
        update(SmsMessage)
        .where(SmsMessage.id == message_id, SmsMessage.status == "queued")
        .values(
            status="sending",
            attempts=SmsMessage.attempts + 1,
            next_attempt_at=datetime.now(UTC),  # sending since
        )
        .returning(
            SmsMessage.id,
            SmsMessage.kind,
            SmsMessage.to_phone,
            SmsMessage.body,
            SmsMessage.attempts,
        )  # fmt: skip
        .execution_options(synchronize_session=False)
    ).first()
    return Outgoing(*row) if row else None


def send_message(provider, message: Outgoing):
    """Hand one message to the provider: ``record_outcome`` later writes what happened.
    Never raises for the provider's failures (any failure is kept)."""
    try:
        return ("sent", provider.name, provider.send(message.to_phone, message.body))
    except Exception as exc:  # noqa: BLE001 - any provider failure is kept, never raised
        log.warning(
            "%s %s not sent (attempt %s): %s",
            message.kind,
            message.id,
            message.attempts,
            type(exc).__name__,
        )
        return ("failed", str(exc) or type(exc).__name__, None)


def record_outcome(session: Session, message: Outgoing, outcome) -> str:
    """Write what the provider said: ``sent``, or ``queued`` again for a later time, or after
    the last attempt ``failed``. The caller commits."""
    what, detail, provider_id = outcome
    if what == "sent":
        record_sent(session, message.id, detail, provider_id)
        return "sent"
    final = message.attempts >= SMS_ATTEMPTS
    pause = RETRY_SECONDS[min(message.attempts, len(RETRY_SECONDS)) - 1]
    record_failure(
        session,
        message.id,
        detail,
        final=final,
        retry_at=datetime.now(UTC) + timedelta(seconds=pause),
    )
    return "failed" if final else "queued"


def give_up_interrupted(session: Session, now: datetime | None = None) -> int:
    """A worker that died between claiming a message and recording the provider's answer
    leaves it ``sending``: after ten minutes say so, and do not guess whether the provider
    took it (sending again could text the borrower twice)."""
    now = now or datetime.now(UTC)
    return session.execute(
        update(SmsMessage)
        .where(
            SmsMessage.status == "sending",
            SmsMessage.created_at <= now - timedelta(minutes=10),
            or_(
                SmsMessage.next_attempt_at.is_(None),  # since (before next_attempt_at)
                SmsMessage.next_attempt_at <= now - timedelta(minutes=10),
            ),
        )
        .values(
            status="failed",
            attempts=SMS_ATTEMPTS,
            error="interrupted while sending; check with the provider",
        )
        .execution_options(synchronize_session=False)
    ).rowcount


def record_sent(session: Session, message_id: int, provider: str, provider_id: str) -> None:
    session.execute(
        update(SmsMessage)
        .where(SmsMessage.id == message_id)
        .values(
            status="sent",
            provider=provider,
            provider_message_id=provider_id,
            sent_at=datetime.now(UTC),
            error=None,
        )
    )


def record_failure(
    session: Session, message_id: int, error: str, *, final: bool, retry_at: datetime | None = None
) -> None:
    session.execute(
        update(SmsMessage)
        .where(SmsMessage.id == message_id)
        .values(
            status="failed" if final else "queued",
            error=error[:500],
            next_attempt_at=None if final else retry_at,
        )
    )
