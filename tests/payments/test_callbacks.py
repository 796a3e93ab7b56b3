"""Safaricom's callbacks as a lender would notice them: a payment is in the database before
Safaricom hears "Accepted", a wrong token writes nothing, repeats change nothing, odd bodies
are quarantined instead of lost, and validation answers with Daraja's codes. Driven through
the real URLs, on both databases."""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import BytesIO
from urllib.parse import urlsplit

import pytest
from freezegun import freeze_time
from sqlalchemy import func, select, text

from lenders.extensions import db
from lenders.models import Loan, Repayment
from payments.models import C2BPayment, CallbackLog
from tests.payments.conftest import ACKNOWLEDGED, c2b_body, post_callback, receipt

pytestmark = pytest.mark.both_databases
D = Decimal

VALIDATION_ACCEPTED = {"ResultCode": "0", "ResultDesc": "Accepted"}
FORBIDDEN_IN_URLS = ("mpesa", "m-pesa", "safaricom", "exe", "exec", "cmd", "sql", "query")
MAX_BODY = 64 * 1024


# --- helpers ---------------------------------------------------------------------------


def counts() -> tuple[int, int]:
    """(callback log rows, payment rows) as the database has them now."""
    db.session.expire_all()
    return (
        db.session.scalar(select(func.count()).select_from(CallbackLog)),
        db.session.scalar(select(func.count()).select_from(C2BPayment)),
    )


def callback_logs() -> list[CallbackLog]:
    db.session.expire_all()
    return list(db.session.scalars(select(CallbackLog).order_by(CallbackLog.id)))


def payments() -> list[C2BPayment]:
    db.session.expire_all()
    return list(db.session.scalars(select(C2BPayment).order_by(C2BPayment.id)))


def repayments_for(trans_id: str) -> list[Repayment]:
    db.session.expire_all()
    return list(db.session.scalars(select(Repayment).where(Repayment.reference == trans_id)))


def paid(loan: Loan) -> Decimal:
    db.session.expire_all()
    return db.session.get(Loan, loan.id).paid


def security_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "marejesho.security"]


@pytest.fixture
def loan(jane_loan):
    """One active loan of KES 5,000 that a bill reference of LOAN-000123 names."""
    return jane_loan


# --- store first, acknowledge second ---------------------------------------------------


def test_confirmation_is_stored_before_it_is_acknowledged(client, shortcode, monkeypatch):
    from payments import journal

    seen_at_wake = []
    real_wake = journal.wake

    def wake_after_looking(*drains, **where):
        # A separate connection sees only what is committed: the payment must be there
        # before processing starts and before Safaricom hears anything.
        with db.engine.connect() as other:
            seen_at_wake.extend(
                other.scalars(text("SELECT trans_id FROM c2b_payment WHERE status = 'received'"))
            )
        return real_wake(*drains, **where)

    monkeypatch.setattr(journal, "wake", wake_after_looking)  # the journal's shipper
    body = c2b_body(BillRefNumber="HELLO", TransAmount="250.00")
    response = post_callback(client, shortcode, "confirmation", body)

    assert response.status_code == 200
    assert response.is_json and response.get_json() == ACKNOWLEDGED
    assert seen_at_wake == [body["TransID"]]
    [payment] = payments()
    assert (payment.trans_id, payment.amount, payment.bill_ref) == (
        body["TransID"],
        D("250.00"),
        "HELLO",
    )
    assert payment.shortcode_id == shortcode.id
    assert payment.status == "unmatched"  # processed right after the commit, nothing to match
    [entry] = callback_logs()
    assert (entry.kind, entry.outcome, entry.payment_id) == ("confirmation", "stored", payment.id)
    assert entry.body == json.dumps(body)
    assert json.loads(entry.body) == body
    assert entry.source_ip == "127.0.0.1"
    assert entry.headers["Content-Type"] == "application/json"


def test_callback_answers_carry_the_security_headers_and_nothing_of_staff(
    client, shortcode, make_staff
):
    """Callbacks skip the staff-only hooks (login cookie, CSRF, rate limits), not the
    security headers; and skipping them there leaves them working for staff."""
    body = c2b_body()
    response = post_callback(
        client,
        shortcode,
        "confirmation",
        body,
        headers={"User-Agent": "Safaricom", "X-Forwarded-For": "196.201.214.200"},
    )

    assert response.status_code == 200
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers.getlist("X-Frame-Options") == ["DENY"]
    assert "Set-Cookie" not in response.headers
    assert not any(name.lower().startswith("x-ratelimit") for name, _ in response.headers.items())
    [entry] = callback_logs()
    assert entry.headers == {
        "User-Agent": "Safaricom",
        "Content-Type": "application/json",
        "Content-Length": str(len(json.dumps(body))),
        "X-Forwarded-For": "196.201.214.200",
    }
    # Staff on the same app still meet CSRF and the login rate limit.
    assert client.post("/login", data={"email": "a@b.c", "password": "x"}).status_code == 400
    token = client.csrf_token("/login")
    attempt = {"email": make_staff("officer").email, "password": "wrong", "csrf_token": token}
    statuses = [client.post("/login", data=attempt).status_code for _ in range(11)]
    assert statuses == [422] * 10 + [429]


