"""Hypothesis fuzz of Safaricom's two C2B callbacks (reliability anchors C1/C2): whatever the
body, the answer is JSON, never a 5xx, and Daraja-shaped: ``{"ResultCode": 0, ...}`` for a
confirmation (the body is stored or quarantined), ``ResultCode``/``ResultDesc`` with 200 or
400 for validation, 413 beyond 64 KiB. SQLite only. The number of examples per endpoint is
the Hypothesis profile's (tests/conftest.py): 1,000 in CI, 100 (always the same) locally."""

from __future__ import annotations

import json
import logging
import math
from datetime import date

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from lenders.extensions import db
from payments.models import C2BPayment, CallbackLog
from tests.conftest import IN_CI
from tests.payments.conftest import ACKNOWLEDGED, c2b_body, post_callback

MAX_BODY = 64 * 1024
FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
EXAMPLES = FUZZ.max_examples
assert EXAMPLES >= 1000 or not IN_CI, "CI fuzzes each callback endpoint with 1,000 bodies or more"
ONE_IN_20 = EXAMPLES // 20  # each branch of intake is reached by at least this many bodies
DARAJA_KEYS = (
    "TransactionType",
    "TransID",
    "TransTime",
    "TransAmount",
    "BusinessShortCode",
    "BillRefNumber",
    "InvoiceNumber",
    "OrgAccountBalance",
    "ThirdPartyTransID",
    "MSISDN",
    "FirstName",
    "MiddleName",
    "LastName",
)

# --- generators ------------------------------------------------------------------------

# Text as people and phones produce it, and what no database stores (a lone surrogate).
NASTY_STRINGS = [
    "",
    "\ud800",
    "JANE\udfff",
    " ",
    "\x00",
    "JA\x00NE",
    "\r\n",
    "LOAN\r\n-123",
    "\t",
    "\u202eLOAN-000123",  # right-to-left override
    "\u200f\u200e",
    "\ufeff",
    "😀",
    "👩🏾‍💼",
    "Ñandú",
    "ﷺ",
    "'; DROP TABLE c2b_payment; --",
    "<script>alert(1)</script>",
    "%s%n{0}",
    "NaN",
    "Infinity",
    "-Infinity",
    "1e3",
    "1E+3",
    "-1",
    "0",
    "0.00",
    "0.001",
    "1,000.00",
    " 10 ",
    "1_000",
    "١٢٣",  # Arabic-Indic digits
    "0x10",
    "99999999999999999999",
    "1e999999999",
    "LOAN-000123",
    "loan 123",
    "23456789",
    "0712 345 678",
    "2547 ***** 678",
    "25470****149",
    "94c392c311d522da950619227b3361752a42042db7e1e699b26e628305c68a88",
    "600984",
    "20251106230212",
    "99999999999999",
    "00000000000000",
]
nasty_text = st.one_of(
    st.sampled_from(NASTY_STRINGS),
    st.text(max_size=30),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=30),
    # very long: a few KB, even with every character written as \uXXXX
    st.text(alphabet=st.characters(max_codepoint=0x7FF), min_size=500, max_size=3000),
)
numbers = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -0.0, 1e3, 1e308, -1e308, 5e-324, 0.1 + 0.2, math.nan, math.inf]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, nasty_text)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
nasty_value = st.one_of(scalars, json_values)

