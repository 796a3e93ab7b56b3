"""SecurityCredential (RSA PKCS#1 v1.5 + base64) and the STK password and timestamp."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from freezegun import freeze_time

from payments.daraja import default_certificate, security_credential, stk_password, stk_timestamp
from payments.daraja.credentials import decrypt_security_credential
from payments.demo import SANDBOX_PASSKEY


@pytest.fixture(scope="module")
def key_pair():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test.example")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=400))
        .not_valid_after(now - timedelta(days=1))  # expired: Daraja ignores expiry
        .sign(key, hashes.SHA256())
    )
    return key, certificate


@pytest.mark.parametrize("encoding", ["pem", "der", "public-key"])
def test_security_credential_decrypts_back_to_the_password(key_pair, encoding):
    key, certificate = key_pair
    data = {
        "pem": certificate.public_bytes(serialization.Encoding.PEM),
        "der": certificate.public_bytes(serialization.Encoding.DER),
        "public-key": key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }[encoding]
    credential = security_credential("Safaricom999!*!", data)
    assert len(credential) == 344  # 256 bytes of RSA-2048 ciphertext, base64
    plain = key.decrypt(base64.b64decode(credential), padding.PKCS1v15())
    assert plain == b"Safaricom999!*!"  # the password itself, not its base64 nor + timestamp
    assert decrypt_security_credential(credential, key) == "Safaricom999!*!"


def test_pem_as_text_works_too(key_pair):
    key, certificate = key_pair
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    assert decrypt_security_credential(security_credential("pw#1", pem), key) == "pw#1"


def test_padding_is_random_so_every_credential_differs(key_pair):
    _, certificate = key_pair
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    assert security_credential("same", pem) != security_credential("same", pem)


def test_a_credential_for_another_key_does_not_give_the_password(key_pair):
    key, _ = key_pair
    credential = security_credential("Safaricom999!*!", default_certificate("sandbox"))
    try:  # OpenSSL's implicit rejection may hand back noise instead of failing
        found = decrypt_security_credential(credential, key)
    except ValueError:
        found = None
    assert found != "Safaricom999!*!"
    with pytest.raises(ValueError):
        decrypt_security_credential("not base64!", key)


@pytest.mark.parametrize(
    ("environment", "fingerprint"),
    [
        ("sandbox", "122ac9047cbc99c8c941697e62eeda9704cf1a45aabcc979bd0334cfd0cb18f7"),
        ("production", "9417915212ac708d3ac82b710e71d976fa0eb783f467b159c15ad7216ef2c16b"),
    ],
)
def test_shipped_safaricom_certificates(environment, fingerprint):
    pem = default_certificate(environment)
    certificate = x509.load_pem_x509_certificate(pem)
    assert certificate.fingerprint(hashes.SHA256()).hex() == fingerprint
    assert len(security_credential("Safaricom999!*!", pem)) == 344


def test_unknown_environment_has_no_certificate():
    with pytest.raises(ValueError):
        default_certificate("staging")


def test_stk_password_matches_safaricoms_sample():
    sample = (
        "MTc0Mzc5YmZiMjc5ZjlhYTliZGJjZjE1OGU5N2RkNzFhNDY3Y2QyZTBjODkzMDU5YjEwZjc4ZTZiNzJhZGExZW"
        "QyYzkxOTIwMjEwNjI4MDkyNDA4"
    )
    assert stk_password("174379", SANDBOX_PASSKEY, "20210628092408") == sample
    assert stk_password(174379, SANDBOX_PASSKEY, "20210628092408") == sample


@freeze_time("2024-01-31 21:30:05", tz_offset=0)
def test_stk_timestamp_is_nairobi_time():
    assert stk_timestamp() == "20240201003005"  # already 1 February in Nairobi


def test_stk_timestamp_of_a_given_moment():
    moment = datetime(2021, 6, 28, 6, 24, 8, tzinfo=UTC)
    assert stk_timestamp(moment) == "20210628092408"
    assert stk_timestamp(datetime(2021, 6, 28, 9, 24, 8)) == "20210628092408"  # naive: Nairobi