def test_confirmation_for_a_loan_posts_it(client, shortcode, loan):
    body = c2b_body(BillRefNumber="loan 123", TransAmount="1000.00")
    assert post_callback(client, shortcode, "confirmation", body).get_json() == ACKNOWLEDGED
    [payment] = payments()
    assert payment.status == "posted" and payment.rule == "bill_ref"
    assert paid(loan) == D("1000.00")


# --- the token -------------------------------------------------------------------------


def wrong_tokens(real: str) -> dict[str, str]:
    return {
        "unknown": "0123456789abcdef0123456789abcdef01234567",
        "one character off": real[:-1] + ("0" if real[-1] != "0" else "1"),
        "upper case": real.upper(),
        "prefix": real[:-4],
        "suffix": real + "00",
        "far too long": real * 4,
        "not hex": "not-a-token",
        "percent-encoded": "%C3%A9t%C3%A9",
        "nul byte": real[:8] + "%00" + real[8:],
    }


@pytest.mark.parametrize("kind", ["confirmation", "validation"])
@pytest.mark.parametrize(
    "which",
    [
        "unknown",
        "one character off",
        "upper case",
        "prefix",
        "suffix",
        "far too long",
        "not hex",
        "percent-encoded",
        "nul byte",
    ],
)
def test_wrong_token_is_404_writes_nothing_and_logs_without_the_token(
    request, database_url, client, shortcode, caplog, kind, which
):
    real = shortcode.callback_token
    token = wrong_tokens(real)[which]
    before = counts()
    caplog.set_level(logging.DEBUG)

    response = post_callback(client, shortcode, kind, c2b_body(), token=token)

    assert response.status_code == 404
    assert response.is_json and "ResultCode" not in response.get_json()
    assert counts() == before
    warnings = [r for r in security_records(caplog) if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    for record in caplog.records:
        message = record.getMessage()
        assert token not in message and real not in message
    assert token not in caplog.text and real not in caplog.text


@pytest.mark.parametrize("kind", ["confirmation", "validation"])
def test_token_of_another_shortcode_is_refused_by_the_body_not_accepted(
    client, make_shortcode, kind
):
    """The URL decides the shortcode: a body naming a different paybill is not posted."""
    ours = make_shortcode("600984")
    make_shortcode("600985")
    response = post_callback(client, ours, kind, c2b_body(BusinessShortCode="600985"))
    if kind == "confirmation":
        assert response.get_json() == ACKNOWLEDGED
        assert [e.outcome for e in callback_logs()] == ["quarantined"]
    else:
        assert response.get_json() == {"ResultCode": "C2B00015", "ResultDesc": "Rejected"}
    assert payments() == []


# --- repeats ---------------------------------------------------------------------------


def test_repeated_confirmation_is_acknowledged_and_posted_once(client, shortcode, loan):
    body = c2b_body(BillRefNumber="LOAN-000123", TransAmount="1000.00")
    first = post_callback(client, shortcode, "confirmation", body)
    again = post_callback(client, shortcode, "confirmation", body)

    assert first.status_code == again.status_code == 200
    assert first.get_json() == again.get_json() == ACKNOWLEDGED
    [payment] = payments()
    assert payment.status == "posted"
    assert len(repayments_for(body["TransID"])) == 1
    assert paid(loan) == D("1000.00")
    assert [(e.outcome, e.payment_id) for e in callback_logs()] == [
        ("stored", payment.id),
        ("duplicate", payment.id),
    ]


def test_repeat_thirty_days_later_still_changes_nothing(client, shortcode, loan):
    body = c2b_body(BillRefNumber="LOAN-000123", TransAmount="1000.00")
    assert post_callback(client, shortcode, "confirmation", body).get_json() == ACKNOWLEDGED
    with freeze_time(datetime.now(UTC) + timedelta(days=30)):
        late = post_callback(client, shortcode, "confirmation", body)
    assert late.status_code == 200 and late.get_json() == ACKNOWLEDGED
    assert len(payments()) == 1
    assert len(repayments_for(body["TransID"])) == 1
    assert paid(loan) == D("1000.00")
    assert [e.outcome for e in callback_logs()] == ["stored", "duplicate"]


@pytest.mark.parametrize(
    "same",
    [
        {"TransAmount": "1000"},  # the amount written another way
        {"TransAmount": 1000},
        {"BillRefNumber": " LOAN-000123 "},  # spaces around the account
        {"MSISDN": "254712345678", "FirstName": "SOMEONE", "OrgAccountBalance": "1.00"},
    ],
    ids=["amount-without-cents", "amount-as-number", "account-with-spaces", "other-details"],
)
def test_repeat_that_differs_only_in_form_is_a_duplicate(client, shortcode, loan, same):
    body = c2b_body(BillRefNumber="LOAN-000123", TransAmount="1000.00")
    post_callback(client, shortcode, "confirmation", body)
    response = post_callback(client, shortcode, "confirmation", body | same)
    assert response.get_json() == ACKNOWLEDGED
    assert [e.outcome for e in callback_logs()] == ["stored", "duplicate"]
    assert [p.status for p in payments()] == ["posted"]
    assert paid(loan) == D("1000.00")


def test_transid_is_compared_without_regard_to_case(client, shortcode, loan):
    body = c2b_body(TransID="TK6CASE001", BillRefNumber="LOAN-000123")
    post_callback(client, shortcode, "confirmation", body)
    post_callback(client, shortcode, "confirmation", body | {"TransID": "tk6case001"})
    assert [e.outcome for e in callback_logs()] == ["stored", "duplicate"]
    assert paid(loan) == D("1000.00")


@pytest.mark.parametrize(
    "changed",
    [{"TransAmount": "999.00"}, {"TransAmount": "100000.00"}, {"BillRefNumber": "LOAN-000999"}],
    ids=["lower-amount", "higher-amount", "other-account"],
)
def test_same_transid_with_other_amount_or_account_goes_to_review_unposted(
    client, shortcode, loan, caplog, changed
):
    body = c2b_body(BillRefNumber="LOAN-000123", TransAmount="1000.00")
    post_callback(client, shortcode, "confirmation", body)
    caplog.set_level(logging.INFO)

    response = post_callback(client, shortcode, "confirmation", body | changed)

    assert response.status_code == 200 and response.get_json() == ACKNOWLEDGED
    [payment] = payments()
    assert payment.status == "review"
    assert payment.amount == D("1000.00") and payment.bill_ref == "LOAN-000123"  # first kept
    assert len(repayments_for(body["TransID"])) == 1
    assert paid(loan) == D("1000.00")
    first, second = callback_logs()
    assert (first.outcome, second.outcome) == ("stored", "conflict")
    assert second.payment_id == payment.id and body["TransID"] in second.error
    assert any(
        r.levelno == logging.WARNING and body["TransID"] in r.getMessage()
        for r in security_records(caplog)
    )


def test_same_transid_on_two_shortcodes_is_two_payments(client, make_shortcode):
    first = make_shortcode("600984")
    second = make_shortcode("600985", name="Second paybill")
    trans_id = receipt()
    for shortcode in (first, second):
        body = c2b_body(TransID=trans_id, BusinessShortCode=shortcode.number)
        assert post_callback(client, shortcode, "confirmation", body).get_json() == ACKNOWLEDGED
    stored = payments()
    assert [(p.trans_id, p.shortcode_id) for p in stored] == [
        (trans_id, first.id),
        (trans_id, second.id),
    ]
    assert [e.outcome for e in callback_logs()] == ["stored", "stored"]


# --- bodies that are not Daraja's ------------------------------------------------------


def without(key: str) -> bytes:
    body = c2b_body()
    del body[key]
    return json.dumps(body).encode()


QUARANTINED_BODIES = {
    "not-json": b"TransID=TK60000001&TransAmount=10",
    "empty": b"",
    "truncated-json": json.dumps(c2b_body()).encode()[:-20],
    "json-list": json.dumps([c2b_body()]).encode(),
    "json-string": b'"TK60000001"',
    "json-null": b"null",
    "missing-transid": without("TransID"),
    "missing-amount": without("TransAmount"),
    "transid-not-a-receipt": json.dumps(c2b_body(TransID="'; DROP TABLE x;--")).encode(),
    "transid-a-number": json.dumps(c2b_body(TransID=1234567890)).encode(),
    "negative-amount": json.dumps(c2b_body(TransAmount="-100.00")).encode(),
    "zero-amount": json.dumps(c2b_body(TransAmount="0")).encode(),
    "nan-amount": json.dumps(c2b_body(TransAmount=float("nan"))).encode(),
    "three-decimals": json.dumps(c2b_body(TransAmount="10.001")).encode(),
    "boolean-amount": json.dumps(c2b_body(TransAmount=True)).encode(),
    "another-shortcode": json.dumps(c2b_body(BusinessShortCode="999999")).encode(),
    "not-utf8": b'{"TransID": "TK6\xff\xfe0001"}',
    "nul-byte": b'{"TransID": "TK6\x000001", "TransAmount": "1"}',
}


@pytest.mark.parametrize("raw", QUARANTINED_BODIES.values(), ids=QUARANTINED_BODIES.keys())
def test_unreadable_confirmation_is_acknowledged_and_quarantined_with_its_body(
    client, shortcode, raw
):
    response = post_callback(client, shortcode, "confirmation", raw)

    assert response.status_code == 200
    assert response.is_json and response.get_json() == ACKNOWLEDGED
    [entry] = callback_logs()
    assert entry.kind == "confirmation" and entry.outcome == "quarantined"
    assert entry.error and entry.payment_id is None
    assert entry.body == raw.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    assert entry.source_ip == "127.0.0.1"
    assert payments() == []


def test_unknown_extra_fields_are_accepted(client, shortcode):
    body = c2b_body(NewField="x", Nested={"a": [1, 2]}, MiddleName=None, LastName=None)
    assert post_callback(client, shortcode, "confirmation", body).get_json() == ACKNOWLEDGED
    assert [e.outcome for e in callback_logs()] == ["stored"]
    assert len(payments()) == 1


def test_control_characters_in_names_are_stored_without_them(client, shortcode):
    body = c2b_body(FirstName="JA\x00NE\r\n", BillRefNumber="LOAN\t-1\x7f")
    assert post_callback(client, shortcode, "confirmation", body).get_json() == ACKNOWLEDGED
    [payment] = payments()
    assert (payment.first_name, payment.bill_ref) == ("JANE", "LOAN-1")


@pytest.mark.parametrize("kind", ["confirmation", "validation"])
def test_body_over_64_kib_is_413_with_json_and_stores_nothing(client, shortcode, kind):
    body = json.dumps(c2b_body(Padding="x" * MAX_BODY)).encode()
    assert len(body) > MAX_BODY
    before = counts()
    response = post_callback(client, shortcode, kind, body)
    assert response.status_code == 413
    assert response.is_json and response.get_json()["ResultCode"] == "C2B00016"
    assert counts() == before


def post_chunked(client, shortcode, kind: str, raw: bytes):
    """A body without Content-Length, as gunicorn hands a chunked request to the app."""
    return client.post(
        f"/payments/c2b/{shortcode.callback_token}/{kind}",
        input_stream=BytesIO(raw),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        # the test client computes a Content-Length; gunicorn gives a chunked body none
        environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""},
    )