# Fields that are often right, so that bodies get past parsing into storage and matching.
plausible = {
    "TransID": st.one_of(
        st.from_regex(r"[A-Z0-9]{10}", fullmatch=True),
        st.from_regex(r"[A-Za-z0-9]{1,40}", fullmatch=True),
    ),
    "TransAmount": st.one_of(
        st.decimals(min_value=1, max_value=10**6, places=2).map(str),
        st.integers(min_value=-5, max_value=10**10),
        st.sampled_from(["1", "10.00", "1000", "0.50", "0", "-1", "1e3", "NaN"]),
    ),
    # Any 14 digits, 1 January of year 1 (no UTC time before it) among them.
    "TransTime": st.one_of(st.from_regex(r"[0-9]{14}", fullmatch=True), st.just("00010101000000")),
    "BusinessShortCode": st.sampled_from(["600984", 600984, "600985", "", "0600984"]),
    "BillRefNumber": st.sampled_from(["LOAN-000123", "loan 123", "23456789", "0712345678", ""]),
    "MSISDN": st.sampled_from(
        [
            "254712345678",
            "2547 ***** 678",
            "94c392c311d522da950619227b3361752a42042db7e1e699b26e628305c68a88",
            "",
        ]
    ),
    "FirstName": st.sampled_from(["JANE", "jane", "PETER", ""]),
}


@st.composite
def daraja_like(draw) -> bytes:
    """Daraja's keys, mostly right (so that the body gets into storage and matching), with
    a few left out and a few replaced by nasty values, plus unknown extra keys; serialised
    with NaN/Infinity allowed and, sometimes, non-ASCII left raw."""
    nasty = draw(st.sets(st.sampled_from(DARAJA_KEYS), max_size=4))
    dropped = draw(st.sets(st.sampled_from(DARAJA_KEYS), max_size=3))
    body = {}
    for key in DARAJA_KEYS:
        if key in nasty:
            body[key] = draw(nasty_value)
        elif key in dropped:
            continue
        elif key in plausible:
            body[key] = draw(plausible[key])
        else:
            body[key] = c2b_body().get(key, "")
    body.update(draw(st.dictionaries(st.text(max_size=20), json_values, max_size=3)))
    ascii_only = draw(st.booleans())
    return json.dumps(body, allow_nan=True, ensure_ascii=ascii_only).encode(
        "utf-8", "surrogatepass"
    )


@st.composite
def damaged_json(draw) -> bytes:
    """A good body cut short, with a key repeated, or with bytes flipped."""
    good = json.dumps(c2b_body()).encode()
    how = draw(st.sampled_from(["truncated", "duplicate-key", "flipped", "wrapped"]))
    if how == "truncated":
        return good[: draw(st.integers(0, len(good) - 1))]
    if how == "duplicate-key":
        trans_id = json.dumps(draw(nasty_value), allow_nan=True)
        return good[:-1] + b', "TransID": ' + trans_id.encode() + b"}"
    if how == "flipped":
        at = draw(st.integers(0, len(good) - 1))
        return good[:at] + bytes([draw(st.integers(0, 255))]) + good[at + 1 :]
    return json.dumps([json.loads(good)] * draw(st.integers(0, 3))).encode()


bodies = st.one_of(
    st.binary(max_size=2048),  # (a) arbitrary bytes
    json_values.map(lambda v: json.dumps(v, allow_nan=True).encode()),  # (b) any JSON
    daraja_like(),  # (c) Daraja-like
    daraja_like(),
    daraja_like(),
    damaged_json(),
    st.sampled_from(
        [
            b"{" + b" " * MAX_BODY + b"}",  # just over 64 KiB
            b"[" * 100_000,  # deep nesting, over the limit
            b"[" * 20_000,  # deep nesting, under it
            b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
            b"\xef\xbb\xbf" + json.dumps(c2b_body()).encode(),  # UTF-8 byte order mark
            json.dumps(c2b_body()).encode("utf-16"),
        ]
    ),
)


# --- the tests -------------------------------------------------------------------------


@pytest.fixture
def fuzz_shortcode(make_shortcode, make_loan, make_borrower):
    """A shortcode that checks accounts at validation, and a book for matching to find."""
    jane = make_borrower("Jane Wanjiku", national_id="23456789", phones=("0712345678",))
    make_loan(
        borrower=jane,
        number="LOAN-000123",
        principal="50000.00",
        interest="0",
        fees="0",
        installments=5,
        disbursed_on=date(2025, 1, 1),
    )
    return make_shortcode("600984", validation_policy="reject_unknown")


