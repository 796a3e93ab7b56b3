"""Shared fixtures, in flaskr's vocabulary: app, client, runner, auth, and factories.

Databases: every test gets a fresh SQLite file copied from one built by the migrations
(or the PostgreSQL test database emptied); a module whose tests only read data too slow
to build for each uses ``module_app`` instead, built once. Tests in modules marked
``both_databases`` run again on PostgreSQL when MAREJESHO_TEST_POSTGRES_URL is set. Under
CI (CI=true) a test that needs PostgreSQL, Redis or Chromium fails instead of skipping, so
nothing is silently left out. Speed: staff passwords hash with one PBKDF2 round here
(test_config), and Hypothesis runs its quick profile unless CI=true."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from functools import cache
from itertools import count
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from hypothesis import HealthCheck, settings
from jinja2 import BytecodeCache, StrictUndefined
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from werkzeug.serving import make_server

from app import create_app
from lenders.book import create_loan
from lenders.extensions import db
from lenders.models import Borrower, BorrowerPhone, Loan, StaffUser
from lenders.phones import canonical_phone, masked_key, phone_sha256

# Under pytest-xdist (``make test`` runs one worker per core) each worker has a database
# and a Redis database of its own: worker gw1 uses mj_test_gw1 (created on first use) and
# Redis database 15 - 1 when the URL names 15.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")


def per_worker(url: str | None, kind: str) -> str | None:
    if not url or not WORKER:
        return url
    n = int(WORKER.removeprefix("gw"))
    if kind == "redis":
        base, _, number = url.rpartition("/")
        if not number.isdigit() or int(number) < n:
            raise pytest.UsageError(f"{url}: name a Redis database of at least {n}")
        return f"{base}/{int(number) - n}"
    parsed = make_url(url)
    return parsed.set(database=f"{parsed.database}_{WORKER}").render_as_string(False)


POSTGRES_URL = per_worker(os.environ.get("MAREJESHO_TEST_POSTGRES_URL"), "postgresql")
REDIS_URL = per_worker(os.environ.get("MAREJESHO_TEST_REDIS_URL"), "redis")
CHROMIUM = os.environ.get("MAREJESHO_TEST_CHROMIUM")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PASSWORD = "correct horse battery"

# Hypothesis: a quick profile by default, and CI's, which gives each full-stack fuzz of a
# callback endpoint (tests/payments/test_fuzz.py) 1,000 examples. HYPOTHESIS_PROFILE picks
# one by hand, e.g. HYPOTHESIS_PROFILE=ci for the long run locally.
settings.register_profile("dev", max_examples=100, derandomize=True)
settings.register_profile(
    "ci",
    max_examples=1000,
    deadline=None,  # a shared CI machine has slow moments; a deadline would flake there
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,  # a failure prints how to reproduce it with @reproduce_failure
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if IN_CI else "dev"))


def need(service: str, value: str | None) -> str:
    """The service's address, or skip (fail under CI) when it is not configured."""
    if not value:
        message = f"{service} is not configured for tests"
        if IN_CI:
            pytest.fail(message + " (CI must run every test)")
        pytest.skip(message)
    return value


def test_config(url: str) -> dict:
    return {
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": url,
        "SECRET_KEY": "test-secret-key",
        "RATELIMIT_STORAGE_URI": "memory://",
        "PUBLIC_BASE_URL": "http://localhost",
        "JOURNAL_DIR": tempfile.mkdtemp(prefix="marejesho-journal-"),
        # Jobs run inside the request, so a test sees a payment posted when its
        # callback returns; tests/payments/test_background_jobs.py covers the thread.
        "JOBS_IN_BACKGROUND": False,
        # One round of PBKDF2 instead of scrypt: every staff user and login would pay about
        # 0.1-0.5 s otherwise. tests/test_config.py proves the app itself keeps scrypt.
        "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1",
    }


def pytest_generate_tests(metafunc):
    """Give ``database_url`` (per test) and ``module_database_url`` (per module) their
    backends from the markers."""
    backends = ["sqlite"]
    if metafunc.definition.get_closest_marker("both_databases"):
        backends.append("postgresql")
    if metafunc.definition.get_closest_marker("postgresql_only"):
        backends = ["postgresql"]
    if "database_url" in metafunc.fixturenames:
        metafunc.parametrize("database_url", backends, indirect=True)
    if "module_database_url" in metafunc.fixturenames:
        metafunc.parametrize("module_database_url", backends, indirect=True, scope="module")


def pytest_configure(config):
    config.addinivalue_line("markers", "both_databases: run on SQLite and on PostgreSQL")
    config.addinivalue_line("markers", "postgresql_only: run on PostgreSQL only")


