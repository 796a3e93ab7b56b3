"""What a careful attacker types next: every URL of the app, as each role, with hostile
values in its path, its query string and its form fields. Every answer is a clear page or
fragment (never a 500), on SQLite and on PostgreSQL, which refuses a NUL in any string."""

import re

import pytest
from sqlalchemy import func, select

from lenders.extensions import db
from payments.models import C2BPayment, SmsSettings
from payments.suggestions import suggestions_for
from tests.payments.conftest import c2b_body
from tests.test_access import concrete_path, rules

pytestmark = pytest.mark.both_databases

HOSTILE = [
    "\x00",
    "LOAN\x00-1",
    "1e999999",
    "-1e-999999",
    "99999999999999999999999",
    "²",
    "0001-01-01",
    "9999-12-31",
    "%",
    "_",
    "\u202eevil",
    "x" * 1000,
]
# Every name a view reads from the query string or a form.
FIELDS = [
    "q",
    "phone",
    "amount_min",
    "amount_max",
    "date_from",
    "date_to",
    "status",
    "rule",
    "shortcode",
    "loan",
    "before",
    "after",
    "next",
    "loan_number",
    "borrower_id",
    "reason",
    "payment_id",
    "on",
    "sms_language",
    "sms_opt_out",
    "provider",
    "username",
    "api_key",
    "sender_id",
    "quiet_start",
    "quiet_end",
    "key",
    "language",
    "body",
    "number",
    "name",
    "kind",
    "register_version",
    "amount_tolerance",
    "validation_policy",
    "allowed_ips",
    "initiator_name",
    "consumer_key",
    "consumer_secret",
    "passkey",
    "initiator_password",
    "environment",
    "confirm",
    "amount",
    "msisdn",
    "bill_ref",
    "email",
    "role",
    "password",
    "id",
    "failureReason",
]
# Posting these would end the test's own session.
SKIP = {"auth.logout", "auth.login_post", "lenders.change_staff"}
# These call Daraja (the network) and take no typed value.
SKIP |= {"payments.register_urls", "payments.check_connection"}


@pytest.fixture
def book(auth, make_staff, make_loan, make_borrower, shortcode, confirm):
    officer = make_staff("officer")
    make_loan(number="LOAN-000001", officer=officer, borrower=make_borrower("Jane Wanjiku"))
    confirm(c2b_body(BillRefNumber="LOAN-000001"))
    confirm(c2b_body(BillRefNumber="nobody", MSISDN="2547 ***** 999", FirstName="STRANGER"))
    return officer


def paths(rule, value: str) -> list[str]:
    """The rule's path with its ids, and with ``value`` in each string part it takes."""
    plain = concrete_path(rule)
    out = [plain]
    if "<" in rule.rule and "int:" not in rule.rule and "any(" not in rule.rule:
        out.append(re.sub(r"<(?:string:)?\w+>", value.replace("/", "x"), rule.rule))
    return out


@pytest.mark.parametrize("role", ["admin", "officer"])
def test_no_url_answers_500_to_hostile_values(app, client, auth, book, role):
    user = book if role == "officer" else auth.make_staff("admin")
    auth.login(user=user)
    token = client.csrf_token("/lenders/borrowers/")
    failures = []
    for value in HOSTILE:
        fields = dict.fromkeys(FIELDS, value)
        for rule, method in rules(app):
            if rule.endpoint in SKIP:
                continue
            for path in paths(rule, value):
                try:  # under TESTING an unhandled error is raised here, not answered 500
                    response = client.open(
                        path,
                        method=method,
                        query_string=fields if method == "GET" else None,
                        data=fields if method == "POST" else None,
                        headers={"X-CSRFToken": token, "HX-Request": "true"},
                    )
                    response.close()
                    status = response.status_code
                except Exception as exc:  # noqa: BLE001 - every failure is listed
                    db.session.rollback()
                    status = type(exc).__name__
                if not isinstance(status, int) or status >= 500:
                    failures.append((method, path[:50], repr(value[:12]), status))
    assert not failures, failures


def test_a_nul_in_a_search_gets_a_clear_answer(client, auth, book):
    auth.login("admin")
    for path in (
        "/lenders/borrowers/?q=Jane%00",
        "/payments/transactions/?q=%00",
        "/payments/transactions/export.csv?phone=%00",
        "/lenders/loans/LOAN-000001%00",
    ):
        response = client.get(path)
        assert response.status_code == 400, path
        assert "cannot be read" in response.get_data(as_text=True), path


def test_bad_numbers_in_filters_are_ignored_not_fatal(client, auth, book):
    auth.login("admin")
    for query in (
        "amount_min=1e999999",
        "amount_max=-1e-999999",
        "date_from=0001-01-01",
        "date_to=9999-12-31",
        "before=99999999999999999999999",
    ):
        response = client.get(f"/payments/transactions/?{query}")
        assert response.status_code == 200, query
        assert "TK6" in response.get_data(as_text=True), query
    assert client.get("/payments/99999999999999999999999").status_code == 404
    assert client.get("/lenders/borrowers/?after=99999999999999999999999").status_code == 200


def test_percent_and_underscore_in_the_borrower_search_are_literal(client, auth, make_borrower):
    auth.login("admin")
    make_borrower("Ann Achieng")
    make_borrower("Ben 100% Otieno")
    for typed, found in (("%", {"Ben 100% Otieno"}), ("_", set()), ("LOAN-%", set())):
        page = client.get("/lenders/borrowers/", query_string={"q": typed}).get_data(True)
        shown = {name for name in ("Ann Achieng", "Ben 100% Otieno") if name in page}
        assert shown == found, typed


def test_a_payers_percent_sign_suggests_no_borrower_by_name(
    make_staff, make_borrower, shortcode, confirm
):
    make_borrower("Ann Achieng", phones=())
    make_borrower("Ben Otieno", phones=())
    for n, first_name in enumerate(("%", "_")):
        confirm(c2b_body(TransID=f"TK6LIKE{n:03d}", MSISDN="2547 ***** 999", FirstName=first_name))
    admin = make_staff("admin")
    for payment in db.session.scalars(select(C2BPayment)):
        assert suggestions_for(db.session, admin, payment) == [], payment.first_name


def test_opening_the_sms_page_writes_nothing(client, auth):
    auth.login("admin")
    page = client.get("/payments/sms/")
    assert page.status_code == 200
    assert db.session.scalar(select(func.count()).select_from(SmsSettings)) == 0
    assert "/payments/sms/None/" not in page.get_data(as_text=True)


@pytest.mark.parametrize("filename", ["book\x00.csv", "book\u202egsv.csv", "x" * 300 + ".csv"])
def test_an_uploaded_files_name_is_input_too(client, auth, filename):
    import io

    from lenders.models import AuditEvent

    auth.login("admin")
    book = (
        "loan_number,borrower_name,national_id,phone,principal,interest,fees,disbursed_on,"
        "installments,frequency\nLOAN-1,Jane W,2100001,0722000001,1000,0,0,2025-01-15,2,monthly\n"
    )
    response = client.post(
        "/lenders/import",
        data={
            "csrf_token": client.csrf_token("/lenders/import"),
            "file": (io.BytesIO(book.encode()), filename),
        },
    )
    if "\x00" in filename:
        assert response.status_code == 400
        return
    assert response.status_code == 303
    reason = db.session.scalars(
        select(AuditEvent.reason).where(AuditEvent.action == "loan.imported")
    ).one()
    assert "\u202e" not in reason and len(reason) < 150