def assert_nothing_crashed(caplog, body: bytes) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, (body[:300], [r.getMessage() for r in errors])


content_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/plain", ""]
)


def outcomes(kind: str) -> dict[str, int]:
    db.session.expire_all()
    rows = db.session.execute(
        select(CallbackLog.outcome, func.count())
        .where(CallbackLog.kind == kind)
        .group_by(CallbackLog.outcome)
    )
    return dict(rows.all())


def test_confirmation_answers_accepted_to_anything(client, fuzz_shortcode, caplog):
    @FUZZ
    @given(body=bodies, content_type=content_types)
    def confirm(body, content_type):
        caplog.clear()
        response = post_callback(
            client, fuzz_shortcode, "confirmation", body, headers={"Content-Type": content_type}
        )
        assert response.status_code < 500, body[:300]
        assert response.is_json, body[:300]
        answer = response.get_json()
        if len(body) > MAX_BODY:
            assert response.status_code == 413
            assert set(answer) == {"ResultCode", "ResultDesc"}
        else:
            assert response.status_code == 200, (body[:300], answer)
            assert answer == ACKNOWLEDGED
            assert type(answer["ResultCode"]) is int
        assert_nothing_crashed(caplog, body)

    confirm()
    # the generators reach every branch of intake, not only the quarantine
    seen = outcomes("confirmation")
    assert seen.get("stored", 0) >= ONE_IN_20 and seen.get("quarantined", 0) >= ONE_IN_20, seen
    assert seen.get("duplicate", 0) + seen.get("conflict", 0) >= 1, seen


def test_validation_answers_in_darajas_shape_to_anything(client, fuzz_shortcode, caplog):
    @FUZZ
    @given(body=bodies, content_type=content_types)
    def validate(body, content_type):
        caplog.clear()
        response = post_callback(
            client, fuzz_shortcode, "validation", body, headers={"Content-Type": content_type}
        )
        assert response.status_code < 500, body[:300]
        assert response.is_json, body[:300]
        answer = response.get_json()
        assert isinstance(answer, dict) and set(answer) == {"ResultCode", "ResultDesc"}, answer
        assert isinstance(answer["ResultCode"], str)
        if len(body) > MAX_BODY:
            assert response.status_code == 413
        else:
            assert response.status_code in (200, 400), (body[:300], answer)
            if answer["ResultCode"] == "0":
                assert response.status_code == 200 and answer["ResultDesc"] == "Accepted"
            else:
                assert answer["ResultCode"] in {f"C2B0001{n}" for n in range(1, 7)}
                assert answer["ResultDesc"] == "Rejected"
        assert_nothing_crashed(caplog, body)

    validate()
    seen = outcomes("validation")
    assert seen.get("accepted", 0) >= ONE_IN_20, seen
    assert {"rejected:C2B00012", "rejected:C2B00013", "rejected:C2B00016"} <= set(seen), seen
    assert db.session.scalar(select(func.count()).select_from(C2BPayment)) == 0


@settings(FUZZ, max_examples=max(EXAMPLES // 5, 20))
@given(body=daraja_like())
def test_a_body_that_is_accepted_at_validation_is_stored_at_confirmation(
    client, fuzz_shortcode, body
):
    """What validation lets through, confirmation does not quarantine."""
    assume(len(body) <= MAX_BODY)
    checked = post_callback(client, fuzz_shortcode, "validation", body)
    stored = post_callback(client, fuzz_shortcode, "confirmation", body)
    assert stored.get_json() == ACKNOWLEDGED
    if checked.get_json()["ResultCode"] == "0":
        db.session.expire_all()
        last = db.session.scalars(select(CallbackLog).order_by(CallbackLog.id.desc())).first()
        assert last.kind == "confirmation"
        assert last.outcome in ("stored", "duplicate", "conflict"), (body[:300], last.error)
