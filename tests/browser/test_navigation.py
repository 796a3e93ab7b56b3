"""The top navigation at the width of a common office laptop (1366 px): the admin's
links, the Admin menu and the logout button on one line, and the menu opening."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from lenders.demo import DEMO_ADMIN, DEMO_PASSWORDS

pytestmark = pytest.mark.browser

ADMIN_PAGES = ["Approvals", "Money", "Alerts", "SMS", "Import", "Staff", "Configuration"]


@pytest.fixture
def laptop(chromium, live_server, browser_errors):
    """A browser tab 1366 px wide, logged in as the demo admin."""
    context = chromium.new_context(viewport={"width": 1366, "height": 768}, locale="en-KE")
    tab = context.new_page()
    tab.on("console", browser_errors.on_console)
    tab.on("pageerror", browser_errors.on_page_error)
    tab.goto(f"{live_server}/login")
    tab.get_by_label("Email").fill(DEMO_ADMIN)
    tab.get_by_label("Password").fill(DEMO_PASSWORDS[DEMO_ADMIN])
    with tab.expect_navigation():
        tab.get_by_role("button", name="Log in").click()
    yield tab
    context.close()


def test_the_admins_navigation_fits_one_line_at_1366_px(laptop, live_server, browser_errors):
    laptop.goto(f"{live_server}/payments/dashboard/")
    items = laptop.locator("header.topbar nav > ul > li")
    expect(items.last.get_by_role("button", name="Log out Amina Admin")).to_be_visible()
    boxes = [item.bounding_box() for item in items.all()]
    assert len(boxes) == 8  # the lender, five pages, the Admin menu, logging out
    line = min(box["height"] for box in boxes)
    for box in boxes:
        assert box["height"] < 1.5 * line, f"an item wraps onto two lines: {box}"
        assert abs(box["y"] - boxes[0]["y"]) < line / 2, f"an item drops to a new line: {box}"
    assert boxes[-1]["x"] + boxes[-1]["width"] <= 1366

    laptop.locator("#admin-menu > summary").click()
    menu = laptop.locator("#admin-menu")
    for name in ADMIN_PAGES:
        expect(menu.get_by_role("link", name=name, exact=True)).to_be_visible()
    with laptop.expect_navigation():
        menu.get_by_role("link", name="Staff", exact=True).click()
    expect(laptop.get_by_role("heading", name="Staff", level=1)).to_be_visible()
    assert browser_errors.unexpected() == []
