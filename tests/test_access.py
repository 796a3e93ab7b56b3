"""Every area is closed by default: the authz matrix, CSRF on every form, portfolios."""

import re

import pytest
from flask import Flask

from lenders.web import roles
from tests.conftest import PASSWORD, htmx_client

# What each role may reach. A new endpoint must be added here: the matrix test fails for
# any endpoint whose policy it does not know, so nothing is open by accident.
POLICY = {
    "index": {"admin", "officer"},
    "auth.login": None,
    "auth.login_post": None,
    "auth.logout": {"admin", "officer"},
    "lenders.borrowers": {"admin", "officer"},
    "lenders.borrower": {"admin", "officer"},
    "lenders.loan": {"admin", "officer"},
    "lenders.import_form": {"admin"},
    "lenders.import_upload": {"admin"},
    "payments.dashboard": {"admin", "officer"},
    "payments.transactions": {"admin", "officer"},
    "payments.configuration": {"admin"},
    "payments.export_transactions": {"admin", "officer"},
    "payments.payment": {"admin", "officer"},
    "payments.assign": {"admin", "officer"},
    "payments.reassign": {"admin", "officer"},
    "payments.rematch": {"admin", "officer"},
    "payments.unmatched": {"admin", "officer"},
    "payments.reprocess": {"admin", "officer"},
    "payments.reassignments": {"admin"},
    "payments.decide": {"admin"},
    "payments.maker_checker": {"admin"},
    "payments.alerts": {"admin"},
    "payments.create_shortcode": {"admin"},
    "payments.shortcode": {"admin"},
    "payments.update_shortcode": {"admin"},
    "payments.switch_environment": {"admin"},
    "payments.register_urls": {"admin"},
    "payments.test_payment": {"admin"},
    "payments.check_connection": {"admin"},
    "payments.recent_payments": {"admin"},
    "payments.sms_settings": {"admin"},
    "payments.save_sms_provider": {"admin"},
    "payments.save_sms_template": {"admin"},
    "payments.preview_sms": {"admin"},
    "payments.sms_list": {"admin", "officer"},
    "payments.notices": {"admin", "officer"},
    "payments.read_notices": {"admin", "officer"},
    "lenders.borrower_sms": {"admin", "officer"},
    "lenders.staff": {"admin"},
    "lenders.add_staff": {"admin"},
    "lenders.change_staff": {"admin"},
    "payments.callbacks": {"admin"},
    "jobs.index": {"admin"},
    "jobs.requeue": {"admin"},
    "health.healthz": None,
    "health.prometheus_metrics": None,
    "sms.delivery_report": None,
    "c2b.confirmation": None,
    "c2b.validation": None,
    "c2b.stk_callback": None,
    "c2b.result_callback": None,
    "money.index": {"admin", "officer"},
    "money.loan_panel": {"admin", "officer"},
    "money.prompt": {"admin", "officer"},
    "money.prompt_status": {"admin", "officer"},
    "money.shortcode_balance": {"admin"},
    "money.ask_balance": {"admin"},
    "money.disbursement_form": {"admin", "officer"},
    "money.request_disbursement": {"admin", "officer"},
    "money.disbursement": {"admin", "officer"},
    "money.approve_disbursement": {"admin"},
    "money.change_disbursement": {"admin", "officer"},
    "money.check_disbursement": {"admin"},
    "money.fees_upfront": {"admin"},
    "money.payment_panel": {"admin"},
    "money.check_payment": {"admin"},
    "money.reverse": {"admin"},
    "money.decide_reversal": {"admin"},
}
# Safaricom's callbacks, and nothing else, go without CSRF and login.
CSRF_EXEMPT_BLUEPRINTS = {"c2b", "sms"}  # and Africa's Talking's delivery reports


def concrete_path(rule) -> str:
    def value(match):
        name = match.group(2)
        if match.group(1).startswith("any"):
            return match.group(1).split("(")[1].split(",")[0].strip()
        return "1" if "id" in name else "X"

    return re.sub(r"<((?:\w+(?:\([^)]*\))?:)?)(\w+)>", value, rule.rule)


def test_every_endpoint_declares_who_may_reach_it(app: Flask):
    for endpoint, view in app.view_functions.items():
        if endpoint == "static":
            continue
        assert endpoint in POLICY, f"{endpoint} is not in the access policy of this test"
        assert getattr(view, "allowed_roles", "missing") == (
            frozenset(POLICY[endpoint]) if POLICY[endpoint] else None
        ), endpoint


