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
    "borrowers.index": {"admin", "officer"},
    "borrowers.borrower": {"admin", "officer"},
    "loans.loan": {"admin", "officer"},
    "import.form": {"admin"},
    "import.upload": {"admin"},
    "dashboard.index": {"admin", "officer"},
    "transactions.index": {"admin", "officer"},
    "configuration.index": {"admin"},
    "transactions.export": {"admin", "officer"},
    "payments.payment": {"admin", "officer"},
    "payments.assign": {"admin", "officer"},
    "payments.reassign": {"admin", "officer"},
    "payments.rematch": {"admin", "officer"},
    "unmatched.index": {"admin", "officer"},
    "payments.reprocess": {"admin", "officer"},
    "reassignments.index": {"admin"},
    "reassignments.decide": {"admin"},
    "payments.maker_checker": {"admin"},
    "alerts.index": {"admin"},
    "configuration.create_shortcode": {"admin"},
    "configuration.shortcode": {"admin"},
    "configuration.update_shortcode": {"admin"},
    "configuration.switch_environment": {"admin"},
    "configuration.register_urls": {"admin"},
    "configuration.test_payment": {"admin"},
    "configuration.check_connection": {"admin"},
    "configuration.recent_payments": {"admin"},
    "sms.index": {"admin"},
    "sms.provider": {"admin"},
    "sms.template": {"admin"},
    "sms.preview": {"admin"},
    "sms.messages": {"admin", "officer"},
    "notices.index": {"admin", "officer"},
    "notices.read": {"admin", "officer"},
    "borrowers.sms": {"admin", "officer"},
    "staff.index": {"admin"},
    "staff.add": {"admin"},
    "staff.change": {"admin"},
    "callbacks.index": {"admin"},
    "jobs.index": {"admin"},
    "jobs.requeue": {"admin"},
    **{
        f"reconciliation.{name}": {"admin"}
        for name in (
            "index",
            "upload",
            "statement_import",
            "day",
            "sign_day_off",
            "print_day",
            "changed",
            "pull_panel",
            "register_pull",
            "pull_now",
        )
    },  # fmt: skip
    "health.healthz": None,
    "health.prometheus_metrics": None,
    "sms_callbacks.delivery_report": None,
    "c2b.confirmation": None,
    "c2b.validation": None,
    "money_callbacks.stk_callback": None,
    "money_callbacks.result_callback": None,
    "money.index": {"admin", "officer"},
    "money.loan_panel": {"admin", "officer"},
    "money.prompt": {"admin", "officer"},
    "money.prompt_status": {"admin", "officer"},
    "money.shortcode_balance": {"admin"},
    "money.ask_balance": {"admin"},
    "disbursements.new": {"admin", "officer"},
    "disbursements.create": {"admin", "officer"},
    "disbursements.disbursement": {"admin", "officer"},
    "disbursements.approve": {"admin"},
    "disbursements.change": {"admin", "officer"},
    "disbursements.check": {"admin"},
    "disbursements.fees_upfront": {"admin"},
    "reversals.panel": {"admin"},
    "reversals.check": {"admin"},
    "reversals.reverse": {"admin"},
    "reversals.decide": {"admin"},
    "refunds.panel": {"admin", "officer"},
    "refunds.create": {"admin", "officer"},
}
RESULT_KIND = "<any(b2c, status, balance, reversal):kind>/<any(result, timeout):which>"
# Every URL the app answers, as bookmarks, forms and Safaricom know them: moving a view to
# another module or blueprint keeps its URL.
URLS = {
    ("GET", "/"),
    ("GET", "/healthz"),
    ("GET", "/jobs/"),
    ("POST", "/jobs/failed/<job_id>/requeue"),
    ("GET", "/metrics"),
    ("GET", "/money/"),
    ("GET", "/money/disbursements/<int:disbursement_id>"),
    ("POST", "/money/disbursements/<int:disbursement_id>/<any(cancel, retry):step>"),
    ("POST", "/money/disbursements/<int:disbursement_id>/approve"),
    ("POST", "/money/disbursements/<int:disbursement_id>/check"),
    ("GET", "/money/loans/<number>/disburse"),
    ("POST", "/money/loans/<number>/disburse"),
    ("GET", "/money/loans/<number>/panel"),
    ("POST", "/money/loans/<number>/prompt"),
    ("POST", "/money/payments/<int:payment_id>/reverse"),
    ("GET", "/money/payments/<int:payment_id>/refund"),
    ("POST", "/money/payments/<int:payment_id>/refund"),
    ("GET", "/money/payments/<int:payment_id>/safaricom"),
    ("POST", "/money/payments/<int:payment_id>/status"),
    ("GET", "/money/prompts/<int:request_id>"),
    ("POST", "/money/reversals/<int:reversal_id>/<any(approve, reject):decision>"),
    ("POST", "/money/settings/fees-upfront"),
    ("GET", "/money/shortcodes/<int:shortcode_id>/balance"),
    ("POST", "/money/shortcodes/<int:shortcode_id>/balance"),
    ("GET", "/lenders/borrowers/"),
    ("GET", "/lenders/borrowers/<int:borrower_id>"),
    ("POST", "/lenders/borrowers/<int:borrower_id>/sms"),
    ("GET", "/lenders/import"),
    ("POST", "/lenders/import"),
    ("GET", "/lenders/loans/<number>"),
    ("GET", "/lenders/staff/"),
    ("POST", "/lenders/staff/"),
    ("POST", "/lenders/staff/<int:staff_id>/<any(deactivate, activate, end_sessions):action>"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("POST", "/logout"),
    ("GET", "/payments/<int:payment_id>"),
    ("POST", "/payments/<int:payment_id>/assign"),
    ("POST", "/payments/<int:payment_id>/reassign"),
    ("POST", "/payments/<int:payment_id>/rematch"),
    ("GET", "/payments/alerts/"),
    ("GET", "/payments/callbacks/"),
    ("POST", "/payments/c2b/<token>/" + RESULT_KIND),
    ("POST", "/payments/c2b/<token>/confirmation"),
    ("POST", "/payments/c2b/<token>/stk"),
    ("POST", "/payments/c2b/<token>/validation"),
    ("GET", "/payments/configuration/"),
    ("POST", "/payments/configuration/shortcodes"),
    ("GET", "/payments/configuration/shortcodes/<int:shortcode_id>"),
    ("POST", "/payments/configuration/shortcodes/<int:shortcode_id>"),
    ("POST", "/payments/configuration/shortcodes/<int:shortcode_id>/check"),
    ("POST", "/payments/configuration/shortcodes/<int:shortcode_id>/environment"),
    ("GET", "/payments/configuration/shortcodes/<int:shortcode_id>/recent"),
    ("POST", "/payments/configuration/shortcodes/<int:shortcode_id>/register"),
    ("POST", "/payments/configuration/shortcodes/<int:shortcode_id>/test-payment"),
    ("GET", "/payments/dashboard/"),
    ("GET", "/payments/notices/"),
    ("POST", "/payments/notices/read"),
    ("GET", "/payments/reassignments/"),
    ("POST", "/payments/reassignments/<int:request_id>/<any(approve, reject):decision>"),
    ("GET", "/payments/reconciliation/"),
    ("GET", "/payments/reconciliation/changed"),
    ("GET", "/payments/reconciliation/days/"),
    ("GET", "/payments/reconciliation/days/<int:shortcode_id>/<day_text>/print"),
    ("POST", "/payments/reconciliation/days/<int:shortcode_id>/<day_text>/sign-off"),
    ("GET", "/payments/reconciliation/imports/<int:import_id>"),
    ("GET", "/payments/reconciliation/pull/<int:shortcode_id>"),
    ("POST", "/payments/reconciliation/pull/<int:shortcode_id>/now"),
    ("POST", "/payments/reconciliation/pull/<int:shortcode_id>/register"),
    ("POST", "/payments/reconciliation/upload"),
    ("POST", "/payments/reprocess"),
    ("POST", "/payments/settings/maker-checker"),
    ("GET", "/payments/sms/"),
    ("POST", "/payments/sms/<token>/delivery"),
    ("GET", "/payments/sms/for/<any(payment, borrower):kind>/<int:item_id>"),
    ("POST", "/payments/sms/preview"),
    ("POST", "/payments/sms/provider"),
    ("POST", "/payments/sms/templates"),
    ("GET", "/payments/transactions/"),
    ("GET", "/payments/transactions/export.csv"),
    ("GET", "/payments/unmatched/"),
}
# Safaricom's callbacks, and nothing else, go without CSRF and login.
# (and Africa's Talking's delivery reports)
CSRF_EXEMPT_BLUEPRINTS = {"c2b", "money_callbacks", "sms_callbacks"}


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


def test_every_url_answers_where_it_always_has(app: Flask):
    assert {(method, rule.rule) for rule, method in rules(app)} == URLS


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
