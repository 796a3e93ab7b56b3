"""The payments back-office in a real browser: the dashboard refreshing itself, filtered
transactions, the unmatched queue and its suggestions, assigning and reassigning with a
reason, maker-checker, matching again in bulk, an officer's portfolio boundary, the
shortcode's switch to production and the SMS template preview.

Payments arrive the way Safaricom sends them: a confirmation POSTed to the demo paybill's
callback URL on the live server, processed in-process before the answer comes back."""

from __future__ import annotations

import re
from datetime import datetime
from itertools import count
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
import requests
from playwright.sync_api import expect
from sqlalchemy import select

from app import create_app
from lenders.demo import DEMO_ADMIN, DEMO_PASSWORDS
from lenders.extensions import db
from lenders.models import Loan, Repayment, StaffUser
from lenders.references import reference_key
from payments.demo import DEMO_SHORTCODE, load_demo_shortcode
from payments.models import C2BPayment, Shortcode
from payments.suggestions import near_miss_keys
from tests.browser.conftest import open_admin_page
from tests.conftest import test_config as app_test_config

pytestmark = pytest.mark.browser

OTIENO = "otieno@demo.marejesho.test"
WANJIRU = "wanjiru@demo.marejesho.test"
JANE_MSISDN = "254712345678"  # Jane Wanjiku's phone in the demo book
STRANGER = {"msisdn": "2547 ***** 000", "first_name": "RELATIVE"}
NAIROBI = ZoneInfo("Africa/Nairobi")
# As in conftest (not imported from there: a conftest is not a module to import from).
CHROMIUM_CONTEXT = {"viewport": {"width": 1280, "height": 800}, "locale": "en-KE"}
TIMEOUT_MS = 5_000

_receipts = count(1)


# --- the live server's database and the money that arrives ------------------------------


