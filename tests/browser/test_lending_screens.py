"""The lending screens in a real browser: htmx search and paging, the officer's portfolio
boundary, the loan-book upload and the login redirect of an expired session."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect

from lenders.demo import DEMO_ADMIN, DEMO_PASSWORDS
from tests.browser.conftest import open_admin_page

pytestmark = pytest.mark.browser

OTIENO = "otieno@demo.marejesho.test"
WANJIRU = "wanjiru@demo.marejesho.test"
KES = re.compile(r"^-?KES \d{1,3}(,\d{3})*\.\d{2}$")
HEADER = (
    "loan_number,borrower_name,national_id,phone,principal,interest,fees,"
    "disbursed_on,installments,frequency,amount_paid,officer_email"
)


def mark_page(page) -> None:
    """Leave a mark in the page's JavaScript state; a full page load wipes it."""
    page.evaluate("window.__sameDocument = true")


def same_document(page) -> bool:
    return page.evaluate("window.__sameDocument === true")


def csv_file(name: str, *lines: str) -> dict:
    return {
        "name": name,
        "mimeType": "text/csv",
        "buffer": ("\n".join((HEADER, *lines)) + "\n").encode(),
    }


def test_officer_finds_borrower_by_phone_and_reads_loan_schedule(
    page, live_server, login, screenshot, browser_errors
):
    login(OTIENO, DEMO_PASSWORDS[OTIENO], shoot="login")
    page.get_by_role("link", name="Borrowers", exact=True).click()
    expect(page.get_by_role("heading", name="Borrowers", level=1)).to_be_visible()
    mark_page(page)

    page.get_by_role("searchbox", name="Search borrowers").press_sequentially(
        "0712 345 678", delay=20
    )

    expect(page).to_have_url(re.compile(r"/lenders/borrowers/\?q=0712(\+|%20)345(\+|%20)678$"))
    rows = page.locator("#results tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first.get_by_role("link", name="Jane Wanjiku")).to_be_visible()
    expect(rows.first).to_contain_text("0712 345 678")
    assert same_document(page), "the search reloaded the page instead of swapping rows"
    screenshot("borrowers-search")

    rows.first.get_by_role("link", name="Jane Wanjiku").click()
    expect(page).to_have_url(re.compile(r"/lenders/borrowers/\d+$"))
    expect(page.get_by_role("heading", name="Jane Wanjiku", level=1)).to_be_visible()
    screenshot("borrower")

    page.get_by_role("link", name="LOAN-000123").first.click()
    expect(page).to_have_url(f"{live_server}/lenders/loans/LOAN-000123")
    expect(page.get_by_role("heading", level=1)).to_contain_text("LOAN-000123")
    schedule = page.locator("#schedule tbody tr")
    expect(schedule.first).to_be_visible()
    assert schedule.count() >= 3
    for row in schedule.all():
        cells = row.locator("td").all_inner_texts()
        seq, _due, amount_due, paid, outstanding, state = (c.strip() for c in cells)
        assert seq.isdigit()
        assert state.lower() in {"paid", "due", "overdue"}, cells
        for money in (amount_due, paid, outstanding):
            assert KES.match(money), f"{money!r} is not formatted like KES 1,234.00"
    assert any("," in text for text in page.locator("#schedule .money").all_inner_texts())
    screenshot("loan")
    assert browser_errors.unexpected() == []


def test_officer_gets_not_found_for_another_officers_loan(
    page, live_server, login, screenshot, browser_errors
):
    login(WANJIRU, DEMO_PASSWORDS[WANJIRU])

    response = page.goto(f"{live_server}/lenders/loans/LOAN-000123")

    assert response.status == 404
    expect(page.get_by_role("heading", name="Not found", level=1)).to_be_visible()
    expect(page.locator("#schedule")).to_have_count(0)
    expect(page.get_by_text("Jane Wanjiku")).to_have_count(0)
    screenshot("not-found")
    browser_errors.allow("status of 404")  # Chromium logs the page's own 404
    assert browser_errors.unexpected() == []


def test_admin_import_lists_bad_lines_and_imports_nothing_then_imports_good_file(
    page, live_server, login, screenshot, browser_errors
):
    login(DEMO_ADMIN, DEMO_PASSWORDS[DEMO_ADMIN])
    open_admin_page(page, "Import")
    expect(page).to_have_url(f"{live_server}/lenders/import")
    good_line = (
        "LOAN-900001,Halima Chepkoech,39000001,0722 000 001,10000,1200,0,2026-01-05,6,monthly,,"
    )
    page.get_by_label("Loan book (CSV)").set_input_files(
        csv_file(
            "bad-book.csv",
            good_line,
            "LOAN-900002,Baraka Mwita,39000002,12345,10000,1200,0,2026-01-05,6,monthly,,",
            "LOAN-900003,Zawadi Achieng,39000003,0722 000 003,10000,1200,0,05/01/2026,6,monthly,,",
        )
    )
    with page.expect_navigation():
        page.get_by_role("button", name="Import").click()

    errors = page.locator("#import-errors")
    expect(errors.get_by_role("heading")).to_have_text("Nothing was imported: 2 errors")
    items = errors.locator("li")
    expect(items).to_have_count(2)
    expect(items.nth(0)).to_contain_text(re.compile(r"^line 3: .*phone"))
    expect(items.nth(1)).to_contain_text(re.compile(r"^line 4: .*date"))
    screenshot("import-errors")

    # All or nothing: the good line 2 was not imported either.
    page.goto(f"{live_server}/lenders/borrowers/?q=LOAN-900001")
    expect(page.locator("#results")).to_contain_text("No borrower matches")

    page.goto(f"{live_server}/lenders/import")
    page.get_by_label("Loan book (CSV)").set_input_files(
        csv_file(
            "good-book.csv",
            good_line,
            "LOAN-900002,Baraka Mwita,39000002,0722 000 002,5000,600,200,2026-02-01,4,weekly,,",
        )
    )
    with page.expect_navigation():
        page.get_by_role("button", name="Import").click()

    expect(page).to_have_url(f"{live_server}/lenders/borrowers/")
    expect(page.get_by_role("status")).to_contain_text("Imported 2 loans")
    page.goto(f"{live_server}/lenders/loans/LOAN-900002")
    expect(page.get_by_role("heading", level=1)).to_contain_text("LOAN-900002")
    expect(page.locator("#schedule tbody tr")).to_have_count(4)
    browser_errors.allow("status of 422")  # Chromium logs the error page's own status
    assert browser_errors.unexpected() == []


def test_expired_session_during_search_sends_whole_page_to_login(
    page, context, live_server, login, browser_errors
):
    login(OTIENO, DEMO_PASSWORDS[OTIENO])
    page.goto(f"{live_server}/lenders/borrowers/")
    mark_page(page)

    context.clear_cookies()
    page.get_by_role("searchbox", name="Search borrowers").press_sequentially("Jane", delay=20)

    expect(page).to_have_url(re.compile(r"/login\?next="))
    url = urlsplit(page.url)
    assert url.path == "/login"
    assert parse_qs(url.query) == {"next": ["/lenders/borrowers/"]}
    assert not same_document(page), "the login page was swapped into the old page"
    expect(page.get_by_role("heading", name="Log in", level=1)).to_be_visible()
    expect(page.locator("#results")).to_have_count(0)
    expect(page.locator("header.topbar")).to_have_count(1)

    # Logging in again returns to the page the user was on.
    page.get_by_label("Email").fill(OTIENO)
    page.get_by_label("Password").fill(DEMO_PASSWORDS[OTIENO])
    with page.expect_navigation():
        page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{live_server}/lenders/borrowers/")
    assert browser_errors.unexpected() == []


def test_more_borrowers_appends_next_page_without_reload(
    page, live_server, login, screenshot, browser_errors
):
    login(DEMO_ADMIN, DEMO_PASSWORDS[DEMO_ADMIN])
    page.goto(f"{live_server}/lenders/borrowers/")
    rows = page.locator("#borrower-rows > tr:not(#more-row)")
    expect(rows).to_have_count(25)
    first_page = rows.all_inner_texts()
    mark_page(page)

    page.get_by_role("link", name="More borrowers").click()

    expect(rows).to_have_count(50)
    assert same_document(page), "More borrowers reloaded the page"
    assert page.url == f"{live_server}/lenders/borrowers/"
    assert rows.all_inner_texts()[:25] == first_page
    ids = [row.locator("td").nth(1).inner_text() for row in rows.all()]
    assert len(set(ids)) == 50, "a borrower appears on both pages"
    names = [row.locator("td").nth(0).inner_text() for row in rows.all()]
    assert names == sorted(names)
    expect(page.locator("#more-row")).to_have_count(1)
    expect(page.get_by_role("link", name="More borrowers")).to_have_count(1)
    screenshot("borrowers-more")
    assert browser_errors.unexpected() == []
