"""Daraja credentials are encrypted at rest; key rotation leaves no row undecryptable."""

import re

import pytest
from conftest import PASSWORD
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import text

from lenders.extensions import db
from lenders.vault import encrypted_columns, vault
from payments.models import Shortcode, SmsSettings

pytestmark = pytest.mark.both_databases
CANARY = "canary-secret-7f3a91"


def raw_secret(shortcode_id: int) -> str:
    return db.session.execute(
        text("SELECT consumer_secret FROM shortcode WHERE id = :id"), {"id": shortcode_id}
    ).scalar()


def test_credentials_are_stored_encrypted(make_shortcode):
    shortcode = make_shortcode(consumer_secret=CANARY, passkey="pk-" + CANARY)
    stored = raw_secret(shortcode.id)
    assert CANARY not in stored and stored.startswith("gAAAA")
    db.session.expire_all()
    assert db.session.get(Shortcode, shortcode.id).consumer_secret == CANARY


def test_key_rotation_drill_leaves_no_row_undecryptable(app_factory, runner, make_shortcode):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    app_old = app_factory(MAREJESHO_ENCRYPTION_KEYS=old)
    with app_old.app_context():
        db.session.add(
            Shortcode(
                number="700001",
                name="Old key",
                consumer_secret=CANARY,
                initiator_password="ip-" + CANARY,
            )
        )
        db.session.commit()
        db.session.remove()

    both = app_factory(MAREJESHO_ENCRYPTION_KEYS=f"{new},{old}")
    with both.app_context():  # the CLI runs in the app whose context is current
        result = both.test_cli_runner().invoke(args=["payments", "rotate-keys"])
    assert result.exit_code == 0, result.output
    assert "re-encrypted 2 secret(s)" in result.output

    only_new = app_factory(MAREJESHO_ENCRYPTION_KEYS=new)
    with only_new.app_context():
        shortcode = db.session.query(Shortcode).filter_by(number="700001").one()
        assert shortcode.consumer_secret == CANARY
        assert shortcode.initiator_password == "ip-" + CANARY
        db.session.remove()

    only_old = app_factory(MAREJESHO_ENCRYPTION_KEYS=old)
    with only_old.app_context(), pytest.raises(InvalidToken):
        db.session.query(Shortcode).filter_by(number="700001").one()
    db.session.remove()


def test_a_wrong_key_fails_closed(app_factory, make_shortcode):
    shortcode = make_shortcode(consumer_secret=CANARY)
    stranger = app_factory(MAREJESHO_ENCRYPTION_KEYS=Fernet.generate_key().decode())
    with stranger.app_context(), pytest.raises(InvalidToken):
        db.session.get(Shortcode, shortcode.id).consumer_secret  # noqa: B018
    db.session.remove()


# --- every encrypted column, from one registry -------------------------------------------

# A row holding a value in every encrypted column of its table, for the rotation drill.
# A model with an encrypted column needs its row here, or the drill below fails.
SECRET_ROWS = {
    "shortcode": lambda: Shortcode(
        number="700002",
        name="Every secret",
        consumer_key="ck-" + CANARY,
        consumer_secret="cs-" + CANARY,
        passkey="pk-" + CANARY,
        initiator_password="ip-" + CANARY,
    ),
    "sms_settings": lambda: SmsSettings(
        id=1, provider="africastalking", username="user-" + CANARY, api_key="key-" + CANARY
    ),
}


def stored_secrets() -> dict[tuple[str, str], list[str]]:
    """Every registered column's stored (encrypted) values, non-empty ones."""
    found = {}
    for table, names in encrypted_columns(db.metadata).items():
        for name in names:
            values = db.session.execute(text(f"SELECT {name} FROM {table.name}")).scalars()
            found[(table.name, name)] = [v for v in values if v]
    return found


def test_every_column_the_vault_encrypts_is_in_the_registry(app):
    """A column that stores its value encrypted by the vault, by whatever column type,
    must be one rotate-keys finds."""
    registered = {
        (table.name, name)
        for table, names in encrypted_columns(db.metadata).items()
        for name in names
    }
    dialect = db.engine.dialect
    encrypting = set()
    for table in db.metadata.sorted_tables:
        for column in table.columns:
            convert = column.type.bind_processor(dialect)
            for probe in ("probe", {"probe": "probe"}, ["probe"], b"probe"):
                try:
                    stored = convert(probe) if convert else probe
                    vault().decrypt(stored.encode() if isinstance(stored, str) else stored)
                except Exception:  # noqa: BLE001 - not this type's value, or not encrypted
                    continue
                encrypting.add((table.name, column.name))
    assert encrypting >= {("shortcode", "consumer_secret"), ("sms_settings", "api_key")}
    assert encrypting <= registered, encrypting - registered


def test_the_rotation_drill_covers_every_encrypted_column(app_factory, make_staff):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    admin = make_staff("admin")
    with app_factory(MAREJESHO_ENCRYPTION_KEYS=old).app_context():
        tables = {table.name for table in encrypted_columns(db.metadata)}
        assert tables <= set(SECRET_ROWS), (
            f"add a row to SECRET_ROWS for {tables - set(SECRET_ROWS)}"
        )
        for name in tables:
            db.session.add(SECRET_ROWS[name]())
        db.session.commit()
        before = stored_secrets()
        assert all(before.values()), "the drill leaves an encrypted column empty"
        db.session.remove()

    both = app_factory(MAREJESHO_ENCRYPTION_KEYS=f"{new},{old}")
    with both.app_context():
        result = both.test_cli_runner().invoke(args=["payments", "rotate-keys"])
    assert result.exit_code == 0, result.output
    assert f"re-encrypted {sum(map(len, before.values()))} secret(s)" in result.output

    only_new = app_factory(MAREJESHO_ENCRYPTION_KEYS=new)
    with only_new.app_context():
        for column, values in stored_secrets().items():
            for value in values:
                plain = MultiFernet([Fernet(new)]).decrypt(value.encode()).decode()
                assert CANARY in plain, column
        sms = db.session.get(SmsSettings, 1)
        assert (sms.username, sms.api_key) == ("user-" + CANARY, "key-" + CANARY)
        db.session.remove()
    client = only_new.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    login = {"email": admin.email, "password": PASSWORD, "csrf_token": token}
    assert client.post("/login", data=login).status_code == 303
    for path in ("/payments/sms/", "/payments/configuration/shortcodes/1"):
        answer = client.get(path)
        assert answer.status_code == 200, path
        shown = answer.get_data(as_text=True)
        assert not re.search(f"(ck|cs|pk|ip|key)-{CANARY}", shown), path  # write-only


def test_a_secret_under_a_dropped_key_gets_a_clear_page_not_a_crash(
    app_factory, make_staff, make_shortcode
):
    make_shortcode(consumer_secret=CANARY)
    admin = make_staff("admin")
    stranger = app_factory(MAREJESHO_ENCRYPTION_KEYS=Fernet.generate_key().decode())
    client = stranger.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    client.post("/login", data={"email": admin.email, "password": PASSWORD, "csrf_token": token})
    answer = client.get("/payments/configuration/shortcodes/1")
    assert answer.status_code == 500
    assert "rotate-keys" in answer.get_data(as_text=True)
