"""Money out and back in a real browser, against the Daraja emulator over HTTP: an officer
prompts a borrower from the loan page and watches the prompt settle by itself; a payout
is requested by an officer and approved by an admin with the balance in view; an admin
checks a payment with Safaricom and reverses it, another admin approving.

The demo lender is served with its paybill pointed at a local emulator (the demo's own
credentials), and the server's callback URLs at the server itself. Screenshots go to
MAREJESHO_SCREENSHOTS (default test-artifacts/), named money-*.png."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app import create_app
from lenders.demo import DEMO_ADMIN, DEMO_PASSWORDS
from lenders.extensions import db
from lenders.models import Loan, StaffUser
from payments.demo import load_demo_shortcode
from payments.emulator.server import background_server, create_emulator
from payments.models import C2BPayment
from payments.shortcodes import daraja_client, register_urls
from tests.browser.conftest import ARTIFACTS, TIMEOUT_MS, open_admin_page
from tests.conftest import PASSWORD, serving
from tests.conftest import test_config as app_test_config

pytestmark = pytest.mark.browser
OTIENO = "otieno@demo.marejesho.test"
SHOTS = Path(os.environ.get("MAREJESHO_SCREENSHOTS") or ARTIFACTS)
SETTLES_MS = 15_000  # the emulated customer answers in 1.5 s; results take 0.5 s


@pytest.fixture(scope="module")
def emulator_url():
    """The emulator with the demo paybill's app, a customer who answers in 1.5 s."""
    app = create_emulator({"stk_user_delay": 1.5, "result_delay": 0.5})
    with background_server(app) as url:
        yield url


@pytest.fixture
def money_app(demo_template, tmp_path, emulator_url):
    target = tmp_path / "marejesho.db"
    shutil.copy(demo_template, target)
    app = create_app(app_test_config(f"sqlite:///{target}") | {"DARAJA_SANDBOX_URL": emulator_url})
    with app.app_context():
        load_demo_shortcode(db.session)
        db.session.commit()
        db.session.remove()
    return app


@pytest.fixture
def live_server(money_app):
    """Overrides the browser conftest's: the demo lender, its paybill on the emulator."""
    with serving(money_app) as url:
        money_app.config["PUBLIC_BASE_URL"] = url  # where the emulator calls back
        yield url
    with money_app.app_context():
        db.engine.dispose()


@pytest.fixture
def context(chromium, live_server):
    """Overrides the browser conftest's: the width of a common office laptop (1366 px), at
    which the screenshots are taken."""
    ctx = chromium.new_context(viewport={"width": 1366, "height": 768}, locale="en-KE")
    ctx.set_default_timeout(TIMEOUT_MS)
    ctx.set_default_navigation_timeout(TIMEOUT_MS)
    yield ctx
    ctx.close()


def shoot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"money-{name}.png"), full_page=True)


def read(app, work):
    with app.app_context():
        try:
            return work(db.session)
        finally:
            db.session.remove()


def test_the_stk_button_shows_the_prompt_settling_live(
    page, live_server, money_app, login, browser_errors
):
    login(OTIENO, DEMO_PASSWORDS[OTIENO])
    nav = page.locator("header.topbar nav")
    expect(nav.get_by_role("link", name="Money", exact=True)).to_be_visible()  # officers too
    page.goto(f"{live_server}/lenders/loans/LOAN-000123")
    panel = page.locator("#money-panel")
    expect(panel.get_by_role("heading", name="Collect with M-Pesa")).to_be_visible()
    amount = panel.get_by_label("Amount (KES)")
    assert int(amount.input_value()) > 0  # what is due now
    amount.fill("500")
    summary = page.locator("#loan-summary")
    paid_before = summary.locator("div", has_text="Paid").last.inner_text()
    shoot(page, "stk-button")

    panel.get_by_role("button", name="Send M-Pesa prompt").click()
    prompt = page.locator("#prompts .live-status").first
    expect(prompt).to_have_attribute("data-status", re.compile("sending|pending"))
    expect(prompt).to_contain_text("Waiting for the borrower to enter their PIN")
    expect(prompt).to_have_attribute("hx-trigger", "every 2s")
    shoot(page, "stk-waiting")

    expect(prompt).to_have_attribute("data-status", "completed", timeout=SETTLES_MS)
    expect(prompt).to_contain_text("Paid.")
    expect(prompt).not_to_have_attribute("hx-trigger", re.compile(".*"))  # polling stopped
    receipt = prompt.get_by_role("link").inner_text()
    assert re.fullmatch(r"[A-Z0-9]{10}", receipt)
    # the payment on the loan without a reload: the figures and the repayments refresh
    expect(page.locator("#repayments")).to_contain_text(receipt)
    expect(summary.locator("div", has_text="Paid").last).not_to_have_text(paid_before)
    expect(panel.get_by_label("Amount (KES)")).not_to_have_value("500")  # due now, again
    expect(panel.get_by_text("Prompt sent")).to_have_count(0)
    shoot(page, "stk-paid")
    assert browser_errors.unexpected() == []


def pending_loan_of(app, email: str) -> str:
    def work(session):
        officer = session.scalar(select(StaffUser).where(StaffUser.email == email))
        return session.scalar(
            select(Loan.number)
            .where(Loan.officer_id == officer.id, Loan.status == "pending")
            .order_by(Loan.number)
            .limit(1)
        )

    return read(app, work)


