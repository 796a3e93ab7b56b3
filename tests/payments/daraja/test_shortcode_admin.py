"""An admin connects a paybill from the Configuration page: credentials are write-only,
production asks first, and Register URLs / Check connection / Test payment talk to Daraja
(the emulator, over real HTTP) and show its answer in plain words."""

from __future__ import annotations

import logging
import time

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from lenders.extensions import db
from lenders.models import AuditEvent
from payments.emulator.server import background_server
from payments.models import C2BPayment, Shortcode

CANARY = "canary-consumer-secret-4417"


@pytest.fixture
def admin_app(app_factory, emulator):
    return app_factory(DARAJA_SANDBOX_URL=emulator.url)


@pytest.fixture
def admin(admin_app, make_staff):
    client = admin_app.test_client()
    user = make_staff("admin")
    page = client.get("/login").get_data(as_text=True)
    token = page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    response = client.post(
        "/login",
        data={"email": user.email, "password": "correct horse battery", "csrf_token": token},
    )
    assert response.status_code == 303
    return client


def csrf(client, path):
    page = client.get(path).get_data(as_text=True)
    return page.split('"X-CSRFToken": "')[1].split('"')[0]


def shortcode_form(emulator, **fields):
    data = {
        "name": "Main paybill",
        "kind": "paybill",
        "register_version": "v2",
        "amount_tolerance": "10.00",
        "validation_policy": "accept_all",
        "allowed_ips": "",
        "initiator_name": emulator.initiator,
        "consumer_key": emulator.key,
        "consumer_secret": emulator.secret,
        "passkey": emulator.passkey,
        "initiator_password": emulator.initiator_password,
    }
    data.update(fields)
    return data


def make_paybill(admin, emulator, **fields) -> Shortcode:
    token = csrf(admin, "/payments/configuration/")
    response = admin.post(
        "/payments/configuration/shortcodes",
        data={
            "csrf_token": token,
            "number": emulator.paybill,
            "name": "Main paybill",
            "kind": "paybill",
            "register_version": "v2",
            "amount_tolerance": "10",
            "validation_policy": "accept_all",
        },
    )
    assert response.status_code == 303, response.get_data(as_text=True)[:400]
    db.session.expire_all()
    shortcode = db.session.scalars(select(Shortcode)).one()
    token = csrf(admin, f"/payments/configuration/shortcodes/{shortcode.id}")
    response = admin.post(
        f"/payments/configuration/shortcodes/{shortcode.id}",
        data={"csrf_token": token, **shortcode_form(emulator, **fields)},
    )
    assert response.status_code == 303, response.get_data(as_text=True)[:400]
    db.session.expire_all()
    return db.session.get(Shortcode, shortcode.id)


def act(admin, shortcode, action, **data):
    token = csrf(admin, f"/payments/configuration/shortcodes/{shortcode.id}")
    return admin.post(
        f"/payments/configuration/shortcodes/{shortcode.id}/{action}",
        data={"csrf_token": token, **data},
        headers={"HX-Request": "true"},
    )


def test_credentials_are_write_only_and_never_shown_or_audited(admin, emulator, caplog):
    with caplog.at_level(logging.DEBUG):
        shortcode = make_paybill(admin, emulator, consumer_secret=CANARY)
        page = admin.get(f"/payments/configuration/shortcodes/{shortcode.id}").get_data(True)
    assert shortcode.consumer_secret == CANARY  # stored (encrypted), usable
    assert CANARY not in page and "set" in page
    assert CANARY not in caplog.text
    events = db.session.scalars(select(AuditEvent).where(AuditEvent.entity_type == "shortcode"))
    assert all(CANARY not in str(e.after) for e in events)
    # an empty secret field keeps what is stored
    token = csrf(admin, f"/payments/configuration/shortcodes/{shortcode.id}")
    admin.post(
        f"/payments/configuration/shortcodes/{shortcode.id}",
        data={"csrf_token": token, **shortcode_form(emulator, consumer_secret="", name="Renamed")},
    )
    db.session.expire_all()
    kept = db.session.get(Shortcode, shortcode.id)
    assert kept.consumer_secret == CANARY and kept.name == "Renamed"


