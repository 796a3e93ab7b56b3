"""Reconciliation in a real browser: an admin uploads a statement and watches its import's
progress bar move (the import runs as a job on the server's job thread) until the summary
and the rows needing a person appear; then closes a day, signs it off, opens the print page,
and finds the dashboard flagging the day once a reversal changes it."""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timedelta

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app import create_app
from lenders.demo import DEMO_ADMIN, DEMO_PASSWORDS
from lenders.extensions import db
from lenders.models import Loan
from lenders.web import nairobi_today
from payments import statements
from payments.demo import load_demo_shortcode
from payments.models import C2BPayment
from payments.reversals import reverse_payment
from tests.browser.conftest import (  # noqa: F401 (same browser set-up)
    ARTIFACTS,
    CHROMIUM_ARGS,
    open_admin_page,
)
from tests.conftest import serving
from tests.conftest import test_config as app_test_config
from tests.payments.statement_files import payment, reversal, transfer_in, write_csv

pytestmark = pytest.mark.browser
SCREENS = ARTIFACTS
SCREENS.mkdir(exist_ok=True)


@pytest.fixture
def live_server(demo_template, tmp_path):
    """The demo lender served with its job thread on (the upload's import runs as a
    one-off job in the background, as in the embedded default), the demo paybill made."""
    target = tmp_path / "marejesho.db"
    shutil.copy(demo_template, target)
    app = create_app(app_test_config(f"sqlite:///{target}") | {"JOBS_IN_BACKGROUND": True})
    with app.app_context():
        load_demo_shortcode(db.session)
        db.session.commit()
        db.session.remove()
    with serving(app) as url:
        yield url
    app.extensions["marejesho.jobs"].stop()
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def server_db(live_server, tmp_path):
    """A session on the live server's database, for setting up and checking."""
    app = create_app(app_test_config(f"sqlite:///{tmp_path / 'marejesho.db'}"))

    class Database:
        def run(self, work):
            with app.app_context():
                try:
                    result = work(db.session)
                    db.session.commit()
                    return result
                finally:
                    db.session.remove()

    yield Database()
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def slow_import(monkeypatch):
    """Each batch of 200 rows takes a little longer, so the progress bar is seen moving."""
    real = statements._Batch.run

    def run(self, rows):
        real(self, rows)
        time.sleep(0.15)

    monkeypatch.setattr(statements, "BATCH_ROWS", 200)
    monkeypatch.setattr(statements._Batch, "run", run)


def active_loans(server_db, count: int) -> list[str]:
    return server_db.run(
        lambda s: list(
            s.scalars(
                select(Loan.number).where(Loan.status == "active").order_by(Loan.id).limit(count)
            )
        )
    )


def log_in(page, live_server):
    page.goto(f"{live_server}/login")
    page.get_by_label("Email").fill(DEMO_ADMIN)
    page.get_by_label("Password").fill(DEMO_PASSWORDS[DEMO_ADMIN])
    with page.expect_navigation():
        page.get_by_role("button", name="Log in").click()