def test_chunked_confirmation_is_read_whole(client, shortcode):
    body = c2b_body()
    response = post_chunked(client, shortcode, "confirmation", json.dumps(body).encode())
    assert response.get_json() == ACKNOWLEDGED
    assert [p.trans_id for p in payments()] == [body["TransID"]]


@pytest.mark.parametrize("kind", ["confirmation", "validation"])
def test_chunked_body_over_64_kib_is_413_too(client, shortcode, kind):
    """Without a Content-Length the limit still holds while reading."""
    before = counts()
    padded = json.dumps(c2b_body()).encode()[:-1] + b" " * (2 * MAX_BODY) + b"}"
    response = post_chunked(client, shortcode, kind, padded)
    assert response.status_code == 413 and response.is_json
    assert counts() == before


def test_body_of_exactly_64_kib_is_still_read(client, shortcode):
    body = c2b_body()
    raw = json.dumps(body).encode()
    raw = raw[:-1] + b" " * (MAX_BODY - len(raw)) + b"}"
    assert len(raw) == MAX_BODY
    assert post_callback(client, shortcode, "confirmation", raw).get_json() == ACKNOWLEDGED
    assert [p.trans_id for p in payments()] == [body["TransID"]]


# --- validation ------------------------------------------------------------------------


def test_validation_accepts_a_good_payment_with_string_zero(client, shortcode):
    response = post_callback(client, shortcode, "validation", c2b_body())
    assert response.status_code == 200
    assert response.get_json() == VALIDATION_ACCEPTED
    assert isinstance(response.get_json()["ResultCode"], str)
    [entry] = callback_logs()
    assert (entry.kind, entry.outcome, entry.payment_id) == ("validation", "accepted", None)
    assert payments() == []


