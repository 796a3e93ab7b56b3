"""Browser fixtures: the demo lender served on a real port, and headless Chromium driven
by Playwright's sync API. Each test gets a fresh database and a fresh browser context; the
browser itself is started once per run. Without MAREJESHO_TEST_CHROMIUM the tests skip
(under CI they fail, like every other missing service)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import text

from app import create_app
from lenders.demo import load_demo
from lenders.extensions import db
from tests.conftest import CHROMIUM, need, serving
from tests.conftest import test_config as app_test_config

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Playwright's own default is 30 s; a local server answers in milliseconds, so a
# shorter wait fails fast and keeps the whole suite well inside a minute.
TIMEOUT_MS = 5_000


@pytest.fixture(scope="session")
def chromium():
    """Headless Chromium, launched once for the whole run."""
    executable = need("Chromium (MAREJESHO_TEST_CHROMIUM)", CHROMIUM)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def demo_template(sqlite_template, tmp_path_factory):
    """The SQLite template with the demo lender loaded (200 borrowers, 300 loans), built
    once per run and copied for each browser test."""
    path = tmp_path_factory.mktemp("demo") / "marejesho.db"
    shutil.copy(sqlite_template, path)
    app = create_app(app_test_config(f"sqlite:///{path}"))
    with app.app_context():
        load_demo(db.session)
        db.session.commit()
        db.session.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        db.session.remove()
        db.engine.dispose()
    return path


@pytest.fixture
def live_server(demo_template, tmp_path):
    """The app with the demo lender loaded, served on a free port; yields the base URL."""
    target = tmp_path / "marejesho.db"
    shutil.copy(demo_template, target)
    app = create_app(app_test_config(f"sqlite:///{target}"))
    with serving(app) as url:
        yield url
    with app.app_context():
        db.engine.dispose()


class BrowserErrors(list):
    """JavaScript errors a page reported: console errors (CSP violations among them) and
    uncaught exceptions. ``allow`` names console messages a test expects, such as the
    "Failed to load resource" Chromium logs for a page served with a 404."""

    def __init__(self):
        super().__init__()
        self.allowed: list[str] = []

    def allow(self, fragment: str) -> None:
        self.allowed.append(fragment)

    def on_console(self, message) -> None:
        if message.type == "error":
            self.append(f"console: {message.text} ({message.location.get('url', '')})")

    def on_page_error(self, error) -> None:
        self.append(f"pageerror: {error}")

    def unexpected(self) -> list[str]:
        return [e for e in self if not any(fragment in e for fragment in self.allowed)]


@pytest.fixture
def context(chromium, live_server):
    """A fresh browser context (its own cookies) for one test. It needs ``live_server`` so
    that it closes first: its keep-alive connections end before the server shuts down."""
    ctx = chromium.new_context(viewport={"width": 1280, "height": 800}, locale="en-KE")
    ctx.set_default_timeout(TIMEOUT_MS)
    ctx.set_default_navigation_timeout(TIMEOUT_MS)
    yield ctx
    ctx.close()


@pytest.fixture
def browser_errors(live_server):
    return BrowserErrors()


@pytest.fixture
def page(context, browser_errors):
    """A page whose console errors and uncaught exceptions land in ``browser_errors``."""
    tab = context.new_page()
    tab.on("console", browser_errors.on_console)
    tab.on("pageerror", browser_errors.on_page_error)
    return tab


@pytest.fixture
def screenshot(page):
    """Save a full-page screenshot to test-artifacts/<name>.png (gitignored)."""

    def shoot(name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return shoot


@pytest.fixture
def login(page, live_server):
    """Log in through the real form; leaves the page on wherever login sends the user."""

    def log_in(email: str, password: str, *, shoot: str | None = None) -> None:
        page.goto(f"{live_server}/login")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(password)
        if shoot:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"{shoot}.png"), full_page=True)
        with page.expect_navigation():
            page.get_by_role("button", name="Log in").click()
        assert "/login" not in page.url, page.content()[:1000]

    return log_in


def open_admin_page(page, name: str) -> None:
    """An admin's page: the top navigation's Admin menu, then its link."""
    page.locator("#admin-menu > summary").click()
    with page.expect_navigation():
        page.locator("#admin-menu").get_by_role("link", name=name, exact=True).click()