def pytest_collection_modifyitems(items):
    """A module's data built once (``module_app``) lives in the one PostgreSQL database
    that every other test empties first: so a module uses one or the other, never both."""
    per_module: dict[str, set[str]] = {}
    for item in items:
        names = {"database_url", "module_database_url"} & set(getattr(item, "fixturenames", ()))
        per_module.setdefault(item.nodeid.split("::")[0], set()).update(names)
    for module, names in per_module.items():
        if len(names) == 2:
            raise pytest.UsageError(f"{module} mixes module_app with per-test databases")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    """A SQLite file built by the migrations, copied for each test."""
    path = tmp_path_factory.mktemp("template") / "marejesho.db"
    app = create_app(test_config(f"sqlite:///{path}"))
    with app.app_context():
        upgrade()
        db.session.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        db.engine.dispose()
    return path


def create_database(url: str) -> None:
    """Create the worker's PostgreSQL database beside the configured one, once."""
    name = make_url(url).database
    server = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        if not conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}):
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    server.dispose()


@pytest.fixture(scope="session")
def postgres_ready():
    """The PostgreSQL test database, emptied and upgraded once per run; an engine on it
    stays open to empty it again before each test."""
    url = need("PostgreSQL (MAREJESHO_TEST_POSTGRES_URL)", POSTGRES_URL)
    if WORKER:
        create_database(url)
    app = create_app(test_config(url))
    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        upgrade()
        db.engine.dispose()
    engine = create_engine(url)
    yield engine
    engine.dispose()


# A TRUNCATE of every table costs 0.2-1 s on PostgreSQL (new files for each table and
# index); DELETE of a test's few rows takes milliseconds. The audit trail refuses DELETE
# (a trigger), so it alone is truncated, first, as it refers to the others; sequences
# start again at 1 as after TRUNCATE ... RESTART IDENTITY.
@cache
def empty_postgres() -> list[str]:
    """The statements, read from ``db.metadata`` once an app is built: each package's
    ``init_app`` imports its models, so before ``create_app`` the metadata lacks the
    payments tables (and DELETE FROM repayment would fail on payment_repayment's rows)."""
    return [
        "TRUNCATE audit_event",
        *(
            f"DELETE FROM {t.name}"
            for t in reversed(db.metadata.sorted_tables)
            if t.name != "audit_event"
        ),
        "SELECT setval(format('%I.%I', schemaname, sequencename)::regclass, 1, false) "
        "FROM pg_sequences WHERE schemaname = current_schema() AND last_value IS NOT NULL",
    ]


def empty_database(backend: str, request, directory: Path) -> str:
    """The URL of a database with the schema and no rows: a copy of the SQLite template in
    ``directory``, or the PostgreSQL test database emptied."""
    if backend == "sqlite":
        target = directory / "marejesho.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), target)
        return f"sqlite:///{target}"
    engine = request.getfixturevalue("postgres_ready")  # has built an app: every model known
    with engine.begin() as conn:
        for statement in empty_postgres():
            conn.execute(text(statement))
    return engine.url.render_as_string(hide_password=False)


@pytest.fixture
def database_url(request, tmp_path):
    return empty_database(request.param, request, tmp_path)


@pytest.fixture(scope="module")
def module_database_url(request, tmp_path_factory):
    return empty_database(request.param, request, tmp_path_factory.mktemp("module"))


class IsolatedClient(FlaskClient):
    """Each request runs in its own app context, as in production: its own ``g`` and its
    own database session, not the test's (which the fixtures keep pushed)."""

    def open(self, *args, **kwargs):
        with self.application.app_context():
            return super().open(*args, **kwargs)


class SharedTemplateCode(BytecodeCache):
    """Compiled templates shared by every app the tests build: each app has a Jinja
    environment of its own, which would otherwise compile each template again."""

    def __init__(self):
        self.code: dict[str, bytes] = {}

    def load_bytecode(self, bucket):
        if bucket.key in self.code:
            bucket.bytecode_from_string(self.code[bucket.key])

    def dump_bytecode(self, bucket):
        self.code[bucket.key] = bucket.bytecode_to_string()


TEMPLATE_CODE = SharedTemplateCode()


def build_app(url: str) -> Flask:
    """The app under test: the tests' configuration, strict templates, isolated requests."""
    app = create_app(test_config(url))
    app.jinja_env.undefined = StrictUndefined
    app.jinja_env.bytecode_cache = TEMPLATE_CODE
    app.test_client_class = IsolatedClient
    return app


def close_app(app: Flask) -> None:
    """Stop its job thread and journal shipper and close its connections (or the garbage
    collector complains)."""
    from payments import journal

    app.extensions["marejesho.jobs"].stop()
    journal.stop(app)
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def app(database_url):
    app = build_app(database_url)
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()


@pytest.fixture(scope="module")
def module_app(module_database_url):
    """An app on a database of the module's own, for data too slow to build for each test
    that the module's tests only read. A module-scoped fixture builds it once, inside
    ``module_app.app_context()``, and returns plain values (ids, numbers); each test reads
    it in an app context of its own (``read_app``). Every test of such a module uses it."""
    app = build_app(module_database_url)
    yield app
    close_app(app)