@pytest.mark.parametrize("raw", [b"not json", b"", b"[1]", b'{"TransAmount": "10"}'])
def test_validation_of_a_body_that_is_not_a_payment_is_400_c2b00016(client, shortcode, raw):
    response = post_callback(client, shortcode, "validation", raw)
    assert response.status_code == 400
    assert response.get_json() == {"ResultCode": "C2B00016", "ResultDesc": "Rejected"}
    [entry] = callback_logs()
    assert entry.outcome == "rejected:C2B00016" and entry.error
    assert payments() == []


@pytest.mark.parametrize(
    "amount, status",
    [
        ("0.50", 200),
        ("0.99", 200),
        ("0", 400),
        ("-10", 400),
        ("abc", 400),
        ("10.001", 400),
        ("NaN", 400),
        (None, 400),
        (True, 400),
        ("1e12", 400),
    ],
)
def test_validation_rejects_a_bad_amount_with_c2b00013(client, shortcode, amount, status):
    response = post_callback(client, shortcode, "validation", c2b_body(TransAmount=amount))
    assert response.get_json() == {"ResultCode": "C2B00013", "ResultDesc": "Rejected"}
    assert response.status_code == status
    assert callback_logs()[0].outcome == "rejected:C2B00013"
    assert payments() == []


@pytest.mark.parametrize("amount", ["1", "1.00", 1, "1e3", "70000.00"])
def test_validation_accepts_amounts_from_one_shilling(client, shortcode, amount):
    response = post_callback(client, shortcode, "validation", c2b_body(TransAmount=amount))
    assert response.get_json() == VALIDATION_ACCEPTED


@pytest.fixture
def strict_shortcode(make_shortcode):
    return make_shortcode("600986", validation_policy="reject_unknown")


@pytest.mark.parametrize("account", ["NOBODY", "LOAN-000999", "", "99999999"])
def test_reject_unknown_policy_rejects_an_account_that_names_nothing(
    client, strict_shortcode, loan, account
):
    body = c2b_body(BusinessShortCode="600986", BillRefNumber=account)
    response = post_callback(client, strict_shortcode, "validation", body)
    assert response.status_code == 200
    assert response.get_json() == {"ResultCode": "C2B00012", "ResultDesc": "Rejected"}
    [entry] = callback_logs()
    assert entry.outcome == "rejected:C2B00012" and "names no loan or borrower" in entry.error
    assert payments() == []


