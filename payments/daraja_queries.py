"""Transaction Status and Account Balance queries (REFERENCE §9.1-§9.2): each a
``DarajaQuery`` row committed with its callback token before it is sent; Safaricom's
result comes to ``/payments/c2b/<token>/<kind>/result`` (or ``…/timeout``) and is kept on
the row. What a status result means for a disbursement or a reversal is decided by
``payments/disbursing.py`` and ``payments/reversing.py``; this module only asks and keeps.

Services take the session and plain values and never commit, except that the row must be
committed by the caller between ``new_query`` and ``send_query``."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from lenders.models import StaffUser
from payments.daraja import DarajaError, MalformedResult, Result, account_balances
from payments.models import Shortcode
from payments.money_models import DarajaQuery
from payments.shortcodes import ShortcodeError, daraja_client, explain, initiator_credential

log = logging.getLogger("marejesho.daraja")
FRESH_BALANCE = timedelta(minutes=10)  # a balance older than this is not trusted to refuse


def callback_url(config: dict, token: str, path: str) -> str:
    """A tokened URL Safaricom calls back (CONTRACT §5): no forbidden word in any part."""
    return f"{config['PUBLIC_BASE_URL']}/payments/c2b/{token}/{path}"


def new_query(
    session: Session,
    kind: str,
    shortcode: Shortcode,
    *,
    actor: StaffUser | None = None,
    payment_id: int | None = None,
    disbursement_id: int | None = None,
    reversal_id: int | None = None,
    transaction_id: str | None = None,
    original_conversation_id: str | None = None,
) -> DarajaQuery:
    """A query row in ``sending``, its token ready. The caller commits it, then sends."""
    query = DarajaQuery(
        kind=kind,
        shortcode_id=shortcode.id,
        requested_by_id=actor.id if actor else None,
        payment_id=payment_id,
        disbursement_id=disbursement_id,
        reversal_id=reversal_id,
        transaction_id=transaction_id,
        original_conversation_id=original_conversation_id,
    )
    session.add(query)
    session.flush()
    return query


def send_query(session: Session, query_id: int, config: dict) -> DarajaQuery:
    """Ask Daraja for a committed query row and record its answer (``sent``) or why it
    could not be asked (``failed``, in words). A result that came back before this answer
    was recorded is never overwritten. The caller commits."""
    query = session.get(DarajaQuery, query_id)
    shortcode = query.shortcode
    urls = {
        "result_url": callback_url(config, query.callback_token, f"{query.kind}/result"),
        "queue_timeout_url": callback_url(config, query.callback_token, f"{query.kind}/timeout"),
    }
    try:
        credential = initiator_credential(shortcode, config)
        with daraja_client(shortcode, config) as client:
            common = {"initiator_name": shortcode.initiator_name, "party_a": shortcode.number}
            if query.kind == "balance":
                answer = client.account_balance(security_credential=credential, **common, **urls)
            else:
                answer = client.transaction_status(
                    security_credential=credential,
                    transaction_id=query.transaction_id,
                    original_conversation_id=query.original_conversation_id,
                    **common,
                    **urls,
                )
    except (ShortcodeError, DarajaError) as exc:
        why = str(exc) if isinstance(exc, ShortcodeError) else explain(exc)
        log.warning("%s query %s not sent: %s", query.kind, query.id, type(exc).__name__)
        _move(session, query.id, ("sending",), status="failed", error=why)
        return _fresh(session, query.id)
    ids = {
        "originator_conversation_id": str(answer.get("OriginatorConversationID") or "")[:64],
        "conversation_id": str(answer.get("ConversationID") or "")[:64],
    }
    if not _move(session, query.id, ("sending",), status="sent", **ids):
        _move(session, query.id, ("answered", "unanswered", "failed"), **ids)
    return _fresh(session, query.id)


def _move(session: Session, query_id: int, statuses, **values) -> bool:
    return bool(
        session.execute(
            update(DarajaQuery)
            .where(DarajaQuery.id == query_id, DarajaQuery.status.in_(statuses))
            .values(**values)
            .execution_options(synchronize_session=False)
        ).rowcount
    )


def _fresh(session: Session, query_id: int) -> DarajaQuery:
    return session.scalars(
        select(DarajaQuery)
        .where(DarajaQuery.id == query_id)
        .execution_options(populate_existing=True)
    ).one()


def plain_parameters(result: Result) -> dict:
    """The result's parameters as JSON text (no float for money)."""
    return {key: None if value is None else str(value) for key, value in result.parameters.items()}


def record_result(session: Session, query: DarajaQuery, result: Result, which: str) -> bool:
    """Keep Safaricom's result (or queue timeout) on the query; False for a repeat, which
    changes nothing."""
    if which == "timeout":
        return _move(
            session,
            query.id,
            ("sending", "sent"),
            status="unanswered",
            result_code=str(result.result_code),
            result_desc=result.result_desc[:500],
            error="Safaricom's queue timed out before answering",
        )
    kept = plain_parameters(result)
    if query.kind == "balance" and result.succeeded:
        try:
            kept = {
                name: {
                    "currency": account.currency,
                    "current": str(account.current),
                    "available": str(account.available),
                }
                for name, account in account_balances(result.text("AccountBalance")).items()
            }
        except MalformedResult as exc:
            kept = {"unreadable": str(exc)}
    moved = _move(
        session,
        query.id,
        ("sending", "sent", "failed", "unanswered"),
        status="answered",
        result_code=str(result.result_code),
        result_desc=result.result_desc[:500],
        result=kept,
        answered_at=datetime.now(UTC),
    )
    if moved:
        session.refresh(query)
    return moved


def latest_balance(session: Session, shortcode_id: int) -> DarajaQuery | None:
    """The newest balance query of the shortcode (answered or still waiting)."""
    return session.scalar(
        select(DarajaQuery)
        .where(DarajaQuery.shortcode_id == shortcode_id, DarajaQuery.kind == "balance")
        .order_by(DarajaQuery.id.desc())
        .limit(1)
    )


def utility_available(session: Session, shortcode_id: int, now: datetime | None = None):
    """The utility account's available balance from a successful answer in the last ten
    minutes, or None (not known, or too old to refuse a payout on)."""
    now = now or datetime.now(UTC)
    answered = session.scalar(
        select(DarajaQuery)
        .where(
            DarajaQuery.shortcode_id == shortcode_id,
            DarajaQuery.kind == "balance",
            DarajaQuery.status == "answered",
            DarajaQuery.result_code == "0",
            DarajaQuery.answered_at >= now - FRESH_BALANCE,
        )
        .order_by(DarajaQuery.id.desc())
        .limit(1)
    )
    if answered is None:
        return None
    account = (answered.result or {}).get("Utility Account") or (answered.result or {}).get(
        "Merchant Account"
    )
    if not isinstance(account, dict):
        return None
    try:
        return Decimal(account["available"])
    except (KeyError, InvalidOperation, TypeError):
        return None