def test_a_payout_is_requested_then_approved_with_the_balance_in_view(
    page, live_server, money_app, login, context, browser_errors
):
    number = pending_loan_of(money_app, OTIENO)
    login(OTIENO, DEMO_PASSWORDS[OTIENO])
    page.goto(f"{live_server}/lenders/loans/{number}")
    page.get_by_role("button", name="Request the payout by M-Pesa").click()
    expect(page.get_by_role("heading", name=f"Pay out {number}")).to_be_visible()
    shoot(page, "payout-request")
    page.get_by_role("button", name="Request the payout").click()
    expect(page.locator("#payout-state")).to_have_text("requested")
    expect(page.locator("#own-request")).to_contain_text("another admin approves it")
    expect(page.get_by_role("button", name=re.compile("Approve"))).to_have_count(0)
    shoot(page, "payout-requested")

    page.goto("about:blank")  # no poll of the page left to meet the logged-out session
    context.clear_cookies()
    login(DEMO_ADMIN, DEMO_PASSWORDS[DEMO_ADMIN])
    open_admin_page(page, "Money")
    page.locator("#to-approve").get_by_role("link", name="Open").first.click()
    page.get_by_role("button", name="Ask Safaricom for the balance now").click()
    expect(page.locator("#balance-utility")).to_contain_text("KES", timeout=SETTLES_MS)
    shoot(page, "payout-approval")

    page.get_by_role("button", name=re.compile("Approve and pay")).click()
    expect(page.locator("#payout-state")).to_have_text("completed", timeout=SETTLES_MS)
    expect(page.locator("#payout-receipt")).to_contain_text("M-Pesa receipt")
    shoot(page, "payout-paid")
    page.get_by_role("link", name=number).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("active")
    expect(page.locator("#payout-done")).to_contain_text("Paid out")
    open_admin_page(page, "Money")
    expect(page.locator("#recent-payouts")).to_contain_text(number)
    shoot(page, "overview")
    assert browser_errors.unexpected() == []


def a_paid_in_payment(app) -> int:
    """Jane pays LOAN-000123 through the emulator (C2B URLs registered to the server)."""

    def work(session):
        shortcode = load_demo_shortcode(session)
        register_urls(session, shortcode, app.config, actor=None)
        session.commit()
        with daraja_client(shortcode, app.config) as client:
            client.simulate_c2b(shortcode.number, 700, "254712345678", bill_ref="LOAN-000123")
        second = StaffUser(
            email="second-admin@demo.marejesho.test", name="Baraka Admin", role="admin"
        )
        second.set_password(PASSWORD)
        session.add(second)
        session.commit()

    read(app, work)
    import time

    for _ in range(100):
        found = read(
            app,
            lambda s: s.scalar(
                select(C2BPayment.id).where(
                    C2BPayment.bill_ref == "LOAN-000123", C2BPayment.status == "posted"
                )
            ),
        )
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("the emulator's payment never arrived")


def test_an_admin_checks_a_payment_and_another_approves_its_reversal(
    page, live_server, money_app, login, context, browser_errors
):
    payment_id = a_paid_in_payment(money_app)
    login(DEMO_ADMIN, DEMO_PASSWORDS[DEMO_ADMIN])
    page.goto(f"{live_server}/payments/reassignments/")
    page.get_by_role("button", name="Turn it on").click()  # maker-checker
    expect(page.get_by_role("button", name="Turn it off")).to_be_visible()
    page.goto(f"{live_server}/payments/{payment_id}")
    panel = page.locator("#safaricom-panel")
    panel.get_by_role("button", name="Check status with Safaricom").click()
    expect(page.locator("#safaricom-state")).to_have_text("Completed", timeout=SETTLES_MS)
    page.locator("#safaricom-panel").get_by_label("Reason (required)").fill(
        "Paid twice by mistake; the borrower asked for it back"
    )
    shoot(page, "reversal-request")
    page.locator("#safaricom-panel").get_by_role("button", name="Reverse this payment").click()
    expect(page.get_by_role("status")).to_contain_text("waits for another admin")
    expect(page.locator("#safaricom-panel .reversal")).to_contain_text("requested")
    expect(page.get_by_role("button", name="Approve the reversal")).to_have_count(0)

    page.goto("about:blank")  # no poll of the page left to meet the logged-out session
    context.clear_cookies()
    login("second-admin@demo.marejesho.test", PASSWORD)
    page.goto(f"{live_server}/payments/{payment_id}")
    expect(page.get_by_role("button", name="Approve the reversal")).to_be_visible()
    shoot(page, "reversal-approval")
    page.get_by_role("button", name="Approve the reversal").click()
    expect(page.locator("#reversed-note")).to_be_visible(timeout=SETTLES_MS)
    expect(page.locator("#safaricom-panel .reversal")).to_contain_text("completed")
    page.reload()
    expect(page.get_by_role("heading", level=1)).to_contain_text("reversed")
    expect(page.locator("#allocations tr.reversed")).to_have_count(1)
    shoot(page, "reversal-done")
    assert browser_errors.unexpected() == []