def test_an_upload_shows_its_progress_then_the_summary(
    page, live_server, server_db, slow_import, tmp_path, browser_errors
):
    loans = active_loans(server_db, 40)
    day = nairobi_today() - timedelta(days=1)
    start = datetime(day.year, day.month, day.day, 7, 0)
    lines = [
        payment(f"UC8{n:07d}", start + timedelta(seconds=20 * n), 10, loans[n % len(loans)])
        for n in range(2400)
    ]
    lines += [
        payment(
            "UC9STRANGE",
            start + timedelta(hours=5),
            777,
            "NO-SUCH-LOAN",
            party="254799000000 - STRANGER",
        ),  # fmt: skip
        reversal("UC9REVERSE", start + timedelta(hours=6), "UC80000007", 10),
        transfer_in("UC9ORGTRAN", start + timedelta(hours=7), 50000),
    ]
    path = write_csv(tmp_path / "mpesa-statement.csv", lines)
    log_in(page, live_server)
    open_admin_page(page, "Reconciliation")
    page.get_by_label("M-Pesa statement (CSV or XLSX)").set_input_files(str(path))
    page.get_by_role("button", name="Import").click()

    bar = page.locator("#progress [data-percent]")
    expect(bar).to_be_visible()
    expect(bar).not_to_have_attribute("data-percent", "0", timeout=10_000)
    seen = int(bar.get_attribute("data-percent"))
    assert 0 < seen < 100, seen
    page.screenshot(path=str(SCREENS / "reconciliation-upload-progress.png"), full_page=True)

    summary = page.locator("#summary")
    expect(summary).to_be_visible(timeout=30_000)
    expect(summary).to_contain_text("2,403")  # rows
    expect(summary).to_contain_text("2,401")  # gaps filled: every customer payment
    attention = page.locator("#attention")
    expect(attention).to_contain_text("UC9STRANGE")
    expect(attention.get_by_role("link", name="UC9STRANGE")).to_be_visible()
    expect(page.locator("#classes")).to_contain_text("organisation transfer")
    page.screenshot(path=str(SCREENS / "reconciliation-upload-summary.png"), full_page=True)
    with page.expect_navigation():
        attention.get_by_role("link", name="UC9STRANGE").click()
    expect(page.locator("body")).to_contain_text("unmatched")
    assert browser_errors.unexpected() == []


def test_a_day_is_closed_signed_off_printed_and_flagged_when_it_changes(
    page, live_server, server_db, tmp_path, browser_errors
):
    loans = active_loans(server_db, 3)
    day = nairobi_today() - timedelta(days=1)
    at = lambda h: datetime(day.year, day.month, day.day, h, 0)  # noqa: E731
    lines = [
        payment("UD10000001", at(8), 1500, loans[0]),
        payment("UD10000002", at(9), 2500, loans[1]),
        payment("UD10000003", at(10), 300, "WHO-IS-THIS", party="254799000000 - STRANGER"),
        transfer_in("UD1ORGTRAN", at(11), 100000),
    ]
    path = write_csv(tmp_path / "day.csv", lines)
    log_in(page, live_server)
    page.goto(f"{live_server}/payments/reconciliation/")
    page.get_by_label("M-Pesa statement (CSV or XLSX)").set_input_files(str(path))
    page.get_by_role("button", name="Import").click()
    expect(page.locator("#summary")).to_be_visible(timeout=15_000)

    page.goto(f"{live_server}/payments/reconciliation/")
    page.get_by_label("Day (Nairobi)").fill(day.isoformat())
    page.get_by_role("button", name="Open the daily close").click()
    figures = page.locator("#close-figures")
    expect(figures).to_contain_text("KES 4,300.00")  # received
    expect(page.locator("#balanced")).to_contain_text("balances")
    expect(page.locator("#statement-figures")).to_contain_text("KES 4,300.00")
    page.get_by_label("Note (optional)").fill("One stranger left for Monday")
    page.get_by_role("button", name=f"Sign off 600984 for {day:%d %b %Y}").click()
    expect(page.locator("#sign-off")).to_contain_text("Signed off by Amina Admin")
    page.screenshot(path=str(SCREENS / "reconciliation-daily-close-signed.png"), full_page=True)

    with page.expect_navigation():
        page.get_by_role("link", name="Print-friendly page").click()
    expect(page.locator("#signature")).to_contain_text("Signed off by Amina Admin")
    assert page.locator("nav").count() == 0
    page.screenshot(path=str(SCREENS / "reconciliation-daily-close-print.png"), full_page=True)

    def reverse_one(session):
        found = session.scalar(select(C2BPayment).where(C2BPayment.trans_id == "UD10000002"))
        return reverse_payment(session, found, source="admin", reason="customer asked")

    assert server_db.run(reverse_one) == "reversed"
    page.goto(f"{live_server}/payments/dashboard/")
    flag = page.locator("#changed-days")
    expect(flag).to_contain_text(f"600984 on {day:%d %b %Y} changed after its sign-off")
    page.screenshot(path=str(SCREENS / "reconciliation-dashboard-flag.png"), full_page=True)
    flag.get_by_role("link", name="Look again").click()
    expect(page.locator("#sign-off")).to_contain_text("Changed since the sign-off")
    assert browser_errors.unexpected() == []