@pytest.mark.parametrize(
    "account", ["LOAN-000123", "loan 123", "LOAN000123", "123", "23456789", "0712 345 678"]
)
def test_reject_unknown_policy_accepts_a_sloppy_loan_reference_or_the_borrower(
    client, strict_shortcode, loan, account
):
    body = c2b_body(BusinessShortCode="600986", BillRefNumber=account)
    response = post_callback(client, strict_shortcode, "validation", body)
    assert response.get_json() == VALIDATION_ACCEPTED
    assert payments() == []


def test_by_default_an_unknown_account_is_accepted(client, shortcode, loan):
    assert shortcode.validation_policy == "accept_all"
    response = post_callback(client, shortcode, "validation", c2b_body(BillRefNumber="NOBODY"))
    assert response.get_json() == VALIDATION_ACCEPTED


def test_validation_never_creates_a_payment_even_when_repeated(client, shortcode, loan):
    body = c2b_body(BillRefNumber="LOAN-000123")
    for _ in range(3):
        assert (
            post_callback(client, shortcode, "validation", body).get_json() == VALIDATION_ACCEPTED
        )
    assert payments() == [] and paid(loan) == D("0.00")
    assert [e.outcome for e in callback_logs()] == ["accepted"] * 3
    # the confirmation that follows is the one that stores and posts
    assert post_callback(client, shortcode, "confirmation", body).get_json() == ACKNOWLEDGED
    assert [p.status for p in payments()] == ["posted"]


# --- source address allow-list ---------------------------------------------------------

SAFARICOM = "196.201.214.200,196.201.213.0/24"


@pytest.fixture
def listed_shortcode(make_shortcode):
    return make_shortcode("600987", allowed_ips=SAFARICOM)


@pytest.mark.parametrize("kind", ["confirmation", "validation"])
def test_allow_list_refuses_other_addresses_with_403_and_stores_nothing(
    client, listed_shortcode, caplog, kind
):
    before = counts()
    caplog.set_level(logging.INFO)
    body = c2b_body(BusinessShortCode="600987")
    response = post_callback(client, listed_shortcode, kind, body)  # from 127.0.0.1
    assert response.status_code == 403
    assert response.is_json and response.get_json()["ResultCode"] == "C2B00016"
    assert counts() == before
    assert any("127.0.0.1" in r.getMessage() for r in security_records(caplog))
    assert listed_shortcode.callback_token not in caplog.text


def test_an_allow_list_saved_in_this_process_holds_from_the_next_callback(client, shortcode):
    """Callbacks remember their shortcode for a moment; a change saved through the app is
    seen by the very next one."""
    assert post_callback(client, shortcode, "confirmation", c2b_body()).status_code == 200

    shortcode.allowed_ips = SAFARICOM
    db.session.commit()

    assert post_callback(client, shortcode, "confirmation", c2b_body()).status_code == 403


def test_a_change_saved_by_another_process_holds_within_the_ttl(client, shortcode, monkeypatch):
    """Another gunicorn worker (or the database by hand) changed the allow-list: this
    process sees it once what it remembers is older than SHORTCODE_TTL."""
    from payments import callbacks

    monkeypatch.setattr(callbacks, "SHORTCODE_TTL", 0.3)
    assert post_callback(client, shortcode, "confirmation", c2b_body()).status_code == 200
    db.session.execute(
        text("UPDATE shortcode SET allowed_ips = :ips WHERE id = :id"),
        {"ips": SAFARICOM, "id": shortcode.id},
    )
    db.session.commit()

    time.sleep(0.4)

    assert post_callback(client, shortcode, "confirmation", c2b_body()).status_code == 403


@pytest.mark.parametrize("address", ["196.201.214.200", "196.201.213.44", "196.201.213.255"])
def test_allow_list_stores_callbacks_from_listed_addresses(client, listed_shortcode, address):
    body = c2b_body(BusinessShortCode="600987")
    response = post_callback(
        client, listed_shortcode, "confirmation", body, environ_base={"REMOTE_ADDR": address}
    )
    assert response.status_code == 200 and response.get_json() == ACKNOWLEDGED
    [entry] = callback_logs()
    assert entry.outcome == "stored" and entry.source_ip == address
    assert len(payments()) == 1


@pytest.mark.parametrize("address", ["196.201.214.201", "196.201.212.44", "::1", "10.0.0.1"])
def test_allow_list_refuses_neighbouring_addresses(client, listed_shortcode, address):
    response = post_callback(
        client,
        listed_shortcode,
        "confirmation",
        c2b_body(BusinessShortCode="600987"),
        environ_base={"REMOTE_ADDR": address},
    )
    assert response.status_code == 403
    assert counts() == (0, 0)


