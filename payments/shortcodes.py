"""Administering paybills and tills: their settings, Daraja credentials and environment,
and the three calls an admin makes from the page (register URLs, test payment, check)."""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

import requests
from sqlalchemy import select
from sqlalchemy.orm import Session

from lenders.book import record_audit
from lenders.models import StaffUser
from payments.daraja import (
    AuthenticationFailed,
    DarajaClient,
    DarajaError,
    DarajaUnavailable,
    RequestRefused,
    callback_url_problem,
    default_certificate,
    security_credential,
)
from payments.exports import shortcode_json
from payments.models import Shortcode

log = logging.getLogger("marejesho.shortcodes")
PLAIN_FIELDS = (
    "name",
    "kind",
    "register_version",
    "amount_tolerance",
    "validation_policy",
    "allowed_ips",
    "initiator_name",
)


class ShortcodeError(ValueError):
    """A change refused, in words for the admin (never containing a secret)."""


@dataclass
class ShortcodeInput:
    """What the admin typed. Empty secrets mean "keep what is stored"."""

    number: str
    name: str
    kind: str = "paybill"
    register_version: str = "v2"
    amount_tolerance: str = "10.00"
    validation_policy: str = "accept_all"
    allowed_ips: str = ""
    initiator_name: str = ""
    consumer_key: str = ""
    consumer_secret: str = ""
    passkey: str = ""
    initiator_password: str = ""


def check_input(data: ShortcodeInput) -> dict[str, str]:
    """Field errors, by field name."""
    errors = {}
    if not re.fullmatch(r"\d{5,7}", data.number or ""):
        errors["number"] = "A shortcode is 5 to 7 digits."
    if not (data.name or "").strip():
        errors["name"] = "Give it a name staff will recognise."
    if data.kind not in ("paybill", "till"):
        errors["kind"] = "Paybill or till."
    if data.register_version not in ("v1", "v2"):
        errors["register_version"] = "v1 or v2."
    if data.validation_policy not in ("accept_all", "reject_unknown"):
        errors["validation_policy"] = "Choose a validation policy."
    try:
        tolerance = Decimal(data.amount_tolerance or "0")
        if not tolerance.is_finite() or tolerance < 0 or tolerance > 100000:
            raise InvalidOperation
    except InvalidOperation:
        errors["amount_tolerance"] = "An amount in shillings, 0 or more."
    for entry in filter(None, (e.strip() for e in (data.allowed_ips or "").split(","))):
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            errors["allowed_ips"] = f"{entry!r} is not an address or network."
    return errors


def _apply(shortcode: Shortcode, data: ShortcodeInput) -> dict:
    changed = {}
    for field in PLAIN_FIELDS:
        value = getattr(data, field)
        if field == "amount_tolerance":
            value = Decimal(value or "0").quantize(Decimal("0.01"))
        elif isinstance(value, str):
            value = value.strip()
        if getattr(shortcode, field) != value:
            changed[field] = str(value)
            setattr(shortcode, field, value)
    for field in Shortcode.SECRET_FIELDS:
        value = (getattr(data, field) or "").strip()
        if value:
            setattr(shortcode, field, value)
            changed[field] = "changed"  # the audit says that, never what
    return changed


def create_shortcode(session: Session, data: ShortcodeInput, *, actor: StaffUser) -> Shortcode:
    errors = check_input(data)
    if errors:
        raise ShortcodeFormError(errors)
    if session.scalar(select(Shortcode.id).where(Shortcode.number == data.number)):
        raise ShortcodeFormError({"number": f"Shortcode {data.number} exists already."})
    shortcode = Shortcode(number=data.number, environment="sandbox")
    changed = _apply(shortcode, data)
    session.add(shortcode)
    record_audit(session, "shortcode.created", shortcode, actor=actor, after=changed)
    return shortcode


def update_shortcode(
    session: Session, shortcode: Shortcode, data: ShortcodeInput, *, actor: StaffUser
) -> Shortcode:
    data.number = shortcode.number  # the number never changes; it names the callbacks
    errors = check_input(data)
    if errors:
        raise ShortcodeFormError(errors)
    changed = _apply(shortcode, data)
    if changed:
        record_audit(session, "shortcode.changed", shortcode, actor=actor, after=changed)
    return shortcode


class ShortcodeFormError(ShortcodeError):
    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(errors.values()))
        self.errors = errors


def switch_environment(
    session: Session, shortcode: Shortcode, environment: str, *, actor: StaffUser, base_url: str
) -> Shortcode:
    """Move a shortcode between sandbox and production. Production needs https callback
    URLs Safaricom accepts; the callbacks must be registered again there."""
    if environment not in ("sandbox", "production"):
        raise ShortcodeError("sandbox or production")
    if environment == shortcode.environment:
        return shortcode
    if environment == "production":
        urls = shortcode_json(shortcode, base_url)
        for key in ("confirmation_url", "validation_url"):
            problem = callback_url_problem(urls[key], "production")
            if problem:
                raise ShortcodeError(f"Safaricom would refuse the callback URL: {problem}")
    before = {"environment": shortcode.environment}
    shortcode.environment = environment
    shortcode.urls_registered_at = None
    record_audit(
        session,
        "shortcode.environment",
        shortcode,
        actor=actor,
        before=before,
        after={"environment": environment},
    )
    return shortcode


