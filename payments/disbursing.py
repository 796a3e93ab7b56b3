"""B2C disbursement, Safaricom's side (REFERENCE §7, §9.1): sending an approved payout with
our own OriginatorConversationID, reading its result or queue timeout, and, when no clear
answer comes, asking Transaction Status. The book's side (who may approve, what
completion does to the loan) is lenders/disbursements.py.

The rule that keeps a loan from being paid twice: a payout is marked ``sent`` and committed
before the request leaves, and the request is made once (no client resend). A timeout, no
answer, a slow or failed HTTP call, a queue timeout or Safaricom saying it has the id
already all make it ``ambiguous``; nothing is sent again until a Transaction Status query
settles it. Even a resend carries the same id, which Safaricom refuses as a repeat.

Services take the session and plain values and never commit (the drain in
payments/money_jobs.py commits between steps)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from lenders.database import claim_rows
from lenders.disbursements import (
    IN_FLIGHT,
    Disbursement,
    complete_disbursement,
    fail_disbursement,
    mark_ambiguous,
)
from lenders.money import format_kes
from payments.daraja import (
    DarajaError,
    DarajaUnavailable,
    DuplicateOriginatorConversationID,
    Result,
    ServerError,
    UnexpectedResponse,
)
from payments.daraja_queries import callback_url, new_query, utility_available
from payments.models import C2BPayment, Shortcode
from payments.money_models import DarajaQuery
from payments.shortcodes import ShortcodeError, daraja_client, explain, initiator_credential

log = logging.getLogger("marejesho.b2c")
DEFAULTS = {
    "B2C_RESULT_WAIT_SECONDS": 120,  # sent, no result by then: ask Transaction Status
    "B2C_STATUS_EVERY_SECONDS": 60,  # between Transaction Status queries
    "B2C_STATUS_CHECKS": 10,  # then a person looks (the payout stays ambiguous)
}
CLAIM_LEASE = timedelta(seconds=60)
WORDS = {
    1: "The utility account had too little money for it.",
    2: "Below M-Pesa's minimum for one payment (KES 10).",
    3: "Above M-Pesa's maximum for one payment (KES 250,000).",
    4: "It would pass the daily transfer limit.",
    8: "The borrower's M-Pesa account would pass its maximum balance.",
    11: "The paying account is not in a state to pay; ask Safaricom.",
    21: "The initiator lacks the ORG B2C API Initiator role on the M-Pesa portal.",
    2001: "The initiator's name or password is wrong.",
    2006: "The paying account's status does not allow it.",
    2028: "This shortcode is not set up for B2C payments.",
    2040: "The phone is not a registered M-Pesa customer.",
    8006: "The initiator's password is locked on the M-Pesa portal.",
    "SFC_IC0003": "M-Pesa does not know the receiving phone.",
}


def setting(config: dict, name: str) -> float:
    return float(config.get(name, DEFAULTS[name]))


def words_for(code, description: str = "") -> str:
    return WORDS.get(code) or f"M-Pesa said: {description or 'failed'} (code {code})."


def paying_shortcode(session: Session, disbursement: Disbursement) -> Shortcode | None:
    """The shortcode chosen at approval, else the first with an initiator."""
    if disbursement.shortcode_id is not None:
        return session.get(Shortcode, disbursement.shortcode_id)
    return session.scalar(
        select(Shortcode)
        .where(Shortcode.initiator_name.is_not(None), Shortcode.initiator_password.is_not(None))
        .order_by(Shortcode.number)
        .limit(1)
    )


def claim_approved(session: Session, limit: int, now: datetime | None = None, config=None):
    """Approved payouts, marked ``sent`` now (before their request leaves): whatever
    happens next, they are never picked up to be sent again."""
    now = now or datetime.now(UTC)
    wait = timedelta(seconds=setting(config or {}, "B2C_RESULT_WAIT_SECONDS"))
    return claim_rows(
        session,
        Disbursement,
        Disbursement.status == "approved",
        order_by=Disbursement.id,
        limit=limit,
        values={"status": "sent", "sent_at": now, "check_after": now + wait, "updated_at": now},
    )


def send_claimed(session: Session, disbursement_id: int, config: dict) -> str:
    """Send one payout marked ``sent``, once, and record what Daraja said. Returns the
    payout's status."""
    disbursement = session.get(Disbursement, disbursement_id)
    if disbursement.status != "sent":
        return disbursement.status
    shortcode = paying_shortcode(session, disbursement)
    if shortcode is None:
        return _failed(session, disbursement, "No shortcode has a B2C initiator; nothing was sent.")
    disbursement.shortcode_id = shortcode.id
    available = utility_available(session, shortcode.id)
    if available is not None and available < disbursement.amount:
        return _failed(
            session,
            disbursement,
            f"Insufficient funds: the utility account has {format_kes(available)}; nothing was "
            "sent. Top it up, then retry.",
        )
    now = datetime.now(UTC)
    remarks, occasion = _remarks(session, disbursement)
    try:
        credential = initiator_credential(shortcode, config)
        with daraja_client(shortcode, config, max_retries=0) as client:
            answer = client.b2c_payment(
                originator_conversation_id=disbursement.originator_conversation_id,
                initiator_name=shortcode.initiator_name,
                security_credential=credential,
                amount=int(disbursement.amount),
                party_a=shortcode.number,
                party_b=disbursement.phone,
                result_url=callback_url(config, disbursement.callback_token, "b2c/result"),
                queue_timeout_url=callback_url(config, disbursement.callback_token, "b2c/timeout"),
                remarks=remarks[:100],
                occasion=occasion[:100],
            )
    except DuplicateOriginatorConversationID:
        why = "Safaricom already has a payment with this id."
        return _unsure(session, disbursement, why, check_after=now)
    except (DarajaUnavailable, ServerError, UnexpectedResponse) as exc:
        why = f"No clear answer from Daraja ({explain(exc)})."
        later = now + timedelta(seconds=setting(config, "B2C_STATUS_EVERY_SECONDS"))
        return _unsure(session, disbursement, why, check_after=later)
    except (ShortcodeError, DarajaError) as exc:
        why = str(exc) if isinstance(exc, ShortcodeError) else explain(exc)
        return _failed(session, disbursement, f"Daraja refused it: {why} Nothing was sent.")
    if str(answer.get("ResponseCode", "0")).strip() not in ("0", ""):
        why = str(answer.get("ResponseDescription") or "no reason given")[:300]
        return _failed(session, disbursement, f"Daraja did not accept it: {why}")
    session.execute(
        update(Disbursement)
        .where(Disbursement.id == disbursement.id, Disbursement.conversation_id.is_(None))
        .values(conversation_id=str(answer.get("ConversationID") or "")[:64] or None)
    )
    session.refresh(disbursement)
    return disbursement.status


