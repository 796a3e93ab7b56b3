"""The emulator's M-Pesa: its state (apps, tokens, registered URLs, payments, prompts,
disbursements, balances) and the checks Daraja makes on what it is sent, raising ``Refusal``
with Daraja's error code. No Flask: each API family's module (``c2b``, ``stk``, ``b2c``,
``status``, ``balance``, ``reversal``, ``pull``) serves its endpoints over this and says
what happens after Daraja accepts a request."""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import threading
from collections import deque
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from payments.daraja.credentials import decrypt_security_credential, stk_password
from payments.daraja.errors import RequestRefused
from payments.daraja.fields import whole_shillings
from payments.daraja.urls import forbidden_url_words
from payments.emulator import payloads as make
from payments.emulator.courier import Courier
from payments.emulator.faults import Faults
from payments.emulator.settings import EmulatedApp, merged_config
from payments.emulator.tokens import TokenStore

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
ORGANISATION = "Marejesho Emulated Paybill"
DEFAULT_NAMES = ("JOHN", "", "DOE")


class Refusal(Exception):
    """Answer with Daraja's error shape."""

    def __init__(self, status: int, code: str, message: str, request_id: str | None = None):
        super().__init__(f"{code} {message}")
        self.status, self.code, self.message, self.request_id = status, code, message, request_id


def invalid(field: str) -> Refusal:
    return Refusal(400, "400.002.02", f"Bad Request - Invalid {field}")


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
        # Every movement of a utility account, in the order it was booked, with the balance
        # after it: the org portal's statement (``statement.py``) is read from this.
        self.ledger: list[dict] = []
        self.wrong_passwords: dict[str, int] = {}
        self.calls: deque[dict] = deque(maxlen=1000)  # the latest requests, for tests and people

    def stop(self) -> None:
        """Stop delivering: pending callbacks give up."""
        self.courier.stopping.set()

    def variants(self) -> dict:
        """The shape switches for a result body (``payloads.result_envelope``'s keywords)."""
        faults = self.faults.snapshot()
        return {
            "code_type": faults["result_code_type"],
            "parameter_shape": faults["result_parameter_shape"],
        }

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
            if msisdn == make.SANDBOX_SUBSCRIBER:
                return make.SANDBOX_SUBSCRIBER_NAMES
            return DEFAULT_NAMES
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

    def move(
        self,
        shortcode: str,
        amount: Decimal,
        *,
        receipt: str,
        moment: datetime,
        reason: str,
        details: str,
        party: str,
        account: str = "",
        linked: str = "",
    ) -> Decimal:
        """Credit (or debit, when negative) the utility account and book the statement line
        that says why (its Reason Type, Details, Other Party Info, A/C No. and Linked
        Transaction ID); the new balance, which that line carries as its Balance."""
        with self.lock:
            utility = self.account(shortcode)
            utility["Utility Account"] += amount
            balance = utility["Utility Account"]
            self.ledger.append(
                {
                    "shortcode": shortcode,
                    "receipt": receipt,
                    "moment": moment,
                    "amount": amount,
                    "balance": balance,
                    "reason": reason,
                    "details": details,
                    "party": party,
                    "account": account,
                    "linked": linked,
                }
            )
            return balance

    def record_payment(self, payment: dict, party: str | None = None) -> Decimal:
        """A customer's payment (C2B or STK) received: kept for Pull Transactions, status
        and reversals, and credited to the shortcode with its statement line, at once; the
        new balance. ``party``: the statement's Other Party Info (the subscriber's public
        name unless given)."""
        party = party or self.public_name(payment["msisdn"])
        goods = payment.get("transaction_type") == "Buy Goods"
        details = f"{'Merchant Payment' if goods else 'Pay Bill'} from {party}"
        if payment["bill_ref"] and not goods:
            details += f" Acc. {payment['bill_ref']}"
        with self.lock:
            self.payments[payment["receipt"]] = payment
            return self.move(
                payment["shortcode"],
                payment["amount"],
                receipt=payment["receipt"],
                moment=payment["moment"],
                reason="Pay Merchant" if goods else "Pay Bill Online",
                details=details,
                party=party,
                account=payment["bill_ref"],
            )
