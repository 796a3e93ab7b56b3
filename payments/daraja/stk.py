"""STK Push (M-Pesa Express) and STK Query (REFERENCE §6). Mixed into ``DarajaClient``,
which provides ``_call`` and ``_callback_url``. The callback's body is read by
``results.parse_stk_callback``, a query's answer by ``results.parse_stk_query``."""

from __future__ import annotations

import logging

from payments.daraja.credentials import stk_password, stk_timestamp
from payments.daraja.errors import RequestRefused
from payments.daraja.fields import canonical_msisdn, mask_msisdn, whole_shillings

log = logging.getLogger("marejesho.daraja")

STK_TRANSACTION_TYPES = ("CustomerPayBillOnline", "CustomerBuyGoodsOnline")


class StkCalls:
    def stk_push(
        self,
        shortcode: str,
        passkey: str,
        amount,
        phone: str,
        callback_url: str,
        account_reference: str,
        description: str = "Repayment",
        transaction_type: str = "CustomerPayBillOnline",
        party_b: str | None = None,
        timestamp: str | None = None,
    ) -> dict:
        """Prompt ``phone`` to pay ``amount`` to ``shortcode`` (for a till: ``shortcode`` is the
        store number, ``party_b`` the till, ``transaction_type`` CustomerBuyGoodsOnline).
        Daraja answers at once with the CheckoutRequestID; the outcome comes to
        ``callback_url`` after the customer acts."""
        if transaction_type not in STK_TRANSACTION_TYPES:
            raise RequestRefused(f"TransactionType must be one of {STK_TRANSACTION_TYPES}")
        if not account_reference or len(account_reference) > 12:
            raise RequestRefused("AccountReference must be 1 to 12 characters")
        if len(description) > 13:
            raise RequestRefused("TransactionDesc must be at most 13 characters")
        msisdn = canonical_msisdn(phone)
        fields = {
            "TransactionType": transaction_type,
            "Amount": str(whole_shillings(amount)),
            "PartyA": msisdn,
            "PartyB": str(party_b or shortcode),
            "PhoneNumber": msisdn,
            "CallBackURL": self._callback_url("CallBackURL", callback_url),
            "AccountReference": account_reference,
            "TransactionDesc": description,
        }
        log.info("STK push: KES %s to %s from %s", fields["Amount"], shortcode, mask_msisdn(msisdn))
        return self._stk_call(
            "/mpesa/stkpush/v1/processrequest", "STK push", shortcode, passkey, timestamp, fields
        )

    def stk_query(
        self, shortcode: str, passkey: str, checkout_request_id: str, timestamp: str | None = None
    ) -> dict:
        """What became of an STK push. ``ResultCode`` comes as a string here (``"0"``,
        ``"1032"``). While the prompt is still open Daraja answers an error, raised as
        ``TransactionPending``."""
        return self._stk_call(
            "/mpesa/stkpushquery/v1/query",
            "STK query",
            shortcode,
            passkey,
            timestamp,
            {"CheckoutRequestID": checkout_request_id},
        )

    def _stk_call(
        self, path: str, what: str, shortcode, passkey: str, timestamp: str | None, fields: dict
    ) -> dict:
        """STK Push and Query start alike: the shortcode, the password and its timestamp."""
        timestamp = timestamp or stk_timestamp()
        password = stk_password(shortcode, passkey, timestamp)
        body = {"BusinessShortCode": str(shortcode), "Password": password, "Timestamp": timestamp}
        return self._call(path, body | fields, what=what, secrets=(passkey, password))
