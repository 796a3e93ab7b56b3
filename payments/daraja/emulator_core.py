"""The emulator's M-Pesa: its state (apps, tokens, registered URLs, payments, prompts,
disbursements, balances) and what happens after Daraja accepts a request: validation and
confirmation, the customer answering an STK prompt, and the results of B2C, Transaction
Status, Account Balance and Reversal, delivered from background threads. Also the checks
Daraja makes on what it is sent, raising ``Refusal`` with Daraja's error code. No Flask:
``emulator.py`` is the HTTP surface over this."""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import threading
from collections import deque
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from payments.daraja import emulator_payloads as make
from payments.daraja.client import whole_shillings
from payments.daraja.credentials import decrypt_security_credential, stk_password
from payments.daraja.emulator_payloads import SANDBOX_SUBSCRIBER, money, now_nairobi
from payments.daraja.emulator_state import (
    Courier,
    EmulatedApp,
    Faults,
    TokenStore,
    merged_config,
)
from payments.daraja.errors import RequestRefused
from payments.daraja.urls import forbidden_url_words

PRODUCT_MISMATCH = (
    "Error Occurred - Invalid Access Token - Invalid API call as no apiproduct match found"
)
# Which "invalid token" answer each API gives (REFERENCE §12): status, code, message.
INVALID_TOKEN = {
    "c2b": (400, "400.003.01", "Invalid Access Token"),
    "status": (400, "400.003.01", "Invalid Access Token"),
    "stk": (404, "404.001.03", "Invalid Access Token"),
    "reversal": (404, "404.001.03", "Invalid Access Token"),
    "b2c": (401, "401.002.01", "Error Occurred - Invalid Access Token - {token}"),
    "balance": (401, "401.002.01", "Error Occurred - Invalid Access Token - {token}"),
    "pull": (401, "401.001", "Invalid Access Token"),
}
STK_TYPES = ("CustomerPayBillOnline", "CustomerBuyGoodsOnline")
B2C_COMMANDS = ("BusinessPayment", "SalaryPayment", "PromotionPayment")
ORGANISATION = "Marejesho Emulated Paybill"
DEFAULT_NAMES = ("JOHN", "", "DOE")


class Refusal(Exception):
    """Answer with Daraja's error shape."""

    def __init__(self, status: int, code: str, message: str, request_id: str | None = None):
        super().__init__(f"{code} {message}")
        self.status, self.code, self.message, self.request_id = status, code, message, request_id


def invalid(field: str) -> Refusal:
    return Refusal(400, "400.002.02", f"Bad Request - Invalid {field}")


def _self_signed(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "daraja-emulator.marejesho.test")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