@pytest.fixture
def built_app(app_factory, monkeypatch):
    """Build another app on the test's database with MAREJESHO_PROXY_HOPS set."""
    built = []

    def build(hops: str | None):
        if hops is None:
            monkeypatch.delenv("MAREJESHO_PROXY_HOPS", raising=False)
        else:
            monkeypatch.setenv("MAREJESHO_PROXY_HOPS", hops)
        other = app_factory()
        built.append(other)
        return other

    yield build
    for other in built:
        with other.app_context():
            db.engine.dispose()


@pytest.mark.parametrize("hops", [None, "0"], ids=["default", "zero"])
def test_forged_forwarded_for_is_ignored_without_a_trusted_proxy(listed_shortcode, built_app, hops):
    other = built_app(hops)
    assert other.config["PROXY_HOPS"] == 0
    response = post_callback(
        other.test_client(),
        listed_shortcode,
        "confirmation",
        c2b_body(BusinessShortCode="600987"),
        headers={"X-Forwarded-For": "196.201.214.200", "X-Real-IP": "196.201.214.200"},
    )
    assert response.status_code == 403
    assert counts() == (0, 0)


def test_behind_one_proxy_only_the_address_it_saw_counts(listed_shortcode, built_app):
    other = built_app("1")
    client = other.test_client()
    # the proxy appends the address it saw; anything the caller put before it is ignored
    forged = post_callback(
        client,
        listed_shortcode,
        "confirmation",
        c2b_body(BusinessShortCode="600987"),
        headers={"X-Forwarded-For": "196.201.214.200, 10.9.8.7"},
    )
    assert forged.status_code == 403
    real = post_callback(
        client,
        listed_shortcode,
        "confirmation",
        c2b_body(BusinessShortCode="600987"),
        headers={"X-Forwarded-For": "196.201.214.200"},
    )
    assert real.status_code == 200 and real.get_json() == ACKNOWLEDGED
    assert [e.source_ip for e in callback_logs()] == ["196.201.214.200"]


# --- neither CSRF nor login ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["confirmation", "validation"])
@pytest.mark.parametrize("method", ["post", "get", "put", "delete"])
@pytest.mark.parametrize("token_is", ["right", "wrong"])
def test_callback_urls_never_redirect_to_login(client, shortcode, kind, method, token_is):
    token = shortcode.callback_token if token_is == "right" else "0" * 40
    response = getattr(client, method)(
        f"/payments/c2b/{token}/{kind}",
        data=json.dumps(c2b_body()),
        headers={"Content-Type": "application/json"},
    )
    assert not 300 <= response.status_code < 400
    assert "Location" not in response.headers and "HX-Redirect" not in response.headers
    assert "/login" not in response.get_data(as_text=True)
    assert response.status_code in ((200, 404) if method == "post" else (405,))


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_wrong_method_on_a_callback_url_answers_json(client, shortcode, method):
    response = getattr(client, method)(f"/payments/c2b/{shortcode.callback_token}/confirmation")
    assert response.status_code == 405
    assert response.is_json


def test_callbacks_work_without_csrf_token_or_session(client, shortcode):
    assert client.application.config.get("WTF_CSRF_ENABLED", True)
    # a form post elsewhere without a token is refused, so CSRF is on in this app...
    assert client.post("/login", data={"email": "a@b.test", "password": "x"}).status_code == 400
    # ...but Safaricom's callbacks carry none and still go through
    for kind, expected in (("validation", VALIDATION_ACCEPTED), ("confirmation", ACKNOWLEDGED)):
        response = post_callback(client, shortcode, kind, c2b_body())
        assert response.status_code == 200 and response.get_json() == expected


# --- processing failures and the sweeper -----------------------------------------------


def test_processing_failure_still_acknowledges_and_parks_the_payment(
    client, shortcode, loan, runner, monkeypatch
):
    def broken(*args):
        raise RuntimeError("matching exploded")

    # The batch fails, and the payment, posted alone, fails again: it is parked.
    monkeypatch.setattr("payments.posting.match_payment", broken)
    monkeypatch.setattr("payments.processing.decide_current", broken)
    body = c2b_body(BillRefNumber="LOAN-000123")
    response = post_callback(client, shortcode, "confirmation", body)

    assert response.status_code == 200 and response.get_json() == ACKNOWLEDGED
    [payment] = payments()
    assert payment.status == "failed"
    assert "RuntimeError" in payment.error and "matching exploded" in payment.error
    assert payment.attempts == 1 and paid(loan) == D("0.00")

    monkeypatch.undo()
    result = runner.invoke(args=["payments", "sweep"])
    assert result.exit_code == 0, result.output
    assert "processed 0 payment(s) waiting in received" in result.output
    [payment] = payments()
    assert payment.status == "failed" and payment.attempts == 1  # the sweeper left it alone
    assert paid(loan) == D("0.00")


def insert_received(shortcode, *, bill_ref: str, received_at: datetime, **kw) -> C2BPayment:
    payment = C2BPayment(
        shortcode_id=shortcode.id,
        trans_id=receipt(),
        trans_time=received_at,
        amount=D(kw.pop("amount", "1000.00")),
        bill_ref=bill_ref,
        msisdn="",
        msisdn_form="",
        status="received",
        received_at=received_at,
        **kw,
    )
    db.session.add(payment)
    db.session.commit()
    return payment


