"""Configuration from the environment (CONTRACT §2) and the schema's migrations."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from app import create_app
from lenders.config import ConfigError, config_from_env, database_url
from lenders.extensions import db
from lenders.models import StaffUser

pytestmark = pytest.mark.both_databases


@pytest.mark.parametrize(
    "environ, missing",
    [
        ({}, "SECRET_KEY and MAREJESHO_ENCRYPTION_KEYS"),
        ({"SECRET_KEY": "s"}, "MAREJESHO_ENCRYPTION_KEYS"),
        ({"MAREJESHO_ENCRYPTION_KEYS": "k"}, "SECRET_KEY"),
    ],
)
def test_production_refuses_to_start_without_its_secrets(environ, missing):
    with pytest.raises(ConfigError, match=missing):
        config_from_env({"MAREJESHO_ENV": "production", **environ})


def test_production_needs_an_https_public_url():
    environ = {"MAREJESHO_ENV": "production", "SECRET_KEY": "s", "MAREJESHO_ENCRYPTION_KEYS": "k"}
    with pytest.raises(ConfigError, match="https"):
        config_from_env(environ | {"PUBLIC_BASE_URL": "http://lender.example"})
    config = config_from_env(environ | {"PUBLIC_BASE_URL": "https://lender.example/"})
    assert config["PUBLIC_BASE_URL"] == "https://lender.example"
    assert config["DEBUG"] is False


def test_development_works_with_nothing_set():
    config = config_from_env({})
    assert config["SQLALCHEMY_DATABASE_URI"].endswith("instance/marejesho.db")
    assert config["REDIS_URL"] is None and len(config["SECRET_KEY"]) >= 32
    assert config["PUBLIC_BASE_URL"] == "http://127.0.0.1:5000"


@pytest.mark.parametrize(
    "given", ["postgres://u:p@h/db", "postgresql://u:p@h/db", "postgresql+psycopg://u:p@h/db"]
)
def test_postgresql_urls_use_psycopg_3(given):
    assert database_url({"DATABASE_URL": given}) == "postgresql+psycopg://u:p@h/db"


def test_migrations_match_the_models(app):
    """What `flask db check` checks: upgrading gives exactly the models' schema."""
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, db.metadata) == []


def test_sqlite_runs_in_wal_mode_with_foreign_keys(app):
    if db.engine.dialect.name != "sqlite":
        assert db.engine.dialect.driver == "psycopg"
        return
    assert db.session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    assert db.session.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_app_factory_builds_independent_apps(database_url):
    one = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "LENDER_NAME": "One"})
    two = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "LENDER_NAME": "Two"})
    assert one.config["LENDER_NAME"] == "One" and two.config["LENDER_NAME"] == "Two"


def test_staff_passwords_are_hashed_with_scrypt_outside_the_tests():
    """The tests' configuration hashes with one round of PBKDF2 to stay fast; the app's own
    configuration, in development and in production, keeps werkzeug's scrypt."""
    production = config_from_env(
        {"MAREJESHO_ENV": "production", "SECRET_KEY": "s", "MAREJESHO_ENCRYPTION_KEYS": "k"}
        | {"PUBLIC_BASE_URL": "https://lender.example"}
    )
    assert production["PASSWORD_HASH_METHOD"] == "scrypt"
    app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://"})  # no test overrides
    with app.app_context():
        user = StaffUser(email="amina@lender.example", name="Amina", role="admin")
        user.set_password("a long passphrase")
        assert user.password_hash.startswith("scrypt:32768:8:1$")
        assert user.check_password("a long passphrase")
        assert not user.check_password("a long passphrasE")
