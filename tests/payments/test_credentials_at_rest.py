"""Daraja credentials are encrypted at rest; key rotation leaves no row undecryptable."""

import pytest
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import text

from lenders.extensions import db
from payments.models import Shortcode

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
