"""The two secrets Daraja wants derived rather than sent as they are.

- SecurityCredential (B2C, Transaction Status, Account Balance, Reversal): the initiator
  password's bytes encrypted with RSA, PKCS#1 v1.5 padding, under the public key of the
  environment's Safaricom certificate, then base64 (REFERENCE §8). The padding is random, so
  every call gives a different 344-character value for a 2048-bit key.
- STK password: base64(shortcode + passkey + timestamp), timestamp ``YYYYMMDDHHmmss`` in
  Nairobi time, the same timestamp sent beside it (REFERENCE §6.1)."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from importlib import resources
from zoneinfo import ZoneInfo

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

NAIROBI = ZoneInfo("Africa/Nairobi")


def public_key(certificate: bytes | str) -> rsa.RSAPublicKey:
    """The RSA public key of an X.509 certificate (PEM or DER) or of a PEM public key.
    Expiry dates are ignored: Daraja only cares about the key."""
    data = certificate.encode() if isinstance(certificate, str) else bytes(certificate)
    stripped = data.strip()
    if stripped.startswith(b"-----BEGIN CERTIFICATE"):
        key = x509.load_pem_x509_certificate(stripped).public_key()
    elif stripped.startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(stripped)
    else:
        try:
            key = x509.load_der_x509_certificate(data).public_key()
        except ValueError as exc:
            raise ValueError("not a PEM or DER certificate") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the certificate's key is not RSA")
    return key


def security_credential(password: str, certificate: bytes | str) -> str:
    """The SecurityCredential for ``password`` under ``certificate`` (PEM or DER bytes)."""
    ciphertext = public_key(certificate).encrypt(password.encode("utf-8"), padding.PKCS1v15())
    return base64.b64encode(ciphertext).decode("ascii")


def decrypt_security_credential(credential: str, private_key: rsa.RSAPrivateKey) -> str:
    """The initiator password inside a SecurityCredential (what Safaricom does with its
    private key; the emulator and the tests do it with theirs). Raises ValueError when the
    value is not base64 or not RSA/PKCS#1 v1.5 for this key."""
    try:
        ciphertext = base64.b64decode(credential.encode("ascii"), validate=True)
        return private_key.decrypt(ciphertext, padding.PKCS1v15()).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        raise ValueError("not a SecurityCredential for this key") from None


def default_certificate(environment: str) -> bytes:
    """Safaricom's published certificate for ``sandbox`` or ``production`` (copies of
    ``shared/daraja/certs``). Safaricom can rotate them: prefer the one an admin uploaded."""
    if environment not in ("sandbox", "production"):
        raise ValueError(f"unknown environment {environment!r}")
    return resources.files(__package__).joinpath("certs", f"{environment}.cer").read_bytes()


def stk_timestamp(now: datetime | None = None) -> str:
    """``YYYYMMDDHHmmss`` in Nairobi time (aware datetimes are converted; naive ones are
    taken as Nairobi time)."""
    moment = now or datetime.now(NAIROBI)
    if moment.tzinfo is not None:
        moment = moment.astimezone(NAIROBI)
    return moment.strftime("%Y%m%d%H%M%S")


def stk_password(shortcode: str | int, passkey: str, timestamp: str) -> str:
    """base64(shortcode + passkey + timestamp), as STK Push and STK Query want it."""
    return base64.b64encode(f"{shortcode}{passkey}{timestamp}".encode()).decode("ascii")