def _remarks(session: Session, disbursement: Disbursement) -> tuple[str, str]:
    """What the B2C request says it is for (``Remarks``, ``Occassion``)."""
    if disbursement.is_refund:
        payment = session.get(C2BPayment, disbursement.payment_id)
        return f"Refund of credit from payment {payment.trans_id}", payment.trans_id
    return f"Loan {disbursement.loan.number} disbursement", disbursement.loan.number


def _failed(session: Session, disbursement: Disbursement, why: str) -> str:
    fail_disbursement(session, disbursement.id, why, statuses=("sent",))
    return "failed"


def _unsure(
    session: Session, disbursement: Disbursement, why: str, *, check_after: datetime
) -> str:
    log.warning("disbursement %s ambiguous: %s", disbursement.id, why)
    mark_ambiguous(
        session,
        disbursement.id,
        f"{why} Nothing is sent again until Transaction Status says what became of it.",
        check_after=check_after,
    )
    return "ambiguous"


# --- Safaricom's word ---------------------------------------------------------------------


def receiver_name(public_name: str) -> str:
    """``254705912645 - NICHOLAS JOHN SONGOK`` → the name (the phone is ours already)."""
    return public_name.split(" - ", 1)[1].strip() if " - " in public_name else public_name


def apply_b2c_result(session: Session, disbursement_id: int, result: Result, which: str) -> str:
    """A B2C result or queue timeout: ``applied``, ``duplicate`` (a repeat, nothing
    changed), ``stale`` (about an earlier attempt) or ``conflict``."""
    disbursement = _locked(session, disbursement_id)
    ocid = result.originator_conversation_id
    if ocid and ocid != disbursement.originator_conversation_id:
        return "stale"
    if which == "timeout":
        if disbursement.status != "sent":
            return "duplicate"
        why = "Safaricom's queue timed out (that is not proof it failed)."
        _unsure(session, disbursement, why, check_after=datetime.now(UTC))
        return "applied"
    if result.succeeded:
        done = complete_disbursement(
            session,
            disbursement.id,
            receipt=result.text("TransactionReceipt") or result.transaction_id,
            receiver_name=receiver_name(result.text("ReceiverPartyPublicName")),
            completed_at=result.time("TransactionCompletedDateTime"),
            how="B2C result",
        )
        return "applied" if done else "duplicate"
    code = result.result_code
    failed = fail_disbursement(
        session,
        disbursement.id,
        words_for(code, result.result_desc),
        result_code=str(code),
        statuses=IN_FLIGHT,
    )
    if failed is not None:
        return "applied"
    return "conflict" if disbursement.status == "completed" else "duplicate"


