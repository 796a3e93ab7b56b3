"""The initiator APIs (REFERENCE §7-§9): B2C payments, Transaction Status, Account Balance
and Reversal. Each is answered at once with ids; its outcome comes later to ``result_url``
(read it with ``results.parse_result``). Mixed into ``DarajaClient``, which provides
``_call`` and ``_callback_url``."""

from __future__ import annotations

import logging

from payments.daraja.errors import RequestRefused
from payments.daraja.fields import canonical_msisdn, mask_msisdn, whole_shillings

log = logging.getLogger("marejesho.daraja")

B2C_COMMANDS = ("BusinessPayment", "SalaryPayment", "PromotionPayment")


class InitiatorCalls:
    def b2c_payment(
        self,
        *,
        originator_conversation_id: str | None,
        initiator_name: str,
        security_credential: str,
        amount,
        party_a: str,
        party_b: str,
        result_url: str,
        queue_timeout_url: str,
        command_id: str = "BusinessPayment",
        remarks: str = "Loan disbursement",
        occasion: str = "",
        version: str = "v3",
    ) -> dict:
        """Send money from shortcode ``party_a`` to phone ``party_b``. v3 carries our
        ``originator_conversation_id`` (the disbursement's idempotency key: Daraja refuses a
        reused one with ``DuplicateOriginatorConversationID``), so it is resent after a
        timeout or 5xx; v1 has no such key and is never resent once Daraja may have it.
        The outcome comes to ``result_url``."""
        if version not in ("v1", "v3"):
            raise ValueError("B2C version must be v3 (or the legacy v1); Kenya has no v2")
        if command_id not in B2C_COMMANDS:
            raise RequestRefused(f"CommandID must be one of {B2C_COMMANDS}")
        if not 2 <= len(remarks) <= 100:
            raise RequestRefused("Remarks must be 2 to 100 characters")
        body: dict = {}
        if version == "v3":
            if not originator_conversation_id:
                raise RequestRefused("B2C v3 needs our OriginatorConversationID")
            body["OriginatorConversationID"] = originator_conversation_id
        body |= {
            "InitiatorName": initiator_name,
            "SecurityCredential": security_credential,
            "CommandID": command_id,
            "Amount": str(whole_shillings(amount)),
            "PartyA": str(party_a),
            "PartyB": canonical_msisdn(party_b, "PartyB"),
            "Remarks": remarks,
            "QueueTimeOutURL": self._callback_url("QueueTimeOutURL", queue_timeout_url),
            "ResultURL": self._callback_url("ResultURL", result_url),
        }
        if occasion:
            body["Occassion"] = occasion  # Daraja's documented spelling
        log.info(
            "B2C %s: KES %s from %s to %s (%s)",
            version,
            body["Amount"],
            party_a,
            mask_msisdn(party_b),
            originator_conversation_id or "no originator id",
        )
        return self._call(
            f"/mpesa/b2c/{version}/paymentrequest",
            body,
            what=f"B2C {version}",
            retry_ambiguous=version == "v3",
        )

    def transaction_status(
        self,
        *,
        initiator_name: str,
        security_credential: str,
        party_a: str,
        result_url: str,
        queue_timeout_url: str,
        transaction_id: str | None = None,
        original_conversation_id: str | None = None,
        identifier_type: str = "4",
        remarks: str = "Status check",
        occasion: str = "",
    ) -> dict:
        """Ask what became of a transaction, by M-Pesa receipt (``transaction_id``) or by the
        OriginatorConversationID we gave a B2C v3 payment. The answer comes to
        ``result_url``."""
        if not transaction_id and not original_conversation_id:
            raise RequestRefused("give a TransactionID or an OriginalConversationID")
        body = {
            "Initiator": initiator_name,
            "SecurityCredential": security_credential,
            "CommandID": "TransactionStatusQuery",
            "TransactionID": transaction_id or "",
            "OriginalConversationID": original_conversation_id or "",
            "PartyA": str(party_a),
            "IdentifierType": str(identifier_type),
            "ResultURL": self._callback_url("ResultURL", result_url),
            "QueueTimeOutURL": self._callback_url("QueueTimeOutURL", queue_timeout_url),
            "Remarks": remarks,
            "Occasion": occasion,
        }
        return self._call("/mpesa/transactionstatus/v1/query", body, what="transaction status")

    def account_balance(
        self,
        *,
        initiator_name: str,
        security_credential: str,
        party_a: str,
        result_url: str,
        queue_timeout_url: str,
        identifier_type: str = "4",
        remarks: str = "Balance check",
    ) -> dict:
        """Ask for the shortcode's account balances; they come to ``result_url``."""
        body = {
            "Initiator": initiator_name,
            "SecurityCredential": security_credential,
            "CommandID": "AccountBalance",
            "PartyA": str(party_a),
            "IdentifierType": str(identifier_type),
            "Remarks": remarks,
            "QueueTimeOutURL": self._callback_url("QueueTimeOutURL", queue_timeout_url),
            "ResultURL": self._callback_url("ResultURL", result_url),
        }
        return self._call("/mpesa/accountbalance/v1/query", body, what="account balance")

    def reverse_transaction(
        self,
        *,
        initiator_name: str,
        security_credential: str,
        transaction_id: str,
        amount,
        receiver_party: str,
        result_url: str,
        queue_timeout_url: str,
        remarks: str = "Payment reversal",
        receiver_identifier_type: str = "11",
        occasion: str = "",
    ) -> dict:
        """Reverse a C2B payment (``transaction_id`` is its receipt) received by
        ``receiver_party``. A resend is refused by M-Pesa as already reversed (R000001)."""
        body = {
            "Initiator": initiator_name,
            "SecurityCredential": security_credential,
            "CommandID": "TransactionReversal",
            "TransactionID": transaction_id,
            "Amount": str(whole_shillings(amount)),
            "ReceiverParty": str(receiver_party),
            "RecieverIdentifierType": str(receiver_identifier_type),  # Daraja's spelling
            "ResultURL": self._callback_url("ResultURL", result_url),
            "QueueTimeOutURL": self._callback_url("QueueTimeOutURL", queue_timeout_url),
            "Remarks": remarks,
        }
        if occasion:
            body["Occasion"] = occasion
        return self._call("/mpesa/reversal/v1/request", body, what="reversal")