class Emulator:
    """Daraja's state: apps, tokens, registered URLs, payments, prompts, disbursements."""

    def __init__(self, config: dict | None = None):
        self.config = merged_config(config)
        self.environment = self.config["environment"]
        self.apps = [EmulatedApp.from_config(item) for item in self.config["apps"]]
        self.faults = Faults(self.config["faults"])
        self.tokens = TokenStore(self.config["token_lifetime"], self.config["single_token_per_app"])
        self.courier = Courier(self.faults, self.config["callback_timeout"])
        pem = self.config["private_key_pem"]
        if pem:
            self.private_key = serialization.load_pem_private_key(
                pem.encode() if isinstance(pem, str) else pem, password=None
            )
        else:
            self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.certificate_pem = _self_signed(self.private_key)
        self.lock = threading.RLock()
        self.registrations: dict[str, dict] = {}
        self.pull_registrations: dict[str, dict] = {}
        self.payments: dict[str, dict] = {}  # receipt → C2B or STK payment
        self.prompts: dict[str, dict] = {}  # CheckoutRequestID → STK push
        self.prompted: set[str] = set()  # subscribers with an open prompt
        self.disbursements: dict[str, dict] = {}  # OriginatorConversationID → B2C
        self.balances: dict[str, dict[str, Decimal]] = {}
        self.wrong_passwords: dict[str, int] = {}
        self.calls: deque[dict] = deque(maxlen=1000)  # the latest requests, for tests and people

    def stop(self) -> None:
        """Stop delivering: pending callbacks give up."""
        self.courier.stopping.set()

    # -- who is asking ------------------------------------------------------------------------

    def app_for_credentials(self, key: str, secret: str) -> EmulatedApp | None:
        for app in self.apps:
            if hmac.compare_digest(app.consumer_key.encode(), key.encode()) and hmac.compare_digest(
                app.consumer_secret.encode(), secret.encode()
            ):
                return app
        return None

    def authorized_app(self, which: str, authorization: str) -> EmulatedApp:
        """The app whose bearer token is in the Authorization header, or the refusal
        ``which`` API gives."""
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme != "Bearer" or not token:
            raise Refusal(404, "404.001.04", "Invalid Authentication Header")
        app = None if self.faults.take("invalid_token") else self.tokens.app_for(token)
        if app is None:
            status, code, message = INVALID_TOKEN[which]
            raise Refusal(status, code, message.format(token=token))
        return app

    # -- checking what was sent ---------------------------------------------------------------

    def shortcode(self, app: EmulatedApp, value, field: str) -> str:
        text = str(value if value is not None else "").strip()
        if not re.fullmatch(r"\d{5,7}", text) or not app.owns(text):
            raise invalid(field)
        return text

    def callback_url(self, value, field: str) -> str:
        url = str(value or "").strip()
        if not re.match(r"^https?://[^/\s]+", url):
            raise invalid(field)
        if self.environment == "production" and not url.startswith("https://"):
            raise invalid(field)
        if self.config["url_rules"] and forbidden_url_words(url):
            raise invalid(field)
        return url

    def security_credential(self, value) -> str | None:
        """The password inside; None when it is RSA for another key (a 2001 later);
        400.002.02 now when it is not a credential at all."""
        try:
            raw = base64.b64decode(str(value or "").encode("ascii"), validate=True)
        except (binascii.Error, UnicodeError):
            raise invalid("SecurityCredential") from None
        if len(raw) != self.private_key.key_size // 8:
            raise invalid("SecurityCredential")
        try:
            return decrypt_security_credential(str(value), self.private_key)
        except ValueError:
            return None

    def initiator_result(self, app: EmulatedApp, name: str, password: str | None) -> int:
        """0, 2001 (wrong initiator or password) or 8006 (locked after repeated failures)."""
        lock_after = self.config["credential_lock_after"]
        expected = app.initiators.get(name)
        with self.lock:
            if lock_after and self.wrong_passwords.get(name, 0) >= lock_after:
                return 8006
            if (
                expected is not None
                and password is not None
                and hmac.compare_digest(expected.encode(), password.encode())
            ):
                self.wrong_passwords[name] = 0
                return 0
            self.wrong_passwords[name] = self.wrong_passwords.get(name, 0) + 1
            return 2001

    def check_stk_password(self, app: EmulatedApp, shortcode: str, body: dict) -> None:
        timestamp = str(body.get("Timestamp") or "")
        if not re.fullmatch(r"\d{14}", timestamp):
            raise invalid("Timestamp")
        expected = stk_password(shortcode, app.passkey, timestamp)
        if not hmac.compare_digest(expected.encode(), str(body.get("Password") or "").encode()):
            raise Refusal(500, "500.001.1001", "Wrong credentials")

    # -- people and money ---------------------------------------------------------------------

    def names(self, msisdn: str) -> tuple[str, str, str]:
        full = self.config["subscribers"].get(msisdn)
        if not full:
            return make.SANDBOX_SUBSCRIBER_NAMES if msisdn == SANDBOX_SUBSCRIBER else DEFAULT_NAMES
        parts = full.upper().split()
        if len(parts) == 1:
            return parts[0], "", ""
        return parts[0], " ".join(parts[1:-1]), parts[-1]

    def public_name(self, msisdn: str) -> str:
        return f"{msisdn} - " + " ".join(p for p in self.names(msisdn) if p)

    def msisdn_as_sent(self, msisdn: str, version: str) -> str:
        mode = self.faults.get("msisdn_mode")
        if mode == "auto":
            mode = "hashed" if version == "v1" else "masked"
        if mode == "hashed":
            return make.hashed_msisdn(msisdn)
        if mode == "masked":
            return make.masked_msisdn(msisdn)
        return msisdn

    def account(self, shortcode: str) -> dict[str, Decimal]:
        with self.lock:
            return self.balances.setdefault(
                shortcode,
                {
                    "Working Account": Decimal("700000.00"),
                    "Float Account": Decimal("0.00"),
                    "Utility Account": Decimal("228037.00"),
                    "Charges Paid Account": Decimal("-1540.00"),
                    "Organization Settlement Account": Decimal("0.00"),
                },
            )

    def move(self, shortcode: str, amount: Decimal) -> Decimal:
        """Credit (or debit, when negative) the utility account; its new balance."""
        with self.lock:
            account = self.account(shortcode)
            account["Utility Account"] += amount
            return account["Utility Account"]

    # -- C2B ----------------------------------------------------------------------------------

    def pay_c2b(self, shortcode: str, amount: Decimal, msisdn: str, bill_ref: str, command: str):
        """What M-Pesa does when a customer pays: validation (if enabled), then the money
        moves, then the confirmation. Runs in a background thread."""
        moment = now_nairobi()
        trans_id = make.receipt(moment)
        if self.faults.get("sandbox_single_subscriber"):
            msisdn = SANDBOX_SUBSCRIBER
        with self.lock:
            registration = self.registrations.get(shortcode)
        version = registration["version"] if registration else "v2"
        notice = make.c2b_notice(
            trans_id=trans_id,
            moment=moment,
            amount=amount,
            shortcode=shortcode,
            bill_ref=bill_ref if command == "CustomerPayBillOnline" else "",
            msisdn=self.msisdn_as_sent(msisdn, version),
            names=self.names(msisdn),
            org_balance="",
            transaction_type="Pay Bill" if command == "CustomerPayBillOnline" else "Buy Goods",
            only_first_name=self.environment == "production" and version == "v2",
        )
        if registration and self.config["external_validation"]:
            verdict, third_party = self.validate(registration, notice)
            if verdict == "rejected" or (
                verdict == "unreachable" and registration["response_type"] == "Cancelled"
            ):
                self.courier.record("payment", trans_id, "cancelled")
                return
            notice["ThirdPartyTransID"] = third_party
        balance = self.move(shortcode, amount)
        with self.lock:
            self.payments[trans_id] = {
                "receipt": trans_id,
                "kind": "c2b",
                "shortcode": shortcode,
                "amount": amount,
                "msisdn": msisdn,
                "bill_ref": notice["BillRefNumber"],
                "moment": moment,
                "reversed": False,
            }
        if registration is None:
            self.courier.record("confirmation", trans_id, "no URLs registered")
            return
        notice["OrgAccountBalance"] = money(balance)
        self.courier.deliver("confirmation", trans_id, registration["confirmation_url"], notice)

    def validate(self, registration: dict, notice: dict) -> tuple[str, str]:
        """accepted | rejected | unreachable, and any ThirdPartyTransID we returned. A
        timeout, a broken connection, a non-2xx or a body that is not JSON is unreachable
        (then M-Pesa applies the registered ResponseType)."""
        trans_id = notice["TransID"]
        try:
            with self.courier.post(
                registration["validation_url"], notice, self.config["validation_timeout"]
            ) as answer:
                status = answer.status_code
                data = answer.json() if 200 <= status < 300 else None
        except (requests.RequestException, ValueError) as exc:
            self.courier.record("validation", trans_id, f"unreachable: {type(exc).__name__}")
            return "unreachable", ""
        if not isinstance(data, dict):
            self.courier.record("validation", trans_id, "unreachable", status)
            return "unreachable", ""
        verdict = "accepted" if data.get("ResultCode") in (0, "0") else "rejected"
        self.courier.record("validation", trans_id, verdict, status)
        return verdict, str(data.get("ThirdPartyTransID") or "")

    # -- STK ------------------------------------------------------------------------------------

    def answer_prompt(self, checkout_id: str) -> None:
        """The customer answers (after ``stk_user_delay``), then M-Pesa calls back."""
        if not self.courier.wait(self.config["stk_user_delay"]):
            return
        moment = now_nairobi()
        with self.lock:
            prompt = self.prompts[checkout_id]
            code = self.faults.get("stk_result_code")
            if len(prompt["account_reference"]) > 12:
                code = 1025  # the USSD prompt got too long
            prompt.update(status="done", result_code=code)
            self.prompted.discard(prompt["msisdn"])
            receipt = make.receipt(moment) if code == 0 else ""
            if receipt:
                prompt["receipt"] = receipt
                self.payments[receipt] = {
                    "receipt": receipt,
                    "kind": "stk",
                    "shortcode": prompt["party_b"],
                    "amount": prompt["amount"],
                    "msisdn": prompt["msisdn"],
                    "bill_ref": prompt["account_reference"],
                    "moment": moment,
                    "reversed": False,
                }
            registration = self.registrations.get(prompt["party_b"])
        balance = self.move(prompt["party_b"], prompt["amount"]) if receipt else None
        body = make.stk_callback(
            merchant_request_id=prompt["merchant_request_id"],
            checkout_request_id=checkout_id,
            result_code=code,
            amount=prompt["amount"],
            receipt_number=receipt,
            moment=moment,
            msisdn=prompt["msisdn"],
        )
        self.courier.deliver("stk_callback", checkout_id, prompt["callback_url"], body)
        if receipt and registration and self.config["stk_sends_c2b_confirmation"]:
            notice = make.c2b_notice(
                trans_id=receipt,
                moment=moment,
                amount=prompt["amount"],
                shortcode=prompt["party_b"],
                bill_ref=prompt["account_reference"],
                msisdn=self.msisdn_as_sent(prompt["msisdn"], registration["version"]),
                names=self.names(prompt["msisdn"]),
                org_balance=money(balance),
            )
            self.courier.deliver("confirmation", receipt, registration["confirmation_url"], notice)

    # -- results (B2C, status, balance, reversal) ---------------------------------------------

    def checked_after_delay(self, job: dict) -> tuple[datetime, int] | None:
        """After ``result_delay`` (None when the emulator stops): the time, and the initiator
        check's code (0, 2001 or 8006)."""
        if not self.courier.wait(self.config["result_delay"]):
            return None
        return now_nairobi(), self.initiator_result(job["app"], job["initiator"], job["password"])

    def send_result(self, kind: str, job: dict, url: str | None = None, **envelope) -> None:
        """POST a ``{"Result": {...}}`` about ``job`` to its ResultURL (or ``url``)."""
        body = make.result_envelope(
            originator_conversation_id=job["ocid"],
            conversation_id=job["conversation_id"],
            **envelope,
        )
        self.courier.deliver(kind, job["ocid"], url or job["result_url"], body)

    def settle_b2c(self, job: dict) -> None:
        reference = ("QueueTimeoutURL", make.QUEUE_TIMEOUT_REFERENCE.format("b2c"))
        if self.faults.take("queue_timeout"):
            if self.courier.wait(self.config["result_delay"]):
                job["status"] = "timed out"
                self.send_result(  # modelled: Safaricom does not document this body (§7.5)
                    "b2c_timeout",
                    job,
                    job["queue_timeout_url"],
                    result_code=1,
                    result_desc="The service request has timed out.",
                    transaction_id=make.non_financial_id(now_nairobi()),
                    reference=reference,
                )
            return
        if (checked := self.checked_after_delay(job)) is None:
            return
        moment, code = checked
        amount = job["amount"]
        with self.lock:  # the balance check and the debit together
            if code == 0 and amount < 10:
                code = 2
            elif code == 0 and amount > 250_000:
                code = 3
            elif code == 0 and self.account(job["party_a"])["Utility Account"] < amount:
                code = 1
            utility = self.move(job["party_a"], -amount) if code == 0 else None
        receipt = make.receipt(moment)
        parameters = None
        if code == 0:
            account = self.account(job["party_a"])
            parameters = [
                ("TransactionAmount", int(amount)),
                ("TransactionReceipt", receipt),
                ("ReceiverPartyPublicName", self.public_name(job["party_b"])),
                ("TransactionCompletedDateTime", moment.strftime("%d.%m.%Y %H:%M:%S")),
                ("B2CUtilityAccountAvailableFunds", float(utility)),
                ("B2CWorkingAccountAvailableFunds", float(account["Working Account"])),
                ("B2CRecipientIsRegisteredCustomer", "Y"),
                ("B2CChargesPaidAccountAvailableFunds", float(account["Charges Paid Account"])),
            ]
        with self.lock:
            job.update(status="done", result_code=code, receipt=receipt if code == 0 else "")
            job["moment"] = moment
        self.send_result(
            "b2c_result",
            job,
            result_code=code,
            transaction_id=receipt,
            parameters=parameters,
            reference=reference,
        )

    def settle_status(self, job: dict) -> None:
        if (checked := self.checked_after_delay(job)) is None:
            return
        moment, code = checked
        parameters = None
        if code == 0:
            parameters = self.status_of(job["transaction_id"], job["original_conversation_id"])
            code = 0 if parameters else "R000002"  # modelled: an unknown receipt (UNVERIFIED)
        reference = (
            ("Occasion", job["occasion"])
            if job["occasion"]
            else ("QueueTimeoutURL", make.QUEUE_TIMEOUT_REFERENCE.format("transactionstatus"))
        )
        self.send_result(
            "status_result",
            job,
            result_code=code,
            transaction_id=make.non_financial_id(moment),
            parameters=parameters,
            reference=reference,
        )

    def status_of(self, receipt: str, ocid: str) -> list[tuple[str, object]] | None:
        """Transaction Status's parameters for a payment or a disbursement we know."""
        with self.lock:
            payment = self.payments.get(receipt)
            disbursement = self.disbursements.get(ocid) or next(
                (d for d in self.disbursements.values() if receipt and d.get("receipt") == receipt),
                None,
            )
        stamp = lambda moment: int(moment.strftime("%Y%m%d%H%M%S"))  # noqa: E731
        if payment:
            return [
                ("DebitPartyName", self.public_name(payment["msisdn"])),
                ("CreditPartyName", f"{payment['shortcode']} - {ORGANISATION}"),
                ("OriginatorConversationID", make.daraja_id()),
                ("InitiatedTime", stamp(payment["moment"])),
                ("CreditPartyCharges", None),
                ("DebitAccountType", "MMF Account For Customer"),
                ("TransactionReason", None),
                ("ReasonType", "Pay Bill Online" if payment["kind"] == "stk" else "Pay Utility"),
                ("TransactionStatus", "Reversed" if payment["reversed"] else "Completed"),
                ("FinalisedTime", stamp(payment["moment"])),
                ("Amount", float(payment["amount"])),
                ("ConversationID", make.conversation_id(payment["moment"])),
                ("ReceiptNo", payment["receipt"]),
            ]
        if disbursement and disbursement.get("result_code") == 0:
            return [
                ("DebitPartyName", f"{disbursement['party_a']} - {ORGANISATION}"),
                ("CreditPartyName", self.public_name(disbursement["party_b"])),
                ("OriginatorConversationID", disbursement["ocid"]),
                ("InitiatedTime", stamp(disbursement["moment"])),
                ("DebitPartyCharges", "Fee For B2C Payment|KES|22.40"),
                ("DebitAccountType", "Utility Account"),
                ("TransactionReason", None),
                ("ReasonType", "Business Payment to Customer via API"),
                ("TransactionStatus", "Completed"),
                ("FinalisedTime", stamp(disbursement["moment"])),
                ("Amount", float(disbursement["amount"])),
                ("ConversationID", disbursement["conversation_id"]),
                ("ReceiptNo", disbursement["receipt"]),
            ]
        return None

    def settle_balance(self, job: dict) -> None:
        if (checked := self.checked_after_delay(job)) is None:
            return
        moment, code = checked
        parameters = None
        if code == 0:
            account = self.account(job["party_a"])
            lines = "&".join(make.account_line(name, value) for name, value in account.items())
            parameters = [
                ("AccountBalance", lines),
                ("BOCompletedTime", moment.strftime("%Y%m%d%H%M%S")),
            ]
        self.send_result(
            "balance_result",
            job,
            result_code=code,
            transaction_id=make.non_financial_id(moment),
            parameters=parameters,
            reference=("QueueTimeoutURL", make.QUEUE_TIMEOUT_REFERENCE.format("ab")),
            as_strings=True,  # Account Balance sends ResultType and ResultCode as strings
        )

    def settle_reversal(self, job: dict) -> None:
        if (checked := self.checked_after_delay(job)) is None:
            return
        moment, code = checked
        parameters = None
        receipt = make.receipt(moment)
        if code == 0:
            with self.lock:
                payment = self.payments.get(job["transaction_id"])
                if payment is None or payment["shortcode"] != job["receiver"]:
                    code = "R000002"
                elif payment["reversed"]:
                    code = "R000001"
                else:
                    payment["reversed"] = True
            if code == 0:
                balance = self.move(payment["shortcode"], -payment["amount"])
                parameters = [
                    ("DebitAccountBalance", make.account_line("Utility Account", balance)),
                    ("Amount", float(payment["amount"])),
                    ("TransCompletedTime", int(moment.strftime("%Y%m%d%H%M%S"))),
                    ("OriginalTransactionID", payment["receipt"]),
                    ("Charge", 0.0),
                    ("CreditPartyPublicName", self.public_name(payment["msisdn"])),
                    ("DebitPartyPublicName", f"{payment['shortcode']} - {ORGANISATION}"),
                ]
        self.send_result(
            "reversal_result",
            job,
            result_code=code,
            transaction_id=receipt,
            parameters=parameters,
            reference=("QueueTimeoutURL", make.QUEUE_TIMEOUT_REFERENCE.format("reversal")),
        )


def whole_amount(value, field: str = "Amount") -> Decimal:
    """Whole shillings, at least 1, as Daraja takes them (``1``, ``"1"``, ``"1.00"``)."""
    try:
        return Decimal(whole_shillings(value, field)).quantize(Decimal("0.01"))
    except RequestRefused:
        raise invalid(field) from None


def msisdn(value, field: str) -> str:
    text = str(value if value is not None else "").strip()
    if not re.fullmatch(r"254[17]\d{8}", text):
        raise invalid(field)
    return text
