"""Pull Transactions (REFERENCE §10.1): register a shortcode once, then ask Daraja for
what it received in the last 48 hours and reconcile the answer as a statement is
(payments/statements.py): gaps stored and posted, reversals reversed, the rest listed."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from sqlalchemy.orm import Session

from lenders.book import record_audit
from lenders.models import StaffUser
from payments.daraja import DarajaError, RequestRefused, canonical_msisdn
from payments.exports import shortcode_json
from payments.models import Shortcode
from payments.parsing import clean_text
from payments.reconciliation_models import PullRegistration, StatementImport
from payments.shortcodes import ShortcodeError, daraja_client, explain
from payments.statement_file import moment
from payments.statement_rows import Row, classify, is_customer_number
from payments.statements import StatementSummary, new_record, reconcile_rows

log = logging.getLogger("marejesho.pull")
WINDOW = timedelta(hours=48)
MARGIN = timedelta(minutes=10)  # start a little inside the 48 hours Safaricom keeps
OVERLAP = timedelta(hours=1)  # pull again what came just before the last pull's end
PAGE = 100  # Daraja's page: OffSetValue 0, 100, 200, ...
MAX_PAGES = 1_000


class PullError(ValueError):
    """A pull that cannot be made; the message is for the admin."""


def register(
    session: Session, shortcode: Shortcode, config: dict, *, nominated: str, actor: StaffUser
) -> str:
    """Register the shortcode for Pull Transactions with Daraja (once; Daraja says 1001
    when it already was) and remember it. Raises PullError, ShortcodeError or DarajaError."""
    try:
        number = canonical_msisdn(nominated, "Nominated number")
    except RequestRefused as exc:
        raise PullError(str(exc)) from None
    callback = shortcode_json(shortcode, config["PUBLIC_BASE_URL"])["confirmation_url"]
    with daraja_client(shortcode, config) as client:
        answer = client.register_pull(shortcode.number, "0" + number[3:], callback)
    status = str(answer.get("ResponseStatus") or answer.get("Response Status") or "").strip()
    said = str(answer.get("ResponseDescription") or answer.get("Response Description") or "")
    if status not in ("1000", "1001"):
        raise PullError(f"Daraja did not register it: {said or 'no description'} ({status})")
    registration = session.get(PullRegistration, shortcode.id) or PullRegistration(
        shortcode_id=shortcode.id
    )
    registration.nominated_number, registration.response = number, f"{said} ({status})"
    registration.registered_at, registration.registered_by_id = datetime.now(UTC), actor.id
    session.add(registration)
    record_audit(
        session,
        "shortcode.pull_registered",
        shortcode,
        actor=actor,
        after={"status": status, "nominated": number[:4] + "****" + number[-4:]},
    )
    return f"Daraja answered: {said or 'registered'} ({status})."


def window(registration: PullRegistration, now: datetime, since: datetime | None = None):
    """From ``since`` (or an hour before the last pull's end, or 48 hours back), never
    further back than Safaricom keeps, to now."""
    start = since or (registration.last_pull_to - OVERLAP if registration.last_pull_to else None)
    earliest = now - WINDOW + MARGIN
    return max(start or earliest, earliest), now


def fetch(shortcode: Shortcode, config: dict, start: datetime, end: datetime) -> list[dict]:
    """Every row of the window, page by page."""
    rows: list[dict] = []
    with daraja_client(shortcode, config) as client:
        for page in range(MAX_PAGES):
            found = client.query_pull(shortcode.number, start, end, offset=page * PAGE)
            rows.extend(found)
            if len(found) < PAGE:
                break
    return rows


def pull_row(line: int, item: dict) -> Row:
    """One Pull Transactions row (lower-case keys, REFERENCE §10.1) as a statement row.
    Raises ValueError naming what could not be read."""
    receipt = clean_text(item.get("transactionId"), 32).upper()
    if not receipt.isalnum():
        raise ValueError(f"row {line}: no transactionId")
    try:
        value = Decimal(str(item.get("amount", "")).replace(",", "").strip()).quantize(
            Decimal("0.01")
        )
    except InvalidOperation:
        raise ValueError(f"row {line}: bad amount {str(item.get('amount'))[:20]!r}") from None
    when = _pull_time(clean_text(item.get("trxDate"), 40))
    kind_text = clean_text(item.get("transactiontype"), 80)
    msisdn = clean_text(item.get("msisdn"), 64)
    number = msisdn if is_customer_number(msisdn) else ""
    money_in, money_out = (value, Decimal("0.00")) if value > 0 else (Decimal("0.00"), -value)
    kind, note = classify("", kind_text, "", money_in, money_out, True)
    if kind == "reversal" and money_in:  # Pull shows a reversal with its payment's amount
        money_in, money_out = Decimal("0.00"), money_in
    linked = None
    for key in ("originalTransactionId", "linkedTransactionId", "OriginalTransactionID"):
        linked = clean_text(item.get(key), 32).upper() or linked
    return Row(
        line=line,
        receipt=receipt,
        kind=kind,
        completed_at=when,
        paid_in=money_in,
        withdrawn=money_out,
        balance=None,
        linked_receipt=linked if kind == "reversal" else None,
        bill_ref=clean_text(item.get("billreference"), 64),
        party=clean_text(item.get("sender"), 120),
        msisdn=number,
        payer_names=tuple(clean_text(item.get("sender"), 120).split()),
        reason_type=kind_text,
        details=clean_text(item.get("organizationname"), 200),
        note=note,
    )


def _pull_time(text: str) -> datetime:
    """``2020-08-05T10:13:00Z`` (UTC) or a Nairobi ``2020-08-05 10:13:00``."""
    if text.endswith("Z") or "+" in text[10:]:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    found = moment(text)
    if found is None:
        raise ValueError("no trxDate")
    return found


def pull_transactions(
    session: Session,
    shortcode: Shortcode,
    config: dict,
    *,
    since: datetime | None = None,
    actor: StaffUser | None = None,
) -> tuple[StatementSummary, StatementImport]:
    """Pull the window and reconcile it, in the caller's transaction. Raises PullError
    (not registered) or Daraja's errors."""
    registration = session.get(PullRegistration, shortcode.id)
    if registration is None:
        raise PullError(f"register {shortcode.number} for Pull Transactions first")
    now = datetime.now(UTC)
    start, end = window(registration, now, since)
    items = fetch(shortcode, config, start, end)
    rows, errors = [], []
    for line, item in enumerate(items, start=1):
        try:
            rows.append(pull_row(line, item if isinstance(item, dict) else {}))
        except ValueError as exc:
            errors.append(str(exc))
    record = new_record(session, shortcode, "pull", f"pull {start:%Y-%m-%d %H:%M} UTC")
    record.created_by_id = actor.id if actor else None
    record.period_from, record.period_to = start, end
    summary = reconcile_rows(session, shortcode, rows, record, errors, len(items))
    registration.last_pull_at, registration.last_pull_to = now, end
    registration.last_import_id, registration.last_error = record.id, None
    registration.last_attempt_at = now
    return summary, record


def pull_and_record(
    session: Session,
    shortcode: Shortcode,
    config: dict,
    *,
    since: datetime | None = None,
    actor: StaffUser | None = None,
) -> StatementSummary:
    """Pull, commit, wake the drains; a failure is kept on the registration (shown on the
    shortcode's page) and raised again as PullError in plain words."""
    from payments.statements import wake_drains

    try:
        summary, _ = pull_transactions(session, shortcode, config, since=since, actor=actor)
        session.commit()
    except (DarajaError, RequestRefused, ShortcodeError, PullError) as exc:
        session.rollback()
        said = str(exc) if isinstance(exc, PullError | ShortcodeError) else explain(exc)
        registration = session.get(PullRegistration, shortcode.id)
        if registration is not None:
            registration.last_attempt_at, registration.last_error = datetime.now(UTC), said
            session.commit()
        log.warning("pull for %s failed: %s", shortcode.number, said)
        raise PullError(said) from exc
    wake_drains()
    return summary