def test_sweep_processes_payments_left_in_received(runner, shortcode, loan):
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    matched = insert_received(shortcode, bill_ref="LOAN-000123", received_at=an_hour_ago)
    unknown = insert_received(shortcode, bill_ref="NOBODY", received_at=an_hour_ago)
    fresh = insert_received(shortcode, bill_ref="LOAN-000123", received_at=datetime.now(UTC))

    result = runner.invoke(args=["payments", "sweep"])

    assert result.exit_code == 0, result.output
    assert "processed 3 payment(s) waiting in received" in result.output
    statuses = {p.id: p.status for p in payments()}
    assert statuses == {matched.id: "posted", unknown.id: "unmatched", fresh.id: "posted"}
    assert paid(loan) == D("2000.00")
    # running it again finds nothing left to do
    again = runner.invoke(args=["payments", "sweep"])
    assert "processed 0 payment(s)" in again.output and paid(loan) == D("2000.00")


# --- shortcodes and their URLs ---------------------------------------------------------


def test_add_shortcode_prints_safe_callback_urls(app, runner, client):
    result = runner.invoke(args=["payments", "add-shortcode", "600123", "--name", "X"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    base = app.config["PUBLIC_BASE_URL"]
    match = re.fullmatch(
        re.escape(base) + r"/payments/c2b/([0-9a-f]+)/confirmation", printed["confirmation_url"]
    )
    assert match, printed["confirmation_url"]
    token = match.group(1)
    assert len(token) >= 32
    assert printed["validation_url"] == f"{base}/payments/c2b/{token}/validation"
    assert (printed["number"], printed["name"], printed["kind"], printed["environment"]) == (
        "600123",
        "X",
        "paybill",
        "sandbox",
    )
    for url in (printed["validation_url"], printed["confirmation_url"]):
        path = urlsplit(url).path.lower()
        assert not [word for word in FORBIDDEN_IN_URLS if word in path], path

    listed = json.loads(runner.invoke(args=["payments", "shortcodes", "--json"]).output)
    assert listed == [printed]
    assert set(listed[0]) == {
        "number",
        "name",
        "kind",
        "environment",
        "validation_url",
        "confirmation_url",
    }

    # the printed URL is the one that works
    response = client.post(
        urlsplit(printed["confirmation_url"]).path,
        data=json.dumps(c2b_body(BusinessShortCode="600123")),
        headers={"Content-Type": "application/json"},
    )
    assert response.get_json() == ACKNOWLEDGED
    assert len(payments()) == 1


def test_every_shortcode_gets_its_own_fresh_token(runner):
    tokens = set()
    for number in ("600201", "600202", "600203", "600204", "600205"):
        result = runner.invoke(args=["payments", "add-shortcode", number, "--name", number])
        assert result.exit_code == 0, result.output
        tokens.add(json.loads(result.output)["confirmation_url"].split("/")[-2])
    assert len(tokens) == 5
    assert all(re.fullmatch(r"[0-9a-f]{32,64}", t) for t in tokens)


def test_add_shortcode_twice_is_refused(runner):
    assert runner.invoke(args=["payments", "add-shortcode", "600123", "--name", "X"]).exit_code == 0
    again = runner.invoke(args=["payments", "add-shortcode", "600123", "--name", "Y"])
    assert again.exit_code != 0 and "exists already" in again.output
    listed = json.loads(runner.invoke(args=["payments", "shortcodes", "--json"]).output)
    assert [s["name"] for s in listed] == ["X"]


# --- bodies that still break intake (bugs, see the reasons) ----------------------------


@pytest.mark.parametrize(
    "field", ["FirstName", "BillRefNumber", "MSISDN", "TransactionType", "BusinessShortCode"]
)
def test_lone_surrogate_in_a_text_field_is_kept_not_a_5xx(client, shortcode, field):
    raw = json.dumps(c2b_body(**{field: "JANE\ud800"})).encode()  # ASCII: "JANE\\ud800"
    response = post_callback(client, shortcode, "confirmation", raw)
    assert response.status_code == 200 and response.get_json() == ACKNOWLEDGED
    [entry] = callback_logs()
    assert entry.outcome in ("stored", "quarantined")


def test_lone_surrogate_account_under_reject_unknown_gets_a_daraja_answer(client, strict_shortcode):
    body = json.dumps(c2b_body(BusinessShortCode="600986", BillRefNumber="12\udfff34")).encode()
    response = post_callback(client, strict_shortcode, "validation", body)
    assert response.status_code in (200, 400)
    assert response.get_json()["ResultCode"] in ("0", "C2B00012", "C2B00016")


@pytest.mark.parametrize("kind", ["confirmation", "validation"])
def test_trans_time_at_the_start_of_year_one_is_unreadable_not_a_5xx(client, shortcode, kind):
    body = c2b_body(TransTime="00010101000000")
    response = post_callback(client, shortcode, kind, body)
    assert response.status_code == 200
    assert response.get_json()["ResultCode"] in (0, "0")
    if kind == "confirmation":  # the money is kept, at the time it was received
        [payment] = payments()
        assert payment.trans_id == body["TransID"]
        assert abs(payment.trans_time - payment.received_at) < timedelta(seconds=5)
    else:
        assert payments() == [] and [e.outcome for e in callback_logs()] == ["accepted"]


@pytest.mark.postgresql_only
def test_database_trouble_during_the_token_lookup_does_not_log_the_token(
    app, client, shortcode, caplog
):
    """The database times out while the token is looked up: 503, and the token stays out
    of the logs although SQLAlchemy's error text carries the statement's parameters."""
    from sqlalchemy import event

    def short_lock_timeout(dbapi_connection, record):
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '200ms'")
        dbapi_connection.commit()

    token = shortcode.callback_token
    db.session.remove()
    db.engine.dispose()
    event.listen(db.engine, "connect", short_lock_timeout)
    caplog.set_level(logging.DEBUG)
    try:
        with db.engine.connect() as blocker:
            blocker.execute(text("LOCK TABLE shortcode IN ACCESS EXCLUSIVE MODE"))
            response = post_callback(client, None, "confirmation", c2b_body(), token=token)
            blocker.rollback()
    finally:
        event.remove(db.engine, "connect", short_lock_timeout)
    assert response.status_code == 503 and response.is_json
    assert any(r.levelno >= logging.ERROR for r in caplog.records)
    assert token not in caplog.text


def test_access_log_lines_show_the_callback_path_without_the_token(app, shortcode, caplog):
    """Safaricom's requests appear in the werkzeug / gunicorn access logs with the token
    replaced by ***."""
    caplog.set_level(logging.INFO)
    token = shortcode.callback_token
    for name in ("werkzeug", "gunicorn.access"):
        logging.getLogger(name).info(
            '%s - - "%s" %s', "196.201.214.200", f"POST /payments/c2b/{token}/confirmation", 200
        )
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and token not in caplog.text
    assert all("/payments/c2b/***/confirmation" in m for m in messages)


# --- the confirmation's own WSGI path (payments/confirmations.py) ------------------------


def test_the_usual_confirmation_skips_flasks_request_cycle_and_answers_the_same(
    app, client, shortcode, monkeypatch
):
    """A confirmation is answered by the thin WSGI layer, without Flask's request hooks,
    with the bytes and headers the blueprint gives (the blueprint still answers a chunked
    one, which the layer passes on)."""
    seen = []
    app.before_request_funcs.setdefault(None, []).insert(0, lambda: seen.append("hook"))
    fast = post_callback(client, shortcode, "confirmation", c2b_body(TransAmount="10.00"))
    assert seen == []  # Flask never saw it

    slow = post_chunked(
        client, shortcode, "confirmation", json.dumps(c2b_body(TransAmount="11.00")).encode()
    )
    assert seen == ["hook"]  # a body without its length goes through Flask
    assert (fast.status_code, fast.get_data()) == (slow.status_code, slow.get_data())
    assert fast.get_json() == ACKNOWLEDGED
    same = ("Content-Type", "Content-Security-Policy", "X-Content-Type-Options",
            "Referrer-Policy", "X-Frame-Options", "Cache-Control", "Content-Length")  # fmt: skip
    assert [fast.headers.get(h) for h in same] == [slow.headers.get(h) for h in same]
    assert fast.headers["X-Request-ID"] and len(payments()) == 2


@pytest.mark.parametrize("case", ["unknown token", "refused address", "too large", "wrong method"])
def test_what_the_fast_path_does_not_serve_gets_the_blueprints_answer(
    app, client, make_shortcode, case
):
    shortcode = make_shortcode(
        "600777", allowed_ips="10.9.9.9" if case == "refused address" else ""
    )
    token = "ab" * 20 if case == "unknown token" else shortcode.callback_token
    url = f"/payments/c2b/{token}/confirmation"
    if case == "wrong method":
        answer = client.get(url)
    elif case == "too large":
        answer = client.post(url, data=b"x" * (64 * 1024 + 1), content_type="application/json")
    else:
        answer = client.post(url, json=c2b_body(BusinessShortCode="600777"))
    expected = {"unknown token": 404, "refused address": 403, "too large": 413,
                "wrong method": 405}[case]  # fmt: skip
    assert answer.status_code == expected and answer.is_json
    assert payments() == []


@pytest.mark.parametrize("body", [c2b_body(TransAmount="12.00"), {"not": "daraja"}])
def test_a_validation_answers_the_same_on_both_paths(app, client, shortcode, body):
    """Validation has the same thin path: the same status, bytes and log line as the
    blueprint's (which a body without its length still goes through)."""
    raw = json.dumps(body).encode()
    fast = post_callback(client, shortcode, "validation", raw)
    slow = post_chunked(client, shortcode, "validation", raw)
    assert (fast.status_code, fast.get_data()) == (slow.status_code, slow.get_data())
    assert fast.headers["Content-Type"] == slow.headers["Content-Type"]
    db.session.expire_all()
    logged = db.session.scalars(
        select(CallbackLog).where(CallbackLog.kind == "validation").order_by(CallbackLog.id)
    ).all()
    assert [(entry.outcome, entry.error) for entry in logged[-2:]] == [
        (logged[-1].outcome, logged[-1].error)
    ] * 2