def _locked(session: Session, disbursement_id: int) -> Disbursement:
    """The payout after a write on its row: concurrent results for it wait for this
    transaction and then see what it did (SQLite and PostgreSQL alike)."""
    session.execute(
        update(Disbursement)
        .where(Disbursement.id == disbursement_id)
        .values(status_checks=Disbursement.status_checks)
    )
    return session.scalars(
        select(Disbursement)
        .where(Disbursement.id == disbursement_id)
        .execution_options(populate_existing=True)
    ).one()


# --- asking Transaction Status ------------------------------------------------------------


def claim_due_checks(session: Session, limit: int, now: datetime | None = None) -> list[int]:
    """Payouts in flight whose time to ask Safaricom has come, claimed for a minute."""
    now = now or datetime.now(UTC)
    return claim_rows(
        session,
        Disbursement,
        Disbursement.status.in_(IN_FLIGHT),
        Disbursement.check_after <= now,
        order_by=Disbursement.check_after,
        limit=limit,
        values={"check_after": now + CLAIM_LEASE},
    )


def start_status_check(
    session: Session, disbursement_id: int, config: dict, *, actor=None, now=None
) -> DarajaQuery | None:
    """A Transaction Status query about a payout in flight (by our id), ready to be
    committed and sent; a payout still ``sent`` becomes ``ambiguous`` first. After
    ``B2C_STATUS_CHECKS`` unanswered checks the job stops asking (a person can)."""
    now = now or datetime.now(UTC)
    disbursement = _locked(session, disbursement_id)
    if disbursement.status not in IN_FLIGHT or disbursement.shortcode_id is None:
        return None
    if disbursement.status == "sent":
        mark_ambiguous(
            session,
            disbursement.id,
            "No result from Safaricom in time; asking Transaction Status before anything else.",
            check_after=now,
        )
    checks = disbursement.status_checks + 1
    again = now + timedelta(seconds=setting(config, "B2C_STATUS_EVERY_SECONDS"))
    automatic = actor is None and checks >= setting(config, "B2C_STATUS_CHECKS")
    session.execute(
        update(Disbursement)
        .where(Disbursement.id == disbursement.id)
        .values(status_checks=checks, check_after=None if automatic else again)
    )
    return new_query(
        session,
        "status",
        session.get(Shortcode, disbursement.shortcode_id),
        actor=actor,
        disbursement_id=disbursement.id,
        original_conversation_id=disbursement.originator_conversation_id,
    )


def settle_by_status(session: Session, query: DarajaQuery, result: Result) -> str:
    """What a Transaction Status result about a payout settles: paid (completed once), or
    unknown to Safaricom (failed if Daraja never took the request; still ambiguous, asked
    again later, if it did)."""
    disbursement = _locked(session, query.disbursement_id)
    if query.original_conversation_id != disbursement.originator_conversation_id:
        return "stale"
    if result.succeeded:
        state = result.text("TransactionStatus")
        if state.lower() in ("completed", ""):
            done = complete_disbursement(
                session,
                disbursement.id,
                receipt=result.text("ReceiptNo") or result.transaction_id,
                receiver_name=receiver_name(result.text("CreditPartyName")),
                completed_at=result.time("FinalisedTime"),
                how="Transaction Status",
            )
            return "applied" if done else "duplicate"
        fail_disbursement(
            session,
            disbursement.id,
            f"Safaricom reports the payment {state.lower()}.",
            result_code=state[:16],
        )
        return "applied"
    if disbursement.status not in IN_FLIGHT:
        return "duplicate"
    words = words_for(result.result_code, result.result_desc)
    if disbursement.conversation_id is None:
        fail_disbursement(
            session,
            disbursement.id,
            f"Safaricom has no record of this payment ({words}): no money left. A retry sends "
            "it again with the same id, which Safaricom would refuse if it had it after all.",
        )
        return "applied"
    if disbursement.check_after is None:  # the job has stopped asking
        disbursement.reason = (
            f"Safaricom took the request but Transaction Status still does not report it "
            f"({words}) after {disbursement.status_checks} checks. Look it up on the M-Pesa "
            "org portal; nothing is sent again."
        )
    else:
        disbursement.reason = (
            f"Safaricom took the request but Transaction Status does not report it ({words}); "
            "asking again."
        )
    return "applied"
