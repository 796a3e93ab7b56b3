"""A confirmation that arrives while the database is unreachable is written to this host's
journal, synced to disk, acknowledged, and stored and posted once the database answers,
with nobody importing anything (payments/journal.py)."""

from __future__ import annotations

import json
from decimal import Decimal as D

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError

from lenders.extensions import db
from lenders.models import Loan
from payments import intake, journal
from payments.models import C2BPayment, CallbackLog
from tests.payments.conftest import c2b_body, drain

ACCEPTED = {"ResultCode": 0, "ResultDesc": "Accepted"}


def database_down(*args, **kwargs):
    """What the driver of the database in use raises when its server is gone."""
    driver_error = db.engine.dialect.dbapi.OperationalError("server closed the connection")
    raise OperationalError("INSERT INTO c2b_payment …", {}, driver_error)


def post(client, shortcode, body: dict):
    return client.post(
        f"/payments/c2b/{shortcode.callback_token}/confirmation",
        data=json.dumps(body),
        headers={"Content-Type": "application/json"},
    )


def payments() -> list[C2BPayment]:
    db.session.expire_all()
    return list(db.session.scalars(select(C2BPayment).order_by(C2BPayment.id)))


@pytest.mark.both_databases
def test_a_confirmation_during_an_outage_is_acknowledged_and_posted_when_the_database_returns(
    app, client, shortcode, make_loan, monkeypatch
):
    loan = make_loan()
    bodies = [c2b_body(TransAmount="250.00", BillRefNumber=loan.number) for _ in range(3)]
    post(client, shortcode, c2b_body(TransAmount="1.00"))  # the token is known before
    db.session.expire_all()
    loan_id, opening = loan.id, loan.paid
    monkeypatch.setattr(intake, "store_confirmation", database_down)

    answers = [post(client, shortcode, body) for body in bodies]

    assert [(a.status_code, a.get_json()) for a in answers] == [(200, ACCEPTED)] * 3
    assert len(payments()) == 1 and journal.waiting(app) == 3
    monkeypatch.undo()  # the database is back

    assert journal.replay() == 3
    drain()
    assert journal.waiting(app) == 0
    stored = {p.trans_id: p for p in payments()}
    assert [stored[b["TransID"]].status for b in bodies] == ["posted"] * 3
    assert db.session.get(Loan, loan_id).paid == opening + D("750.00")
    logged = db.session.scalars(
        select(CallbackLog).where(CallbackLog.payment_id == stored[bodies[0]["TransID"]].id)
    ).one()
    assert logged.outcome == "stored" and logged.headers["Journal"] == "replayed"
    assert journal.replay() == 0  # nothing twice


def test_a_confirmation_that_reached_the_database_before_the_failure_is_stored_once(
    app, client, shortcode, make_loan, monkeypatch
):
    """The connection broke after the INSERTs committed but before we knew: the journal's
    copy is recognised as a duplicate on replay."""
    loan = make_loan()
    body = c2b_body(TransAmount="500.00", BillRefNumber=loan.number)
    real_store = intake.store_confirmation

    def stored_then_lost(*args, **kwargs):
        real_store(*args, **kwargs)
        database_down()

    monkeypatch.setattr(intake, "store_confirmation", stored_then_lost)
    assert post(client, shortcode, body).get_json() == ACCEPTED
    monkeypatch.undo()

    assert journal.replay() == 1
    drain()
    [payment] = payments()
    assert payment.status == "posted" and len(payment.repayments) == 1
    outcomes = db.session.scalars(
        select(CallbackLog.outcome).where(CallbackLog.payment_id == payment.id)
    ).all()
    assert sorted(outcomes) == ["duplicate", "stored"]


def test_a_server_started_during_the_outage_still_knows_the_callback_token(
    app, app_factory, shortcode, make_loan, monkeypatch
):
    first = app_factory()
    first.test_client().post(
        f"/payments/c2b/{shortcode.callback_token}/validation", json=c2b_body()
    )  # this process read the shortcode and noted it in the journal
    restarted = app_factory(JOURNAL_DIR=first.config["JOURNAL_DIR"])
    monkeypatch.setattr(intake, "store_confirmation", database_down)
    monkeypatch.setattr(Engine, "connect", database_down)  # every engine: the server is gone

    answer = post(restarted.test_client(), shortcode, c2b_body(TransAmount="99.00"))
    monkeypatch.undo()

    assert (answer.status_code, answer.get_json()) == (200, ACCEPTED)
    assert journal.waiting(restarted) == 1


def test_an_unknown_token_during_an_outage_is_503_and_journals_nothing(
    app, client, shortcode, monkeypatch
):
    monkeypatch.setattr(Engine, "connect", database_down)
    answer = client.post("/payments/c2b/" + "ab" * 20 + "/confirmation", json=c2b_body())
    monkeypatch.undo()
    assert answer.status_code == 503 and answer.get_json()["errorCode"] == "503.001"
    assert journal.waiting(app) == 0


def test_a_full_journal_answers_503_so_nothing_is_acknowledged_unkept(
    app, client, shortcode, monkeypatch
):
    app.config["JOURNAL_MAX"] = 1
    post(client, shortcode, c2b_body(TransAmount="1.00"))
    monkeypatch.setattr(intake, "store_confirmation", database_down)
    first = post(client, shortcode, c2b_body())
    second = post(client, shortcode, c2b_body())
    assert first.get_json() == ACCEPTED
    assert second.status_code == 503 and journal.waiting(app) == 1


def test_a_bug_is_not_journalled(app, client, shortcode, monkeypatch):
    """Only an unreachable database sends a confirmation to the journal: any other error is
    the 503 it was, so a bug is seen, not hidden."""

    def bug(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(intake, "store_confirmation", bug)
    answer = post(client, shortcode, c2b_body())
    assert answer.status_code == 503 and journal.waiting(app) == 0


def test_replay_journal_command_replays_a_copied_journal(
    app, client, runner, shortcode, monkeypatch
):
    post(client, shortcode, c2b_body(TransAmount="1.00"))
    monkeypatch.setattr(intake, "store_confirmation", database_down)
    body = c2b_body(TransAmount="42.00")
    post(client, shortcode, body)
    monkeypatch.undo()

    result = runner.invoke(args=["payments", "replay-journal", str(journal.journal_path(app))])

    assert result.exit_code == 0, result.output
    assert "replayed 1 confirmation(s)" in result.output
    assert body["TransID"] in {p.trans_id for p in payments()}