def rules(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint != "static":
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                yield rule, method


def test_anonymous_visitors_are_sent_to_login(app, client):
    for rule, method in rules(app):
        if POLICY[rule.endpoint] is None:
            continue
        response = client.open(concrete_path(rule), method=method)
        if method == "POST":
            assert response.status_code == 400, rule  # no CSRF token: refused before all
        else:
            assert response.status_code in (302, 303), rule
            assert response.headers["Location"].startswith("/login?next="), rule


@pytest.mark.parametrize("role", ["officer", "admin"])
def test_staff_reach_only_their_roles_areas(app, client, auth, role):
    auth.login(role)
    token = client.csrf_token("/lenders/borrowers/")
    for rule, method in rules(app):
        allowed = POLICY[rule.endpoint]
        if allowed is None or rule.endpoint == "auth.logout":
            continue
        response = client.open(concrete_path(rule), method=method, headers={"X-CSRFToken": token})
        if role in allowed:
            assert response.status_code != 403, rule
        else:
            assert response.status_code == 403, rule
            # the same through HTMX: a header never relaxes a check
            again = client.open(
                concrete_path(rule),
                method=method,
                headers={"X-CSRFToken": token, "HX-Request": "true"},
            )
            assert again.status_code == 403, rule


def test_a_view_without_roles_is_refused_to_everyone(app, client, auth):
    app.add_url_rule("/forgotten", "forgotten", lambda: "secret")
    app.add_url_rule("/named", "named", roles("officer")(lambda: "fine"))
    auth.login("admin")
    assert client.get("/forgotten").status_code == 403
    assert client.get("/named").status_code == 403
    auth.logout()
    auth.login("officer")
    assert client.get("/named").get_data(as_text=True) == "fine"


def test_every_form_needs_a_csrf_token(app, client, auth):
    auth.login("admin")
    for rule, method in rules(app):
        if method != "POST" or rule.endpoint.split(".")[0] in CSRF_EXEMPT_BLUEPRINTS:
            continue
        response = client.post(concrete_path(rule))
        assert response.status_code == 400, rule
        assert "Form expired" in response.get_data(as_text=True), rule
        response = client.post(concrete_path(rule), headers={"X-CSRFToken": "forged"})
        assert response.status_code == 400, rule


def test_csrf_token_from_another_session_is_refused(app, client, auth, make_staff):
    other_token = htmx_client(app).csrf_token("/login")
    user = make_staff("officer")
    response = client.post(
        "/login", data={"email": user.email, "password": PASSWORD, "csrf_token": other_token}
    )
    assert response.status_code == 400
    assert "Reload the page and try again." in response.get_data(as_text=True)
    assert client.get("/lenders/borrowers/").status_code == 303  # not logged in


def test_officer_sees_only_their_portfolio(client, auth, make_staff, make_loan, make_borrower):
    me = auth.login("officer")
    colleague = make_staff("officer")
    mine = make_loan(officer=me, borrower=make_borrower("Mary Mine"))
    theirs = make_loan(officer=colleague, borrower=make_borrower("Tom Theirs"))

    assert client.get(f"/lenders/loans/{mine.number}").status_code == 200
    assert client.get(f"/lenders/loans/{theirs.number}").status_code == 404
    assert client.hx_get(f"/lenders/loans/{theirs.number}").status_code == 404
    assert client.get(f"/lenders/borrowers/{theirs.borrower_id}").status_code == 404
    listing = client.get("/lenders/borrowers/").get_data(as_text=True)
    assert "Mary Mine" in listing and "Tom Theirs" not in listing
    found = client.get("/lenders/borrowers/?q=Tom").get_data(as_text=True)
    assert "Tom Theirs" not in found


def test_admin_sees_every_portfolio(client, auth, make_staff, make_loan, make_borrower):
    auth.login("admin")
    loan = make_loan(officer=make_staff("officer"), borrower=make_borrower("Tom Theirs"))
    page = client.get(f"/lenders/loans/{loan.number}").get_data(as_text=True)
    assert f"<h1>{loan.number}" in page and "Tom Theirs" in page
    assert "Tom Theirs" in client.get("/lenders/borrowers/").get_data(as_text=True)


def test_pages_carry_security_headers(client, auth):
    auth.login("officer")
    response = client.get("/lenders/borrowers/")
    csp = response.headers["Content-Security-Policy"]
    for directive in (
        "default-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ):
        assert directive in csp
    assert "unsafe-eval" not in csp and "unsafe-inline" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    assert "HX-Request" in response.headers.get("Vary", "")


def test_static_files_may_be_cached_and_https_pages_carry_hsts(client, app_factory):
    static = client.get("/static/css/app.css")
    static.close()
    assert static.status_code == 200
    assert static.headers.get("Cache-Control") != "no-store"
    assert static.headers["X-Content-Type-Options"] == "nosniff"
    assert "Strict-Transport-Security" not in static.headers  # served over http

    secure = app_factory(PUBLIC_BASE_URL="https://pay.example.co.ke").test_client()
    login = secure.get("/login")
    assert login.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    assert login.headers.getlist("Cache-Control") == ["no-store"]


def test_contract_pages_answer_admins_and_refuse_officers_configuration(client, auth):
    auth.login("admin")
    for path, heading in (
        ("/payments/dashboard/", "<h1>Dashboard</h1>"),
        ("/payments/transactions/", "Transactions</h1>"),
        ("/payments/configuration/", "<h1>Configuration</h1>"),
    ):
        response = client.get(path)
        assert response.status_code == 200 and heading in response.get_data(as_text=True), path
    auth.logout()
    auth.login("officer")
    assert client.get("/payments/configuration/").status_code == 403