@pytest.fixture
def read_app(module_app):
    """``module_app``, in a fresh app context (and so a fresh session) for one test."""
    with module_app.app_context():
        yield module_app
        db.session.remove()


@contextmanager
def serving(app: Flask) -> Iterator[str]:
    """The app behind werkzeug's threaded server on a free loopback port; yields its URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    # polled every 50 ms, not 0.5 s, so that shutting it down takes no longer
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="live-server", daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class HtmxClient:
    """Helpers on the test client that send what htmx sends: HX-Request and the CSRF
    token from the page's hx-headers."""

    def __init__(self, client):
        self.client = client

    def csrf_token(self, path: str = "/login") -> str:
        page = self.client.get(path).get_data(as_text=True)
        match = re.search(r'"X-CSRFToken": "([^"]+)"', page) or re.search(
            r'name="csrf_token" type="hidden" value="([^"]+)"', page
        )
        assert match, "no CSRF token on " + path
        return match.group(1)

    def hx_get(self, path: str, **kwargs):
        headers = {"HX-Request": "true", **kwargs.pop("headers", {})}
        return self.client.get(path, headers=headers, **kwargs)

    def hx_post(self, path: str, *, token_from: str = "/lenders/borrowers/", **kwargs):
        headers = {
            "HX-Request": "true",
            "X-CSRFToken": self.csrf_token(token_from),
            **kwargs.pop("headers", {}),
        }
        return self.client.post(path, headers=headers, **kwargs)


def htmx_client(app: Flask) -> FlaskClient:
    """The app's test client with ``hx_get``, ``hx_post`` and ``csrf_token``."""
    client = app.test_client()
    helper = HtmxClient(client)
    client.hx_get, client.hx_post, client.csrf_token = (
        helper.hx_get,
        helper.hx_post,
        helper.csrf_token,
    )
    return client


@pytest.fixture
def app_factory(database_url):
    """Build another app on the test's database with some settings changed."""

    built = []

    def build(**overrides):
        app = create_app(test_config(database_url) | overrides)
        built.append(app)
        return app

    yield build
    for app in built:
        close_app(app)


@pytest.fixture
def client(app):
    return htmx_client(app)


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


# --- factories: plain functions on the current app's session, each committing what it
# makes; the make_* fixtures hand them to tests that have an ``app``.

_serial = count(1)


def new_staff(
    role: str = "officer",
    *,
    email: str | None = None,
    name: str | None = None,
    password: str = PASSWORD,
    active: bool = True,
) -> StaffUser:
    n = next(_serial)
    user = StaffUser(
        email=email or f"{role}{n}@example.test",
        name=name or f"{role.title()} {n}",
        role=role,
        active=active,
    )
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    return user


def new_borrower(
    name: str = "Jane Wanjiku",
    *,
    national_id: str | None = None,
    phones: tuple[str, ...] = ("0712345678",),
) -> Borrower:
    n = next(_serial)
    borrower = Borrower(name=name, national_id=national_id or str(30_000_000 + n))
    for raw in phones:
        number = canonical_phone(raw)
        borrower.phones.append(
            BorrowerPhone(number=number, sha256=phone_sha256(number), masked_key=masked_key(number))
        )
    db.session.add(borrower)
    db.session.commit()
    return borrower


def new_loan(
    *,
    borrower: Borrower | None = None,
    number: str | None = None,
    principal: str = "9000.00",
    interest: str = "900.00",
    fees: str = "100.00",
    disbursed_on: date = date(2025, 1, 15),
    installments: int = 4,
    frequency: str = "monthly",
    officer: StaffUser | None = None,
) -> Loan:
    loan = create_loan(
        db.session,
        borrower or new_borrower(),
        number=number or f"LOAN-{next(_serial):06d}",
        principal=Decimal(principal),
        interest=Decimal(interest),
        fees=Decimal(fees),
        disbursed_on=disbursed_on,
        installments=installments,
        frequency=frequency,
        officer=officer,
    )
    db.session.commit()
    return loan


@pytest.fixture
def make_staff(app):
    return new_staff


@pytest.fixture
def make_borrower(app):
    return new_borrower


@pytest.fixture
def make_loan(app):
    return new_loan


class AuthActions:
    def __init__(self, client, make_staff):
        self.client, self.make_staff = client, make_staff

    def login(self, role: str = "officer", user: StaffUser | None = None, password: str = PASSWORD):
        """Log in through the real form (CSRF on). Returns the logged-in user."""
        user = user or self.make_staff(role)
        token = self.client.csrf_token("/login")
        response = self.client.post(
            "/login", data={"email": user.email, "password": password, "csrf_token": token}
        )
        assert response.status_code == 303, response.get_data(as_text=True)[:500]
        return user

    def logout(self):
        token = self.client.csrf_token("/lenders/borrowers/")
        return self.client.post("/logout", data={"csrf_token": token})


@pytest.fixture
def auth(client, make_staff):
    return AuthActions(client, make_staff)