def production_changes(shortcode: Shortcode) -> list[str]:
    """What switching to production means, in the admin's words."""
    return [
        "Calls go to Safaricom's production API (api.safaricom.co.ke) with the production "
        "consumer key and secret, which must be entered first.",
        "Callback URLs must be https and are registered once: changing them later needs "
        "Safaricom's URL management, approved by two of your org portal administrators.",
        "Test payments are no longer possible; real customers' money arrives.",
        "Payers' numbers arrive "
        + ("hashed (C2B v1)." if shortcode.register_version == "v1" else "masked (C2B v2)."),
    ]


# --- talking to Daraja ---------------------------------------------------------------------


def daraja_client(shortcode: Shortcode, config: dict, *, max_retries: int = 2) -> DarajaClient:
    """A client with this shortcode's credentials (the emulator for sandbox in development).
    ``max_retries=0`` for a request that must never be resent blindly (B2C, reversal):
    its no-answer is settled by asking Safaricom, not by sending again."""
    if not (shortcode.consumer_key and shortcode.consumer_secret):
        raise ShortcodeError("Enter the consumer key and secret first.")
    base = config.get("DARAJA_SANDBOX_URL") if shortcode.environment == "sandbox" else None
    cache = None
    if config.get("REDIS_URL"):
        from payments.daraja import RedisTokenCache

        cache = RedisTokenCache.from_url(config["REDIS_URL"])
    return DarajaClient(
        shortcode.consumer_key,
        shortcode.consumer_secret,
        environment=shortcode.environment,
        base_url=base,
        token_cache=cache,
        max_retries=max_retries,
        timeout=(5, float(config.get("DARAJA_READ_TIMEOUT", 30))),
    )


def initiator_credential(shortcode: Shortcode, config: dict) -> str:
    """The initiator's SecurityCredential for this shortcode's environment (the emulator
    publishes its own certificate, as Safaricom does)."""
    if not (shortcode.initiator_name and shortcode.initiator_password):
        raise ShortcodeError(
            f"Shortcode {shortcode.number} has no initiator: an admin adds it in Configuration."
        )
    cert = default_certificate(shortcode.environment)
    if config.get("DARAJA_SANDBOX_URL") and shortcode.environment == "sandbox":
        cert = requests.get(
            f"{config['DARAJA_SANDBOX_URL']}/_emulator/certificate", timeout=5
        ).content
    return security_credential(shortcode.initiator_password, cert)


def explain(exc: Exception) -> str:
    """A Daraja failure in plain words (no secret, no URL with its token)."""
    if isinstance(exc, DarajaUnavailable):
        return "Daraja could not be reached. Try again in a minute."
    if isinstance(exc, RequestRefused):
        return str(exc)
    if isinstance(exc, AuthenticationFailed) and exc.error_code is None:
        # Daraja answers a wrong key or secret with HTTP 400 and no body (REFERENCE §13)
        return "The consumer key or secret is wrong."
    if isinstance(exc, DarajaError):
        code = f" ({exc.error_code})" if exc.error_code else ""
        hints = {
            "400.008.01": "The consumer key or secret is wrong.",
            "401.003.01": "Your Daraja app does not have this API product.",
            "500.003.1001": "Safaricom says the URLs are already registered.",
            "500.003.02": "Daraja is rate-limiting; try again shortly.",
        }
        return hints.get(exc.error_code or "", exc.error_message or "Daraja refused.") + code
    return "Something went wrong talking to Daraja."


def register_urls(session: Session, shortcode: Shortcode, config: dict, *, actor: StaffUser) -> str:
    urls = shortcode_json(shortcode, config["PUBLIC_BASE_URL"])
    with daraja_client(shortcode, config) as client:
        outcome = client.register_c2b_urls(
            shortcode.number,
            urls["confirmation_url"],
            urls["validation_url"],
            version=shortcode.register_version,
        )
    if outcome.fell_back:
        shortcode.register_version = outcome.version
    shortcode.urls_registered_at = datetime.now(UTC)
    record_audit(
        session,
        "shortcode.urls_registered",
        shortcode,
        actor=actor,
        after={"version": outcome.version},
    )
    description = outcome.response.get("ResponseDescription", "")
    return f"Daraja answered: {description or 'success'} (C2B {outcome.version})."


def test_payment(
    shortcode: Shortcode, config: dict, *, amount: int, msisdn: str, bill_ref: str
) -> str:
    if shortcode.environment != "sandbox":
        raise ShortcodeError("Test payments are for sandbox shortcodes only.")
    with daraja_client(shortcode, config) as client:
        answer = client.simulate_c2b(
            shortcode.number, amount, msisdn, bill_ref, version=shortcode.register_version
        )
    return answer.get("ResponseDescription") or "Daraja accepted the test payment."


def check_connection(session: Session, shortcode: Shortcode, config: dict, *, actor=None) -> str:
    """Fetch a token, then ask for the account balances: the query is a row committed
    before it is sent, and its result (working and utility balances) comes to its own
    tokened URL and is shown on the shortcode's page (payments/daraja_queries.py)."""
    from payments import daraja_queries

    with daraja_client(shortcode, config) as client:
        client.access_token(force_refresh=True)
    if not (shortcode.initiator_name and shortcode.initiator_password):
        return "Connected: Daraja issued a token. Add the initiator to check the balance."
    query = daraja_queries.new_query(session, "balance", shortcode, actor=actor)
    session.commit()  # the row and its token exist before Safaricom can answer
    query = daraja_queries.send_query(session, query.id, config)
    if query.status == "failed":
        raise ShortcodeError(f"Connected, but the balance query failed: {query.error}")
    return (
        "Connected: Daraja issued a token and accepted a balance query; "
        "the balances appear below when Safaricom sends them."
    )
