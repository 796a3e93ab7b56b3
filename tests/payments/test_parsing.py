"""Daraja bodies as they really come: types drift, keys go missing, junk arrives."""

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from payments.parsing import NotDaraja, masked_parts, msisdn_form, parse_c2b


def body(**fields) -> bytes:
    data = {
        "TransID": "RKL51ZDR4F",
        "TransAmount": "5.00",
        "TransTime": "20231121121325",
        "BusinessShortCode": "600966",
        "MSISDN": "2547 ***** 126",
        "FirstName": "NICHOLAS",
    }
    data.update(fields)
    return json.dumps({k: v for k, v in data.items() if v is not None}).encode()


@pytest.mark.parametrize(
    "amount, expected",
    [
        ("5.00", "5.00"),
        ("10", "10.00"),
        (10, "10.00"),
        (10.5, "10.50"),
        ("1e3", "1000.00"),
        ("1,500.00", "1500.00"),
    ],
)
def test_amounts_as_strings_or_numbers_become_decimals(amount, expected):
    assert parse_c2b(body(TransAmount=amount)).amount == Decimal(expected)


@pytest.mark.parametrize(
    "amount", ["-1", "0", 0, "NaN", "Infinity", "abc", "", None, True, "10.001", "1e12", [], {}]
)
def test_impossible_amounts_are_not_daraja(amount):
    with pytest.raises(NotDaraja):
        parse_c2b(body(TransAmount=amount))


def test_trans_time_is_nairobi_local_time():
    notice = parse_c2b(body(TransTime="20231121121325"))
    assert notice.trans_time == datetime(2023, 11, 21, 9, 13, 25, tzinfo=UTC)


@pytest.mark.parametrize("value", ["2023-11-21", "20231341121325", "", None, 20231121])
def test_unreadable_trans_time_is_left_empty_not_fatal(value):
    assert parse_c2b(body(TransTime=value)).trans_time is None


@pytest.mark.parametrize(
    "msisdn, form",
    [
        ("254712345678", "plain"),
        ("94c392c311d522da950619227b3361752a42042db7e1e699b26e628305c68a88", "hashed"),
        ("2547 ***** 126", "masked"),
        ("25470****149", "masked"),
        ("2547*****149", "masked"),
        ("", ""),
    ],
)
def test_the_three_msisdn_forms_are_recognised(msisdn, form):
    assert msisdn_form(msisdn) == form


def test_masked_msisdn_shows_its_visible_digits():
    assert masked_parts("2547 ***** 126") == ("2547", "126")
    assert masked_parts("25470****149") == ("25470", "149")


def test_missing_name_keys_and_unknown_fields_are_accepted():
    notice = parse_c2b(body(MiddleName=None, LastName=None, SomethingNew={"x": 1}))
    assert notice.middle_name == "" and notice.last_name == ""


def test_control_characters_never_reach_the_book():
    notice = parse_c2b(body(FirstName="JA\x00NE\r\nFAKE LOG", BillRefNumber="LOAN\n123"))
    assert notice.first_name == "JANEFAKE LOG" and notice.bill_ref == "LOAN123"


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("JANE\u202eNGIRTS", "JANENGIRTS"),  # right-to-left override
        ("\u2067JANE\u2069", "JANE"),  # right-to-left isolate
        ("JA\u200bNE", "JANE"),  # zero-width space
        ("JANE\u2028ADMIN", "JANEADMIN"),  # line separator
        ("JANE\u2029", "JANE"),  # paragraph separator
        ("\ufeffJANE\u200e", "JANE"),  # byte-order mark, left-to-right mark
        ("WANJIKŨ Ñ 王", "WANJIKŨ Ñ 王"),  # letters of every script stay
    ],
)
def test_characters_that_reorder_or_hide_a_name_are_dropped(sent, kept):
    notice = parse_c2b(body(FirstName=sent, LastName=sent, BillRefNumber=sent))
    assert (notice.first_name, notice.last_name, notice.bill_ref) == (kept, kept, kept)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'"x"',
        b"\xff\xfe",
        b'{"TransAmount": "5"}',
        b'{"TransID": "", "TransAmount": "5"}',
        b'{"TransID": "A B", "TransAmount": "5"}',
        b"[" * 5000,
    ],
)
def test_bodies_that_are_not_c2b_notices_say_why(raw):
    with pytest.raises(NotDaraja):
        parse_c2b(raw)


def test_callback_tokens_are_redacted_from_access_logs():
    import logging

    from payments.callbacks import RedactCallbackTokens

    record = logging.LogRecord(
        "werkzeug",
        logging.INFO,
        __file__,
        1,
        '%s - - "%s" %s -',
        ("127.0.0.1", "POST /payments/c2b/8da94e4c59a78888aab5/confirmation HTTP/1.1", "200"),
        None,
    )
    RedactCallbackTokens().filter(record)
    assert "8da94e4c" not in record.getMessage()
    assert "/payments/c2b/***/confirmation" in record.getMessage()