def test_bad_settings_are_form_errors_and_nothing_is_saved(admin, emulator):
    shortcode = make_paybill(admin, emulator)
    token = csrf(admin, f"/payments/configuration/shortcodes/{shortcode.id}")
    response = admin.post(
        f"/payments/configuration/shortcodes/{shortcode.id}",
        data={
            "csrf_token": token,
            **shortcode_form(
                emulator, amount_tolerance="lots", allowed_ips="not-an-ip", name="Changed"
            ),
        },
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 422
    body = response.get_data(as_text=True)
    assert "An amount in shillings" in body and "not an address" in body
    db.session.expire_all()
    assert db.session.get(Shortcode, shortcode.id).name == "Main paybill"


def test_register_urls_shows_darajas_answer(admin, emulator):
    shortcode = make_paybill(admin, emulator)
    response = act(admin, shortcode, "register")
    assert response.status_code == 200
    assert "Daraja answered: Success (C2B v2)" in response.get_data(as_text=True)
    registered = emulator.calls("/mpesa/c2b/v2/registerurl")
    assert registered and registered[-1]["status"] == 200
    db.session.expire_all()
    assert db.session.get(Shortcode, shortcode.id).urls_registered_at is not None


def test_wrong_credentials_get_a_plain_message_and_no_secret(admin, emulator, caplog):
    shortcode = make_paybill(admin, emulator, consumer_secret=CANARY)
    with caplog.at_level(logging.DEBUG):
        response = act(admin, shortcode, "check")
    assert response.status_code == 422
    body = response.get_data(as_text=True)
    assert "consumer key or secret is wrong" in body
    assert CANARY not in body and CANARY not in caplog.text


def test_daraja_down_is_said_plainly(admin, emulator, admin_app):
    shortcode = make_paybill(admin, emulator)
    admin_app.config["DARAJA_SANDBOX_URL"] = "http://127.0.0.1:9"  # nothing listens there
    response = act(admin, shortcode, "register")
    assert response.status_code == 422
    assert "could not be reached" in response.get_data(as_text=True)


def test_check_connection_fetches_a_token_and_asks_the_balance(admin, emulator):
    shortcode = make_paybill(admin, emulator)
    response = act(admin, shortcode, "check")
    assert response.status_code == 200, response.get_data(as_text=True)[-800:]
    assert "accepted a balance query" in response.get_data(as_text=True)
    assert emulator.calls("/mpesa/accountbalance/v1/query")


def test_a_sandbox_test_payment_arrives_and_is_shown(admin, admin_app, emulator, make_loan):
    make_loan(number="LOAN-000123")
    with background_server(admin_app) as live:
        admin_app.config["PUBLIC_BASE_URL"] = live  # where the emulator calls us back
        shortcode = make_paybill(admin, emulator)
        assert act(admin, shortcode, "register").status_code == 200
        response = act(
            admin,
            shortcode,
            "test-payment",
            amount="250",
            msisdn="254712345678",
            bill_ref="loan 123",
        )
        assert response.status_code == 200, response.get_data(as_text=True)[-500:]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with Session(db.engine) as session:
                found = session.scalars(select(C2BPayment)).all()
            if found and found[0].status == "posted":
                break
            time.sleep(0.05)
        recent = admin.get(
            f"/payments/configuration/shortcodes/{shortcode.id}/recent",
            headers={"HX-Request": "true"},
        ).get_data(as_text=True)
    assert found and found[0].status == "posted" and str(found[0].amount) == "250.00"
    assert found[0].trans_id in recent


def test_production_asks_first_and_refuses_http_callbacks(admin, emulator, admin_app):
    shortcode = make_paybill(admin, emulator)
    first = act(admin, shortcode, "environment", environment="production")
    assert first.status_code == 200 and "Switch" in first.get_data(as_text=True)
    assert "registered once" in first.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Shortcode, shortcode.id).environment == "sandbox"  # not yet
    refused = act(admin, shortcode, "environment", environment="production", confirm="yes")
    assert refused.status_code == 422 and "https" in refused.get_data(as_text=True)
    admin_app.config["PUBLIC_BASE_URL"] = "https://pay.lender.example"
    done = act(admin, shortcode, "environment", environment="production", confirm="yes")
    assert done.status_code == 204
    db.session.expire_all()
    assert db.session.get(Shortcode, shortcode.id).environment == "production"
    refused_simulate = act(
        admin,
        db.session.get(Shortcode, shortcode.id),
        "test-payment",
        amount="10",
        msisdn="254712345678",
        bill_ref="x",
    )
    assert refused_simulate.status_code == 422
    assert "sandbox shortcodes only" in refused_simulate.get_data(as_text=True)


def test_officers_cannot_reach_configuration(client, auth, make_shortcode):
    shortcode = make_shortcode()
    auth.login("officer")
    assert client.get(f"/payments/configuration/shortcodes/{shortcode.id}").status_code == 403