class Paybill:
    """The demo paybill 600984 in the live server's database; ``pay`` makes a payment
    arrive through its confirmation URL, the rest read what the server did with it."""

    def __init__(self, base_url: str, database_url: str):
        self.base_url = base_url
        self.app = create_app(app_test_config(database_url))
        with self.app.app_context():
            shortcode = load_demo_shortcode(db.session)
            db.session.commit()
            self.token, self.shortcode_id = shortcode.callback_token, shortcode.id
            db.session.remove()

    def close(self) -> None:
        with self.app.app_context():
            db.engine.dispose()

    def _read(self, work):
        """Run ``work(session)`` in a short app context: no read lingers on the file."""
        with self.app.app_context():
            try:
                return work(db.session)
            finally:
                db.session.remove()

    def pay(
        self,
        *,
        bill_ref: str = "",
        amount: str = "1000.00",
        msisdn: str = STRANGER["msisdn"],
        first_name: str = STRANGER["first_name"],
    ) -> str:
        """POST one Daraja v2 confirmation; returns its receipt (TransID)."""
        now = datetime.now(NAIROBI)
        trans_id = f"UB7{next(_receipts):07d}"
        body = {
            "TransactionType": "Pay Bill",
            "TransID": trans_id,
            "TransTime": now.strftime("%Y%m%d%H%M%S"),
            "TransAmount": amount,
            "BusinessShortCode": DEMO_SHORTCODE,
            "BillRefNumber": bill_ref,
            "InvoiceNumber": "",
            "OrgAccountBalance": "250000.00",
            "ThirdPartyTransID": "",
            "MSISDN": msisdn,
            "FirstName": first_name,
        }
        answer = requests.post(
            f"{self.base_url}/payments/c2b/{self.token}/confirmation", json=body, timeout=10
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["ResultCode"] == 0, answer.text
        return trans_id

    def payment(self, trans_id: str) -> dict:
        """What the server made of a payment: status, rule, and its loans live/reversed."""

        def work(session):
            found = session.scalar(select(C2BPayment).where(C2BPayment.trans_id == trans_id))
            assert found is not None, f"payment {trans_id} was not stored"
            return {
                "id": found.id,
                "status": found.status,
                "rule": found.rule,
                "live": [r.loan.number for r in found.repayments if not r.reversed],
                "reversed": [r.loan.number for r in found.repayments if r.reversed],
            }

        return self._read(work)

    def repayments_on(self, loan_number: str, trans_id: str) -> int:
        return self._read(
            lambda s: len(
                s.scalars(
                    select(Repayment)
                    .join(Loan)
                    .where(Loan.number == loan_number, Repayment.reference == trans_id)
                ).all()
            )
        )

    def _officers_active_loans(self, session, email: str) -> list[Loan]:
        officer = session.scalar(select(StaffUser).where(StaffUser.email == email))
        loans = session.scalars(
            select(Loan).where(Loan.officer_id == officer.id, Loan.status == "active")
        ).all()
        return sorted(loans, key=lambda loan: (-loan.outstanding, loan.id))

    def active_loans(self, email: str, how_many: int = 2) -> list[str]:
        """The officer's active loans with the most outstanding (a KES 1,000 payment
        lands on them without spilling over)."""
        loans = self._read(lambda s: self._officers_active_loans(s, email)[:how_many])
        assert len(loans) == how_many and all(loan.outstanding > 2000 for loan in loans)
        return [loan.number for loan in loans]

    def near_miss(self, email: str) -> tuple[str, str]:
        """One of the officer's active loans and its number with two neighbouring digits
        swapped: the typo names no loan, and of the loans the officer may use it is one
        typo from that one only (so that loan is the queue's best suggestion)."""

        def work(session):
            taken = set(session.scalars(select(Loan.reference_key)).all())
            loans = self._officers_active_loans(session, email)
            mine = {loan.reference_key for loan in loans}
            for loan in loans:
                if loan.outstanding < 2000:
                    break
                prefix, digits = re.match(r"^(\D*)(\d+)$", loan.number).groups()
                for i in range(len(digits) - 1):
                    typo = prefix + digits[:i] + digits[i + 1] + digits[i] + digits[i + 2 :]
                    key = reference_key(typo)
                    if key not in taken and near_miss_keys(key) & mine == {loan.reference_key}:
                        return loan.number, typo
            raise AssertionError(f"no loan of {email} has a typo that points to it alone")

        return self._read(work)

    def borrower_of(self, loan_number: str) -> tuple[str, str]:
        """The loan's borrower: name, and first phone as Daraja v2 masks it."""

        def work(session):
            loan = session.scalar(select(Loan).where(Loan.number == loan_number))
            phone = loan.borrower.phones[0].number
            return loan.borrower.name, f"{phone[:4]} ***** {phone[-3:]}"

        return self._read(work)

    def environment(self) -> str:
        return self._read(lambda s: s.get(Shortcode, self.shortcode_id).environment)


@pytest.fixture
def paybill(live_server, tmp_path):
    """The demo shortcode, created in the database the live server serves (the
    ``live_server`` fixture copies its database to ``tmp_path / "marejesho.db"``)."""
    bill = Paybill(live_server, f"sqlite:///{tmp_path / 'marejesho.db'}")
    yield bill
    bill.close()


@pytest.fixture
def second_page(chromium, live_server, browser_errors):
    """Another person at another browser (own cookies), its errors in ``browser_errors``.
    Needs ``live_server`` so that it closes before the server shuts down."""
    ctx = chromium.new_context(**CHROMIUM_CONTEXT)
    ctx.set_default_timeout(TIMEOUT_MS)
    ctx.set_default_navigation_timeout(TIMEOUT_MS)
    tab = ctx.new_page()
    tab.on("console", browser_errors.on_console)
    tab.on("pageerror", browser_errors.on_page_error)
    yield tab
    ctx.close()


# --- helpers -----------------------------------------------------------------------------


def log_in(page, base_url: str, email: str) -> None:
    page.goto(f"{base_url}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(DEMO_PASSWORDS[email])
    with page.expect_navigation():
        page.get_by_role("button", name="Log in").click()
    assert "/login" not in page.url, page.content()[:1000]


def mark_page(page) -> None:
    """Leave a mark in the page's JavaScript state; a full page load wipes it."""
    page.evaluate("window.__sameDocument = true")


def same_document(page) -> bool:
    return page.evaluate("window.__sameDocument === true")


def nav(page, name: str) -> None:
    """Follow a link of the top navigation; the admin's pages sit in its Admin menu."""
    link = page.locator("header.topbar").get_by_role("link", name=name, exact=True)
    if not link.is_visible():
        return open_admin_page(page, name)
    with page.expect_navigation():
        link.click()


def allocation(page, loan_number: str):
    return page.locator("#allocations tbody tr", has=page.get_by_role("link", name=loan_number))


def repayment_row(page, trans_id: str):
    return page.locator("#repayments tbody tr", has_text=trans_id)


CHARTS_DRAWN = """() => !!window.Chart && ['daily-chart', 'split-chart'].every(
    id => { const c = document.getElementById(id); return c && !!Chart.getChart(c); })"""
# Whether each chart's canvas holds any painted pixel: Chart.getChart() alone does not
# tell that a canvas was cleared after the chart drew on it.
CHARTS_INKED = """() => ['daily-chart', 'split-chart'].map(id => {
    const canvas = document.getElementById(id);
    if (!canvas.width || !canvas.height) return false;
    const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 3; i < pixels.length; i += 4) if (pixels[i]) return true;
    return false;
})"""


# --- 1. dashboard --------------------------------------------------------------------------


def open_dashboard_with_payments(page, paybill, login) -> None:
    """One payment posted, one waiting; the admin on the dashboard, its charts drawn."""
    loan = paybill.active_loans(OTIENO, 1)[0]
    posted = paybill.pay(bill_ref=loan, amount="1500.00")
    assert paybill.payment(posted)["status"] == "posted"
    paybill.pay(bill_ref="school fees")
    login(DEMO_ADMIN, DEMO_PASSWORDS[DEMO_ADMIN])
    nav(page, "Dashboard")
    expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()
    page.wait_for_function(CHARTS_DRAWN)


def refresh_figures(page, paybill) -> None:
    """Another stranger's payment arrives and the page hears ``payments-changed`` (as
    after an action on a payment); returns once htmx has swapped and settled the figures."""
    mark_page(page)
    page.evaluate(
        """() => {
        window.__settled = false;
        document.getElementById('daily-chart').__before = true;
        document.body.addEventListener('htmx:afterSettle', event => {
            if (event.target.id === 'figures') window.__settled = true;
        });
    }"""
    )
    paybill.pay(bill_ref="rent")
    page.evaluate("htmx.trigger(document.body, 'payments-changed')")
    page.wait_for_function("() => window.__settled === true")
    page.wait_for_function(CHARTS_DRAWN + " && !document.getElementById('daily-chart').__before")


def test_admin_dashboard_draws_charts_and_refreshes_figures_in_place(
    page, live_server, paybill, login, screenshot, browser_errors
):
    open_dashboard_with_payments(page, paybill, login)

    unmatched = page.locator("#figures p.big", has_text="unmatched").get_by_role("link")
    expect(unmatched).to_have_text("1")
    expect(unmatched).to_have_attribute("href", "/payments/unmatched/")
    split = "Chart.getChart(document.getElementById('split-chart')).data.datasets[0].data"
    daily = "Chart.getChart(document.getElementById('daily-chart')).data.datasets[0].data"
    assert page.evaluate(split)[:2] == [1, 1]  # posted, unmatched
    assert page.evaluate(f"{daily}.reduce((a, b) => a + b, 0)") == pytest.approx(2500.0)
    assert page.evaluate(CHARTS_INKED) == [True, True]
    expect(page.locator("#shortcode-figures tbody tr", has_text=DEMO_SHORTCODE)).to_be_visible()
    screenshot("dashboard")
    assert browser_errors.unexpected() == []

    refresh_figures(page, paybill)

    expect(unmatched).to_have_text("2")
    assert same_document(page), "the figures came with a full page load"
    assert page.evaluate(split)[:2] == [1, 2]
    assert page.evaluate(f"{daily}.reduce((a, b) => a + b, 0)") == pytest.approx(3500.0)
    screenshot("dashboard-refreshed")
    assert browser_errors.unexpected() == []


def test_dashboard_refresh_redraws_the_charts_within_the_content_security_policy(
    page, live_server, paybill, login, browser_errors
):
    open_dashboard_with_payments(page, paybill, login)
    assert page.evaluate(CHARTS_INKED) == [True, True]

    refresh_figures(page, paybill)

    assert browser_errors.unexpected() == []
    assert page.evaluate(CHARTS_INKED) == [True, True], "the refreshed charts are blank"


def test_the_dashboards_own_refresh_tells_the_server_it_is_a_poll(
    page, live_server, paybill, login, browser_errors
):
    """Background polling must not keep an idle session alive: htmx sends the polling
    element's header, merged with the CSRF header of the page."""
    open_dashboard_with_payments(page, paybill, login)
    with page.expect_request(lambda r: r.headers.get("hx-target") == "figures") as refresh:
        page.evaluate("htmx.trigger(document.body, 'payments-changed')")
    headers = refresh.value.headers
    assert headers.get("x-marejesho-poll") == "true" and headers.get("x-csrftoken")
    assert browser_errors.unexpected() == []


# --- 2. transactions -----------------------------------------------------------------------


def test_officer_filters_transactions_by_phone_in_another_form_and_exports_them(
    page, live_server, paybill, login, browser_errors
):
    loan = paybill.active_loans(OTIENO, 1)[0]
    janes = paybill.pay(bill_ref=loan, msisdn=JANE_MSISDN, first_name="JANE")
    assert paybill.payment(janes)["live"] == [loan]
    others = [
        paybill.pay(bill_ref="rent"),
        paybill.pay(bill_ref="x", msisdn="254722000111", first_name="PETER"),
    ]
    login(OTIENO, DEMO_PASSWORDS[OTIENO])
    nav(page, "Transactions")
    rows = page.locator("#results table.payments tbody tr")
    expect(rows).to_have_count(3)
    mark_page(page)

    page.get_by_role("searchbox", name="Phone").press_sequentially("0712 345 678", delay=20)

    expect(page).to_have_url(re.compile(r"[?&]phone=0712(\+|%20)345(\+|%20)678(&|$)"))
    assert parse_qs(urlsplit(page.url).query)["phone"] == ["0712 345 678"]
    expect(rows).to_have_count(1)
    expect(rows.first.get_by_role("link", name=janes)).to_be_visible()
    expect(rows.first).to_contain_text(loan)
    for other in others:
        expect(page.get_by_role("link", name=other)).to_have_count(0)
    assert same_document(page), "the filter reloaded the page instead of swapping rows"

    href = page.get_by_role("link", name="Export these as CSV").get_attribute("href")
    assert urlsplit(href).path == "/payments/transactions/export.csv"
    assert parse_qs(urlsplit(href).query) == {"phone": ["0712 345 678"]}
    assert browser_errors.unexpected() == []


def test_export_link_downloads_the_filtered_payments(
    page, live_server, paybill, login, browser_errors
):
    loan = paybill.active_loans(OTIENO, 1)[0]
    janes = paybill.pay(bill_ref=loan, msisdn=JANE_MSISDN, first_name="JANE")
    other = paybill.pay(bill_ref="rent")
    login(OTIENO, DEMO_PASSWORDS[OTIENO])
    page.goto(f"{live_server}/payments/transactions/?phone=0712+345+678")

    with page.expect_download() as started:
        page.get_by_role("link", name="Export these as CSV").click()

    download = started.value
    assert download.failure() is None
    assert download.suggested_filename.startswith("transactions-")
    with open(download.path(), encoding="utf-8") as csv_file:
        lines = csv_file.read().strip().splitlines()
    assert len(lines) == 2, lines
    assert janes in lines[1] and other not in lines[1]
    assert "254712345678" not in lines[1]  # masked in the export
    assert browser_errors.unexpected() == []


# --- 3. and 4. the unmatched queue, assigning ------------------------------------------------


def test_officer_assigns_a_near_miss_payment_from_the_queue_to_the_suggested_loan(
    page, live_server, paybill, login, screenshot, browser_errors
):
    loan, typed = paybill.near_miss(OTIENO)
    trans_id = paybill.pay(bill_ref=typed, amount="700.00")
    assert paybill.payment(trans_id)["status"] == "unmatched"
    login(OTIENO, DEMO_PASSWORDS[OTIENO])

    nav(page, "Unmatched")

    row = page.locator("#queue tbody tr", has=page.get_by_role("link", name=trans_id))
    expect(row).to_contain_text(typed)
    expect(row.locator("td").last).to_contain_text(loan)
    expect(row.locator("td").last).to_contain_text("one typo from")
    screenshot("unmatched-queue")

    with page.expect_navigation():
        row.get_by_role("link", name=trans_id).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(trans_id)
    suggestion = page.locator("#suggestions tbody tr", has_text=loan)
    expect(suggestion).to_contain_text("one typo from")
    suggestion.get_by_role("button", name="Use this loan").click()
    assign = page.locator("#assign-form")
    expect(assign.get_by_label("Loan number")).to_have_value(loan)
    reason = assign.get_by_label("Reason (required)")
    reason.fill("borrower called: her sister paid, swapped two digits")
    mark_page(page)
    assign.get_by_role("button", name="Assign").click()

    expect(page.get_by_role("status")).to_contain_text(f"Payment {trans_id} posted to {loan}.")
    heading = page.get_by_role("heading", level=1)
    expect(heading.locator(".badge")).to_have_text("posted")
    expect(heading.locator(".rule")).to_have_text("manual")
    expect(page.locator(".reason")).to_contain_text("swapped two digits")
    expect(allocation(page, loan)).to_have_count(1)
    expect(allocation(page, loan).locator(".badge-reversed")).to_have_count(0)
    assert same_document(page), "assigning reloaded the page"
    stored = paybill.payment(trans_id)
    assert (stored["status"], stored["rule"], stored["live"]) == ("posted", "manual", [loan])

    with page.expect_navigation():
        allocation(page, loan).get_by_role("link", name=loan).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(loan)
    expect(repayment_row(page, trans_id)).to_contain_text("KES 700.00")
    expect(repayment_row(page, trans_id).locator(".badge-reversed")).to_have_count(0)
    assert browser_errors.unexpected() == []


def test_suggestion_buttons_fill_the_assign_form_and_a_borrower_can_be_chosen(
    page, live_server, paybill, login, browser_errors
):
    loan, typed = paybill.near_miss(OTIENO)
    name, masked = paybill.borrower_of(loan)
    # Her phone's digits, another first name: the matcher cannot place it; the page
    # suggests the loan one typo away and the borrower with the same digits.
    trans_id = paybill.pay(bill_ref=typed, msisdn=masked, first_name="RELATIVE")
    assert paybill.payment(trans_id)["status"] == "unmatched"
    login(OTIENO, DEMO_PASSWORDS[OTIENO])
    page.goto(f"{live_server}/payments/{paybill.payment(trans_id)['id']}")
    assign = page.locator("#assign-form")
    reason = assign.get_by_label("Reason (required)")

    page.locator("#suggestions tbody tr", has_text=loan).get_by_role(
        "button", name="Use this loan"
    ).click()
    assert browser_errors.unexpected() == []
    expect(assign.get_by_label("Loan number")).to_have_value(loan)
    expect(reason).to_be_focused()

    page.locator("#suggestions tbody tr", has_text="same phone digits").filter(
        has_text=name
    ).get_by_role("button", name="Use this borrower").click()
    assert browser_errors.unexpected() == []
    expect(page.locator("#borrower-name")).to_have_value(name)
    expect(assign.locator("input[name=borrower_id]")).to_have_value(re.compile(r"^\d+$"))
    expect(assign.get_by_label("Loan number")).to_have_value("")
    expect(reason).to_be_focused()
    reason.fill("her husband paid from his phone")
    mark_page(page)
    assign.get_by_role("button", name="Assign").click()

    expect(page.get_by_role("status")).to_contain_text(f"Payment {trans_id} assigned.")
    expect(page.get_by_role("heading", level=1).locator(".rule")).to_have_text("manual")
    assert same_document(page), "assigning reloaded the page"
    stored = paybill.payment(trans_id)
    assert (stored["status"], stored["rule"]) == ("posted", "manual")
    assert browser_errors.unexpected() == []


def test_assigning_without_a_reason_shows_the_error_in_the_form_and_posts_nothing(
    page, live_server, paybill, login, browser_errors
):
    loan = paybill.active_loans(OTIENO, 1)[0]
    trans_id = paybill.pay(bill_ref="mkopo")
    payment_id = paybill.payment(trans_id)["id"]
    login(OTIENO, DEMO_PASSWORDS[OTIENO])
    page.goto(f"{live_server}/payments/{payment_id}")
    assign = page.locator("#assign-form")
    assign.get_by_label("Loan number").fill(loan)
    mark_page(page)

    # An empty reason is refused by the browser (the field is required) ...
    assign.get_by_role("button", name="Assign").click()
    assert assign.get_by_label("Reason (required)").evaluate("e => e.validity.valueMissing")
    # ... and a reason of spaces by the server, in the form, without a page load.
    assign.get_by_label("Reason (required)").fill("   ")
    with page.expect_response(re.compile(r"/assign$")) as answer:
        assign.get_by_role("button", name="Assign").click()

    assert answer.value.status == 422
    panel = page.locator("#payment-panel")
    expect(panel.locator(".error")).to_have_text("Say why.")
    expect(panel.get_by_label("Loan number")).to_have_value(loan)
    assert same_document(page)
    expect(page.get_by_role("heading", level=1).locator(".badge")).to_have_text("unmatched")
    assert paybill.payment(trans_id)["status"] == "unmatched"
    assert paybill.repayments_on(loan, trans_id) == 0
    browser_errors.allow("status of 422")  # Chromium logs the refused request's status
    assert browser_errors.unexpected() == []


# --- 5. and 6. reassigning ---------------------------------------------------------------


def reassign(page, loan_number: str, reason: str) -> None:
    """Reassign from the payment's page; the panel answers in place (no page load)."""
    form = page.locator("#reassign-form")
    form.get_by_label("Loan number").fill(loan_number)
    form.get_by_label("Reason (required)").fill(reason)
    mark_page(page)
    form.get_by_role("button", name="Reassign").click()
    expect(page.locator("#payment-panel .flash")).to_be_visible()
    assert same_document(page), "reassigning reloaded the page"


def test_officer_reassigns_a_posted_payment_and_both_loans_show_it(
    page, live_server, paybill, login, browser_errors
):
    wrong, right = paybill.active_loans(OTIENO, 2)
    trans_id = paybill.pay(bill_ref=wrong)
    before = paybill.payment(trans_id)
    assert (before["status"], before["live"]) == ("posted", [wrong])
    login(OTIENO, DEMO_PASSWORDS[OTIENO])
    page.goto(f"{live_server}/payments/{before['id']}")

    reassign(page, right, "typed her sister's loan number")

    expect(page.get_by_role("status")).to_contain_text(f"Payment {trans_id} moved to {right}.")
    expect(allocation(page, wrong).locator(".badge-reversed")).to_have_text("reversed")
    expect(allocation(page, right).locator(".badge-reversed")).to_have_count(0)
    after = paybill.payment(trans_id)
    assert (after["live"], after["reversed"], after["rule"]) == ([right], [wrong], "manual")

    page.goto(f"{live_server}/lenders/loans/{wrong}")
    expect(repayment_row(page, trans_id).locator(".badge-reversed")).to_have_text("reversed")
    expect(repayment_row(page, trans_id)).to_have_class(re.compile(r"\breversed\b"))
    page.goto(f"{live_server}/lenders/loans/{right}")
    expect(repayment_row(page, trans_id)).to_contain_text("KES 1,000.00")
    expect(repayment_row(page, trans_id).locator(".badge-reversed")).to_have_count(0)
    assert browser_errors.unexpected() == []


def test_with_maker_checker_an_officers_reassignment_waits_until_an_admin_approves(
    page, second_page, live_server, paybill, browser_errors
):
    admin, officer = page, second_page
    wrong, right = paybill.active_loans(OTIENO, 2)
    trans_id = paybill.pay(bill_ref=wrong)
    payment_id = paybill.payment(trans_id)["id"]

    log_in(admin, live_server, DEMO_ADMIN)
    nav(admin, "Approvals")
    expect(admin.get_by_text("Maker-checker is off")).to_be_visible()
    with admin.expect_navigation():
        admin.get_by_role("button", name="Turn it on").click()
    expect(admin.get_by_text("Maker-checker is on")).to_be_visible()

    log_in(officer, live_server, OTIENO)
    officer.goto(f"{live_server}/payments/{payment_id}")
    reassign(officer, right, "borrower says it was for her second loan")
    expect(officer.get_by_role("status")).to_contain_text(
        f"Reassignment to {right} is waiting for an admin's approval."
    )
    expect(officer.locator("#payment-panel .alert")).to_contain_text(
        f"A reassignment to {right} waits for an admin's approval."
    )
    expect(allocation(officer, wrong).locator(".badge-reversed")).to_have_count(0)
    expect(allocation(officer, right)).to_have_count(0)
    assert paybill.payment(trans_id)["live"] == [wrong]  # no money moved yet

    nav(admin, "Approvals")
    request = admin.locator("#approvals tbody tr", has_text=trans_id)
    expect(request).to_contain_text(wrong)
    expect(request).to_contain_text(right)
    expect(request).to_contain_text("Otieno Odhiambo")
    mark_page(admin)
    request.get_by_role("button", name="Approve").click()
    expect(admin.get_by_role("status")).to_contain_text("Reassignment approved.")
    expect(admin.get_by_text("Nothing is waiting.")).to_be_visible()
    assert same_document(admin), "approving reloaded the page"

    officer.reload()
    expect(allocation(officer, wrong).locator(".badge-reversed")).to_have_text("reversed")
    expect(allocation(officer, right).locator(".badge-reversed")).to_have_count(0)
    after = paybill.payment(trans_id)
    assert (after["live"], after["reversed"]) == ([right], [wrong])
    assert browser_errors.unexpected() == []


# --- 7. matching again in bulk ---------------------------------------------------------------


def test_match_selected_again_lists_the_results_without_a_reload(
    page, live_server, paybill, login, browser_errors
):
    waiting = [paybill.pay(bill_ref=ref) for ref in ("rent", "pay", "school fees")]
    login(OTIENO, DEMO_PASSWORDS[OTIENO])
    nav(page, "Unmatched")
    boxes = page.locator("#queue tbody input[type=checkbox]")
    expect(boxes).to_have_count(3)
    mark_page(page)

    page.get_by_role("checkbox", name="Select all").check()
    for box in boxes.all():
        expect(box).to_be_checked()
    with page.expect_response(re.compile(r"/payments/reprocess$")) as answer:
        page.get_by_role("button", name="Match selected again").click()

    assert answer.value.status == 200
    progress = page.locator("#progress")
    expect(progress.get_by_role("heading")).to_have_text("Matched again: 3")
    items = progress.locator("li")
    expect(items).to_have_count(3)
    for trans_id, item in zip(waiting, items.all(), strict=True):
        expect(item).to_contain_text(re.compile(rf"^{trans_id}: unmatched — \S"))
    assert same_document(page), "matching again reloaded the page"
    assert all(paybill.payment(t)["status"] == "unmatched" for t in waiting)
    assert browser_errors.unexpected() == []


# --- 8. another officer's portfolio --------------------------------------------------------


POST_ASSIGN = """async ([url, loan]) => {
    const token = JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRFToken'];
    const answer = await fetch(url, {
        method: 'POST',
        headers: {'X-CSRFToken': token, 'HX-Request': 'true'},
        body: new URLSearchParams({loan_number: loan, reason: 'it is mine now'}),
    });
    return {status: answer.status, text: await answer.text()};
}"""


def test_officer_cannot_open_or_assign_into_another_officers_portfolio(
    page, live_server, paybill, login, browser_errors
):
    theirs = paybill.active_loans(OTIENO, 1)[0]
    posted = paybill.pay(bill_ref=theirs)
    posted_id = paybill.payment(posted)["id"]
    waiting = paybill.pay(bill_ref="mkopo")
    waiting_id = paybill.payment(waiting)["id"]
    login(WANJIRU, DEMO_PASSWORDS[WANJIRU])

    response = page.goto(f"{live_server}/payments/{posted_id}")
    assert response.status == 404
    expect(page.get_by_role("heading", name="Not found", level=1)).to_be_visible()
    expect(page.get_by_text(posted)).to_have_count(0)

    nav(page, "Unmatched")  # the unplaced payment is hers to see and to place
    expect(page.get_by_role("link", name=waiting)).to_be_visible()
    answer = page.evaluate(POST_ASSIGN, [f"/payments/{waiting_id}/assign", theirs])
    assert answer["status"] == 422, answer
    assert f"no loan {theirs} you can use" in answer["text"]
    answer = page.evaluate(POST_ASSIGN, [f"/payments/{posted_id}/reassign", theirs])
    assert answer["status"] == 404, answer

    assert paybill.payment(waiting)["status"] == "unmatched"
    assert paybill.repayments_on(theirs, waiting) == 0
    assert paybill.payment(posted)["live"] == [theirs]
    browser_errors.allow("status of 404")  # Chromium logs the refused requests' statuses
    browser_errors.allow("status of 422")
    assert browser_errors.unexpected() == []


# --- 9. and 10. admin screens ------------------------------------------------------------


def test_admin_switching_a_shortcode_to_production_asks_first(
    page, live_server, paybill, login, screenshot, browser_errors
):
    login(DEMO_ADMIN, DEMO_PASSWORDS[DEMO_ADMIN])
    nav(page, "Configuration")
    row = page.locator("#shortcodes tbody tr", has_text=DEMO_SHORTCODE)
    expect(row).to_contain_text("sandbox")

    with page.expect_navigation():
        row.get_by_role("link", name=DEMO_SHORTCODE).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"{DEMO_SHORTCODE} Demo paybill")
    environment = page.locator("#environment")
    expect(environment).to_contain_text("Now in sandbox.")
    mark_page(page)
    environment.get_by_role("button", name="Switch to production…").click()

    expect(environment).to_contain_text(f"Switch {DEMO_SHORTCODE} to production?")
    changes = environment.locator("li")
    expect(changes.first).to_be_visible()
    assert changes.count() >= 2
    expect(environment.get_by_role("button", name="Yes, switch to production")).to_be_visible()
    expect(environment.get_by_role("link", name="Cancel")).to_be_visible()
    assert same_document(page)
    assert paybill.environment() == "sandbox"  # asked, not done
    screenshot("shortcode-switch-to-production")
    assert browser_errors.unexpected() == []


def test_admin_sees_the_sms_preview_and_count_follow_the_template_as_it_is_typed(
    page, live_server, login, browser_errors
):
    login(DEMO_ADMIN, DEMO_PASSWORDS[DEMO_ADMIN])
    nav(page, "SMS")
    template = page.locator("article.template").first
    body = template.locator("textarea[name=body]")
    preview = template.locator(".preview")
    expect(preview).to_contain_text("1 SMS")
    mark_page(page)

    body.fill("")
    body.press_sequentially("Asante! Tumepokea {amount} kwa {loan}.", delay=10)

    expect(preview).to_contain_text("Preview: Asante! Tumepokea KES 1,500.00 kwa LOAN-000123.")
    expect(preview).to_contain_text("47 characters, 1 SMS (GSM-7)")
    expect(preview.locator("small.error")).to_have_count(0)

    body.fill("Asante sana " * 15)  # 180 characters: two SMS
    expect(preview).to_contain_text("180 characters, 2 SMS (GSM-7)")
    expect(preview.locator("small.error")).to_have_count(1)

    body.fill("Asante — tumepokea {amount}")  # the dash is not GSM-7
    expect(preview).to_contain_text("Asante — tumepokea KES 1,500.00")
    expect(preview).to_contain_text("1 SMS (UCS-2)")
    assert same_document(page)
    assert browser_errors.unexpected() == []


def test_sms_preview_shows_a_half_typed_placeholder_as_typed(
    page, live_server, login, browser_errors
):
    login(DEMO_ADMIN, DEMO_PASSWORDS[DEMO_ADMIN])
    nav(page, "SMS")
    template = page.locator("article.template").first
    body = template.locator("textarea[name=body]")

    with page.expect_response(re.compile(r"/payments/sms/preview$")) as answer:
        body.fill("Tumepokea {amount")  # the admin pauses before the closing brace

    assert answer.value.status == 200
    expect(template.locator(".preview")).to_contain_text("Preview: Tumepokea {amount")
    assert browser_errors.unexpected() == []
