"""C2B calls (REFERENCE §2, §5): registering a shortcode's callback URLs, and the
sandbox's simulated payment. Mixed into ``DarajaClient``, which provides ``_call``,
``_callback_url`` and ``environment``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from payments.daraja.errors import ProductMismatch, RequestRefused, SandboxOnly
from payments.daraja.fields import canonical_msisdn, mask_msisdn, whole_shillings

log = logging.getLogger("marejesho.daraja")

C2B_VERSIONS = ("v1", "v2")
RESPONSE_TYPES = ("Completed", "Cancelled")
C2B_COMMANDS = ("CustomerPayBillOnline", "CustomerBuyGoodsOnline")


@dataclass(frozen=True)
class Registration:
    """A C2B URL registration Daraja accepted: with which version, and its answer."""

    version: str
    response: dict
    fell_back: bool = False  # True when the asked-for version was refused with 401.003.01


class C2BCalls:
    def register_c2b_urls(
        self,
        shortcode: str,
        confirmation_url: str,
        validation_url: str,
        response_type: str = "Completed",
        version: str = "v2",
    ) -> Registration:
        """Register the shortcode's callback URLs. Tries ``version`` and, when Daraja answers
        ``401.003.01`` (the app has the other C2B product), the other version; the result
        says which one took. ``response_type`` is what M-Pesa does when our validation URL
        does not answer in ~8 s: ``Completed`` or ``Cancelled``."""
        if version not in C2B_VERSIONS:
            raise ValueError(f"version must be one of {C2B_VERSIONS}")
        if response_type not in RESPONSE_TYPES:
            raise RequestRefused(f"ResponseType must be one of {RESPONSE_TYPES}")
        body = {
            "ShortCode": str(shortcode),
            "ResponseType": response_type,
            "ConfirmationURL": self._callback_url("ConfirmationURL", confirmation_url),
            "ValidationURL": self._callback_url("ValidationURL", validation_url),
        }
        try:
            data = self._call(
                f"/mpesa/c2b/{version}/registerurl", body, what=f"C2B register {version}"
            )
            return Registration(version, data)
        except ProductMismatch:
            other = "v1" if version == "v2" else "v2"
            log.warning(
                "C2B register %s for shortcode %s: the app lacks that product (401.003.01); "
                "trying %s",
                version,
                shortcode,
                other,
            )
            data = self._call(f"/mpesa/c2b/{other}/registerurl", body, what=f"C2B register {other}")
            return Registration(other, data, fell_back=True)

    def simulate_c2b(
        self,
        shortcode: str,
        amount,
        msisdn: str,
        bill_ref: str = "",
        command_id: str = "CustomerPayBillOnline",
        version: str = "v2",
    ) -> dict:
        """Make the sandbox pay ``amount`` into ``shortcode`` as if ``msisdn`` had (Daraja then
        calls the registered validation and confirmation URLs). Sandbox only: refused for a
        production client before anything is sent. Sent once (a resend would be a second
        payment)."""
        if self.environment != "sandbox":
            raise SandboxOnly("C2B simulate exists only in the sandbox")
        if version not in C2B_VERSIONS:
            raise ValueError(f"version must be one of {C2B_VERSIONS}")
        if command_id not in C2B_COMMANDS:
            raise RequestRefused(f"CommandID must be one of {C2B_COMMANDS}")
        body = {
            "ShortCode": str(shortcode),
            "CommandID": command_id,
            "Amount": whole_shillings(amount),
            "Msisdn": canonical_msisdn(msisdn, "Msisdn"),
            "BillRefNumber": bill_ref,
        }
        log.info(
            "C2B simulate: KES %s to %s from %s", body["Amount"], shortcode, mask_msisdn(msisdn)
        )
        return self._call(
            f"/mpesa/c2b/{version}/simulate", body, what="C2B simulate", retry_ambiguous=False
        )
