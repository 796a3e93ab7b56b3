"""The demo paybill, so that a newcomer running ``make run`` has a shortcode to watch.

Its credentials are those of the local Daraja emulator's default app (``make run`` starts
the emulator; ``payments/emulator/`` knows these values and reads them from here) and
Safaricom's published sandbox test credentials (REFERENCE §5). The traffic that pays it
lives with the emulator (``payments/emulator/demo_traffic.py``): nothing here sends
anything."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from payments.models import Shortcode

DEMO_SHORTCODE = "600984"
# The emulator's default Daraja app: not secrets, they open nothing but the local emulator.
DEMO_CONSUMER_KEY = "marejesho-emulator-key"
DEMO_CONSUMER_SECRET = "marejesho-emulator-secret"
# Safaricom's sandbox passkey and initiator (REFERENCE §5), public test values.
SANDBOX_PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
SANDBOX_INITIATOR = ("testapi", "Safaricom999!*!")


def load_demo_shortcode(session: Session) -> Shortcode:
    """The demo paybill (sandbox, masked MSISDNs), created once."""
    shortcode = session.scalar(select(Shortcode).where(Shortcode.number == DEMO_SHORTCODE))
    if shortcode is None:
        shortcode = Shortcode(
            number=DEMO_SHORTCODE,
            name="Demo paybill",
            kind="paybill",
            environment="sandbox",
            register_version="v2",
            consumer_key=DEMO_CONSUMER_KEY,
            consumer_secret=DEMO_CONSUMER_SECRET,
            passkey=SANDBOX_PASSKEY,
            initiator_name=SANDBOX_INITIATOR[0],
            initiator_password=SANDBOX_INITIATOR[1],
        )
        session.add(shortcode)
        session.flush()
    return shortcode
