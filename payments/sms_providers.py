"""Who carries a message to a phone: the log in development, Africa's Talking in production."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.orm import Session

from lenders.phones import mask_phone
from payments.models import SmsSettings

log = logging.getLogger("marejesho.sms")


class SmsFailed(RuntimeError):
    """The provider refused or could not be reached; the message says why (no secrets)."""


class ConsoleProvider:
    """Development and the demo: the message goes to the log (phone masked)."""

    name = "console"

    def send(self, to_phone: str, body: str) -> str:
        log.info("SMS to %s (%d chars): %s", mask_phone(to_phone), len(body), body)
        return f"console-{uuid.uuid4().hex[:12]}"


class AfricasTalkingProvider:
    """Africa's Talking through its official SDK (``username`` "sandbox" for its sandbox).
    ``base_url`` points the SDK at a stand-in in tests."""

    name = "africastalking"

    def __init__(
        self, username: str, api_key: str, sender_id: str | None = None, base_url: str | None = None
    ):
        from africastalking.SMS import SMSService

        self.service = SMSService(username, api_key)
        if base_url:
            self.service._baseUrl = base_url.rstrip("/") + "/version1"
        self.sender_id = sender_id or None

    def send(self, to_phone: str, body: str) -> str:
        from africastalking.Service import AfricasTalkingException

        try:
            answer = self.service.send(body, ["+" + to_phone], sender_id=self.sender_id, timeout=15)
        except AfricasTalkingException as exc:
            raise SmsFailed(f"Africa's Talking refused: {str(exc)[:200]}") from exc
        except OSError as exc:  # connection errors and timeouts from requests
            raise SmsFailed("Africa's Talking could not be reached") from exc
        if not isinstance(answer, dict):
            raise SmsFailed("Africa's Talking answered something that is not JSON")
        try:
            recipient = answer["SMSMessageData"]["Recipients"][0]
        except (KeyError, IndexError, TypeError) as exc:
            data = answer.get("SMSMessageData")
            message = data.get("Message", "no recipient") if isinstance(data, dict) else "?"
            raise SmsFailed(f"Africa's Talking sent nothing: {message}") from exc
        if recipient.get("statusCode") not in (100, 101, 102):
            raise SmsFailed(f"Africa's Talking: {recipient.get('status', 'refused')}")
        return recipient.get("messageId") or ""


def provider_for(session: Session, config: dict):
    settings = session.get(SmsSettings, 1)
    if settings is None or settings.provider == "console":
        return ConsoleProvider()
    return AfricasTalkingProvider(
        settings.username or "",
        settings.api_key or "",
        settings.sender_id,
        config.get("AFRICASTALKING_URL"),
    )
