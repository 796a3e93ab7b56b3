"""No secret ever reaches a log record or an error message: unique canary strings stand in
for the consumer secret, the passkey and the initiator password, the calls run (failing ones
included) with every logger at DEBUG, and nothing logged or raised may contain a canary, the
access token, or the base64 of what the STK password is built from."""

from __future__ import annotations

import base64
import logging
import uuid

from payments.daraja import DarajaClient, DarajaError, security_credential


def canary(name: str) -> str:
    return f"canary{name}{uuid.uuid4().hex}"


SECRET, WRONG_SECRET = canary("Secret"), canary("WrongSecret")
PASSKEY, WRONG_PASSKEY = canary("Passkey"), canary("WrongPasskey")
PASSWORD, WRONG_PASSWORD = canary("Password"), canary("WrongPassword")
CANARIES = (SECRET, WRONG_SECRET, PASSKEY, WRONG_PASSKEY, PASSWORD, WRONG_PASSWORD)
SHORTCODE, KEY = "174379", "canary-app"


def b64_prefix(text: str) -> str:
    """The part of base64(text + anything) that does not depend on what follows."""
    data = text.encode()
    return base64.b64encode(data[: len(data) // 3 * 3]).decode()


def exception_texts(error: BaseException) -> list[str]:
    texts = []
    while error is not None:
        texts += [str(error), repr(error), *map(str, getattr(error, "args", ()))]
        if isinstance(error, DarajaError):
            texts += [str(error.error_message), str(error.request_id)]
        error = error.__cause__ or error.__context__
    return texts


def test_no_secret_in_any_log_or_error(start_emulator, make_client, receiver, caplog):
    emulator = start_emulator(
        apps=[
            {
                "consumer_key": KEY,
                "consumer_secret": SECRET,
                "shortcodes": ["*"],
                "passkey": PASSKEY,
                "initiators": {"canaryop": PASSWORD},
            }
        ],
        stk_user_delay=0.3,
    )
    caplog.set_level(logging.DEBUG)
    good = make_client(KEY, SECRET, on=emulator)
    credential = security_credential(PASSWORD, emulator.certificate())
    wrong_credential = security_credential(WRONG_PASSWORD, emulator.certificate())
    result_hooks = {
        "result_url": receiver.hook_url("canary/result"),
        "queue_timeout_url": receiver.hook_url("canary/timeout"),
    }
    errors: list[BaseException] = []

    def attempt(call, *args, **kwargs):
        try:
            return call(*args, **kwargs)
        except DarajaError as exc:
            errors.append(exc)
            return None

    token = good.access_token()
    attempt(make_client(KEY, WRONG_SECRET, on=emulator).access_token)
    attempt(
        good.register_c2b_urls,
        SHORTCODE,
        receiver.hook_url("canary/confirmation"),
        receiver.hook_url("canary/validation"),
    )
    push = {
        "shortcode": SHORTCODE,
        "amount": 10,
        "phone": "0712345678",
        "callback_url": receiver.hook_url("canary/stk"),
        "account_reference": "LOAN-1",
    }
    attempt(good.stk_push, passkey=WRONG_PASSKEY, **push)
    checkout = attempt(good.stk_push, passkey=PASSKEY, **push)["CheckoutRequestID"]
    attempt(good.stk_push, passkey=PASSKEY, **push)  # subscriber locked
    attempt(good.stk_query, SHORTCODE, PASSKEY, checkout)  # pending
    attempt(good.stk_query, SHORTCODE, WRONG_PASSKEY, checkout)
    b2c = {
        "initiator_name": "canaryop",
        "amount": 100,
        "party_a": "600000",
        "party_b": "254712345678",
        **result_hooks,
    }
    attempt(
        good.b2c_payment, originator_conversation_id="C-1", security_credential=credential, **b2c
    )
    attempt(
        good.b2c_payment, originator_conversation_id="C-1", security_credential=credential, **b2c
    )
    attempt(
        good.b2c_payment,
        originator_conversation_id="C-2",
        security_credential=wrong_credential,
        **b2c,
    )
    emulator.faults(invalid_token=2)  # B2C's refusal echoes the token back
    attempt(
        good.b2c_payment, originator_conversation_id="C-3", security_credential=credential, **b2c
    )
    emulator.faults(fail_with_500=4)
    attempt(
        good.account_balance,
        initiator_name="canaryop",
        security_credential=credential,
        party_a="600000",
        **result_hooks,
    )
    nowhere = DarajaClient(KEY, SECRET, base_url="http://127.0.0.1:9", backoff_base=0.01)
    attempt(nowhere.access_token)
    nowhere.close()
    receiver.wait_for("canary/result", count=2)

    assert len(errors) >= 9
    assert any("Invalid Access Token - ***" in str(e) for e in errors)
    forbidden = [*CANARIES, token, b64_prefix(SHORTCODE + PASSKEY)]
    texts = [t for error in errors for t in exception_texts(error)]
    logged = [record.getMessage() for record in caplog.records]
    logged += [record.exc_text or "" for record in caplog.records]
    assert len(logged) > 20
    for secret in forbidden:
        assert not [t for t in texts if secret in t], "a secret in an error"
        assert not [line for line in logged if secret in line], "a secret in a log record"
